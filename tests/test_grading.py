"""The grader on Chapter 01: full marks, zero, and every way a learner can go wrong."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest

from course_lib.tooling.cli import main as course_main
from course_lib.tooling.grading import grade_submission
from course_lib.tooling.notebook_io import write_notebook

pytestmark = pytest.mark.notebook

ASSIGNMENT = "01_bradley_terry"
FUNCTIONS = {"ex1": "def win_probability", "ex2": "def mean_nll", "ex3": "def elo_update", "ex4": "def fit_bt_gradient_descent"}
CELL_TIMEOUT = 20  # generous: CI shares 2 cores between two test workers


def _cell_index(nb, marker: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.lstrip().startswith(marker))


def submission(root: Path, solved=(), replace=None) -> nbformat.NotebookNode:
    """The exercise with some functions copied from the solution and others replaced by given code."""
    exercise = nbformat.read(root / "exercises" / f"{ASSIGNMENT}.ipynb", 4)
    solution = nbformat.read(root / "solutions" / f"{ASSIGNMENT}.ipynb", 4)
    for name in solved:
        marker = FUNCTIONS[name]
        exercise.cells[_cell_index(exercise, marker)].source = solution.cells[_cell_index(solution, marker)].source
    for name, code in (replace or {}).items():
        exercise.cells[_cell_index(exercise, FUNCTIONS[name])].source = code
    return exercise


@pytest.fixture(scope="module")
def graded(root, kernel_name, tmp_path_factory):
    """Grade a folder of submissions once, through the command line, and return the JSON report."""
    folder = tmp_path_factory.mktemp("submissions")
    cases = {
        "full_marks": submission(root, solved=FUNCTIONS),
        "untouched": submission(root),
        "infinite_loop": submission(root, solved=("ex1", "ex2", "ex4"), replace={"ex3": "def elo_update(r_winner, r_loser, k=32.0):\n    while True:\n        pass"}),
        "exception": submission(root, solved=("ex1", "ex3", "ex4"), replace={"ex2": "def mean_nll(scores, winners, losers):\n    return 1 / 0"}),
        "tampered_tests": submission(root, solved=("ex1",)),
        "kernel_dies": submission(root, solved=("ex1", "ex3", "ex4"), replace={"ex2": "import os\nos._exit(1)"}),
        "deleted_cell": submission(root, solved=FUNCTIONS),
    }
    tampered = cases["tampered_tests"]
    for cell in tampered.cells:
        if "reward_course" in cell.metadata:
            cell.source = "pass  # the learner replaced the tests"
    deleted = cases["deleted_cell"]
    deleted.cells = [c for c in deleted.cells if c.metadata.get("reward_course", {}).get("grade_id") != "ex2_mean_nll"]
    for name, nb in cases.items():
        write_notebook(nb, folder / f"{name}.ipynb")
    (folder / "not_a_notebook.ipynb").write_text("{ this is not json")
    output = tmp_path_factory.mktemp("grades")
    started = time.monotonic()
    code = course_main(["grade", str(folder), "--output", str(output), "--cell-timeout", str(CELL_TIMEOUT), "--timeout", "240"])
    elapsed = time.monotonic() - started
    assert code == 0
    records = json.loads((output / "grades.json").read_text())
    return {Path(r["submission"]).stem: r for r in records} | {"_elapsed": elapsed, "_csv": (output / "grades.csv").read_text()}


def scores(record) -> dict[str, float]:
    return {q["grade_id"]: q["points"] for q in record["questions"]}


def test_solution_gets_full_marks(graded):
    record = graded["full_marks"]
    assert record["max_score"] == 8
    assert record["score"] == 8, record["questions"]


def test_untouched_exercise_scores_zero(graded):
    record = graded["untouched"]
    assert record["score"] == 0
    assert all("NotImplementedError" in q["message"] for q in record["questions"])


def test_infinite_loop_costs_only_its_question(graded):
    record = graded["infinite_loop"]
    assert scores(record) == {"ex1_win_probability": 1, "ex2_mean_nll": 2, "ex3_elo_update": 0, "ex4_fit_gradient_descent": 3}
    (ex3,) = [q for q in record["questions"] if q["grade_id"] == "ex3_elo_update"]
    assert ex3["status"] == "timeout"


def test_exception_costs_only_its_question(graded):
    record = graded["exception"]
    assert record["score"] == 6
    (ex2,) = [q for q in record["questions"] if q["grade_id"] == "ex2_mean_nll"]
    assert ex2["status"] == "failed" and "ZeroDivisionError" in ex2["message"]


def test_editing_the_tests_does_not_help(graded):
    assert scores(graded["tampered_tests"]) == {"ex1_win_probability": 1, "ex2_mean_nll": 0, "ex3_elo_update": 0, "ex4_fit_gradient_descent": 0}


def test_deleted_graded_cell_scores_zero(graded):
    record = graded["deleted_cell"]
    (ex2,) = [q for q in record["questions"] if q["grade_id"] == "ex2_mean_nll"]
    assert ex2["status"] == "missing" and record["score"] == 6


def test_dead_kernel_keeps_earlier_points(graded):
    record = graded["kernel_dies"]
    assert scores(record)["ex1_win_probability"] == 1 and record["score"] == 1
    assert {q["status"] for q in record["questions"][1:]} <= {"failed", "not run"}


def test_unreadable_submission_is_reported_not_fatal(graded):
    record = graded["not_a_notebook"]
    assert record["score"] == 0 and "not a readable Jupyter notebook" in record["error"]


def test_csv_has_one_row_per_submission(graded):
    lines = graded["_csv"].strip().splitlines()
    assert lines[0].startswith("submission,assignment,ex1_win_probability")
    assert len(lines) == 1 + 8


def test_whole_notebook_time_limit_is_enforced(root, kernel_name, tmp_path):
    looping = submission(root, replace={name: f"{marker}(*args, **kwargs):\n    while True:\n        pass" for name, marker in FUNCTIONS.items()})
    path = tmp_path / "all_loops.ipynb"
    write_notebook(looping, path)
    started = time.monotonic()
    grade = grade_submission(path, root / "solutions", kernel_name=kernel_name, timeout=12, cell_timeout=5)
    assert time.monotonic() - started < 45
    assert grade.score == 0
    assert {q.status for q in grade.questions} <= {"timeout", "not run"}
    assert "not run" in {q.status for q in grade.questions}
