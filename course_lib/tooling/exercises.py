"""Generate ``exercises/`` from ``solutions/`` and check that the two agree.

Solutions are the single source of truth (as in scikit-learn-mooc and nbgrader).
In a solution notebook:

* code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes a stub that
  raises ``NotImplementedError``; in Markdown cells it becomes "YOUR ANSWER HERE";
* lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` are removed
  (the grader puts them back from the solution);
* a graded test cell carries ``metadata["reward_course"] = {"grade_id": ..., "points": ...}``.

Generated notebooks have no outputs, execution counts or cell ids, so writing them
twice gives identical bytes and ``course check`` can compare them with what is
committed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..engine.files import write_text_atomic
from .notebook_io import KERNEL_DISPLAY_NAME, KERNEL_NAME, chapter_notebooks, notebook_text, read_notebook

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
METADATA_KEY = "reward_course"
CODE_STUB = ("# YOUR CODE HERE", 'raise NotImplementedError("replace this line with your solution")')
MARKDOWN_STUB = "YOUR ANSWER HERE"
COURSE_KERNELSPEC = {"name": KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME, "language": "python"}


@dataclass(frozen=True)
class GradedCell:
    """One graded test cell of a solution notebook."""

    grade_id: str
    points: float
    source: str  # full source, hidden tests included


def _marker_error(path: str, index: int, message: str) -> ValueError:
    return ValueError(f"{path}, cell {index}: {message}")


def _replace_regions(source: str, begin: str, end: str, replacement, *, where: str) -> str:
    """Replace every ``begin ... end`` region (marker lines included) by ``replacement(indent)``."""
    lines = source.split("\n")
    out: list[str] = []
    inside, indent = False, ""
    for line in lines:
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ValueError(f"{where}: '{begin}' opened twice without '{end}'")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.extend(replacement(indent))
        elif stripped == end:
            if not inside:
                raise ValueError(f"{where}: '{end}' without a matching '{begin}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '{begin}' is never closed by '{end}'")
    return "\n".join(out)


def strip_cell(cell, *, where: str):
    """The exercise version of one solution cell."""
    cell = copy.deepcopy(cell)
    cell.pop("id", None)
    if cell.cell_type == "code":
        source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, lambda ind: [ind + s for s in CODE_STUB], where=where)
        source = _replace_regions(source, BEGIN_HIDDEN, END_HIDDEN, lambda ind: [], where=where)
        cell.source = re.sub(r"\n{3,}", "\n\n", source).rstrip("\n")
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
    elif cell.cell_type == "markdown":
        cell.source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, lambda ind: [ind + MARKDOWN_STUB], where=where)
    return cell


def exercise_from_solution(solution, assignment: str, path: str = "<solution>"):
    """Build the exercise notebook (a new object) for one solution notebook."""
    exercise = nbformat.v4.new_notebook()
    exercise.nbformat_minor = 4  # no cell ids: regeneration is byte-stable
    exercise.metadata = {
        "kernelspec": copy.deepcopy(solution.metadata.get("kernelspec") or COURSE_KERNELSPEC),
        "language_info": {"name": "python"},
        METADATA_KEY: {"assignment": assignment},
    }
    exercise.cells = [strip_cell(cell, where=f"{path}, cell {i}") for i, cell in enumerate(solution.cells)]
    return exercise


def graded_cells(solution, path: str = "<solution>") -> list[GradedCell]:
    """The graded test cells of a solution notebook, in order; ids must be unique."""
    found: dict[str, GradedCell] = {}
    for index, cell in enumerate(solution.cells):
        meta = cell.get("metadata", {}).get(METADATA_KEY, {})
        if "grade_id" not in meta:
            continue
        if cell.cell_type != "code":
            raise _marker_error(path, index, "only code cells can be graded")
        grade_id, points = meta["grade_id"], meta.get("points")
        if grade_id in found:
            raise _marker_error(path, index, f"grade_id {grade_id!r} is used twice")
        if not isinstance(points, (int, float)) or points <= 0:
            raise _marker_error(path, index, f"graded cell {grade_id!r} needs a positive 'points' value")
        if BEGIN_SOLUTION in cell.source:
            raise _marker_error(path, index, f"graded cell {grade_id!r} must not contain a solution region")
        found[grade_id] = GradedCell(grade_id, float(points), cell.source)
    return list(found.values())


def exercise_path_for(solution_path: Path, root: Path) -> Path:
    return root / "exercises" / solution_path.name


def build_exercises(root: Path) -> list[Path]:
    """Write ``exercises/NN_*.ipynb`` for every solution notebook; return the paths written."""
    written = []
    for solution_path in chapter_notebooks("solutions", root):
        solution = read_notebook(solution_path)
        graded_cells(solution, str(solution_path))
        exercise = exercise_from_solution(solution, solution_path.stem, str(solution_path.relative_to(root)))
        target = exercise_path_for(solution_path, root)
        write_text_atomic(target, notebook_text(exercise))
        written.append(target)
    return written


def exercise_problems(root: Path) -> list[str]:
    """What differs between ``exercises/`` and what ``build_exercises`` would write."""
    problems = []
    solution_paths = chapter_notebooks("solutions", root)
    expected_names = {p.name for p in solution_paths}
    for solution_path in solution_paths:
        solution = read_notebook(solution_path)
        rel = str(solution_path.relative_to(root))
        try:
            graded_cells(solution, rel)
            expected = notebook_text(exercise_from_solution(solution, solution_path.stem, rel))
        except ValueError as error:
            problems.append(str(error))
            continue
        target = exercise_path_for(solution_path, root)
        if not target.exists():
            problems.append(f"exercises/{target.name} is missing; run 'course build-exercises'")
        elif target.read_text(encoding="utf-8") != expected:
            problems.append(f"exercises/{target.name} differs from its solution; run 'course build-exercises'")
    for extra in chapter_notebooks("exercises", root):
        if extra.name not in expected_names:
            problems.append(f"exercises/{extra.name} has no solution in solutions/")
    return problems
