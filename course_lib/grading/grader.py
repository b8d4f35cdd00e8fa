"""Grade submitted exercise notebooks (``course grade``).

A submission is graded in two phases, so that nothing its cells do can fake a pass:

1. The learner's code cells run in their own kernel, one at a time, in a scratch folder;
   graded test cells are skipped. Where a graded cell sits, the grader saves the
   learner's variables as data (``snapshot.save``): numbers, strings, containers, numpy
   arrays and torch tensors, never pickled objects.
2. Each graded cell, in the solution's version (hidden tests included), runs in a fresh
   process forked from a test server that imported the libraries and ran the solution's
   setup before any submission ran (``harness``). The process loads the learner's data,
   replays the ``def``, ``class`` and ``import`` statements of the learner's earlier cells
   from the submitted source, puts back whatever that replay changed in the libraries, and
   binds the solution's setup cells, imports, parameters and given helpers over it all.
   The cell's points are earned when that process reports that the test ran to its end;
   no output is ever scanned.

Editing a test does not help and a deleted test cell scores zero. An exception, an
infinite loop (stopped after ``cell_timeout`` seconds; a kernel that ignores the interrupt
is restarted and the earlier cells replayed), a dead kernel or an unreadable file costs
points but never stops the grader, and a notebook never runs longer than ``timeout``
seconds. The README's "Instructor workflow" section states what this defends and what not.

Defined for the course's grading.
"""

from __future__ import annotations

import queue
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

from ..tooling.exercises import METADATA_KEY, GradedCell, graded_cells
from ..tooling.notebook_io import read_notebook
from .harness import IsolatedTestRunner
from .report import NotebookGrade, QuestionScore
from .snapshot import MANIFEST
from .sources import cell_grade_id, solution_imports, trusted_preamble

INTERRUPT_GRACE = 5.0  # seconds an interrupted cell gets to stop before the kernel is restarted


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


def _graded_positions(submission, solution_cells: list[GradedCell]) -> dict[int, str]:
    """Index in the submission -> grade_id, for the first code cell carrying each graded id."""
    wanted = {c.grade_id for c in solution_cells}
    positions: dict[int, str] = {}
    for index, cell in enumerate(submission.cells):
        grade_id = cell_grade_id(cell)
        if cell.cell_type == "code" and grade_id in wanted and grade_id not in positions.values():
            positions[index] = grade_id
    return positions


def _cell_label(index: int, source: str) -> str:
    first_line = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return f"cell {index} (`{first_line[:40]}`)"


class _LearnerKernel:
    """The submission's own kernel (phase 1): runs its cells, never the tests.

    Outcomes come from the kernel's execute reply, not from its outputs."""

    def __init__(self, kernel_name: str, workdir: Path):
        self.manager = KernelManager(kernel_name=kernel_name)
        self.manager.start_kernel(cwd=str(workdir))
        self.client = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=60)
        except BaseException:
            self.shutdown()
            raise

    def _reply(self, msg_id: str, timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            while self.client.iopub_channel.msg_ready():  # outputs are not needed; keep the queue short
                self.client.iopub_channel.get_msg()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", ""
            try:
                reply = self.client.get_shell_msg(timeout=min(remaining, 0.5))
            except queue.Empty:
                if not self.manager.is_alive():
                    return "dead", "the kernel died"
                continue
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            content = reply.get("content", {})
            if content.get("status") == "ok":
                return "ok", ""
            return "error", f"{content.get('ename', 'Error')}: {content.get('evalue', '')}".strip()[:300]

    def run(self, code: str, timeout: float) -> tuple[str, str]:
        """``(status, message)``; status is ok, error, dead, timeout (interrupted, state kept)
        or restarted (the interrupt did not stop it: a fresh kernel, the state is gone)."""
        msg_id = self.client.execute(code, allow_stdin=False, stop_on_error=False)
        status, message = self._reply(msg_id, timeout)
        if status != "timeout":
            return status, message
        self.manager.interrupt_kernel()
        if self._reply(msg_id, INTERRUPT_GRACE)[0] in ("ok", "error"):
            return "timeout", ""
        try:
            self.manager.restart_kernel(now=True)
            self.client.wait_for_ready(timeout=60)
        except Exception as error:
            return "dead", f"the kernel could not be restarted: {error}"
        return "restarted", ""

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def _snapshot_code(folder: Path) -> str:
    return f"__import__('course_lib.grading.snapshot', fromlist=['save']).save(globals(), {str(folder)!r})"


def _earlier_cells(submission, positions: dict[int, str]) -> dict[str, list[tuple[str, str]]]:
    """For each graded id, ``(label, source)`` of the learner's code cells before it: the cells
    that ran in the kernel before its snapshot, whose definitions the test process replays."""
    return {grade_id: [(f"<your cell {i}>", cell.source) for i, cell in enumerate(submission.cells[:position])
                       if cell.cell_type == "code" and i not in positions]
            for position, grade_id in positions.items()}


def _run_learner_cells(kernel: _LearnerKernel, submission, positions: dict[int, str], snapshots: Path,
                       deadline: float, cell_timeout: float) -> dict[str, tuple[str, str]]:
    """Phase 1. For each graded cell: ``("snapshot", folder)``, or ``(status, message)`` saying why there is none."""
    outcomes: dict[str, tuple[str, str]] = {}
    history: list[str] = []  # the learner cells that ran, replayed after a restart
    stopped = ""  # why the rest of the notebook did not run
    for index, cell in enumerate(submission.cells):
        if cell.cell_type != "code":
            continue
        grade_id = positions.get(index)
        remaining = deadline - time.monotonic()
        if not stopped and remaining <= 1:
            stopped = "the notebook reached its time limit before this test"
        if stopped:
            if grade_id:
                outcomes[grade_id] = ("not run", stopped)
            continue
        limit = min(cell_timeout, remaining)
        folder = snapshots / str(grade_id)
        status, message = kernel.run(_snapshot_code(folder) if grade_id else cell.source, limit)
        if grade_id:
            saved = status == "ok" and (folder / MANIFEST).is_file()
            outcomes[grade_id] = ("snapshot", str(folder)) if saved else \
                ("failed", f"could not save your variables for the test: {message or status}")
        elif status in ("ok", "error"):
            history.append(cell.source)
        if status == "dead":
            stopped = f"the kernel died at {_cell_label(index, cell.source)}, so this test never ran"
        elif status == "restarted":
            for source in history:
                replayed, _ = kernel.run(source, min(cell_timeout, max(1.0, deadline - time.monotonic())))
                if replayed not in ("ok", "error"):
                    stopped = f"{_cell_label(index, cell.source)} would not stop and the notebook could not be replayed"
                    break
    return outcomes


class _TestServers:
    """One test server per assignment, shared by its submissions."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.servers: dict[str, IsolatedTestRunner] = {}
        self.started = 0

    def get(self, assignment: str, solution) -> IsolatedTestRunner:
        server = self.servers.get(assignment)
        if server is not None and not server.alive():
            server.close()
            server = None
        if server is None:
            self.started += 1
            server = IsolatedTestRunner(trusted_preamble(solution), self.workdir / f"{assignment}-{self.started}",
                                        warm_up=solution_imports(solution))
            self.servers[assignment] = server
        return server

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


def _read_solution(solutions_dir: Path, assignment: str):
    solution_path = Path(solutions_dir) / f"{assignment}.ipynb"
    solution = read_notebook(solution_path)
    return solution, graded_cells(solution, str(solution_path))


def _not_run(solution_cells: list[GradedCell], message: str) -> list[QuestionScore]:
    return [QuestionScore(c.grade_id, 0.0, c.points, "not run", message) for c in solution_cells]


def _run_tests(servers: _TestServers, assignment: str, solution, solution_cells: list[GradedCell],
               outcomes: dict[str, tuple[str, str]], earlier: dict[str, list[tuple[str, str]]], workdir: Path,
               deadline: float, cell_timeout: float, grade: NotebookGrade) -> None:
    """Phase 2: each graded cell that has a snapshot runs in a fresh process."""
    for graded in solution_cells:
        kind, detail = outcomes.get(graded.grade_id, ("missing", "graded cell was deleted"))
        remaining = deadline - time.monotonic()
        if kind == "snapshot" and remaining <= 1:
            kind, detail = "not run", "the notebook reached its time limit before this test"
        if kind != "snapshot":
            grade.questions.append(QuestionScore(graded.grade_id, 0.0, graded.points, kind, detail))
            continue
        try:  # a server that a test process killed is replaced for the next cell
            server = servers.get(assignment, solution)
            problems = server.wait_ready()
            reply = server.run(snapshot=detail, cells=earlier[graded.grade_id], source=graded.source,
                               grade_id=graded.grade_id, cwd=workdir, timeout=min(cell_timeout, remaining))
        except RuntimeError as error:
            grade.error = f"the test process failed: {error}"
            grade.questions.append(QuestionScore(graded.grade_id, 0.0, graded.points, "not run", str(error)))
            continue
        if problems:
            grade.error = "the solution's setup failed in the test process: " + "; ".join(problems)
        status = {"passed": "passed", "timeout": "timeout"}.get(reply.get("status"), "failed")
        message = f"stopped after the {cell_timeout:g} s cell time limit" if status == "timeout" else str(reply.get("message", ""))
        if status != "passed":  # what the grader noticed while building the learner's namespace may explain a failure
            message = "; ".join(part for part in [message, *reply.get("notes", [])] if part)
        points = graded.points if status == "passed" else 0.0
        grade.questions.append(QuestionScore(graded.grade_id, points, graded.points, status, message))


def _grade_one(path: Path, solutions_dir: Path, assignment: str | None, kernel_name: str, timeout: float,
               cell_timeout: float, servers: _TestServers, scratch: Path) -> NotebookGrade:
    deadline = time.monotonic() + timeout
    grade = NotebookGrade(submission=path.name, assignment=assignment or "?")
    try:
        submission = read_notebook(path)
        grade.assignment = _assignment_of(submission, path, assignment)
    except (ValueError, FileNotFoundError) as error:
        grade.error = str(error)
        if assignment:  # still out of the assignment's real maximum
            try:
                grade.questions = _not_run(_read_solution(solutions_dir, assignment)[1], "the submission could not be read")
            except (ValueError, FileNotFoundError) as solution_error:
                grade.error += f"; {solution_error}"
        return grade
    solution, solution_cells = _read_solution(solutions_dir, grade.assignment)
    servers.get(grade.assignment, solution)  # starting before the learner's code runs
    positions = _graded_positions(submission, solution_cells)
    workdir, snapshots = scratch / "work", scratch / "snapshots"
    workdir.mkdir()
    snapshots.mkdir()
    try:
        kernel = _LearnerKernel(kernel_name, workdir)
    except Exception as error:
        grade.error = f"could not start the kernel: {type(error).__name__}: {error}"
        grade.questions = _not_run(solution_cells, "the kernel did not start")
        return grade
    try:
        outcomes = _run_learner_cells(kernel, submission, positions, snapshots, deadline, cell_timeout)
    finally:
        kernel.shutdown()
    _run_tests(servers, grade.assignment, solution, solution_cells, outcomes, _earlier_cells(submission, positions),
               workdir, deadline, cell_timeout, grade)
    return grade


def grade_submissions(
    paths: list[str | Path],
    solutions_dir: str | Path,
    *,
    assignment: str | None = None,
    kernel_name: str = "python3",
    timeout: float = 300,
    cell_timeout: float = 60,
    on_start=None,
) -> list[NotebookGrade]:
    """Grade notebooks against ``solutions_dir/<assignment>.ipynb``; ``on_start(path)`` is
    called before each. A submission's failure is recorded in its grade, never raised."""
    grades = []
    with tempfile.TemporaryDirectory(prefix="grading-") as root:
        servers = _TestServers(Path(root) / "servers")
        try:
            for number, path in enumerate(paths):
                path = Path(path)
                if on_start:
                    on_start(path)
                scratch = Path(root) / f"submission-{number}"
                scratch.mkdir()
                started = time.monotonic()
                try:
                    grade = _grade_one(path, Path(solutions_dir), assignment, kernel_name, timeout, cell_timeout,
                                       servers, scratch)
                except Exception as error:
                    grade = NotebookGrade(submission=path.name, assignment=assignment or "?",
                                          error=f"could not grade it: {type(error).__name__}: {error}")
                grade.seconds = round(time.monotonic() - started, 1)
                grades.append(grade)
        finally:
            servers.close()
    return grades


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
    return grade_submissions([path], solutions_dir, assignment=assignment, kernel_name=kernel_name,
                             timeout=timeout, cell_timeout=cell_timeout)[0]
