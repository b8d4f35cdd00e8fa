"""The shape of ``course_lib``: packages import downward only, modules import in no circle, modules stay short.

The layers (``course_lib/__init__.py`` and ``ARCHITECTURE.md``), from the bottom up:
``engine`` and ``world`` import no other package of the course; ``reward`` and ``policy``
build on both (the policy wing sees reward models only as reward functions, so it never
imports ``reward``); ``studies`` runs experiments over all of them; ``tooling`` and
``grading`` sit on top, and the ``course`` command (``tooling.cli``) above them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "course_lib"

ALLOWED = {
    "engine": set(),
    "world": set(),
    "reward": {"engine", "world"},
    "policy": {"engine", "world"},
    "studies": {"engine", "world", "reward", "policy"},
    "tooling": {"engine", "world", "reward", "policy", "studies"},
    "grading": {"engine", "tooling"},
}
# The ``course`` command sits above every package: it may import any of them.
ENTRY_POINTS = {"tooling.cli"}
# Modules longer than MAX_LINES, each with the reason it stays in one piece.
MAX_LINES = 450
LONG_MODULES = {
    "world.templates": "data, not logic: every sentence template, topic, tip and paraphrase of the world",
    "world.generator": "one pass from a seed to labelled pairs (prompts, responses, labels, noise models), read top to bottom",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``course_lib`` module that ``path`` imports, by name relative to ``course_lib``."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "course_lib":
                target = node.module.split(".")[1:]
            else:
                continue
            dotted = ".".join(target)
            for alias in node.names:  # "from .engine import progress" imports a module
                candidate = f"{dotted}.{alias.name}" if dotted else alias.name
                found.add(candidate if (module_path(candidate) is not None) else dotted)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("course_lib."))
    return {m for m in found if m}


def module_path(name: str) -> Path | None:
    base = PACKAGE.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if "." in n), ids=str)
def test_packages_import_downward_only(name):
    package = top(name)
    if name in ENTRY_POINTS:
        return
    assert package in ALLOWED, f"course_lib.{package} is a package the layer map does not know: add it to ALLOWED"
    upward = sorted(m for m in imported_modules(MODULES[name])
                    if top(m) != package and top(m) not in ALLOWED[package])
    assert not upward, (f"course_lib.{name} imports {upward}: {package} may import only "
                        f"{sorted(ALLOWED[package]) or 'nothing'} of the course")


def test_no_import_circles():
    graph = {name: {m for m in imported_modules(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    # A package's __init__ re-exports its modules; an edge into a package means its modules.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    assert "engine.runtime" in imported_modules(PACKAGE / "engine" / "loop.py")
    assert "engine.progress" in imported_modules(PACKAGE / "__init__.py")
    assert {"engine.loop", "reward.pairs"} <= imported_modules(PACKAGE / "reward" / "training.py")


@pytest.mark.parametrize("name", sorted(MODULES), ids=str)
def test_modules_stay_short(name):
    lines = len(MODULES[name].read_text().splitlines())
    if name in LONG_MODULES:
        return
    assert lines <= MAX_LINES, (f"course_lib.{name} has {lines} lines (limit {MAX_LINES}): split it by job, "
                                "or add it to LONG_MODULES with the reason it stays whole")
