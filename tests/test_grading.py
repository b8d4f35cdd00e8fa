"""The grader on Chapter 01: full marks, zero, every way a learner can go wrong, and every
way a learner's notebook can try to fool the grader (each must leave unsolved parts at zero)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from filelock import FileLock

from course_lib.tooling.cli import main as course_main
from course_lib.tooling.exercises import graded_cells
from course_lib.tooling.grade_harness import IsolatedTestRunner
from course_lib.tooling.grading import grade_submission, trusted_preamble
from course_lib.tooling.notebook_io import read_notebook, write_notebook

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


def with_cell(nb, code: str, *, where: str = "first") -> nbformat.NotebookNode:
    """Insert a code cell first, right after the setup cell (``import numpy ...``), or last."""
    index = {"first": 0, "after_setup": _cell_index(nb, "import numpy") + 1, "last": len(nb.cells)}[where]
    nb.cells.insert(index, nbformat.v4.new_code_cell(code))
    return nb


# Wrong answers that pass the tests once abs, np.allclose and course_lib are patched: the old
# single-kernel grader gave them 8 / 8.
WRONG = {
    "ex1": "def win_probability(s_a, s_b):\n    return np.where(np.asarray(s_a) > np.asarray(s_b), 1.0, 0.0)",
    "ex2": "def mean_nll(scores, winners, losers):\n    return 0.0",
    "ex3": "def elo_update(r_winner, r_loser, k=32.0):\n    return 1016.0, 984.0",
    "ex4": "def fit_bt_gradient_descent(winners, losers, n_players, lr=0.5, steps=2000):\n    return np.zeros(n_players)",
}
SWALLOW_ERRORS = "get_ipython().set_custom_exc((BaseException,), lambda *args, **kwargs: None)"
SILENCE = (
    "import io, sys\n"
    "shell = get_ipython()\n"
    "shell.showtraceback = shell._showtraceback = lambda *args, **kwargs: None\n"
    "sys.stdout, sys.stderr = io.StringIO(), io.StringIO()"
)
REPLACE_DISPLAY_HOOKS = (
    "import sys\n"
    "sys.displayhook = lambda value: None\n"
    "get_ipython().display_pub.publish = lambda *args, **kwargs: None\n"
    "get_ipython().displayhook.__class__.__call__ = lambda *args, **kwargs: None"
)
MONKEYPATCH = (  # what the chapter-01 tests call: abs, np.allclose, np.abs and course_lib's helpers
    "import builtins, math, types\n"
    "import numpy, numpy.testing, torch\n"
    "builtins.abs = lambda x: 0.0\n"
    "numpy.allclose = lambda *args, **kwargs: True\n"
    "numpy.testing.assert_allclose = lambda *args, **kwargs: None\n"
    "torch.allclose = lambda *args, **kwargs: True\n"
    "math.isclose = lambda *args, **kwargs: True\n"
    "bt.fit_bradley_terry = lambda winners, losers, n, **kwargs: numpy.zeros(n)\n"
    "bt.elo_ratings = lambda *args, **kwargs: 0.0\n"
    "bt = types.SimpleNamespace(**vars(bt))  # a look-alike module in the namespace\n"
    "abs = lambda x: 0.0  # and a global that hides the builtin"
)
PATCH_WHEN_UNPICKLED = (
    "import cloudpickle.cloudpickle\n"
    "class PatchNumpyWhenLoaded:\n"
    "    def __reduce__(self):\n"
    "        return (cloudpickle.cloudpickle.subimport, ('numpy',), {'allclose': lambda *args, **kwargs: True})\n"
    "sneaky = PatchNumpyWhenLoaded()"
)


def once_per_run(tmp_path_factory, name: str, produce):
    """``produce()``, computed by one pytest-xdist worker and read from a file by the others."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return produce()
    shared = tmp_path_factory.getbasetemp().parent / f"{name}.json"
    with FileLock(f"{shared}.lock"):
        if not shared.is_file():
            shared.write_text(json.dumps(produce()))
        return json.loads(shared.read_text())


@pytest.fixture(scope="module")
def graded(root, kernel_name, tmp_path_factory):
    """Grade a folder of submissions once (per test run), through the command line, and return the JSON report."""
    return once_per_run(tmp_path_factory, "graded_submissions", lambda: grade_folder(root, tmp_path_factory))


def grade_folder(root: Path, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("submissions")
    cases = {
        "full_marks": submission(root, solved=FUNCTIONS),
        "untouched": submission(root),
        "infinite_loop": submission(root, solved=("ex1", "ex2", "ex4"), replace={"ex3": "def elo_update(r_winner, r_loser, k=32.0):\n    while True:\n        pass"}),
        "exception": submission(root, solved=("ex1", "ex3", "ex4"), replace={"ex2": "def mean_nll(scores, winners, losers):\n    return 1 / 0"}),
        "tampered_tests": submission(root, solved=("ex1",)),
        "kernel_dies": submission(root, solved=("ex1", "ex3", "ex4"), replace={"ex2": "import os\nos._exit(1)"}),
        "deleted_cell": submission(root, solved=FUNCTIONS),
        "swallowed_errors": with_cell(submission(root), SWALLOW_ERRORS),
        "silenced_errors": with_cell(submission(root), SILENCE),
        "replaced_display_hooks": with_cell(submission(root), REPLACE_DISPLAY_HOOKS),
        "monkeypatched": with_cell(submission(root, replace=WRONG), MONKEYPATCH, where="after_setup"),
        "exit_after_tampering": with_cell(with_cell(submission(root), SWALLOW_ERRORS), "import os\nos._exit(0)", where="last"),
        "patch_when_unpickled": with_cell(submission(root, replace=WRONG), PATCH_WHEN_UNPICKLED, where="after_setup"),
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
    assert len(lines) == 1 + 14


@pytest.mark.parametrize("case", ["swallowed_errors", "silenced_errors", "replaced_display_hooks", "exit_after_tampering"])
def test_tampering_with_the_kernel_leaves_unsolved_parts_at_zero(graded, case):
    record = graded[case]
    assert record["max_score"] == 8 and record["score"] == 0, record["questions"]
    expected = "not run" if case == "exit_after_tampering" else "failed"
    assert {q["status"] for q in record["questions"]} == {expected} or case == "exit_after_tampering"


def test_monkeypatched_libraries_do_not_reach_the_tests(graded):
    record = graded["monkeypatched"]
    assert record["score"] == 0, record["questions"]
    assert all(q["status"] == "failed" and q["message"].startswith("AssertionError") for q in record["questions"])


def test_a_snapshot_that_patches_a_library_when_loaded_is_refused(graded):
    record = graded["patch_when_unpickled"]
    assert record["score"] == 0
    for question in record["questions"][1:]:  # ex1's cell comes before `sneaky` is defined
        assert "refused to load your variables" in question["message"] and "module numpy" in question["message"]


def test_corrupt_submission_scores_zero_of_the_assignments_maximum(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{ this is not json")
    output = tmp_path / "grades"
    assert course_main(["grade", str(tmp_path / "broken.ipynb"), "--assignment", ASSIGNMENT, "--output", str(output)]) == 0
    (record,) = json.loads((output / "grades.json").read_text())
    assert (record["score"], record["max_score"]) == (0, 8)
    assert "not a readable Jupyter notebook" in record["error"]


def test_kernel_that_ignores_the_interrupt_is_restarted_and_replayed(root, kernel_name, tmp_path):
    runs = tmp_path / "setup_runs.txt"
    nb = with_cell(submission(root, solved=FUNCTIONS), f"open({str(runs)!r}, 'a').write('ran\\n')", where="after_setup")
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.1)"
    nb.cells.insert(_cell_index(nb, FUNCTIONS["ex2"]) + 1, nbformat.v4.new_code_cell(stubborn))
    write_notebook(nb, tmp_path / "stubborn.ipynb")
    grade = grade_submission(tmp_path / "stubborn.ipynb", root / "solutions", kernel_name=kernel_name, timeout=120, cell_timeout=4)
    assert runs.read_text() == "ran\nran\n", "the cells before the stuck one run again in the restarted kernel"
    assert grade.score == 8, grade.questions


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


# The guarded loader, without a kernel: snapshots written by a script (as a kernel would),
# loaded by a test server for chapter 01. A probe test checks the libraries are intact.
ATTACKS = """
import collections, dataclasses, json, sys, threading, warnings
import numpy, torch
import cloudpickle.cloudpickle as cp
from course_lib import bradley_terry as bt
from course_lib.tooling.grade_harness import save_namespace

def always(*args, **kwargs):
    return True

def attack(reduce_value):
    return type("Attack", (), {"__reduce__": lambda self: reduce_value})()

class PatchInSetstate:
    def __init__(self):
        self.armed = True
    def __setstate__(self, state):
        numpy.allclose = always

Point = collections.namedtuple("Point", "x y")

@dataclasses.dataclass(frozen=True)
class Key:
    name: str

def area(side):
    return side * side

class Doubler(torch.nn.Module):
    def forward(self, x):
        return 2 * x

attacks = {
    "exec": attack((exec, ("import numpy; numpy.allclose = lambda *a, **k: True",))),
    "setattr": attack((setattr, (numpy, "allclose", always))),
    "module_state": attack((cp.subimport, ("numpy",), {"allclose": always})),
    "function_code": attack((cp._function_setstate, (bt.win_probability, ({}, {
        "__globals__": {}, "__closure__": None, "_cloudpickle_submodules": [], "__code__": always.__code__})))),
    "class_attributes": attack((cp._class_setstate, (torch.nn.Linear, ({"forward": always}, {})))),
    "warnings_filters": attack((getattr, (warnings, "filters"), None, iter([("ignore", None, Warning, None, 12345)]))),
    "thread": attack((threading.Timer, (0.01, always))),
    "setstate": PatchInSetstate(),
    "unsupported": attack((json.loads, ("[1]",))),
}
for name, value in attacks.items():
    save_namespace({"sneaky": value, "area": area}, f"{sys.argv[1]}/{name}.pkl")
head = torch.nn.Linear(3, 1)
save_namespace(dict(array=numpy.arange(4.0), tensor=torch.ones(2, requires_grad=True), head=head,
                    optimizer=torch.optim.Adam(head.parameters(), lr=0.1), point=Point(1, 2), area=area,
                    doubler=Doubler(), rng=numpy.random.default_rng(1), keyed={Key("a"): 1}), f"{sys.argv[1]}/honest.pkl")
"""
PROBE = """
import numpy, torch, warnings
assert not numpy.allclose(0.0, 1.0), "numpy.allclose was patched"
assert bt.win_probability(0.0, 0.0) == 0.5, "course_lib was patched"
assert torch.nn.Linear(2, 1).forward.__func__ is torch.nn.modules.linear.Linear.forward
assert not any(f[4] == 12345 for f in warnings.filters), "warnings.filters was changed"
assert area(3) == 9
"""
HONEST = """
import torch
assert area(3) == 9 and float(array.sum()) == 6.0 and tensor.requires_grad
assert head(torch.zeros(1, 3)).shape == (1, 1) and optimizer.param_groups[0]["lr"] == 0.1
assert point.x == 1 and float(doubler(torch.ones(1))) == 2.0 and 0 <= rng.random() < 1
"""


@pytest.fixture(scope="module")
def test_server(root, tmp_path_factory):
    """Attack snapshots written by a separate Python (as the learner's kernel would) and a chapter-01 test server."""
    folder = tmp_path_factory.mktemp("snapshots")
    subprocess.run([sys.executable, "-c", ATTACKS, str(folder)], check=True, cwd=folder)
    solution = read_notebook(root / "solutions" / f"{ASSIGNMENT}.ipynb")
    assert [c.grade_id for c in graded_cells(solution, ASSIGNMENT)][0] == "ex1_win_probability"
    server = IsolatedTestRunner(trusted_preamble(solution), folder / "server")
    yield lambda name, source: server.run(snapshot=folder / f"{name}.pkl", source=source, grade_id=name,
                                          cwd=folder, timeout=CELL_TIMEOUT)
    server.close()


@pytest.mark.parametrize("case, reason", [
    ("exec", "call builtins.exec"),
    ("setattr", "call builtins.setattr"),
    ("module_state", "change module numpy"),
    ("function_code", "replace the code or globals of course_lib.bradley_terry.win_probability"),
    ("class_attributes", "replace the attributes of torch.nn.modules.linear.Linear"),
    ("warnings_filters", "change a builtins.list object"),
    ("thread", "threading.Timer"),
])
def test_snapshot_that_tampers_while_loading_is_refused(test_server, case, reason):
    reply = test_server(case, PROBE)
    assert reply["status"] == "refused" and reason in reply["message"], reply


def test_variable_whose_loading_runs_learner_code_is_left_out(test_server):
    reply = test_server("setstate", PROBE)
    assert reply["status"] == "passed", reply  # numpy.allclose was never patched
    assert any("'sneaky' was left out" in note and "__setstate__" in note for note in reply["notes"])


def test_variable_the_loader_cannot_rebuild_is_reported_when_missing(test_server):
    reply = test_server("unsupported", PROBE + "sneaky\n")
    assert reply["status"] == "failed" and "NameError" in reply["message"]
    assert any("'sneaky' was not carried over" in note and "json.loads" in note for note in reply["notes"])


def test_honest_variables_reach_the_test(test_server):
    reply = test_server("honest", HONEST)
    assert reply["status"] == "passed", reply


@pytest.mark.parametrize("assignment", ["05_curriculum", "07_dpo", "08_grpo"])
def test_newest_chapter_solution_scores_full_marks_and_its_exercise_zero(root, tmp_path, assignment):
    """The grader on a chapter's own exercise: the solution earns every point, the untouched exercise none."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    exercise = read_notebook(root / "exercises" / f"{assignment}.ipynb")
    solution = read_notebook(root / "solutions" / f"{assignment}.ipynb")
    write_notebook(exercise, folder / "untouched.ipynb")
    for cell in exercise.cells:  # the learner's copy, every exercise cell filled in from the solution
        if cell.cell_type == "code" and "NotImplementedError" in cell.source:
            marker = cell.source.lstrip().split("(")[0]
            cell.source = next(c.source for c in solution.cells if c.cell_type == "code" and c.source.lstrip().startswith(marker))
    write_notebook(exercise, folder / "solved.ipynb")
    output = tmp_path / "grades"
    code = course_main(["grade", str(folder), "--output", str(output), "--assignment", assignment,
                        "--cell-timeout", "60", "--timeout", "300"])
    assert code == 0
    records = {Path(r["submission"]).stem: r for r in json.loads((output / "grades.json").read_text())}
    maximum = sum(c.points for c in graded_cells(solution))
    assert records["solved"]["max_score"] == maximum >= 6
    assert records["solved"]["score"] == maximum, records["solved"]["questions"]
    assert records["untouched"]["score"] == 0
    assert all("NotImplementedError" in q["message"] for q in records["untouched"]["questions"])
