"""Grade submitted exercise notebooks.

Each submission runs in a fresh kernel, one cell at a time, in a scratch folder.
Before running, every graded test cell is replaced by the solution's version
(hidden tests included), so editing a test does not help and a deleted test
cell scores zero. A cell's points are earned when it runs without an error. A
learner's exception, infinite loop (interrupted after ``cell_timeout`` seconds),
dead kernel or unreadable file costs points; it never stops the grader, and the
whole notebook never runs longer than ``timeout`` seconds.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .exercises import METADATA_KEY, graded_cells
from .notebook_io import read_notebook, write_text_atomic


@dataclass
class QuestionScore:
    grade_id: str
    points: float
    max_points: float
    status: str  # passed | failed | timeout | missing | not run
    message: str = ""


@dataclass
class NotebookGrade:
    submission: str
    assignment: str
    questions: list[QuestionScore] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def max_score(self) -> float:
        return sum(q.max_points for q in self.questions)


def _assignment_of(submission, path: Path, assignment: str | None) -> str:
    if assignment:
        return assignment
    name = submission.metadata.get(METADATA_KEY, {}).get("assignment")
    if not name:
        raise ValueError(
            f"{path}: the notebook does not say which assignment it is "
            "(metadata 'reward_course.assignment' is missing); pass --assignment"
        )
    return name


def _error_message(cell) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()[:300]
    return ""


def _was_interrupted(cell) -> bool:
    """Whether the cell was stopped by the grader's time limit (an interrupt shows as KeyboardInterrupt)."""
    return any(
        output.get("output_type") == "error" and output.get("ename") in ("CellTimeoutError", "KeyboardInterrupt")
        for output in cell.get("outputs", [])
    )


def _prepare(submission, solution_cells) -> tuple[object, dict[str, int]]:
    """The notebook to run and where each graded cell sits in it."""
    notebook = copy.deepcopy(submission)
    by_id = {c.grade_id: c for c in solution_cells}
    positions: dict[str, int] = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.outputs = []
        grade_id = cell.get("metadata", {}).get(METADATA_KEY, {}).get("grade_id")
        if grade_id in by_id and grade_id not in positions and cell.cell_type == "code":
            cell.source = by_id[grade_id].source
            positions[grade_id] = index
    return notebook, positions


def _run_cells(notebook, kernel_name: str, timeout: float, cell_timeout: float, workdir: Path) -> dict[int, str]:
    """Run code cells in order; return the status of each index that did not pass."""
    statuses: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=cell_timeout,
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": f"cell ran longer than {cell_timeout:g} s"},
        resources={"metadata": {"path": str(workdir)}},
    )
    code_cells = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    with client.setup_kernel():
        for position, (index, cell) in enumerate(code_cells):
            remaining = deadline - time.monotonic()
            if remaining <= 1:
                for later, _ in code_cells[position:]:
                    statuses[later] = "not run"
                break
            client.timeout = int(max(1, min(cell_timeout, remaining)))
            try:
                client.execute_cell(cell, index)
            except (CellTimeoutError, TimeoutError):
                statuses[index] = "timeout"
            except DeadKernelError:
                statuses[index] = "failed"
                cell.outputs = [{"output_type": "error", "ename": "DeadKernelError", "evalue": "the kernel died", "traceback": []}]
                for later, _ in code_cells[position + 1 :]:
                    statuses[later] = "not run"
                break
            if index not in statuses and _error_message(cell):
                statuses[index] = "timeout" if _was_interrupted(cell) else "failed"
    return statuses


def grade_submission(
    path: str | Path,
    solutions_dir: str | Path,
    *,
    assignment: str | None = None,
    kernel_name: str = "python3",
    timeout: float = 300,
    cell_timeout: float = 60,
) -> NotebookGrade:
    """Grade one submitted notebook against ``solutions_dir/<assignment>.ipynb``."""
    path = Path(path)
    started = time.monotonic()
    grade = NotebookGrade(submission=path.name, assignment=assignment or "?")
    try:
        submission = read_notebook(path)
        grade.assignment = _assignment_of(submission, path, assignment)
    except (ValueError, FileNotFoundError) as error:
        grade.error = str(error)
        return grade
    solution_path = Path(solutions_dir) / f"{grade.assignment}.ipynb"
    solution_cells = graded_cells(read_notebook(solution_path), str(solution_path))
    notebook, positions = _prepare(submission, solution_cells)
    with tempfile.TemporaryDirectory(prefix="grading-") as workdir:
        try:
            statuses = _run_cells(notebook, kernel_name, timeout, cell_timeout, Path(workdir))
        except Exception as error:  # the kernel could not start, or nbclient failed
            grade.error = f"could not run the notebook: {type(error).__name__}: {error}"
            statuses = {index: "not run" for index in positions.values()}
    for graded in solution_cells:
        index = positions.get(graded.grade_id)
        if index is None:
            grade.questions.append(QuestionScore(graded.grade_id, 0.0, graded.points, "missing", "graded cell was deleted"))
            continue
        status = statuses.get(index, "passed")
        message = _error_message(notebook.cells[index]) if status == "failed" else ""
        if status == "timeout":
            message = f"stopped after the {cell_timeout:g} s cell time limit"
        points = graded.points if status == "passed" else 0.0
        grade.questions.append(QuestionScore(graded.grade_id, points, graded.points, status, message))
    grade.seconds = round(time.monotonic() - started, 1)
    return grade


def write_grade_reports(grades: list[NotebookGrade], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``grades.json`` (everything) and ``grades.csv`` (one row per submission)."""
    output_dir = Path(output_dir)
    json_path, csv_path = output_dir / "grades.json", output_dir / "grades.csv"
    records = [{**asdict(g), "score": g.score, "max_score": g.max_score} for g in grades]
    write_text_atomic(json_path, json.dumps(records, indent=2) + "\n")
    grade_ids = list(dict.fromkeys(q.grade_id for g in grades for q in g.questions))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["submission", "assignment", *grade_ids, "score", "max_score", "error"])
    for g in grades:
        by_id = {q.grade_id: q.points for q in g.questions}
        writer.writerow([g.submission, g.assignment, *(by_id.get(i, "") for i in grade_ids), g.score, g.max_score, g.error])
    write_text_atomic(csv_path, buffer.getvalue())
    return json_path, csv_path


def format_grade_table(grades: list[NotebookGrade]) -> str:
    """A plain-text table: one block per submission, one line per question."""
    lines = []
    for g in grades:
        lines.append(f"{g.submission} ({g.assignment}): {g.score:g} / {g.max_score:g} points  [{g.seconds:g} s]")
        if g.error:
            lines.append(f"  error: {g.error}")
        for q in g.questions:
            detail = f"  {q.message}" if q.message else ""
            lines.append(f"  {q.grade_id:<28} {q.points:>4g} / {q.max_points:<4g} {q.status}{detail}")
    return "\n".join(lines)
