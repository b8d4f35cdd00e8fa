"""The learner's variables written as data, and read back without running code.

Where a graded cell sits, the grader runs :func:`save` in the learner's kernel; a test
process reads the folder back with :func:`load`. The folder holds only data:

* ``variables.json``: every variable of the learner's namespace, as one of
  - data: ``None``, numbers, strings, bytes, and lists, tuples, sets and dicts of them,
    numpy arrays and scalars, and torch tensors (with ``Parameter``, ``Size``, ``dtype``
    and ``device``), nested as deep as they like, as a tree of tagged JSON nodes;
  - a reference: a module, or a function or class that a module names
    (``sigmoid = torch.sigmoid``), as its module's name and its qualified name;
  - something else, with what it was: the learner's functions and classes, which the test
    process rebuilds by replaying their source (``sources.definition_statements``), and
    objects no data loader can carry (a model, an optimizer, an object of their class);
* ``arrays.npz``: the numpy arrays, read back with ``np.load(..., allow_pickle=False)``;
* ``tensors.pt``: the torch objects, one list, read back with ``torch.load(...,
  weights_only=True)``.

The kernel that writes the folder runs the learner's code, so the folder is untrusted. Each
loader (``json``, numpy's without pickle, torch's weights-only unpickler) builds data and
runs no code from the file, and :func:`load` refuses anything that is not in the shape
:func:`save` writes (:class:`SnapshotError`).

Defined for the course's grading.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

MANIFEST, ARRAYS, TENSORS = "variables.json", "arrays.npz", "tensors.pt"
_MAX_DEPTH = 64
_SECTIONS = ("data", "references", "others")
# IPython's own names in a kernel's namespace: the shell, the exit helpers, the input and output history.
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}
_IPYTHON_HISTORY = re.compile(r"_+|_i+|_i?\d+|_oh|_ih|_dh")


class SnapshotError(Exception):
    """The folder is not one :func:`save` writes; the graded cell scores zero."""


class _NotData(Exception):
    """A value that is not data; it stays out of the snapshot."""


def _describe(value) -> str:
    if isinstance(value, (types.FunctionType, type)) and value.__module__ == "__main__":
        return f"a {'class' if isinstance(value, type) else 'function'} defined in your notebook"
    kind = type(value)
    return f"a {kind.__module__}.{kind.__qualname__} object"


def resolve(reference) -> object:
    """The object that ``[module, qualified name]`` names, from the modules already imported
    (nothing is imported for it); raises LookupError."""
    module, qualname = reference
    found = sys.modules.get(module)
    if found is None:
        raise LookupError(f"module {module} is not imported")
    for part in qualname.split(".") if qualname else ():
        try:
            found = getattr(found, part)
        except AttributeError:
            raise LookupError(f"{module} has no {qualname}") from None
    return found


def _reference(value) -> list[str] | None:
    """``[module, qualified name]`` when ``value`` is a module, or a function or class its
    module names (``torch.sigmoid``, ``torch.nn.Linear``), else None."""
    if isinstance(value, types.ModuleType):
        candidates = [[value.__name__, ""]]
    else:  # torch.sigmoid's qualified name is _VariableFunctionsClass.sigmoid: its name leads back to it
        candidates = [[getattr(value, "__module__", None), getattr(value, attr, None)] for attr in ("__qualname__", "__name__")]
    for reference in candidates:
        try:
            if reference[0] != "__main__" and all(isinstance(p, str) for p in reference) and resolve(reference) is value:
                return reference
        except Exception:  # the names do not lead back to the value
            continue
    return None


class _Encoder:
    """Values as tagged JSON nodes; numpy arrays and torch objects are put aside in lists."""

    def __init__(self):
        self.numpy, self.torch = sys.modules.get("numpy"), sys.modules.get("torch")
        torch = self.torch
        self.torch_types = (torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype, torch.device) if torch else ()
        self.arrays: list = []
        self.tensors: list = []

    def encode(self, value, depth: int = 0) -> list:
        if depth > _MAX_DEPTH:
            raise _NotData("data nested too deeply")
        kind = type(value)
        if value is None:
            return ["none"]
        if kind in (bool, int, float, str):
            return [kind.__name__, value]
        if kind is complex:
            return ["complex", [value.real, value.imag]]
        if kind is bytes:
            return ["bytes", value.hex()]
        if kind in (list, tuple, set, frozenset):
            return [kind.__name__, [self.encode(item, depth + 1) for item in value]]
        if kind is dict:
            return ["dict", [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]]
        if kind in self.torch_types:
            self.tensors.append(value)
            return ["torch", len(self.tensors) - 1]
        np = self.numpy
        if np is not None and (kind is np.ndarray or (isinstance(value, np.generic) and kind.__module__ == "numpy")) \
                and not value.dtype.hasobject:
            self.arrays.append(np.asarray(value))
            return ["numpy" if kind is np.ndarray else "numpy scalar", len(self.arrays) - 1]
        raise _NotData(_describe(value))


def save(namespace: dict, folder: str) -> None:
    """Write the learner's variables to ``folder`` (see the module's docstring). Runs inside
    the learner's kernel, where the grader calls it in place of each graded cell."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    hidden = set(getattr(shell, "user_ns_hidden", None) or ())
    encoder = _Encoder()
    sections: dict[str, dict] = {section: {} for section in _SECTIONS}
    for name, value in list(namespace.items()):
        if name in hidden or name in _IPYTHON_NAMES or name.startswith("__") or _IPYTHON_HISTORY.fullmatch(name):
            continue
        arrays, tensors = len(encoder.arrays), len(encoder.tensors)
        try:
            sections["data"][name] = encoder.encode(value)
            continue
        except (_NotData, RecursionError) as error:
            del encoder.arrays[arrays:], encoder.tensors[tensors:]
            why = str(error) if isinstance(error, _NotData) else "data nested too deeply"
        reference = _reference(value)
        if reference is not None:
            sections["references"][name] = reference
        else:
            what = _describe(value)
            sections["others"][name] = what if why == what else f"{what} holding {why}"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if encoder.arrays:
        encoder.numpy.savez(folder / ARRAYS, *encoder.arrays)
    if encoder.tensors:
        encoder.torch.save(encoder.tensors, folder / TENSORS)
    (folder / MANIFEST).write_text(json.dumps(sections))


@dataclass
class Variables:
    """What :func:`load` read: ``data`` by name, ``references`` (``[module, qualified name]``)
    by name, and for every other variable, what it was."""

    data: dict[str, object]
    references: dict[str, list[str]]
    others: dict[str, str]


def _read_arrays(path: Path) -> dict:
    if not path.exists():
        return {}
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as error:  # object arrays (they need pickle), a file that is no archive
        raise SnapshotError(f"{ARRAYS} holds more than plain arrays ({type(error).__name__}: {str(error)[:200]})") from None


def _read_tensors(path: Path) -> list:
    if not path.exists():
        return []
    import torch

    try:
        tensors = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # the weights-only unpickler refuses every other object
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise SnapshotError(f"{TENSORS} holds more than tensors ({type(error).__name__}: {first_line})") from None
    if type(tensors) is not list:
        raise SnapshotError(f"{TENSORS} is not the list the grader writes")
    return tensors


class _Decoder:
    def __init__(self, arrays: dict, tensors: list):
        self.arrays, self.tensors = arrays, tensors

    def decode(self, node, depth: int = 0):
        if depth > _MAX_DEPTH or type(node) is not list or not node or type(node[0]) is not str:
            raise SnapshotError("a variable is not in the grader's format")
        tag, payload = node[0], (node[1] if len(node) == 2 else None)
        if tag == "none" and len(node) == 1:
            return None
        simple = {"bool": bool, "int": int, "float": float, "str": str}.get(tag)
        if simple is not None and type(payload) is simple:
            return payload
        if tag == "complex" and type(payload) is list and len(payload) == 2 and all(type(p) is float for p in payload):
            return complex(*payload)
        if tag == "bytes" and type(payload) is str:
            return bytes.fromhex(payload)
        if tag in ("list", "tuple", "set", "frozenset") and type(payload) is list:
            container = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag]
            return container(self.decode(item, depth + 1) for item in payload)
        if tag == "dict" and type(payload) is list and all(type(p) is list and len(p) == 2 for p in payload):
            return {self.decode(k, depth + 1): self.decode(v, depth + 1) for k, v in payload}
        if tag == "torch" and type(payload) is int and 0 <= payload < len(self.tensors):
            return self.tensors[payload]
        if tag in ("numpy", "numpy scalar") and type(payload) is int and f"arr_{payload}" in self.arrays:
            array = self.arrays[f"arr_{payload}"]
            if tag == "numpy":
                return array
            if array.ndim == 0:
                return array[()]
        raise SnapshotError(f"a variable has a {tag!r} node the grader does not write")


def _checked(section: str, value) -> object:
    if section == "others" and type(value) is str:
        return value[:300]
    if section == "references" and type(value) is list and len(value) == 2 and all(type(p) is str for p in value):
        module, qualname = value
        if all(p.isidentifier() for p in module.split(".")) and \
                all(p.isidentifier() and not p.startswith("__") for p in qualname.split(".") if qualname):
            return value
    raise SnapshotError(f"an entry of {section!r} is not in the grader's format")


def load(folder) -> Variables:
    """Read what :func:`save` wrote to ``folder``; raises :class:`SnapshotError` for anything else.
    Runs in the test process, and runs no code from the folder."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise SnapshotError(f"{MANIFEST} could not be read ({type(error).__name__})") from None
    if type(manifest) is not dict or sorted(manifest) != sorted(_SECTIONS) or any(type(v) is not dict for v in manifest.values()):
        raise SnapshotError(f"{MANIFEST} is not in the grader's format")
    for section in manifest.values():
        for name in section:
            if not name.isidentifier() or name.startswith("__"):
                raise SnapshotError(f"{name[:40]!r} is not a variable name the grader writes")
    decoder = _Decoder(_read_arrays(folder / ARRAYS), _read_tensors(folder / TENSORS))
    try:
        data = {name: decoder.decode(node) for name, node in manifest["data"].items()}
    except (TypeError, ValueError, RecursionError) as error:  # an unhashable key, bad hex
        raise SnapshotError(f"a variable could not be rebuilt ({type(error).__name__})") from None
    return Variables(data=data,
                     references={name: _checked("references", v) for name, v in manifest["references"].items()},
                     others={name: _checked("others", v) for name, v in manifest["others"].items()})


def warm_up() -> None:
    """Write and read a small snapshot, so that the libraries the loaders use are imported and
    initialized before the test server records their state (``guard.ProcessGuard``)."""
    import numpy
    import torch

    with tempfile.TemporaryDirectory() as folder:
        save({"array": numpy.zeros(2), "scalar": numpy.float32(1), "tensor": torch.zeros(2)}, folder)
        load(folder)
