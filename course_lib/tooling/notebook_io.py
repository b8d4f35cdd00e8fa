"""Reading, writing and locating the course's notebooks.

Writes are atomic (a temporary file in the same folder, then a rename), so an
interrupted run never leaves a half-written notebook behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat

from ..engine.files import write_text_atomic

KERNEL_NAME = "reward-course"
KERNEL_DISPLAY_NAME = "Python (reward course)"
CHAPTER_FOLDERS = ("notebooks", "solutions", "exercises")


def repo_root() -> Path:
    """The course checkout that holds ``notebooks/`` (found from the current folder)."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "notebooks").is_dir() and (candidate / "course_lib").is_dir():
            return candidate
    package_parent = Path(__file__).resolve().parents[2]
    if (package_parent / "notebooks").is_dir():
        return package_parent
    raise FileNotFoundError(
        f"could not find the course folder (one holding notebooks/ and course_lib/) "
        f"from {here}; run the command inside the course checkout"
    )


def read_notebook(path: str | os.PathLike) -> nbformat.NotebookNode:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several unrelated types
        raise ValueError(f"{path}: not a readable Jupyter notebook ({error})") from error


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """The canonical on-disk form of a notebook (one-space indent, trailing newline)."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb: nbformat.NotebookNode, path: str | os.PathLike) -> None:
    write_text_atomic(path, notebook_text(nb))


def chapter_notebooks(folder: str, root: Path | None = None) -> list[Path]:
    """The chapter notebooks (``NN_name.ipynb``) of one course folder, in order."""
    if folder not in CHAPTER_FOLDERS:
        raise ValueError(f"unknown course folder {folder!r}; expected one of {CHAPTER_FOLDERS}")
    root = root or repo_root()
    return sorted(p for p in (root / folder).glob("[0-9][0-9]_*.ipynb"))


def resolve_notebooks(names: list[str], folder: str = "notebooks", root: Path | None = None) -> list[Path]:
    """Turn ``["01", "02_reward_models", "notebooks/03_x.ipynb"]`` into notebook paths."""
    available = chapter_notebooks(folder, root)
    if not names:
        return available
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path.resolve())
            continue
        matches = [p for p in available if p.stem == name or p.stem.startswith(f"{name}_") or p.stem.split("_", 1)[0] == name]
        if not matches:
            known = ", ".join(p.stem for p in available) or "none"
            raise FileNotFoundError(f"no notebook matches {name!r} in {folder}/ (available: {known})")
        chosen.extend(matches)
    return chosen


def parameters_cell_index(nb: nbformat.NotebookNode) -> int | None:
    """Index of the cell tagged ``parameters`` (papermill's convention), if any."""
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return index
    return None


# A line of a text progress bar (tqdm and the like): "name:  40%|████      | 19/47 [00:27<00:42, 1.52s/it]".
PROGRESS_LINE = re.compile(r"^[^\n]*\d+%\|[^\n]*\|[^\n]*\[[^\n]*\]\s*$")


def _is_progress_bar(line: str) -> bool:
    return bool(PROGRESS_LINE.match(line.rstrip("\n")))


def _stream_lines(text: str) -> list[str]:
    """A stream's lines, a carriage return (a bar redrawn in place) ending a line too."""
    return re.split(r"(?<=\n)|\r", text)


def _is_stderr(output) -> bool:
    return output.get("output_type") == "stream" and output.get("name") == "stderr"


def progress_bar_lines(outputs: list) -> int:
    """How many progress-bar lines the stderr outputs of a cell hold."""
    return sum(_is_progress_bar(line) for output in outputs if _is_stderr(output) for line in _stream_lines(output["text"]))


def strip_progress_bars(outputs: list) -> list:
    """The outputs without progress-bar lines on stderr (they are noise once the run is over)."""
    kept = []
    for output in outputs:
        if _is_stderr(output):
            text = "".join(line for line in _stream_lines(output["text"]) if line.strip() and not _is_progress_bar(line))
            if not text:
                continue
            output["text"] = text
        kept.append(output)
    return kept
