"""The grader on Chapter 01: full marks, zero, every way a learner can go wrong, and every
way a learner's notebook can try to fool the grader (each must leave unsolved parts at zero)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from filelock import FileLock

from course_lib.grading.grader import grade_submission
from course_lib.grading.harness import IsolatedTestRunner
from course_lib.grading.sources import solution_imports, trusted_preamble
from course_lib.tooling.cli import main as course_main
from course_lib.tooling.exercises import graded_cells
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
PATCH_WHEN_UNPICKLED = (  # a grader that pickled the learner's variables would patch numpy loading this one
    "import numpy\n"
    "class PatchNumpyWhenLoaded:\n"
    "    def __reduce__(self):\n"
    "        return (setattr, (numpy, 'allclose', lambda *args, **kwargs: True))\n"
    "sneaky = PatchNumpyWhenLoaded()"
)
PATCH_IN_DEFINITIONS = (  # the test process replays class statements, so this class body runs there too
    "import builtins, math, numpy, numpy.testing, torch\n"
    "class Sneaky:\n"
    "    builtins.abs = lambda x: 0.0\n"
    "    numpy.allclose = lambda *args, **kwargs: True\n"
    "    numpy.testing.assert_allclose = lambda *args, **kwargs: None\n"
    "    math.isclose = lambda *args, **kwargs: True\n"
    "    bt.fit_bradley_terry = lambda winners, losers, n, **kwargs: numpy.zeros(n)\n"
    "    bt.elo_ratings = lambda *args, **kwargs: 0.0\n"
    "    bt.win_probability.__code__ = (lambda s_a, s_b: numpy.where(numpy.asarray(s_a) > numpy.asarray(s_b), 1.0, 0.0)).__code__"
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
        "sys_exit_after_tampering": with_cell(with_cell(submission(root), SWALLOW_ERRORS), "import sys\nsys.exit(0)", where="last"),
        "patch_when_unpickled": with_cell(submission(root, replace=WRONG), PATCH_WHEN_UNPICKLED, where="after_setup"),
        "patch_in_definitions": with_cell(submission(root, replace=WRONG), PATCH_IN_DEFINITIONS, where="after_setup"),
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
    assert len(lines) == 1 + 16


@pytest.mark.parametrize("case", ["swallowed_errors", "silenced_errors", "replaced_display_hooks", "exit_after_tampering",
                                  "sys_exit_after_tampering"])
def test_tampering_with_the_kernel_leaves_unsolved_parts_at_zero(graded, case):
    record = graded[case]
    assert record["max_score"] == 8 and record["score"] == 0, record["questions"]
    expected = "not run" if case == "exit_after_tampering" else "failed"
    assert {q["status"] for q in record["questions"]} == {expected} or case == "exit_after_tampering"


def test_monkeypatched_libraries_do_not_reach_the_tests(graded):
    record = graded["monkeypatched"]
    assert record["score"] == 0, record["questions"]
    assert all(q["status"] == "failed" and q["message"].startswith("AssertionError") for q in record["questions"])


def test_a_variable_built_to_patch_a_library_when_loaded_is_never_loaded(graded):
    record = graded["patch_when_unpickled"]
    assert record["score"] == 0, record["questions"]
    assert all(q["status"] == "failed" and q["message"].startswith("AssertionError") for q in record["questions"])


def test_patches_made_by_replayed_definitions_are_undone_before_the_tests(graded):
    record = graded["patch_in_definitions"]
    assert record["score"] == 0, record["questions"]
    for question in record["questions"]:
        assert question["status"] == "failed" and question["message"].startswith("AssertionError"), question
        assert "replaying your definitions changed" in question["message"] and "numpy.allclose" in question["message"]


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


# The test process without a kernel: snapshots written by a separate Python (as the learner's
# kernel would), loaded by a chapter-01 test server. A probe test checks the libraries are intact.
DEFINITIONS = """
import numpy, torch
import torch.nn.functional as F

def area(side):
    return side * side

square = lambda x: area(x)

class Doubler(torch.nn.Module):
    def forward(self, x):
        return 2 * x

def _first_score():
    return nested[3][0]

sigmoid = torch.sigmoid
"""
HONEST_CELL = DEFINITIONS + """
array, scalar, tensor = numpy.arange(4.0), numpy.float32(2.5), torch.ones(2, requires_grad=True)
nested = {"pairs": (torch.zeros(2), numpy.ones(3)), 3: [1.5, None, "x", {1, 2}], "size": torch.Size([2, 3]), b"k": 1j}
"""
NOT_DATA_CELL = DEFINITIONS + """
head = torch.nn.Linear(3, 1)
made = (lambda: lambda: 1)()
"""
HONEST = """
import torch
assert area(3) == 9 and square(4) == 16 and float(array.sum()) == 6.0 and tensor.requires_grad
assert scalar.dtype == numpy.float32 and isinstance(nested["pairs"], tuple) and nested[3][3] == {1, 2}
assert nested["size"] == torch.Size([2, 3]) and nested[b"k"] == 1j and _first_score() == 1.5
assert float(Doubler()(torch.ones(1))) == 2.0 and sigmoid is torch.sigmoid and F is torch.nn.functional
"""
PROBE = """
import math, numpy, torch, warnings, time
time.sleep(0.2)  # a timer or thread the definitions started would fire now
assert not numpy.allclose(0.0, 1.0), "numpy.allclose was patched"
assert bt.win_probability(0.0, 0.0) == 0.5 and bt.win_probability(5.0, 0.0) < 1.0, "course_lib was patched"
assert abs(-1) == 1 and not math.isclose(0.0, 1.0), "a builtin or math was patched"
assert not any(f[4] == 12345 for f in warnings.filters), "warnings.filters was changed"
"""
ALWAYS = "lambda *args, **kwargs: True"
TAMPERING_DEFINITIONS = {  # each replayed in the test process before PROBE; what the note must name
    "class_body": (f"import numpy\nclass Sneaky:\n    numpy.allclose = {ALWAYS}", "numpy.allclose"),
    "decorator": ("@(lambda f: setattr(bt.win_probability, '__code__', (lambda s_a, s_b: 1.0).__code__) or f)\n"
                  "def decorated():\n    pass", "bradley_terry.win_probability"),
    "default_value": ("import warnings\ndef f(x=warnings.filters.insert(0, ('ignore', None, Warning, None, 12345))):\n"
                      "    pass", "warnings.filters"),
    "builtins_and_sys_modules": ("import sys\nclass Sneaky:\n    import builtins\n    builtins.abs = lambda x: 0\n"
                                 f"    sys.modules['math'].isclose = {ALWAYS}", "builtins.abs"),
    "signal_timer": ("import signal, numpy\nclass Sneaky:\n"
                     f"    signal.signal(signal.SIGALRM, lambda *args: setattr(numpy, 'allclose', {ALWAYS}))\n"
                     "    signal.setitimer(signal.ITIMER_REAL, 0.1)", "ITIMER_REAL"),
    "profile_function": ("import sys, numpy\ndef profile(*args):\n"
                         f"    numpy.allclose = {ALWAYS}\nclass Sneaky:\n    sys.setprofile(profile)", "the profile function"),
    "del_of_what_the_grader_puts_back": ("import numpy\nclass Repatch:\n    def __call__(self, *args, **kwargs):\n"
                                         "        return True\n    def __del__(self):\n"
                                         f"        numpy.allclose = {ALWAYS}\n"
                                         "class Sneaky:\n    numpy.allclose = Repatch()", "numpy.allclose"),
    "del_of_a_definition_the_grader_drops": ("class Repatch:\n    def __del__(self):\n        import numpy\n"
                                             f"        numpy.allclose = {ALWAYS}\n"
                                             "def dropped(x=Repatch()):  # not in the snapshot: as if deleted later\n"
                                             "    pass", ""),
    "audit_hook": (f"import sys, numpy\nclass Sneaky:\n    sys.addaudithook(lambda event, args: setattr(numpy, 'allclose', {ALWAYS}))",
                   ""),
}
WRITE_SNAPSHOTS = """
import json, sys
import numpy, torch
from course_lib.grading.snapshot import ARRAYS, MANIFEST, TENSORS, save

folder = sys.argv[1]
for name, source in json.loads(sys.argv[2]).items():
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    save(namespace, f"{folder}/{name}")

class RunsCode:  # what a forged file could hold: an object whose unpickling writes a file
    def __reduce__(self):
        return (exec, (f"open({folder!r} + '/ran', 'w').close()",))

save({"x": torch.zeros(1)}, f"{folder}/forged_tensors")
torch.save([RunsCode()], f"{folder}/forged_tensors/{TENSORS}")
save({"x": numpy.zeros(1)}, f"{folder}/forged_arrays")
numpy.savez(f"{folder}/forged_arrays/{ARRAYS}", numpy.array([RunsCode()], dtype=object), allow_pickle=True)
save({}, f"{folder}/forged_manifest")
with open(f"{folder}/forged_manifest/{MANIFEST}", "w") as file:
    json.dump({"data": {"x": ["eval", "open('ran', 'w')"]}, "references": {}, "others": {}}, file)
"""


@pytest.fixture(scope="module")
def test_server(root, tmp_path_factory):
    """Snapshots written by a separate Python, and a chapter-01 test server; ``run(snapshot, cells, source)``."""
    folder = tmp_path_factory.mktemp("snapshots")
    cells = {"honest": HONEST_CELL, "not_data": NOT_DATA_CELL, "empty": ""}
    subprocess.run([sys.executable, "-c", WRITE_SNAPSHOTS, str(folder), json.dumps(cells)], check=True, cwd=folder)
    solution = read_notebook(root / "solutions" / f"{ASSIGNMENT}.ipynb")
    server = IsolatedTestRunner(trusted_preamble(solution), folder / "server", warm_up=solution_imports(solution))

    def run(name: str, cells: str, source: str) -> dict:
        return server.run(snapshot=folder / name, cells=[("<your cell 1>", cells)], source=source, grade_id=name,
                          cwd=folder, timeout=CELL_TIMEOUT)

    run.folder = folder
    yield run
    server.close()


def test_honest_variables_and_definitions_reach_the_test(test_server):
    reply = test_server("honest", HONEST_CELL, HONEST + PROBE)
    assert reply["status"] == "passed" and reply["notes"] == [], reply


def test_a_value_that_is_not_data_is_named_when_the_test_needs_it(test_server):
    reply = test_server("not_data", NOT_DATA_CELL, PROBE + "head\n")
    assert reply["status"] == "failed" and "NameError" in reply["message"], reply
    assert any("'head' was not carried over" in note and "torch.nn.modules.linear.Linear" in note for note in reply["notes"])
    reply = test_server("not_data", NOT_DATA_CELL, "made\n")
    assert any("'made' was not carried over (a function defined in your notebook" in note for note in reply["notes"])


@pytest.mark.parametrize("case, reason", [
    ("forged_tensors", "tensors.pt holds more than tensors"),
    ("forged_arrays", "arrays.npz holds more than plain arrays"),
    ("forged_manifest", "'eval' node"),
])
def test_a_forged_snapshot_is_refused_and_none_of_it_runs(test_server, case, reason):
    reply = test_server(case, "", PROBE)
    assert reply["status"] == "failed" and "could not load your variables" in reply["message"], reply
    assert reason in reply["message"], reply
    assert not (test_server.folder / "ran").exists(), "loading the snapshot ran code from it"


@pytest.mark.parametrize("case", sorted(TAMPERING_DEFINITIONS))
def test_what_replayed_definitions_change_is_put_back_before_the_test(test_server, case):
    definitions, changed = TAMPERING_DEFINITIONS[case]
    reply = test_server("empty", definitions, PROBE)
    assert reply["status"] == "passed", reply  # the probe found the libraries intact
    if changed:
        assert any("replaying your definitions changed" in note and changed in note for note in reply["notes"]), reply


def test_definitions_that_leave_a_thread_running_score_zero(test_server):
    thread = f"import threading, numpy\nclass Sneaky:\n    threading.Timer(0.1, lambda: setattr(numpy, 'allclose', {ALWAYS})).start()"
    reply = test_server("empty", thread, "pass")
    assert reply["status"] == "failed" and "your definitions started a thread" in reply["message"], reply


def private_names(source: str) -> list[str]:
    """Every name starting with ``_`` of pickle, cloudpickle, torch or numpy (or a submodule)
    that ``source`` imports, reads as an attribute, looks up with getattr, or names in a string."""
    guarded = ("pickle", "cloudpickle", "torch", "numpy")

    def private(dotted: str) -> bool:
        parts = dotted.split(".")
        return parts[0] in guarded and any(part.startswith("_") for part in parts[1:])

    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> the module path it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += [alias.name] if private(alias.name) else []
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                found += [dotted] if private(dotted) else []
                aliases[alias.asname or alias.name] = dotted

    def dotted_name(node) -> str | None:
        attributes = []
        while isinstance(node, ast.Attribute):
            attributes.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases:
            return ".".join([aliases[node.id], *reversed(attributes)])
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            dotted = dotted_name(node)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr", "delattr") \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            base = dotted_name(node.args[0])
            dotted = f"{base}.{node.args[1].value}" if base else None
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # __import__("numpy._core"), sys.modules[...]
            dotted = node.value if all(p.isidentifier() for p in node.value.split(".")) else None
        else:
            dotted = None
        if dotted and private(dotted):
            found.append(dotted)
    return sorted(set(found))


def test_the_private_name_check_sees_every_form():
    assert private_names("import pickle\nclass U(pickle._Unpickler): pass") == ["pickle._Unpickler"]
    assert private_names("from torch._utils import _rebuild_tensor_v2") == ["torch._utils._rebuild_tensor_v2"]
    assert private_names("import torch._tensor as t") == ["torch._tensor"]
    assert private_names("import cloudpickle.cloudpickle as cp\ncp._make_function") == ["cloudpickle.cloudpickle._make_function"]
    assert private_names("import numpy as np\nnp.core.multiarray._reconstruct") == ["numpy.core.multiarray._reconstruct"]
    assert private_names("import torch\ngetattr(torch, '_C')") == ["torch._C"]
    assert private_names("__import__('numpy._core.numeric')") == ["numpy._core.numeric"]
    assert private_names("import torch\nfrom numpy import savez\ntorch.load(f, weights_only=True)\nsavez(f)") == []


def test_grading_uses_no_private_name_of_pickle_cloudpickle_torch_or_numpy(root):
    modules = sorted((root / "course_lib" / "grading").glob("*.py"))
    assert {m.name for m in modules} >= {"grader.py", "harness.py", "snapshot.py"}
    found = {m.name: private_names(m.read_text()) for m in modules}
    assert not any(found.values()), found


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
