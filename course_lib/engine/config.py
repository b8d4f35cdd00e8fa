"""The run configuration that every trainer of the course extends.

As TRL's ``RewardConfig``, ``DPOConfig`` and ``GRPOConfig`` all extend
``TrainingArguments``, the course's configs extend :class:`RunConfig`, which holds what
every run has: the optimizer and its schedule, epochs and batch size, the seed, where
and in which precision it runs, checkpoints and logging. A subclass adds its own fields
(and may change a default); it never repeats these.

- :class:`course_lib.reward.training.TrainingConfig`: Bradley-Terry reward models;
- :class:`course_lib.reward.mixtures.MixtureConfig`: mixtures of BT heads;
- :class:`course_lib.policy.sft.PolicyTrainingConfig`, and from it ``DPOConfig`` and
  ``GRPOConfig``: the policy trainers.

A config is checked when it is built, so a typo fails at the line that made it, with the
config's name in the message. ``device`` is recorded as the device it names (``"auto"``
becomes the device it picked); the trainer turns the config into a
:class:`~course_lib.engine.runtime.Runtime` once (:meth:`RunConfig.runtime`) and passes
that down.

Defined in Chapter 02; extended in Chapters 06-08.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from .runtime import PRECISIONS, Runtime, resolve_device, start_runtime


@dataclass
class RunConfig:
    """What every training run has (the names of TRL's ``TrainingArguments``).

    - ``lr``, ``weight_decay``: AdamW; ``lr_scheduler`` a ``transformers`` scheduler name
      (``"linear"``, ``"constant"``, ``"cosine"``...) with ``warmup_ratio`` of the steps
      warming up; ``max_grad_norm`` clips (``None``: off).
    - ``epochs`` passes over the data in batches of ``batch_size`` rows; ``seed`` fixes
      initialization, data order and dropout (without touching the caller's generators).
    - ``eval_batch_size``: batch size for evaluation and scoring (no gradient).
    - ``log_every``: steps between loss updates on the progress bar; ``progress``: show it.
    - ``checkpoint_dir``: a checkpoint is written there after every epoch and, with
      ``checkpoint_every``, every that many steps; ``None``: no checkpoints.
    - ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``;
      ``precision``: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast, :mod:`course_lib.engine.runtime`).

    Defined in Chapter 02.
    """

    lr: float = 1e-3
    epochs: int = 1
    batch_size: int = 32
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = None
    seed: int = 0
    eval_batch_size: int = 64
    log_every: int = 10
    progress: bool = True
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    device: str = "cpu"
    precision: str = "fp32"

    # Fields that change how a run is watched or stored, not what it computes: a resumed run may change them.
    BOOKKEEPING: ClassVar[tuple[str, ...]] = ("progress", "log_every", "checkpoint_dir", "checkpoint_every",
                                              "eval_batch_size")
    # Integer fields that must be at least 1.
    POSITIVE: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "eval_batch_size", "log_every")

    def __post_init__(self):
        for key in self.POSITIVE:
            if getattr(self, key) < 1:
                self.fail(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            self.fail(f"lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            self.fail(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        try:
            self.device = str(resolve_device(self.device))  # "auto" is recorded as the device it picked
        except ValueError as error:
            self.fail(str(error))

    def fail(self, message: str):
        """Raise a ``ValueError`` that names this config."""
        raise ValueError(f"{type(self).__name__}: {message}") from None

    def settings(self) -> dict:
        """The fields that decide what a run computes (all but bookkeeping), for checkpoints."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k not in self.BOOKKEEPING}

    def runtime(self) -> Runtime:
        """Where and how this run executes: :func:`course_lib.engine.runtime.start_runtime` of ``device`` and ``precision``."""
        return start_runtime(self.device, self.precision)
