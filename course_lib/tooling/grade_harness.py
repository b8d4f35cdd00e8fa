"""Run a graded test cell in a fresh process that no submitted code has touched.

``grading.py`` grades a submission in two phases. Phase 1 runs the learner's cells in
their own Jupyter kernel; where a graded cell sits, :func:`save_namespace` writes the
learner's variables to a snapshot file. Phase 2 happens here:

* :class:`IsolatedTestRunner` starts a test server before any learner code runs. The
  server runs the solution's trusted preamble (its setup cells, parameters, imports and
  given helpers), then records every library attribute (:class:`LibraryState`).
* For each graded cell the server forks a child. The child loads the snapshot with a
  guarded unpickler, puts back any library attribute the loading changed, binds the
  trusted names over the learner's, runs the solution's test cell and reports
  passed/failed through a pipe. The server kills it at its time limit.

Loading a snapshot never runs the learner's code: the child dies the moment a function
from the snapshot is about to run (for instance a ``__setstate__`` or ``__hash__`` of the
learner's own class) and is forked again without that variable. The loader refuses, and
the cell scores zero, when the snapshot tries to change an object that existed before it
was loaded (a module, a library function or class, ``warnings.filters``), to call a
function that is not a known unpickling helper (``exec``, ``os.system``, ``setattr``),
or to build an object of a class from a module such as ``os``, ``subprocess`` or
``threading``. What it cannot defend: the learner's functions run when the test calls
them, in the same process as the test's asserts (see the README's threat model).
"""

from __future__ import annotations

import builtins
import gc
import io
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

# IPython's own names in a kernel's namespace (the output history, the shell, the exit helpers).
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}

# Modules whose classes a snapshot may not instantiate: they start processes or threads,
# open files or sockets, register callbacks, or reach into the interpreter.
DENIED_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess", "io", "_io", "socket", "_socket", "ssl",
    "select", "selectors", "ctypes", "_ctypes", "threading", "_thread", "multiprocessing", "concurrent",
    "asyncio", "weakref", "_weakref", "_weakrefset", "gc", "signal", "_signal", "atexit", "importlib",
    "pkgutil", "zipimport", "runpy", "code", "codeop", "pickle", "_pickle", "marshal", "shutil", "tempfile",
    "pty", "tty", "fcntl", "resource", "mmap", "pdb", "bdb", "trace", "tracemalloc", "faulthandler",
    "inspect", "unittest", "webbrowser", "http", "urllib", "ftplib", "smtplib", "xmlrpc", "logging",
    "sqlite3", "sched", "itertools", "operator", "_operator",
})

# Built-in classes a snapshot may build (``map``, ``filter`` and ``type`` are not among them:
# the first two call a function lazily, the last builds classes outside the loader's view).
_SAFE_BUILTIN_CLASSES = frozenset({
    "object", "int", "float", "complex", "bool", "str", "bytes", "bytearray", "list", "tuple", "dict",
    "set", "frozenset", "slice", "range", "memoryview", "property", "classmethod", "staticmethod",
    "function", "code", "cell", "method", "module", "mappingproxy", "NoneType", "ellipsis",
    "NotImplementedType", "SimpleNamespace",
})

# Functions that pickles call to rebuild objects: (module, name) found by the unpickler.
_RECONSTRUCTORS = {
    "copyreg": {"_reconstructor", "__newobj__", "__newobj_ex__"},
    "cloudpickle.cloudpickle": {  # _make_function, the set-states and the class makers are checked apart
        "_builtin_type", "_get_dataclass_field_type_sentinel", "_make_cell", "_make_empty_cell", "_make_typevar",
        "_make_dict_keys", "_make_dict_values", "_make_dict_items", "subimport", "dynamic_subimport",
    },
    "_codecs": {"encode"},
    "re": {"_compile"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.numeric": {"_frombuffer"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy.random._pickle": {"__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor"},
    "torch.storage": {"_load_from_bytes"},  # replaced by a weights-only torch.load
    "pyarrow.lib": {"_restore_array", "py_buffer", "type_for_alias"},
}
_LOOKUP_DUNDERS = {"__new__", "__newobj__", "__newobj_ex__"}
_MISSING = object()


class Refused(Exception):
    """The snapshot tried something only tampering does; the graded cell scores zero."""


class _Unsupported(Exception):
    """A value the guarded loader cannot rebuild; that variable is left out of the test."""


def _label(obj) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None)
    if isinstance(name, str):
        return f"{module}.{name}" if isinstance(module, str) else name
    return f"a {type(obj).__module__}.{type(obj).__qualname__} object"


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


# ---------------------------------------------------------------- phase 1: inside the learner's kernel


def _defined_in_notebook(value) -> bool:
    return isinstance(value, (types.FunctionType, type)) and getattr(value, "__module__", None) == "__main__"


def save_namespace(namespace: dict, path: str) -> None:
    """Write the learner's variables to ``path``: their functions and classes in one pickle
    (so they keep sharing one global namespace), every other variable in its own pickle, and
    why a variable could not be saved. Runs inside the learner's kernel, so the file is
    untrusted: :class:`SnapshotLoader` decides what to believe."""
    import cloudpickle

    try:
        from IPython import get_ipython

        hidden = set(getattr(get_ipython(), "user_ns_hidden", None) or ())
    except ImportError:
        hidden = set()
    names = {k: v for k, v in namespace.items()
             if not k.startswith("_") and k not in hidden and k not in _IPYTHON_NAMES}
    definitions = {k: v for k, v in names.items() if _defined_in_notebook(v)}
    values, skipped = {}, {}
    try:
        definitions_blob = cloudpickle.dumps(definitions) if definitions else None
    except Exception:  # one unpicklable global: save the definitions one by one
        definitions_blob = None
        names = {**names}
    else:
        names = {k: v for k, v in names.items() if k not in definitions}
    for name, value in names.items():
        try:
            values[name] = cloudpickle.dumps(value)
        except Exception as error:
            skipped[name] = f"{type(error).__name__}: {error}"[:200]
    snapshot = {"definitions": definitions_blob, "values": values, "skipped": skipped}
    Path(path).write_bytes(pickle.dumps(snapshot, protocol=4))


# ---------------------------------------------------------------- the library's attributes


class LibraryState:
    """Every attribute of every imported module (and of the classes and functions defined in
    them), recorded in the test server before any snapshot exists, so that a child can put
    back whatever loading a snapshot changed."""

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
            namespace = module.__dict__
            for key, value in list(namespace.items()):
                self._entries.append(("dict", namespace, key, value, name))
                self._watch(value, name, seen)
        self._index_known()

    def _index_known(self) -> None:
        # The entries hold every object named here, so no new object can take one of these ids.
        self.known_ids = {id(entry[1]) for entry in self._entries} | {id(entry[3]) for entry in self._entries}

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
            if value.__flags__ & (1 << 8):  # an immutable (C) type: nothing to change
                return
            where = f"{where}.{value.__qualname__}"
            for key, attr in list(value.__dict__.items()):
                self._entries.append(("class", value, key, attr, where))
                self._watch(attr, where, seen, depth + 1)

    @staticmethod
    def _current(kind, holder, key):
        if kind == "dict":
            return holder.get(key, _MISSING)
        if kind == "class":
            return holder.__dict__.get(key, _MISSING)
        return getattr(holder, key, _MISSING)

    def ignore_what_fork_changes(self) -> None:
        """Forget the attributes that forking itself replaces (``threading`` renews its locks)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            changed = [i for i, (kind, holder, key, original, _) in enumerate(self._entries)
                       if self._current(kind, holder, key) is not original]
            os.write(write_end, json.dumps(changed).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            changed = set(json.loads(pipe.read() or b"[]"))
        os.waitpid(pid, 0)
        self._entries = [entry for i, entry in enumerate(self._entries) if i not in changed]
        self._index_known()

    def restore(self) -> list[str]:
        """Put back every recorded attribute that changed; return their names."""
        changed = []
        for kind, holder, key, original, where in self._entries:
            if self._current(kind, holder, key) is original:
                continue
            changed.append(where if kind == "attr" else f"{where}[{key!r}]" if where == "sys.modules" else f"{where}.{key}")
            if kind == "dict":
                holder[key] = original
            else:
                setattr(holder, key, original)
        return changed


# ---------------------------------------------------------------- phase 2: loading a snapshot


def _load_storage_weights_only(data: bytes):
    """``torch.storage._load_from_bytes`` without its full unpickler: torch's restricted one."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


class _GuardedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with every call, lookup and mutation checked by a
    :class:`SnapshotLoader`."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, loader: SnapshotLoader):
        super().__init__(file)
        self.loader = loader

    def find_class(self, module, name):
        return self.loader.lookup(module, name, lambda: super(_GuardedUnpickler, self).find_class(module, name))

    def persistent_load(self, pid):
        raise Refused("the snapshot uses persistent ids")

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self.loader.call(self.stack[-1], tuple(args))

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.loader.new(cls, tuple(args), {}))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.loader.new(cls, tuple(args), dict(kwargs)))

    def _instantiate(self, klass, args):
        self.append(self.loader.call(klass, tuple(args)))

    def _mutating(opcode, action):  # noqa: N805 - wraps the base class's handler for ``opcode``
        handler = pickle._Unpickler.dispatch[opcode[0]]

        def guarded(self):
            target_depth = {"BUILD": -2, "SETITEM": -3, "APPEND": -2}.get(action, None)
            if target_depth is None:  # SETITEMS, APPENDS, ADDITEMS: the target sits under the mark
                target = self.metastack[-1][-1]
            else:
                target = self.stack[target_depth]
            self.loader.check_mutable(target, action)
            handler(self)

        return guarded

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    for _opcode, _action in ((pickle.BUILD, "BUILD"), (pickle.SETITEM, "SETITEM"), (pickle.SETITEMS, "SETITEMS"),
                             (pickle.APPEND, "APPEND"), (pickle.APPENDS, "APPENDS"), (pickle.ADDITEMS, "ADDITEMS")):
        dispatch[_opcode[0]] = _mutating(_opcode, _action)
    del _opcode, _action, _mutating


class _PlainUnpickler(pickle._Unpickler):
    """For the snapshot's outer container: dicts, strings and bytes, no globals at all."""

    def find_class(self, module, name):
        raise Refused(f"the snapshot's index refers to {module}.{name}")


class SnapshotLoader:
    """Loads one snapshot under guard. ``known_ids`` are the objects that existed before
    (:attr:`LibraryState.known_ids`); ``on_learner_code(name, code)`` is called, and must not
    return, when code from the snapshot is about to run."""

    def __init__(self, known_ids: set[int], on_learner_code):
        import cloudpickle.cloudpickle as cp

        self.known_ids = known_ids
        self.on_learner_code = on_learner_code
        self.found: dict[int, tuple[str, str]] = {}   # objects the pickles looked up, and where
        self.looked_up: dict[int, object] = {}
        self.code: dict[int, types.CodeType] = {}     # code objects built from the snapshot
        self.made: dict[int, object] = {}             # functions, classes and cells built by cloudpickle
        self.current = ""
        self._cp = cp
        self._special = {  # by id: comparing with == could call the snapshot's own __eq__
            id(cp._make_function): self._make_function, id(cp._function_setstate): self._function_setstate,
            id(cp._class_setstate): self._class_setstate, id(cp._make_skeleton_class): self._make_class,
            id(cp._make_skeleton_enum): self._make_enum, id(getattr): self._getattr,
        }
        torch_tensor = sys.modules.get("torch._tensor")
        if torch_tensor is not None:
            self._special[id(torch_tensor._rebuild_from_type_v2)] = self._rebuild_from_type

    # -- what pickles may look up, call and change

    def lookup(self, module: str, name: str, find):
        for part in name.split("."):
            if _is_dunder(part) and part not in _LOOKUP_DUNDERS:
                raise Refused(f"the snapshot looks up {module}.{name}")
        obj = find()
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            obj = _load_storage_weights_only
        self.found[id(obj)] = (module, name)
        self.looked_up[id(obj)] = obj
        return obj

    def pre_existing(self, obj) -> bool:
        return isinstance(obj, types.ModuleType) or id(obj) in self.known_ids or id(obj) in self.looked_up

    def check_mutable(self, target, action: str) -> None:
        if id(target) in self.made or not self.pre_existing(target):
            return
        if action == "BUILD" and type(target).__module__ == "numpy" and type(target).__name__.startswith("dtype"):
            return  # numpy sets the state of its cached dtypes; it cannot change numpy's code
        raise Refused(f"the snapshot tries to change {_label(target)} ({action}), which existed before it was loaded")

    def check_class(self, cls, *, to_call: bool = True) -> None:
        if not isinstance(cls, type):
            raise Refused(f"the snapshot tries to build an object of {_label(cls)}, which is not a class")
        if to_call and cls is type:
            raise Refused("the snapshot tries to call type()")
        for klass in cls.__mro__:
            if id(klass) in self.made:
                continue
            module = getattr(klass, "__module__", "") or ""
            builtin_allowed = klass.__name__ in _SAFE_BUILTIN_CLASSES or issubclass(klass, BaseException) or \
                (klass is type and not to_call)
            if module.split(".")[0] in DENIED_MODULES or (module == "builtins" and not builtin_allowed):
                kind = "" if klass is cls else f", a kind of {_label(klass)}"
                raise Refused(f"the snapshot tries to build {_label(cls)}{kind}")

    def _is_reconstructor(self, func) -> bool:
        if id(func) not in self.found:
            return False
        module, name = self.found[id(func)]
        if name in _RECONSTRUCTORS.get(module, ()) or name.startswith("__pyx_unpickle_"):
            return True
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return True
        return module.split(".")[0] == "pandas" and (name.startswith("_unpickle") or name.startswith("_new_"))

    def call(self, func, args: tuple):
        special = self._special.get(id(func))
        if special is not None:
            result = special(*args)
        elif isinstance(func, type):
            self.check_class(func)
            result = func(*args)
        elif self._is_reconstructor(func):
            module, name = self.found[id(func)]
            for arg in args if module != "cloudpickle.cloudpickle" else ():  # (its cells hold any value)
                if isinstance(arg, type):  # a class handed to a rebuilder is about to be instantiated
                    self.check_class(arg)
            result = func(*args)
            if name in ("_make_cell", "_make_empty_cell"):
                self.made[id(result)] = result
        else:
            module = self.found.get(id(func), (getattr(func, "__module__", None) or "",))[0]
            if id(func) not in self.found or module.split(".")[0] in DENIED_MODULES or module == "builtins":
                raise Refused(f"the snapshot tries to call {_label(func)}")
            raise _Unsupported(f"rebuilding it needs {module}.{self.found[id(func)][1]}, which the grader does not call")
        return self._track(result)

    def new(self, cls, args: tuple, kwargs: dict):
        self.check_class(cls)
        if id(cls) in self.made and issubclass(cls, tuple) and hasattr(cls, "_fields") and not kwargs:
            return tuple.__new__(cls, args)  # a namedtuple, without running its generated __new__
        return self._track(cls.__new__(cls, *args, **kwargs))

    def _track(self, result):
        if type(result) is types.CodeType:
            stack = [result]
            while stack:
                code = stack.pop()
                self.code[id(code)] = code
                stack.extend(c for c in code.co_consts if type(c) is types.CodeType)
        elif type(result) is types.CellType:
            self.made[id(result)] = result
        return result

    # -- cloudpickle's helpers, each with the check it needs

    def _getattr(self, obj, name, *default):
        if not isinstance(name, str) or (_is_dunder(name) and name not in _LOOKUP_DUNDERS):
            raise Refused(f"the snapshot looks up attribute {name!r} of {_label(obj)}")
        value = getattr(obj, name, *default)
        if self.pre_existing(obj):
            self.looked_up[id(value)] = value
        return value

    def _make_function(self, code, globals_, name, argdefs, closure):
        if id(code) not in self.code:
            raise Refused(f"the snapshot builds function {name!r} around code it did not bring")
        if type(globals_) is not dict or self.pre_existing(globals_):
            raise Refused(f"the snapshot gives function {name!r} the globals of {_label(globals_)}")
        if closure is not None and any(id(cell) not in self.made for cell in closure):
            raise Refused(f"the snapshot gives function {name!r} closure cells of another function")
        function = self._cp._make_function(code, globals_, name, argdefs, closure)
        self.made[id(function)] = function
        return function

    def _function_setstate(self, obj, state):
        if id(obj) not in self.made or not isinstance(obj, types.FunctionType):
            raise Refused(f"the snapshot tries to replace the code or globals of {_label(obj)}")
        slotstate = state[1] if isinstance(state, tuple) and len(state) == 2 else {}
        if isinstance(slotstate, dict) and "__code__" in slotstate and id(slotstate["__code__"]) not in self.code:
            raise Refused(f"the snapshot gives {_label(obj)} code it did not bring")
        return self._cp._function_setstate(obj, state)

    def _class_setstate(self, obj, state):
        if id(obj) not in self.made:
            raise Refused(f"the snapshot tries to replace the attributes of {_label(obj)}")
        return self._cp._class_setstate(obj, state)

    def _make_class(self, metaclass, name, bases, type_kwargs, class_tracker_id, extra):
        self.check_class(metaclass, to_call=False)
        for base in bases:
            self.check_class(base, to_call=False)
        cls = self._cp._make_skeleton_class(metaclass, name, bases, type_kwargs, class_tracker_id, extra)
        self.made[id(cls)] = cls
        return cls

    def _make_enum(self, bases, *args):
        for base in bases:
            self.check_class(base, to_call=False)
        cls = self._cp._make_skeleton_enum(bases, *args)
        self.made[id(cls)] = cls
        return cls

    def _rebuild_from_type(self, func, new_type, args, state):
        if not (id(func) in self.found and self._is_reconstructor(func)) and not isinstance(func, type):
            raise Refused(f"the snapshot tries to call {_label(func)} through torch's tensor rebuilder")
        self.check_class(new_type)
        from torch._tensor import _rebuild_from_type_v2

        return _rebuild_from_type_v2(func, new_type, args, state)

    # -- loading

    def _watch(self, frame, event, arg):
        if event == "call" and id(frame.f_code) in self.code:
            self.on_learner_code(self.current, frame.f_code)

    def _load_blob(self, blob: bytes):
        return _GuardedUnpickler(io.BytesIO(blob), self).load()

    def load(self, path: str | Path, skip=()) -> tuple[dict, dict, dict]:
        """``(definitions, values, left_out)``: the learner's functions and classes, their other
        variables, and why a variable is missing. Raises :class:`Refused`."""
        snapshot = _PlainUnpickler(io.BytesIO(Path(path).read_bytes())).load()
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("values"), dict):
            raise Refused("the snapshot file is not one the grader wrote")
        left_out = {str(k): str(v) for k, v in dict(snapshot.get("skipped") or {}).items()}
        definitions, values = {}, {}
        threads = threading.active_count()
        sys.setprofile(self._watch)
        threading.setprofile(self._watch)
        try:
            blobs = [("your functions and classes", snapshot.get("definitions"))] + list(snapshot["values"].items())
            for name, blob in blobs:
                if blob is None:
                    continue
                if type(name) is not str or type(blob) is not bytes:
                    raise Refused("the snapshot file is not one the grader wrote")
                if name in skip:
                    continue
                self.current = name
                try:
                    value = self._load_blob(blob)
                except Refused as error:
                    raise Refused(f"variable {name!r}: {error}") from None
                except _Unsupported as error:
                    left_out[name] = str(error)
                    continue
                except Exception as error:  # a library could not rebuild it (a missing file, a version clash)
                    left_out[name] = f"{type(error).__name__}: {error}"[:200]
                    continue
                if blob is snapshot.get("definitions"):
                    if type(value) is not dict or any(type(k) is not str for k in value):
                        raise Refused("the snapshot file is not one the grader wrote")
                    definitions.update(value)
                else:
                    values[name] = value
            for function in self.made.values():  # their globals become the test's namespace
                if isinstance(function, types.FunctionType) and any(type(k) is not str for k in function.__globals__):
                    raise Refused(f"the globals of {_label(function)} have a key that is not a string")
            gc.collect()  # objects dropped while loading run their __del__ now, still watched
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
        if threading.active_count() != threads:
            raise Refused("loading the snapshot started a thread")
        return definitions, values, left_out


# ---------------------------------------------------------------- phase 2: the test server and its children


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


def _test_namespace(definitions: dict, values: dict, trusted: dict, left_out: dict) -> dict:
    """The learner's names with the trusted ones bound over them, in the dict the learner's
    functions use as their globals (so they see the trusted names too). A learner's name that
    would hide a builtin from the test (``abs = lambda x: 0``) is left out."""
    learner = {}
    for name, value in {**definitions, **values}.items():
        if name.startswith("_") or not name.isidentifier():
            continue
        if hasattr(builtins, name) and name not in trusted:
            left_out[name] = "it would hide the builtin of that name from the test"
            continue
        learner[name] = value
    namespace = None
    for value in definitions.values():
        candidates = vars(value).values() if isinstance(value, type) else [value]
        function = next((c for c in candidates if isinstance(c, types.FunctionType)), None)
        if function is not None:
            namespace = function.__globals__
            break
    if namespace is None:
        namespace = {"__name__": "__main__"}
    for name in [k for k in namespace if not k.startswith("_") and hasattr(builtins, k) and k not in trusted]:
        del namespace[name]
    namespace.update(learner)
    namespace.update({k: v for k, v in trusted.items() if not k.startswith("__")})
    namespace["__builtins__"] = builtins
    for key, value in learner.items():  # the solution's given helpers may call the learner's functions
        trusted.setdefault(key, value)
    return namespace


def _child(request: dict, trusted: dict, state: LibraryState, result_fd: int) -> None:
    """Load the snapshot, run the test cell, report on ``result_fd``; never returns."""

    def report(outcome: dict) -> None:
        os.write(result_fd, json.dumps(outcome).encode() + b"\n")
        os._exit(0)

    def learner_code_runs(name: str, code: types.CodeType) -> None:
        what = getattr(code, "co_qualname", code.co_name)
        report({"status": "learner_code", "name": name,
                "message": f"{name!r} was left out: loading it would run your code ({what})"})

    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(request["cwd"])
    try:
        loader = SnapshotLoader(state.known_ids, learner_code_runs)
        definitions, values, left_out = loader.load(request["snapshot"], skip=set(request["skip"]))
    except Refused as error:
        report({"status": "refused", "message": f"refused to load your variables: {error}"})
    except Exception as error:
        report({"status": "failed", "message": f"could not read your variables: {_describe_error(error)}"})
    gc.disable()  # no collection, so no __del__, between the test's end and the report
    notes = []
    changed = state.restore()
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        notes.append(f"loading your variables changed {shown}; the grader put it back before the test")
    namespace = _test_namespace(definitions, values, trusted, left_out)
    notes += [f"{name!r} was left out: {why}" for name, why in left_out.items()
              if why.startswith("it would hide the builtin")]
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
        if isinstance(outcome, dict) and outcome.get("status") in ("passed", "failed", "refused", "learner_code"):
            return outcome
    if os.WIFSIGNALED(status):
        how = f"was killed by signal {os.WTERMSIG(status)}"
    else:
        how = f"exited with status {os.WEXITSTATUS(status)}"
    return {"status": "failed", "message": f"the test process {how} before the test finished"}


def _run_isolated(request: dict, trusted: dict, state: LibraryState, server_fds: tuple[int, ...]) -> dict:
    """Fork a child for one graded cell; fork again without a variable whose loading would run learner code."""
    deadline = time.monotonic() + float(request["timeout"])
    skip, notes = [], []
    while True:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_end)
                for fd in server_fds:
                    os.close(fd)
                _child({**request, "skip": skip}, trusted, state, write_end)
            finally:
                os._exit(1)
        os.close(write_end)
        outcome = _wait_for_child(pid, read_end, deadline)
        os.close(read_end)
        if outcome["status"] == "learner_code" and len(skip) < 100:
            skip.append(str(outcome.get("name")))
            notes.append(str(outcome.get("message", ""))[:300])
            continue
        outcome["notes"] = notes + [str(n)[:300] for n in outcome.get("notes", [])]
        return outcome


def serve() -> None:
    """The test server's main loop: one setup line, then one request per line on stdin,
    one JSON reply per line on stdout."""
    import cloudpickle.cloudpickle  # noqa: F401 - imported before the library state is recorded

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
    for source in setup["warm_up"]:  # the test cells' own imports, so that no child pays for them
        try:
            exec(compile(source, "<warm-up>", "exec"), {})
        except BaseException:
            pass  # the test cell itself will report it
    state = LibraryState()
    state.ignore_what_fork_changes()
    gc.freeze()  # a child's garbage collection then skips everything the server made
    replies.write(json.dumps({"ready": True, "problems": problems}).encode() + b"\n")
    for line in requests:
        request = json.loads(line)
        outcome = _run_isolated(request, trusted, state, (requests.fileno(), replies.fileno()))
        replies.write(json.dumps({**outcome, "nonce": request["nonce"]}).encode() + b"\n")


class IsolatedTestRunner:
    """The grader's handle on a test server for one assignment.

    ``preamble`` is a list of ``(label, source)`` the server runs, and whose names it binds
    over the learner's in every test (see ``grading.trusted_preamble``); ``warm_up`` are
    statements (the test cells' imports) it runs once in a scratch namespace. Start it
    before any submission runs: it then imports every library while no submitted code exists."""

    def __init__(self, preamble: list[tuple[str, str]], workdir: str | Path, warm_up: list[str] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "test-server.log", "wb")
        command = [sys.executable, "-I", "-c", "from course_lib.tooling.grade_harness import serve; serve()"]
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

    def run(self, *, snapshot: str | Path, source: str, grade_id: str, cwd: str | Path, timeout: float) -> dict:
        """Run one graded cell: ``{"status": passed|failed|refused|timeout, "message", "notes"}``."""
        self.wait_ready()
        nonce = os.urandom(16).hex()
        self._send({"nonce": nonce, "snapshot": str(snapshot), "source": source, "grade_id": grade_id,
                    "cwd": str(cwd), "timeout": timeout, "log": str(self.workdir / f"{grade_id}-{nonce[:8]}.log")})
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
