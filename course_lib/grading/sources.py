"""What the grader reads from notebooks' source.

From the solution: the trusted setup every graded cell may rely on
(:func:`trusted_preamble`) and the imports the test server runs once in advance
(:func:`solution_imports`). From the submission: the learner's definitions, which a
test process replays (:func:`definition_statements`) instead of unpickling functions.

Defined for the course's grading.
"""

from __future__ import annotations

import ast

from ..tooling.exercises import BEGIN_SOLUTION, METADATA_KEY

_KEPT_BY_PREAMBLE = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def cell_grade_id(cell) -> str | None:
    """The graded id in a cell's metadata, or None."""
    return cell.get("metadata", {}).get(METADATA_KEY, {}).get("grade_id")


def plain_python(source: str) -> str | None:
    """The cell's source without IPython magics and shell lines, or None if it is not Python."""
    for candidate in (source, "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))):
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return None


def trusted_preamble(solution) -> list[tuple[str, str]]:
    """What the graded cells may rely on, taken from the solution rather than the submission:
    every code cell before the first exercise (parameters, imports, seeds) and, after it, the
    imports, functions and classes of the cells that hold no exercise (given helpers)."""
    exercise = {i for i, c in enumerate(solution.cells)
                if c.cell_type == "code" and (BEGIN_SOLUTION in c.source or cell_grade_id(c))}
    first_exercise = min(exercise, default=len(solution.cells))
    preamble = []
    for index, cell in enumerate(solution.cells):
        source = plain_python(cell.source) if cell.cell_type == "code" and index not in exercise else None
        if source is None:
            continue
        if index > first_exercise:
            kept = [node for node in ast.parse(source).body if isinstance(node, _KEPT_BY_PREAMBLE)]
            if not kept:
                continue
            source = ast.unparse(ast.Module(body=kept, type_ignores=[]))
        preamble.append((f"<solution cell {index}>", source))
    return preamble


def solution_imports(solution) -> list[str]:
    """Every top-level import statement of the solution's code cells (the graded cells' and the
    exercises' own included), for the test server to run once before any submission: the
    learner's copies of these cells import the same modules when their definitions are replayed."""
    imports = []
    for cell in solution.cells:
        source = plain_python(cell.source) if cell.cell_type == "code" else None
        for node in ast.parse(source).body if source else []:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(ast.unparse(node))
    return list(dict.fromkeys(imports))


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, _KEPT_BY_PREAMBLE):
        return True
    if isinstance(node, ast.Assign):  # square = lambda x: x * x
        return isinstance(node.value, ast.Lambda) and all(isinstance(t, ast.Name) for t in node.targets)
    return isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Lambda) and isinstance(node.target, ast.Name)


def definition_statements(source: str) -> list[ast.stmt]:
    """The statements of a learner's cell that a test process replays: its top-level
    ``import``, ``def`` and ``class`` statements and its assignments of a ``lambda`` to a
    name, with their line numbers. Everything else the cell does (calls, loops, assignments
    of computed values, patches of libraries) is never run again: the values it made reach
    the test only as data (``snapshot``)."""
    plain = plain_python(source)
    return [node for node in ast.parse(plain).body if _is_definition(node)] if plain is not None else []
