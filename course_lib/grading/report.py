"""Grades as records, ``grades.json`` and ``grades.csv``, and a printed table.

Defined for the course's grading.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..tooling.notebook_io import write_text_atomic


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
