"""The one training loop: epochs of batches, a selection hook, per-pair statistics, checkpoints.

Every model the course trains goes through :class:`TrainingLoop`. What differs between
trainers lives in two small objects the loop drives:

- a :class:`Learner` per model: its optimizer and scheduler, random state, precision,
  and how it turns dataset rows into a batch and a batch into per-pair losses
  (``make_batch`` and ``forward``, written by each trainer: Bradley-Terry reward
  models in :mod:`course_lib.training`, mixtures in :mod:`course_lib.mixtures`);
- a plan (:class:`EpochPlan`): the order an epoch visits the dataset rows in, and which
  pairs of each batch update which learner. One model on every pair is the default
  plan; ensembles, Co-teaching / CRM peer review, Self-Review and Curriculum Sort
  (:mod:`course_lib.collaborative`) are other plans over two learners.

A step whose batch has no selected pair (or whose loss estimate is below the learner's
floor) does not step the optimizer or the scheduler.
Per-pair losses, margins and gradient norms are recorded for every pair a learner sees
(selected or not) in :class:`TrainingHistory`.

Several processes (``torchrun --nproc-per-node N``) train one model data-parallel with
``torch.distributed`` DDP: every process builds the same global batch of rows, takes its
contiguous share (:func:`course_lib.runtime.shard`), and per-pair losses used for
selection are gathered back into batch order, so selections, statistics and results
match a one-process run on the same global batches (up to float rounding).

A checkpoint (every epoch, and every ``checkpoint_every`` steps) holds every learner's
model, optimizer, scheduler, random state and history, the plan's state and where the
loop stands, with the run's settings and a fingerprint of its data; resuming with other
settings or data is refused (:func:`course_lib.runtime.load_checkpoint`), and resuming
with the same ends bit-identical to an uninterrupted run (on CPU).

Defined in Chapter 02; driven by two learners in Chapters 04-05 and by mixtures in Chapter 06.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler

from .progress import tqdm
from .runtime import (
    LocalRandomState,
    all_reduce_sum,
    autocast,
    check_precision,
    distributed_init,
    gather_rows,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    shard,
    single_threaded,
    world,
)

CHECKPOINT_FILE = "checkpoint.pt"
STATISTICS = ("loss", "margin", "grad_norm")


@dataclass
class TrainingHistory:
    """What a run recorded. Per-pair arrays have shape ``(epochs, n_pairs)``, indexed by dataset row.

    ``pair_loss``, ``pair_margin`` (``r_chosen - r_rejected``) and
    ``pair_grad_norm`` come from the forward pass that updated the model, i.e. before
    that step's update, as in dataset cartography (Swayamdipta et al. 2020). A pair
    not visited in an epoch (or a statistic a trainer does not record) holds NaN.
    ``step_loss`` is the mean training loss over the selected pairs of every optimizer
    step; ``eval_metrics`` one dict per epoch when an eval set is given;
    ``best_epoch`` the epoch whose weights early stopping kept (``None``: the last).

    Defined in Chapter 02; read in Chapter 03.
    """

    pair_loss: np.ndarray
    pair_margin: np.ndarray
    pair_grad_norm: np.ndarray
    step_loss: list[float] = field(default_factory=list)
    eval_metrics: list[dict] = field(default_factory=list)
    epochs_done: int = 0
    best_epoch: int | None = None

    @classmethod
    def empty(cls, epochs: int, n_pairs: int) -> TrainingHistory:
        return cls(*(np.full((epochs, n_pairs), np.nan, dtype=np.float32) for _ in STATISTICS))

    def pair_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.pair_loss, self.pair_margin, self.pair_grad_norm

    def state_dict(self) -> dict:
        return {
            "pair_stats": torch.from_numpy(np.stack(self.pair_arrays())),
            "step_loss": torch.tensor(self.step_loss, dtype=torch.float64),
            "eval_metrics": self.eval_metrics,
            "epochs_done": self.epochs_done,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> TrainingHistory:
        loss, margin, grad_norm = state["pair_stats"].numpy().copy()
        return cls(loss, margin, grad_norm, state["step_loss"].tolist(), state["eval_metrics"], state["epochs_done"])


@dataclass
class StepOutput:
    """What a learner's ``forward`` returns for a batch.

    ``losses``: per-pair losses; ``extra``: a batch-level term added to the objective
    (a regularizer); ``stats``: per-pair statistics to record by name; ``floor``: a
    lower bound of the batch's mean loss (an estimate below it is overfitting, and the
    step is skipped: the non-negative risk correction of Kiryo et al. 2017).
    """

    losses: torch.Tensor
    extra: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    floor: float | None = None


class Learner:
    """One model in training: optimizer, scheduler, precision, random state, history.

    A trainer subclasses it and writes ``make_batch(indices)`` (this process's batch of
    the given dataset rows, with an ``indices`` attribute) and ``forward(batch, module)``
    (a :class:`StepOutput`, computed by calling ``module``: the model, or its DDP wrapper
    in a multi-process run). ``evaluate_epoch()`` may return metrics to store per epoch;
    ``settings()`` and ``data_fingerprint()`` say what a checkpoint must match.

    AdamW with ``lr`` and ``weight_decay``; ``lr_scheduler`` is a ``transformers``
    scheduler name warming up over ``warmup_ratio`` of ``total_steps``;
    ``max_grad_norm`` clips (``None``: off). The model is moved to ``device``.

    Defined in Chapter 02.
    """

    def __init__(self, model: torch.nn.Module, *, n_pairs: int, epochs: int, total_steps: int, lr: float,
                 weight_decay: float = 0.0, lr_scheduler: str = "constant", warmup_ratio: float = 0.0,
                 max_grad_norm: float | None = None, device: str = "cpu", precision: str = "fp32", seed: int = 0):
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        distributed_init(self.device)
        self.model = model.to(self.device)
        self.n_pairs, self.epochs = n_pairs, epochs
        parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
        self.scheduler = get_scheduler(lr_scheduler, self.optimizer, round(warmup_ratio * total_steps), total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.max_grad_norm = max_grad_norm
        self.random_state = LocalRandomState(seed)
        self.history = TrainingHistory.empty(epochs, n_pairs)
        self.epoch = 0
        self.global_step = 0
        self.single_threaded = False  # a subclass sets it for steps too small to share out over CPU threads
        ranks = world()[1]
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.module = DistributedDataParallel(self.model, device_ids) if ranks > 1 and parameters else self.model

    # ------------------------------------------------------------ written by each trainer
    def make_batch(self, indices: torch.Tensor):
        raise NotImplementedError

    def forward(self, batch, module) -> StepOutput:
        raise NotImplementedError

    def evaluate_epoch(self) -> dict | None:
        return None

    def settings(self) -> dict:
        return {}

    def data_fingerprint(self) -> str:
        return ""

    # ------------------------------------------------------------ shared
    def autocast(self):
        return autocast(self.device, self.precision)

    @torch.no_grad()
    def pair_losses(self, batch) -> torch.Tensor:
        """Per-pair losses of a batch under the current model, without gradient (eval mode)."""
        with single_threaded(self.single_threaded), self.autocast():
            self.model.eval()
            return self.forward(batch, self.model).losses.float()

    def train_step(self, batch, pair_weights: torch.Tensor | None = None, total_weight: float | None = None):
        """One optimizer step on ``batch``; returns the mean loss over the selected pairs, or ``None``.

        ``pair_weights``: a boolean mask or float weights, one per pair of this
        process's batch; the objective is ``sum(w * loss) / sum(w)`` over the global
        batch (plus the trainer's ``extra`` term). ``total_weight``: ``sum(w)`` over
        every process, when the caller knows it (saves a collective call). A batch
        whose total weight is zero, or whose mean loss is below the learner's
        ``floor``, records its statistics but does not step the optimizer or the
        scheduler, and returns ``None``.
        """
        with single_threaded(self.single_threaded), self.random_state:
            self.model.train()
            with self.autocast():
                output = self.forward(batch, self.module)
            losses = output.losses.float()
            self.record(batch.indices, losses, output.stats)
            weights = None if pair_weights is None else torch.as_tensor(pair_weights, device=losses.device).float()
            ranks = world()[1]
            if total_weight is None:
                local_weight = torch.tensor(float(len(losses)), device=losses.device) if weights is None else weights.sum()
                total_weight = float(all_reduce_sum(local_weight))
            if total_weight == 0:
                self.optimizer.zero_grad(set_to_none=True)
                return None
            if weights is None and ranks == 1:
                loss = losses.mean()
            else:
                weighted = losses.sum() if weights is None else (losses * weights).sum()
                loss = weighted / total_weight * ranks  # DDP averages gradients over processes
            mean_loss = loss.detach() if ranks == 1 else all_reduce_sum(loss.detach()) / ranks
            if output.floor is not None and float(mean_loss) < output.floor:
                self.optimizer.zero_grad(set_to_none=True)
                return None
            if output.extra is not None:
                loss = loss + output.extra
            self.scaler.scale(loss).backward()
            if self.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            self.history.step_loss.append(float(mean_loss))
            return mean_loss

    def record(self, indices: torch.Tensor, losses: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        """Store this epoch's per-pair statistics of the rows ``indices``."""
        rows = indices.cpu().numpy()
        for name, array in zip(STATISTICS, self.history.pair_arrays()):
            values = losses if name == "loss" else stats.get(name)
            if values is not None:
                array[self.epoch, rows] = values.detach().float().cpu().numpy()

    def merge_statistics(self) -> None:
        """Combine this epoch's per-pair statistics over processes (each pair was seen by one)."""
        if world()[1] == 1:
            return
        for array in self.history.pair_arrays():
            local = torch.from_numpy(array[self.epoch].copy())
            parts = gather_rows(local[None], world()[1])
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


class EpochPlan:
    """Which rows an epoch visits, in what order, and which pairs update which learner.

    ``order(epoch)`` returns the dataset rows in visiting order; ``select(epoch,
    indices, batches)`` returns one mask (or ``None``: every pair) per learner over
    the GLOBAL batch ``indices`` (``batches`` are this process's batches, one per
    learner; use :func:`global_pair_losses` to score them). State that a resumed run
    needs goes in ``state_dict``; ``settings()`` joins the checkpoint's settings.
    """

    def __init__(self, order_fn):
        self.order_fn = order_fn

    def order(self, epoch: int) -> torch.Tensor:
        return torch.as_tensor(self.order_fn(epoch), dtype=torch.long).cpu()

    def select(self, epoch: int, indices: torch.Tensor, batches: list) -> list[torch.Tensor | None]:
        return [None] * len(batches)

    def settings(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def global_pair_losses(learner: Learner, batch, batch_size: int) -> torch.Tensor:
    """The learner's per-pair losses (no gradient) of a whole global batch, in batch order, on the CPU."""
    return gather_rows(learner.pair_losses(batch).cpu(), batch_size)


class TrainingLoop:
    """Train ``learners`` for ``epochs`` epochs of batches of ``batch_size`` rows, as ``plan`` says.

    ``checkpoint_dir``: a checkpoint is written there after every epoch and, with
    ``checkpoint_every``, every that many steps; ``run(resume=True)`` continues from it.
    ``description`` labels the progress bar, which shows the loss every ``log_every`` steps.

    Defined in Chapter 02.
    """

    def __init__(self, learners: list[Learner], plan: EpochPlan, epochs: int, batch_size: int, *,
                 checkpoint_dir=None, checkpoint_every: int | None = None, progress: bool = True,
                 description: str = "epoch", log_every: int = 10):
        if any(learner.n_pairs != learners[0].n_pairs for learner in learners):
            raise ValueError(f"the learners hold {[l.n_pairs for l in learners]} pairs; train them on the same dataset")
        self.learners, self.plan = learners, plan
        self.epochs, self.batch_size = epochs, batch_size
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every, self.progress, self.description = checkpoint_every, progress, description
        self.log_every = log_every
        self.epoch, self.step_in_epoch = learners[0].epoch, 0
        self.epoch_order: torch.Tensor | None = None

    @property
    def checkpoint_path(self) -> Path:
        if self.checkpoint_dir is None:
            raise ValueError("resuming needs a checkpoint_dir")
        return self.checkpoint_dir / CHECKPOINT_FILE

    def settings(self) -> dict:
        """Everything a resumed run must share with the checkpoint, flat (learner ``i``'s keys prefixed ``i.``)."""
        flat = {"epochs": self.epochs, "batch_size": self.batch_size, **self.plan.settings()}
        for i, learner in enumerate(self.learners):
            prefix = f"{i}." if len(self.learners) > 1 else ""
            flat.update({prefix + key: value for key, value in learner.settings().items()})
        return flat

    def data_fingerprint(self) -> str:
        return "+".join(learner.data_fingerprint() for learner in self.learners)

    def save(self) -> Path:
        state = {
            "learners": [learner.state_dict() for learner in self.learners],
            "plan": self.plan.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "epoch_order": self.epoch_order,
        }
        return save_checkpoint(self.checkpoint_path, state, self.settings(), self.data_fingerprint())

    def load(self) -> None:
        state = load_checkpoint(self.checkpoint_path, self.settings(), self.data_fingerprint())
        for learner, saved in zip(self.learners, state["learners"]):
            learner.load_state_dict(saved)
        self.plan.load_state_dict(state["plan"])
        self.epoch, self.step_in_epoch, self.epoch_order = state["epoch"], state["step_in_epoch"], state["epoch_order"]

    def run(self, resume: bool = False) -> list[TrainingHistory]:
        """Train to the last epoch (from the checkpoint with ``resume=True``, if one exists); returns the histories."""
        if resume and self.checkpoint_path.exists():
            self.load()
        ranks = world()[1]
        while self.epoch < self.epochs:
            if self.epoch_order is None:
                self.epoch_order = self.plan.order(self.epoch)
            batches = self.epoch_order.split(self.batch_size)
            bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not self.progress or world()[0] != 0,
                       desc=f"{self.description} {self.epoch + 1}/{self.epochs}")
            for indices in batches[self.step_in_epoch:]:
                local = shard(indices)
                positions = shard(torch.arange(len(indices)))
                local_batches = [learner.make_batch(local) for learner in self.learners]
                masks = self.plan.select(self.epoch, indices, local_batches)
                for learner, batch, mask in zip(self.learners, local_batches, masks):
                    if mask is None and ranks == 1:
                        loss = learner.train_step(batch)
                    elif mask is None:
                        loss = learner.train_step(batch, None, float(len(indices)))
                    else:
                        mask = torch.as_tensor(mask)
                        loss = learner.train_step(batch, mask[positions], float(mask.float().sum()))
                self.step_in_epoch += 1
                bar.update()
                if loss is not None and self.step_in_epoch % self.log_every == 0:
                    bar.set_postfix(loss=f"{float(loss):.4f}")
                step = self.learners[0].global_step
                if self.checkpoint_dir is not None and self.checkpoint_every and step and step % self.checkpoint_every == 0:
                    self.save()
            bar.close()
            for learner in self.learners:
                learner.end_epoch()
            self.epoch += 1
            self.epoch_order, self.step_in_epoch = None, 0
            if self.checkpoint_dir is not None:
                self.save()
        return [learner.history for learner in self.learners]


def steps_per_run(n_pairs: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of a run that visits every pair each epoch (the scheduler's length)."""
    return epochs * math.ceil(n_pairs / batch_size)
