"""``course check``: the repository carries no stray notebook state.

Fails when exercises are out of step with solutions, when checkpoint folders sit
next to notebooks, when stored outputs leak absolute local paths or keep progress bars, when solutions
or exercises carry outputs, or when a chapter notebook has no parameters cell.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .exercises import exercise_problems
from .notebook_io import CHAPTER_FOLDERS, chapter_notebooks, parameters_cell_index, progress_bar_lines, read_notebook

LOCAL_PATH = re.compile(r"(/home/[^/\s\"']+/|/Users/[^/\s\"']+/|/root/|/tmp/|[A-Za-z]:\\\\Users\\\\)")


def _outputs_text(cell) -> str:
    return json.dumps(cell.get("outputs", []))


def stray_state_problems(root: Path) -> list[str]:
    problems = []
    for folder in CHAPTER_FOLDERS:
        for checkpoint in (root / folder).rglob(".ipynb_checkpoints"):
            problems.append(f"{checkpoint.relative_to(root)}: checkpoint folder; delete it")
    for folder in CHAPTER_FOLDERS:
        for path in chapter_notebooks(folder, root):
            nb = read_notebook(path)
            rel = path.relative_to(root)
            if parameters_cell_index(nb) is None:
                problems.append(f"{rel}: no cell tagged 'parameters'")
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                text = _outputs_text(cell)
                if folder != "notebooks" and cell.outputs:
                    problems.append(f"{rel}, cell {index}: has outputs; {folder}/ notebooks are stored without them")
                bars = progress_bar_lines(cell.outputs)
                if bars:
                    problems.append(f"{rel}, cell {index}: {bars} progress-bar line(s) stored on stderr; store executed "
                                    "notebooks through 'course refresh' (which drops them)")
                match = LOCAL_PATH.search(text) or (str(root) in text and re.compile(re.escape(str(root))).search(text))
                if match:
                    problems.append(f"{rel}, cell {index}: output contains a local path ({match.group(0)!r})")
    return problems


def course_problems(root: Path) -> list[str]:
    return exercise_problems(root) + stray_state_problems(root)
