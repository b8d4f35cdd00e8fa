"""``course check``: the repository carries no stray notebook state.

Fails when exercises are out of step with solutions, when checkpoint folders sit
next to notebooks, when stored outputs leak absolute local paths or keep progress bars, when solutions
or exercises carry outputs, when a chapter notebook has no parameters cell or breaks its
own nbformat schema (e.g. cell ids, a 4.5 field, in a 4.4 notebook), or when a lesson's or
solution's markdown types a measured number (``typed_numbers``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat

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
            try:
                nbformat.validate(nb, relax_add_props=False)
            except nbformat.ValidationError as error:
                problems.append(f"{rel}: not valid nbformat {nb.nbformat}.{nb.nbformat_minor} "
                                f"({str(error).splitlines()[0]}); Jupyter and nbval may refuse it")
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


# ----------------------------------------------------------------------------- numbers in the text

# A measured number belongs in a cell's output (rendered from the run), never typed in a
# markdown cell: a learner's run on another CPU gives other digits, and typed text would
# then contradict what they see. Decimal numbers and percentages in markdown are therefore
# errors, except inside inline code or math (settings and formulas: `lr=1e-3`, $\beta = 0.1$),
# in links, arXiv numbers, and the constants a cell declares in a marker comment:
#     <!-- constants: 95% 0.5 -->
# (a confidence level, a paper's figure, a setting written in prose).
TEXT_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%|(?<![\w.])\d+\.\d+(?!\w|\.\d)")
_EXEMPT = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$\n]*\$|\]\([^)]*\)|<(?:img|a) [^>]*>|\b\d{4}\.\d{4,5}(?:v\d+)?\b",
                     re.S)
CONSTANTS_MARKER = re.compile(r"<!--\s*constants:([^>]*)-->")


def typed_numbers(markdown: str) -> list[str]:
    """Decimal numbers and percentages in ``markdown`` that are not declared constants of the text."""
    declared = {token.strip() for m in CONSTANTS_MARKER.finditer(markdown) for token in m.group(1).split()}
    text = _EXEMPT.sub(" ", re.sub(r"<!--.*?-->", " ", markdown, flags=re.S))
    return [number for number in TEXT_NUMBER.findall(text) if number.replace(" ", "") not in declared]


def typed_number_problems(root: Path) -> list[str]:
    problems = []
    for folder in ("notebooks", "solutions"):
        for path in chapter_notebooks(folder, root):
            nb = read_notebook(path)
            for index, cell in enumerate(nb.cells):
                found = typed_numbers(cell.source) if cell.cell_type == "markdown" else []
                if found:
                    problems.append(f"{path.relative_to(root)}, cell {index}: typed number(s) {found} in markdown; render "
                                    "measured numbers from the run (display(Markdown(f\"...\"))), or declare a "
                                    "constant of the text with <!-- constants: ... -->")
    return problems


def course_problems(root: Path) -> list[str]:
    return exercise_problems(root) + stray_state_problems(root) + typed_number_problems(root)
