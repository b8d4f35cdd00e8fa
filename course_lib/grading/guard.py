"""What a test process puts back after the learner's definitions ran.

A test process replays the learner's ``def``, ``class`` and ``import`` statements, and
class bodies, decorators and default values run code as they are defined. The test
server records, before any submission exists, the state that code could change
(:class:`ProcessGuard`); after the replay, :meth:`ProcessGuard.after_learner_code` puts
it back and says what it found:

* every attribute of every imported module, and of the classes and functions defined in
  them (``numpy.allclose``, ``builtins.abs``, a library function's ``__code__``), the
  entries of ``sys.modules``, and the interpreter's lists that steer imports and warnings;
* signal handlers, interval timers, and trace and profile functions;
* a thread or a ``sys.monitoring`` tool left running cannot be undone: the graded cell
  scores zero. Audit hooks are refused as they are added (:func:`refuse_audit_hooks`).

Only public interfaces are used: module and class ``__dict__``, ``signal``, ``sys``,
``threading``. What it cannot stop is code that runs during the test itself (the
learner's functions, called by the test): see the README's threat model.

Defined for the course's grading.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import types
import warnings

_MISSING = object()
_TIMERS = ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF")


def _refuse_new_hooks(event: str, args: tuple) -> None:
    if event == "sys.addaudithook":
        raise RuntimeError("the grader refuses audit hooks")


def refuse_audit_hooks() -> None:
    """From now on, in this process and every process it forks, ``sys.addaudithook`` adds
    nothing (Python drops a hook that an existing hook refuses with a RuntimeError)."""
    sys.addaudithook(_refuse_new_hooks)


def _interpreter_lists() -> list[tuple[list, str]]:
    return [(sys.meta_path, "sys.meta_path"), (sys.path_hooks, "sys.path_hooks"), (sys.path, "sys.path"),
            (warnings.filters, "warnings.filters"), (gc.callbacks, "gc.callbacks")]


class ProcessGuard:
    """The process state that the learner's definitions could change, recorded in the test
    server; each forked test process calls :meth:`after_learner_code`."""

    def __init__(self):
        self._entries: list[tuple] = []  # (kind, holder, key, original, where)
        seen: set[int] = set()
        modules = [(name, module) for name, module in list(sys.modules.items()) if isinstance(module, types.ModuleType)]
        for name, module in modules:
            self._entries.append(("dict", sys.modules, name, module, "sys.modules"))
        for name, module in modules:
            if id(module) in seen:
                continue
            seen.add(id(module))
            for key, value in list(module.__dict__.items()):
                self._entries.append(("dict", module.__dict__, key, value, name))
                self._watch(value, name, seen)
        for items, where in _interpreter_lists():
            self._entries.append(("items", items, None, list(items), where))
        self._signals = {number: signal.getsignal(number) for number in signal.valid_signals()}
        self._trace, self._profile = sys.gettrace(), sys.getprofile()
        monitoring = getattr(sys, "monitoring", None)  # Python 3.12+
        self._tools = {tool for tool in range(6) if monitoring and monitoring.get_tool(tool) is not None}
        self._displaced: list = []  # what a restore replaced, kept alive until the process ends

    def _watch(self, value, where: str, seen: set[int], depth: int = 0) -> None:
        kind = type(value)
        if kind is types.FunctionType:
            if id(value) in seen:
                return
            seen.add(id(value))
            where = f"{where}.{value.__name__}"
            for attr in ("__code__", "__defaults__", "__kwdefaults__"):
                self._entries.append(("attr", value, attr, getattr(value, attr), where))
            for cell in value.__closure__ or ():
                try:
                    self._entries.append(("attr", cell, "cell_contents", cell.cell_contents, where))
                except ValueError:  # an empty cell
                    pass
        elif kind in (staticmethod, classmethod):
            self._watch(value.__func__, where, seen, depth)
        elif issubclass(kind, type) and depth == 0 and id(value) not in seen:
            seen.add(id(value))
            if value.__flags__ & (1 << 8):  # Py_TPFLAGS_IMMUTABLETYPE: a C type, nothing to change
                return
            where = f"{where}.{value.__qualname__}"
            for key, attr in list(value.__dict__.items()):
                self._entries.append(("class", value, key, attr, where))
                self._watch(attr, where, seen, depth + 1)

    @staticmethod
    def _changed(kind, holder, key, original) -> bool:
        if kind == "items":
            return len(holder) != len(original) or any(a is not b for a, b in zip(holder, original))
        if kind == "dict":
            current = holder.get(key, _MISSING)
        elif kind == "class":
            current = holder.__dict__.get(key, _MISSING)
        else:
            current = getattr(holder, key, _MISSING)
        return current is not original

    def ignore_what_fork_changes(self) -> None:
        """Forget the attributes that forking itself replaces (``threading`` renews its locks)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            changed = [i for i, entry in enumerate(self._entries) if self._changed(*entry[:4])]
            os.write(write_end, json.dumps(changed).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            changed = set(json.loads(pipe.read() or b"[]"))
        os.waitpid(pid, 0)
        self._entries = [entry for i, entry in enumerate(self._entries) if i not in changed]

    def _restore_attributes(self) -> list[str]:
        changed = []
        for kind, holder, key, original, where in self._entries:
            if not self._changed(kind, holder, key, original):
                continue
            if kind == "items":
                self._displaced.append(list(holder))
                holder[:] = original
                changed.append(where)
                continue
            self._displaced.append(holder.get(key) if kind == "dict" else getattr(holder, key, None))
            changed.append(where if kind == "attr" else f"{where}[{key!r}]" if where == "sys.modules" else f"{where}.{key}")
            if kind == "dict":
                holder[key] = original
            else:
                setattr(holder, key, original)
        return changed

    def _stop_callbacks(self) -> list[str]:
        changed = []
        if sys.gettrace() is not self._trace:
            sys.settrace(self._trace)
            changed.append("the trace function")
        if sys.getprofile() is not self._profile:
            sys.setprofile(self._profile)
            changed.append("the profile function")
        for timer in _TIMERS:
            if signal.setitimer(getattr(signal, timer), 0) != (0.0, 0.0):
                changed.append(f"the {timer} timer")
        for number, handler in self._signals.items():
            if signal.getsignal(number) is not handler and handler is not None:
                signal.signal(number, handler)
                changed.append(f"the handler of signal {number}")
        return changed

    def after_learner_code(self, namespace: dict) -> tuple[list[str], str]:
        """Put back what the learner's code changed in this forked process: ``(what was put
        back, why the test must not run)``, the second empty unless something is left that
        cannot be undone. ``namespace`` is where their definitions ran.

        First nothing of theirs may run any more: garbage collection stays off through the
        test, and every object their definitions bound, and every attribute value a restore
        displaces, is kept alive until the process ends (freeing one would run its
        ``__del__``, also when the grader later rebinds a name); trace and profile functions,
        timers and signal handlers are put back; a thread still running (a forked process
        starts with one, so any other is theirs) or a ``sys.monitoring`` tool refuses the
        test. Only then are the attributes restored."""
        gc.disable()
        self._displaced.append(dict(namespace))
        changed = self._stop_callbacks()
        started = [t.name for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()]
        if started:
            return changed, f"your definitions started a thread ({', '.join(started[:3])}), which could change the libraries during the test"
        monitoring = getattr(sys, "monitoring", None)
        if {tool for tool in range(6) if monitoring and monitoring.get_tool(tool) is not None} - self._tools:
            return changed, "your definitions registered a sys.monitoring tool, which could change the libraries during the test"
        return changed + self._restore_attributes(), ""
