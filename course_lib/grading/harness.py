"""Run a graded test cell in a fresh process that no submitted code has touched.

``grader`` grades a submission in two phases. Phase 1 runs the learner's cells in their
own Jupyter kernel; where a graded cell sits, ``snapshot.save`` writes the learner's
variables as data. Phase 2 happens here:

* :class:`IsolatedTestRunner` starts a test server before any learner code runs. The
  server refuses audit hooks, runs the solution's trusted preamble (its setup cells,
  parameters, imports and given helpers) and the solution's imports, then records the
  process state the learner's code could change (``guard.ProcessGuard``).
* For each graded cell the server forks a child. The child loads the snapshot with
  loaders that run no code from it (``snapshot.load``), replays the learner's ``def``,
  ``class`` and ``import`` statements from the source of the cells before the graded one
  (``sources.definition_statements``), puts back whatever that replay changed in the
  libraries, binds the trusted names over the learner's, runs the solution's test cell
  and reports passed or failed through a pipe. The server kills it at its time limit.

Nothing a learner's cell did to their kernel reaches the child: of their code, only their
definitions run again there. What it cannot defend: the learner's code that does run there
(their definitions as they are replayed, their functions when the test calls them) shares
the process with the test's asserts (see the README's threat model).

Defined for the course's grading.
"""

from __future__ import annotations

import ast
import builtins
import gc
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import snapshot
from .guard import ProcessGuard, refuse_audit_hooks
from .sources import definition_statements

_MISSING = object()


def _describe_error(error: BaseException) -> str:
    """``"ValueError: message"``, without calling any method the submission could have defined
    (an exception class's ``__str__`` could otherwise forge the child's report)."""
    kind = type.__dict__["__name__"].__get__(type(error))
    args = BaseException.args.__get__(error)
    if all(type(arg) in (str, int, float, bool, type(None)) for arg in args):
        detail = args[0] if len(args) == 1 and type(args[0]) is str else ", ".join(map(repr, args))
    else:
        detail = "(its details are not shown: formatting them would run the submission's code)"
    return f"{kind}: {detail}".strip().rstrip(":")[:300]


def _replay(cells: list, namespace: dict) -> list[str]:
    """Run the definitions of the learner's earlier cells in ``namespace``, one statement at a
    time; return what failed (a failed statement does not stop the others)."""
    problems = []
    for label, source in cells:
        for statement in definition_statements(source):
            try:
                exec(compile(ast.Module(body=[statement], type_ignores=[]), label, "exec"), namespace)
            except BaseException as error:  # SystemExit included: the test still runs
                problems.append(f"replaying line {statement.lineno} of {label.strip('<>')} raised {_describe_error(error)}")
    return problems


def _learner_namespace(variables: snapshot.Variables, cells: list, trusted: dict, guard: ProcessGuard) -> tuple:
    """``(namespace, left_out, notes, refusal)``. The namespace is the learner's: their data,
    then their definitions replayed in it (so it is their functions' globals), then their
    references; the trusted names are bound over all of it. ``left_out`` says why a learner's
    name is missing; ``refusal`` is why the test must not run, or empty."""
    public_trusted = {k: v for k, v in trusted.items() if not k.startswith("__")}
    namespace = {"__name__": "__main__", "__builtins__": builtins, **public_trusted, **variables.data}
    before = dict(namespace)
    notes = _replay(cells, namespace)
    changed, refusal = guard.after_learner_code(namespace)
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        notes.append(f"replaying your definitions changed {shown}; the grader put it back before the test")
    kept = set(variables.data) | set(variables.references) | set(variables.others)
    left_out = {}
    for name in [k for k, v in namespace.items() if before.get(k, _MISSING) is not v]:
        if name not in kept:  # defined by a cell, then deleted (or never reached: the cell failed first)
            del namespace[name]
    for name, what in variables.others.items():
        if name not in trusted and (name not in namespace or namespace[name] is before.get(name, _MISSING)):
            left_out[name] = (f"{what}; the grader carries data (numbers, strings, containers, numpy arrays, "
                              "torch tensors) and replays only def, class and import statements and lambda assignments")
    namespace.update(variables.data)
    for name, reference in variables.references.items():
        try:
            namespace[name] = snapshot.resolve(reference)
        except LookupError as error:
            left_out[name] = str(error)
    for name in [k for k in namespace if not k.startswith("__") and k not in trusted and hasattr(builtins, k)]:
        del namespace[name]
        notes.append(f"{name!r} was left out: it would hide the builtin of that name from the test")
    namespace.update(public_trusted)
    for name, value in namespace.items():  # the solution's given helpers may call the learner's functions
        trusted.setdefault(name, value)
    return namespace, left_out, notes, refusal


def _child(request: dict, trusted: dict, guard: ProcessGuard, result_fd: int) -> None:
    """Load the snapshot, replay the definitions, run the test cell, report on ``result_fd``; never returns."""

    def report(outcome: dict) -> None:
        os.write(result_fd, json.dumps(outcome).encode() + b"\n")
        os._exit(0)

    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(request["cwd"])
    try:
        variables = snapshot.load(request["snapshot"])
    except snapshot.SnapshotError as error:
        report({"status": "failed", "message": f"could not load your variables: {error}"})
    namespace, left_out, notes, refusal = _learner_namespace(variables, request["cells"], trusted, guard)
    if refusal:
        report({"status": "failed", "message": refusal, "notes": notes})
    try:
        exec(compile(request["source"], f"<graded cell {request['grade_id']}>", "exec"), namespace)
    except BaseException as error:
        message = _describe_error(error)
        notes += [f"{name!r} was not carried over ({why})" for name, why in left_out.items() if repr(name) in message]
        report({"status": "failed", "message": message, "notes": notes})
    report({"status": "passed", "notes": notes})


_REAPED: dict[int, int] = {}  # exit statuses of children reaped early (where os.waitid is missing)


def _exited(pid: int) -> bool:
    """Whether the child has ended, leaving it unreaped where possible (so that its process
    group id cannot be reused before the grader kills what the child started)."""
    if hasattr(os, "waitid"):
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        _REAPED[pid] = status
    return bool(done)


def _wait_for_child(pid: int, fd: int, deadline: float) -> dict:
    data, ended = b"", False
    while not ended and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, min(deadline - time.monotonic(), 0.05)))
        if ready:
            data += os.read(fd, 65536)
        ended = _exited(pid)
    os.set_blocking(fd, False)
    try:
        data += os.read(fd, 65536)
    except OSError:
        pass
    try:
        os.killpg(pid, signal.SIGKILL)  # the child (if still running) and anything it started
    except (ProcessLookupError, PermissionError):
        pass
    status = _REAPED.pop(pid, None)
    if status is None:
        status = os.waitpid(pid, 0)[1]
    if not ended:
        return {"status": "timeout", "message": "stopped at the cell time limit"}
    for line in reversed(data.decode(errors="replace").splitlines()):
        try:
            outcome = json.loads(line)
        except ValueError:
            continue
        if isinstance(outcome, dict) and outcome.get("status") in ("passed", "failed"):
            return outcome
    if os.WIFSIGNALED(status):
        how = f"was killed by signal {os.WTERMSIG(status)}"
    else:
        how = f"exited with status {os.WEXITSTATUS(status)}"
    return {"status": "failed", "message": f"the test process {how} before the test finished"}


def _run_isolated(request: dict, trusted: dict, guard: ProcessGuard, server_fds: tuple[int, ...]) -> dict:
    """Fork a child for one graded cell and wait for its report (or its time limit)."""
    deadline = time.monotonic() + float(request["timeout"])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            for fd in server_fds:
                os.close(fd)
            _child(request, trusted, guard, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    outcome = _wait_for_child(pid, read_end, deadline)
    os.close(read_end)
    outcome["notes"] = [str(n)[:300] for n in outcome.get("notes", [])]
    return outcome


def serve() -> None:
    """The test server's main loop: one setup line, then one request per line on stdin,
    one JSON reply per line on stdout."""
    refuse_audit_hooks()
    sys.path[:] = [entry for entry in sys.path if os.path.isabs(entry)]  # never the submission's folder
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything printed goes to the server's log, not into the replies
    setup = json.loads(requests.readline())
    trusted = {"__name__": "__main__"}
    problems = []
    for label, source in setup["preamble"]:
        try:
            exec(compile(source, label, "exec"), trusted)
        except BaseException as error:
            problems.append(f"{label}: {_describe_error(error)}")
    for source in setup["warm_up"]:  # the solution's imports, so that no child pays for them
        try:
            exec(compile(source, "<warm-up>", "exec"), {})
        except BaseException:
            pass  # the test cell itself will report it
    snapshot.warm_up()
    guard = ProcessGuard()
    guard.ignore_what_fork_changes()
    gc.freeze()  # a child's garbage collection then skips everything the server made
    replies.write(json.dumps({"ready": True, "problems": problems}).encode() + b"\n")
    for line in requests:
        request = json.loads(line)
        outcome = _run_isolated(request, trusted, guard, (requests.fileno(), replies.fileno()))
        replies.write(json.dumps({**outcome, "nonce": request["nonce"]}).encode() + b"\n")


class IsolatedTestRunner:
    """The grader's handle on a test server for one assignment.

    ``preamble`` is a list of ``(label, source)`` the server runs, and whose names it binds
    over the learner's in every test (see ``sources.trusted_preamble``); ``warm_up`` are
    statements (the solution's imports) it runs once in a scratch namespace. Start it before
    any submission runs: it then imports every library while no submitted code exists."""

    def __init__(self, preamble: list[tuple[str, str]], workdir: str | Path, warm_up: list[str] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "test-server.log", "wb")
        command = [sys.executable, "-I", "-c", "from course_lib.grading.harness import serve; serve()"]
        # One thread: a process forked after OpenMP started its threads hangs in its next parallel region.
        single_threaded = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                        cwd=self.workdir, start_new_session=True, env={**os.environ, **single_threaded})
        self._buffer = b""
        self._send({"preamble": preamble, "warm_up": list(warm_up)})
        self.problems: list[str] | None = None  # the preamble's errors, known once the server is ready

    def _send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def _reply(self, deadline: float, nonce: str | None) -> dict:
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue
                if isinstance(reply, dict) and reply.get("nonce") == nonce:
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError("the test server did not answer in time")
            ready, _, _ = select.select([fd], [], [], remaining)
            chunk = os.read(fd, 65536) if ready else b""
            if ready and not chunk:
                tail = (self.workdir / "test-server.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"the test server stopped: {tail.strip()}")
            self._buffer += chunk

    def wait_ready(self, timeout: float = 600) -> list[str]:
        if self.problems is None:
            self.problems = list(self._reply(time.monotonic() + timeout, None).get("problems", []))
        return self.problems

    def run(self, *, snapshot: str | Path, cells: list[tuple[str, str]], source: str, grade_id: str,
            cwd: str | Path, timeout: float) -> dict:
        """Run one graded cell: ``{"status": passed|failed|timeout, "message", "notes"}``.
        ``snapshot`` is the folder ``snapshot.save`` wrote; ``cells`` are ``(label, source)``
        of the learner's code cells before the graded one, whose definitions are replayed."""
        self.wait_ready()
        nonce = os.urandom(16).hex()
        self._send({"nonce": nonce, "snapshot": str(snapshot), "cells": [list(cell) for cell in cells],
                    "source": source, "grade_id": grade_id, "cwd": str(cwd), "timeout": timeout,
                    "log": str(self.workdir / f"{grade_id}-{nonce[:8]}.log")})
        return self._reply(time.monotonic() + timeout + 60, nonce)

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self._log):
            stream.close()
