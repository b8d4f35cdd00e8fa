"""Where and how a run executes: device, precision, threads, random state, processes, checkpoints.

Every trainer of the course (reward models, two-model CRM, mixtures, and the policy
trainers of Chapters 07-08) takes these decisions here, in one place:

- **Device.** :func:`resolve_device` parses ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
  ``"mps"`` or ``"auto"`` once and says clearly what is wrong otherwise.
- **Precision.** ``"fp32"``, ``"bf16"`` or ``"fp16"``, applied with ``torch.autocast``
  around forward passes (:func:`autocast`); parameters and optimizer state stay in
  fp32 (mixed precision, Micikevicius et al. 2018). fp16 needs a gradient scaler and
  a GPU; bf16 runs on CPUs too.
- **The runtime.** :func:`start_runtime` decides the device and precision once, sets
  the process-wide flags (TF32 matrix products on CUDA) and joins the process group a
  launcher describes; the frozen :class:`Runtime` it returns is passed down.
- **Random state.** :class:`LocalRandomState` gives a run its own torch / numpy /
  python random streams: the run seeds them, the caller's global generators are left
  exactly as they were, and the state can be checkpointed and restored.
- **Processes.** Data-parallel training through ``torch.distributed`` (DDP), launched
  with ``torchrun --nproc-per-node N`` (or ``accelerate launch``);
  :func:`distributed_init` joins the process group the launcher describes and
  :func:`gather_rows` collects per-pair values from every rank in batch order.
- **Checkpoints.** :func:`save_checkpoint` writes atomically (a crash never leaves a
  half-written file) with the run's settings and a fingerprint of its data;
  :func:`load_checkpoint` refuses to resume when either differs and says what.

Defined for Chapter 02's trainer; every later trainer uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .files import atomic_torch_save

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------- device and precision


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device a run uses: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, or ``"auto"`` (CUDA, else MPS, else CPU).

    Raises ``ValueError`` naming the problem: an unknown name, or a GPU that is not
    there. Under ``torchrun``, ``"cuda"`` means this process's GPU (``LOCAL_RANK``).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"device must be a string such as 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto', got {spec!r}")
    name = spec.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for, but no Apple GPU (MPS) is available; use 'cpu' or 'auto'")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ValueError(f"device {spec!r}: the GPU index must be a number, as in 'cuda:0'")
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was asked for, but no CUDA GPU is visible; use 'cpu' or 'auto'")
        number = int(index) if index else int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
        if number >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        return torch.device("cuda", number)
    raise ValueError(f"unknown device {spec!r}: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if the device supports it, else a ``ValueError`` that says what to use."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA GPU (device is {device}); use 'bf16' or 'fp32'")
    return precision


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for bf16 / fp16 on ``device``; a no-op for fp32."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class Runtime:
    """Where and how a run executes, decided once (:func:`start_runtime`) and passed down.

    ``device``; ``precision`` (``autocast()`` is its context); ``rank`` and
    ``world_size`` of this process in data-parallel training (0 and 1 without a
    process group).

    Defined in Chapter 02.
    """

    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1

    def autocast(self):
        """``torch.autocast`` for bf16 / fp16 on this device; a no-op for fp32."""
        return autocast(self.device, self.precision)

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and shows progress (rank 0)."""
        return self.rank == 0


def start_runtime(device: str | torch.device = "auto", precision: str = "fp32") -> Runtime:
    """The one place a run's device, precision and process-wide settings are decided.

    Resolves ``device`` (:func:`resolve_device`) and checks ``precision`` against it;
    on CUDA switches on TF32 tensor cores for fp32 matrix products (a process-wide
    flag of torch); under ``torchrun`` / ``accelerate launch`` joins the process group
    they describe (:func:`distributed_init`). Every trainer calls it once, through its
    config (:meth:`course_lib.engine.config.RunConfig.runtime`).

    Defined in Chapter 02.
    """
    resolved = resolve_device(device)
    check_precision(precision, resolved)
    if resolved.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    process, processes = distributed_init(resolved)
    return Runtime(resolved, precision, process, processes)


@contextmanager
def single_threaded(enabled: bool = True):
    """Run torch on one CPU thread inside the block (no-op when ``enabled`` is false).

    A frozen-mode step is a few tiny tensor ops; on a busy CPU, waking a second
    thread for each costs far more than the work, so these steps run single-threaded.
    """
    previous = torch.get_num_threads()
    change = enabled and previous > 1
    if change:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)


# ---------------------------------------------------------------- random state


class LocalRandomState:
    """A run's own torch (CPU and CUDA), numpy and python random streams.

    ``with state:`` swaps them in for the global generators that library code such as
    dropout draws from, and on exit stores where they got to and puts the caller's
    generators back untouched. Seeding a run therefore never reseeds the caller.
    ``state_dict()`` / ``load_state_dict()`` carry the streams through a checkpoint.
    """

    def __init__(self, seed: int):
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.manual_seed(seed)
            self._torch = torch.get_rng_state()
            self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        self._numpy = np.random.RandomState(seed % 2**32).get_state()
        self._python = random.Random(seed).getstate()

    @staticmethod
    def _cuda_devices() -> list[int]:
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []

    def __enter__(self):
        self._saved = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                       np.random.get_state(), random.getstate())
        torch.set_rng_state(self._torch)
        if self._cuda:
            torch.cuda.set_rng_state_all(self._cuda)
        np.random.set_state(self._numpy)
        random.setstate(self._python)
        return self

    def __exit__(self, *exc):
        self._torch = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        self._numpy, self._python = np.random.get_state(), random.getstate()
        torch_state, cuda_state, numpy_state, python_state = self._saved
        torch.set_rng_state(torch_state)
        if cuda_state:
            torch.cuda.set_rng_state_all(cuda_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        return False

    def state_dict(self) -> dict:
        """The streams as tensors and plain values (a checkpoint loads with ``weights_only=True``)."""
        kind, keys, position, has_gauss, cached_gaussian = self._numpy
        numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian)
        return {"torch": self._torch, "cuda": self._cuda, "numpy": numpy_state, "python": self._python}

    def load_state_dict(self, state: dict) -> None:
        kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
        self._numpy = (kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
        self._torch, self._python = state["torch"], state["python"]
        self._cuda = state["cuda"] if torch.cuda.is_available() else []


# ---------------------------------------------------------------- processes


def distributed_init(device: torch.device) -> tuple[int, int]:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe; returns ``(rank, world_size)``.

    A plain ``python`` run (no ``WORLD_SIZE`` above 1 in the environment) is rank 0 of
    1 and starts nothing. The backend is NCCL on CUDA and gloo otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This process's contiguous share of a global batch of dataset rows (all of it for one process)."""
    size = world_size()
    return indices if size == 1 else indices.tensor_split(size)[rank()]


def _on_collective_device(tensor: torch.Tensor) -> torch.Tensor:
    """NCCL moves CUDA tensors only, gloo CPU tensors."""
    wanted = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return tensor.to(wanted)


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every process's :func:`shard` results back into global batch order.

    ``local`` holds this process's rows (first dimension); ``total`` is the global
    batch size. With one process it returns ``local``.
    """
    size = world_size()
    if size == 1:
        return local
    sizes = [len(part) for part in torch.arange(total).tensor_split(size)]
    padded = _on_collective_device(local.new_zeros((max(sizes), *local.shape[1:])))
    padded[: len(local)] = _on_collective_device(local)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)]).to(local.device)


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over processes (``value`` itself for one process)."""
    if world_size() == 1:
        return value
    total = _on_collective_device(value.detach().clone())
    dist.all_reduce(total)
    return total.to(value.device)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# ---------------------------------------------------------------- checkpoints


def fingerprint(*parts) -> str:
    """A short SHA-256 of tensors, arrays, strings and numbers (what a run trained on)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous()
            digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
            digest.update(part.view(torch.uint8).numpy().tobytes() if part.numel() else b"")
        elif isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode() + np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def save_checkpoint(path, state: dict, settings: dict, data_fingerprint: str) -> Path:
    """Write ``state`` with the run's ``settings`` and data fingerprint to ``path``, atomically (rank 0 only)."""
    path = Path(path)
    if rank() == 0:
        atomic_torch_save({"settings": settings, "data": data_fingerprint, "state": state}, path)
    barrier()
    return path


def load_checkpoint(path, settings: dict, data_fingerprint: str) -> dict:
    """The state saved at ``path``, after checking it was written by a run with the same settings and data.

    Raises ``ValueError`` naming every setting that differs (``batch_size: checkpoint
    8, this run 16``), or saying that the data differ; resuming then would silently
    mix two different runs.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    old = saved["settings"]
    differences = [f"{key}: checkpoint {old.get(key, '(absent)')!r}, this run {settings.get(key, '(absent)')!r}"
                   for key in sorted(set(old) | set(settings)) if old.get(key) != settings.get(key)]
    if differences:
        raise ValueError(f"cannot resume from {path}: the run's settings differ ({'; '.join(differences)}); "
                         "use the same settings, or start again without resume")
    if saved["data"] != data_fingerprint:
        raise ValueError(f"cannot resume from {path}: it was written for other training data (fingerprint "
                         f"{saved['data']}, this run's data {data_fingerprint}); use the same data, or start again")
    return saved["state"]
