"""A learner: one model in training, and what its steps record.

:class:`Learner` holds a model's run configuration (:mod:`course_lib.engine.config`)
and runtime, its optimizer and scheduler, random state and :class:`TrainingHistory`.
A trainer subclasses it and writes how dataset rows become a batch (``make_batch``)
and a batch becomes per-row losses (``forward``, returning a :class:`StepOutput`:
losses, statistics and logs). ``train_step`` is the one place the course steps an
optimizer: weighted by the plan's selection, skipped when nothing is selected or the
loss estimate is below the learner's floor, DDP-aware, recording each row's loss,
margin and gradient norm. :class:`~course_lib.engine.loop.TrainingLoop` drives learners.

Defined in Chapter 02; read in Chapter 03 (statistics), driven in pairs in Chapters 04-05.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler

from .config import RunConfig
from .runtime import LocalRandomState, Runtime, all_reduce_sum, gather_rows, single_threaded

STATISTICS = ("loss", "margin", "grad_norm")


@dataclass
class TrainingHistory:
    """What a run recorded. Per-row arrays have shape ``(epochs, n_rows)``, indexed by dataset row.

    For preference pairs a row is a pair: ``pair_loss``, ``pair_margin`` (``r_chosen -
    r_rejected``) and ``pair_grad_norm`` come from the forward pass that updated the
    model, i.e. before that step's update, as in dataset cartography (Swayamdipta et al.
    2020). A row not visited in an epoch (or a statistic a trainer does not record) holds
    NaN. ``step_loss`` is the mean training loss over the selected rows of every
    optimizer step; ``step_logs`` one dict per step of what the learner's ``forward``
    logged (``StepOutput.logs``, averaged over the global batch) with the step number;
    ``eval_metrics`` one dict per epoch when an eval set is given; ``best_epoch`` the
    epoch whose weights early stopping kept (``None``: the last).

    Defined in Chapter 02; read in Chapter 03.
    """

    pair_loss: np.ndarray
    pair_margin: np.ndarray
    pair_grad_norm: np.ndarray
    step_loss: list[float] = field(default_factory=list)
    eval_metrics: list[dict] = field(default_factory=list)
    epochs_done: int = 0
    best_epoch: int | None = None
    step_logs: list[dict] = field(default_factory=list)

    @classmethod
    def empty(cls, epochs: int, n_rows: int) -> TrainingHistory:
        return cls(*(np.full((epochs, n_rows), np.nan, dtype=np.float32) for _ in STATISTICS))

    def pair_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.pair_loss, self.pair_margin, self.pair_grad_norm

    def state_dict(self) -> dict:
        return {
            "pair_stats": torch.from_numpy(np.stack(self.pair_arrays())),
            "step_loss": torch.tensor(self.step_loss, dtype=torch.float64),
            "eval_metrics": self.eval_metrics,
            "epochs_done": self.epochs_done,
            "step_logs": self.step_logs,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> TrainingHistory:
        loss, margin, grad_norm = state["pair_stats"].numpy().copy()
        return cls(loss, margin, grad_norm, state["step_loss"].tolist(), state["eval_metrics"], state["epochs_done"],
                   step_logs=list(state["step_logs"]))


@dataclass
class StepOutput:
    """What a learner's ``forward`` returns for a batch.

    ``losses``: per-row losses; ``extra``: a batch-level term added to the objective
    (a regularizer); ``stats``: per-row statistics to record by name (``"margin"``,
    ``"grad_norm"``); ``floor``: a lower bound of the batch's mean loss (an estimate
    below it is overfitting, and the step is skipped: the non-negative risk correction
    of Kiryo et al. 2017); ``logs``: values to log for the step, each a per-row tensor
    (logged as its mean over the global batch) or a float (averaged over processes).
    """

    losses: torch.Tensor
    extra: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    floor: float | None = None
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)


class Learner:
    """One model in training: its config and runtime, optimizer, scheduler, random state, history.

    A trainer subclasses it and writes ``make_batch(indices)`` (this process's batch of
    the given dataset rows, with an ``indices`` attribute) and ``forward(batch, module)``
    (a :class:`StepOutput`, computed by calling ``module``: the model, or its DDP wrapper
    in a multi-process run). ``epoch_order(epoch)`` gives the rows an epoch visits
    (default: :func:`shuffled_order`, grouped by ``lengths`` when the trainer has them);
    ``evaluate_epoch()`` may return metrics to store per epoch; ``after_step(batch,
    loss, logs, seconds)`` sees every finished step; ``settings()`` and
    ``data_fingerprint()`` say what a checkpoint must match.

    ``config`` is a :class:`~course_lib.engine.config.RunConfig`: AdamW with ``lr`` and
    ``weight_decay``, its ``lr_scheduler`` warming up over ``warmup_ratio`` of the run's
    steps, ``max_grad_norm`` clipping. ``runtime``: where the run executes (default:
    ``config.runtime()``, decided here once); the model is moved there.
    ``updates_per_batch``: optimizer steps on every batch (GRPO's ``num_iterations``).

    Defined in Chapter 02.
    """

    lengths: torch.Tensor | None = None  # token length per row, for length-grouped batches

    def __init__(self, model: torch.nn.Module, config: RunConfig, n_rows: int, *, updates_per_batch: int = 1,
                 runtime: Runtime | None = None):
        self.config = config
        self.runtime = runtime or config.runtime()
        self.model = model.to(self.runtime.device)
        self.n_rows, self.epochs, self.updates_per_batch = n_rows, config.epochs, updates_per_batch
        parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        total_steps = steps_per_run(n_rows, config.batch_size, config.epochs) * updates_per_batch
        self.scheduler = get_scheduler(config.lr_scheduler, self.optimizer, round(config.warmup_ratio * total_steps),
                                       total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.random_state = LocalRandomState(config.seed)
        self.history = TrainingHistory.empty(config.epochs, n_rows)
        self.epoch = 0
        self.global_step = 0
        self.single_threaded = False  # a subclass sets it for steps too small to share out over CPU threads
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        use_ddp = self.runtime.world_size > 1 and parameters
        self.module = DistributedDataParallel(self.model, device_ids) if use_ddp else self.model

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    # ------------------------------------------------------------ written by each trainer
    def make_batch(self, indices: torch.Tensor):
        raise NotImplementedError

    def forward(self, batch, module) -> StepOutput:
        raise NotImplementedError

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Dataset rows in the order epoch ``epoch`` visits them: shuffled by ``(seed, epoch)``, grouped by length."""
        return shuffled_order(self.n_rows, self.config.seed, epoch, self.config.batch_size, self.lengths)

    def evaluate_epoch(self) -> dict | None:
        return None

    def after_step(self, batch, loss: torch.Tensor | None, logs: dict[str, float], seconds: float) -> None:
        """Called after every ``train_step`` with its mean loss (``None``: skipped), logs and wall time."""

    def settings(self) -> dict:
        return {}

    def data_fingerprint(self) -> str:
        return ""

    # ------------------------------------------------------------ shared
    def autocast(self):
        return self.runtime.autocast()

    @torch.no_grad()
    def evaluate_batch(self, batch) -> StepOutput:
        """The forward pass of a batch under the current model, without gradient (eval mode)."""
        with single_threaded(self.single_threaded), self.autocast():
            self.model.eval()
            return self.forward(batch, self.model)

    def pair_losses(self, batch) -> torch.Tensor:
        """Per-row losses of a batch under the current model, without gradient (eval mode)."""
        return self.evaluate_batch(batch).losses.float()

    def pair_margins(self, batch) -> torch.Tensor:
        """Per-pair margins (``r_chosen - r_rejected``, or DPO's implied-reward margin), without gradient (eval mode).

        Defined in Chapter 02; used in Chapter 05 to sort pairs from easy to hard.
        """
        return self.evaluate_batch(batch).stats["margin"]

    def train_step(self, batch, pair_weights: torch.Tensor | None = None, total_weight: float | None = None):
        """``updates_per_batch`` optimizer steps on ``batch``; returns the last mean loss over the selected rows, or ``None``.

        ``pair_weights``: a boolean mask or float weights, one per row of this process's
        batch; the objective is ``sum(w * loss) / sum(w)`` over the global batch (plus
        the trainer's ``extra`` term). ``total_weight``: ``sum(w)`` over every process,
        when the caller knows it (saves a collective call). A batch whose total weight is
        zero, or whose mean loss is below the learner's ``floor``, records its
        statistics but does not step the optimizer or the scheduler, and returns ``None``.
        Each update's ``logs`` go to ``history.step_logs`` (with the step number after
        the update), and ``after_step`` sees the last update's.
        """
        started = time.perf_counter()
        for _ in range(self.updates_per_batch):
            loss, logs = self._update(batch, pair_weights, total_weight)
            self.history.step_logs.append({"step": self.global_step, **logs})
        self.after_step(batch, loss, logs, time.perf_counter() - started)
        return loss

    def _update(self, batch, pair_weights, total_weight) -> tuple[torch.Tensor | None, dict[str, float]]:
        """One optimizer step (the only place the course steps an optimizer): ``(mean loss or None, logs)``."""
        with single_threaded(self.single_threaded), self.random_state:
            self.model.train()
            with self.autocast():
                output = self.forward(batch, self.module)
            losses = output.losses.float()
            self.record(batch.indices, losses, output.stats)
            logs = global_logs(output.logs)
            weights = None if pair_weights is None else torch.as_tensor(pair_weights, device=losses.device).float()
            ranks = self.runtime.world_size
            if total_weight is None:
                local_weight = torch.tensor(float(len(losses)), device=losses.device) if weights is None else weights.sum()
                total_weight = float(all_reduce_sum(local_weight))
            if total_weight == 0:
                self.optimizer.zero_grad(set_to_none=True)
                return None, logs
            if weights is None and ranks == 1:
                loss = losses.mean()
            else:
                weighted = losses.sum() if weights is None else (losses * weights).sum()
                loss = weighted / total_weight * ranks  # DDP averages gradients over processes
            mean_loss = loss.detach() if ranks == 1 else all_reduce_sum(loss.detach()) / ranks
            if output.floor is not None and float(mean_loss) < output.floor:
                self.optimizer.zero_grad(set_to_none=True)
                return None, logs
            if output.extra is not None:
                loss = loss + output.extra
            self.scaler.scale(loss).backward()
            if self.config.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            self.history.step_loss.append(float(mean_loss))
            return mean_loss, logs

    def record(self, indices: torch.Tensor, losses: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        """Store this epoch's per-row statistics of the rows ``indices``."""
        rows = indices.cpu().numpy()
        for name, array in zip(STATISTICS, self.history.pair_arrays()):
            values = losses if name == "loss" else stats.get(name)
            if values is not None:
                array[self.epoch, rows] = values.detach().float().cpu().numpy()

    def merge_statistics(self) -> None:
        """Combine this epoch's per-row statistics over processes (each row was seen by one)."""
        if self.runtime.world_size == 1:
            return
        for array in self.history.pair_arrays():
            local = torch.from_numpy(array[self.epoch].copy())
            parts = gather_rows(local[None], self.runtime.world_size)
            array[self.epoch] = torch.nanmean(parts, dim=0).numpy()

    def end_epoch(self) -> None:
        self.merge_statistics()
        metrics = self.evaluate_epoch()
        if metrics is not None:
            self.history.eval_metrics.append({"epoch": self.epoch, **metrics})
        self.epoch += 1
        self.history.epochs_done = self.epoch

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().clone() for name, p in self.model.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict:
        self.merge_statistics()
        return {
            "model": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "random": self.random_state.state_dict(),
            "history": self.history.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.random_state.load_state_dict(state["random"])
        self.history = TrainingHistory.from_state_dict(state["history"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]


def global_logs(logs: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """A step's logs as floats: per-row tensors as their mean over the global batch, floats averaged over processes."""
    if not logs:
        return {}
    sums, counts = [], []
    for value in logs.values():
        if isinstance(value, torch.Tensor):
            value = value.detach().float()
            sums.append(value.sum().cpu())
            counts.append(float(value.numel()))
        else:
            sums.append(torch.tensor(float(value)))
            counts.append(1.0)
    totals = all_reduce_sum(torch.stack([torch.stack(sums), torch.tensor(counts)]).double())
    return {name: float(total / count) for name, total, count in zip(logs, *totals)}


def shuffled_order(n_rows: int, seed: int, epoch: int, batch_size: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The default epoch order: a permutation fixed by ``(seed, epoch)``, grouped by length if ``lengths`` is given.

    Length grouping follows ``transformers``' ``LengthGroupedSampler``: within chunks
    of 50 batches, pairs are sorted by token length and cut into batches; the full
    batches are then shuffled (a smaller last batch stays last).

    Defined in Chapter 02.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_rows, generator=generator)
    if lengths is None:
        return order
    batches = []
    for chunk in order.split(batch_size * 50):
        batches.extend(chunk[torch.argsort(lengths[chunk], descending=True, stable=True)].split(batch_size))
    tail = [batches.pop()] if len(batches[-1]) < batch_size else []
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator)] + tail)


def steps_per_run(n_rows: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of a run that visits every row each epoch (the scheduler's length)."""
    return epochs * math.ceil(n_rows / batch_size)
