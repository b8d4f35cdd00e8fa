"""The one training loop: epochs of batches, a selection hook, per-row statistics, checkpoints.

Every model the course trains goes through :class:`TrainingLoop`. The loop speaks of
dataset *rows*: a preference pair for reward models and DPO, a (prompt, response) for
SFT, a prompt for GRPO. What differs between trainers lives in two small objects the
loop drives:

- a :class:`Learner` per model: its run configuration (:mod:`course_lib.engine.config`)
  and runtime, optimizer and scheduler, random state, and how it turns dataset rows
  into a batch and a batch into per-row losses (``make_batch`` and ``forward``, written
  by each trainer: Bradley-Terry reward models in :mod:`course_lib.reward.training`,
  mixtures in :mod:`course_lib.reward.mixtures`, the policy trainers in
  :mod:`course_lib.policy`). ``forward`` returns what it computed (:class:`StepOutput`:
  losses, statistics, logs); the learner's ``train_step`` is the one place an optimizer
  steps;
- a plan (:class:`EpochPlan`): the order an epoch visits the dataset rows in, and which
  rows of each batch update which learner. One model on every row is the default
  plan; ensembles, Co-teaching / CRM peer review, Self-Review and Curriculum Sort
  (:mod:`course_lib.engine.collaborative`) are other plans over two learners.

A step whose batch has no selected row (or whose loss estimate is below the learner's
floor) does not step the optimizer or the scheduler.
Per-row losses, margins and gradient norms are recorded for every row a learner sees
(selected or not) in :class:`TrainingHistory`.

Several processes (``torchrun --nproc-per-node N``) train one model data-parallel with
``torch.distributed`` DDP: every process builds the same global batch of rows, takes its
contiguous share (:func:`course_lib.engine.runtime.shard`), and per-pair losses used for
selection are gathered back into batch order, so selections, statistics and results
match a one-process run on the same global batches (up to float rounding).

A checkpoint (every epoch, and every ``checkpoint_every`` steps) holds every learner's
model, optimizer, scheduler, random state and history, the plan's state and where the
loop stands, with the run's settings and a fingerprint of its data; resuming with other
settings or data is refused (:func:`course_lib.engine.runtime.load_checkpoint`), and resuming
with the same ends bit-identical to an uninterrupted run (on CPU).

Defined in Chapter 02; driven by two learners in Chapters 04-05 and by mixtures in Chapter 06.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .learner import Learner, TrainingHistory
from .progress import tqdm
from .runtime import gather_rows, load_checkpoint, save_checkpoint, shard

CHECKPOINT_FILE = "checkpoint.pt"


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
        if any(learner.n_rows != learners[0].n_rows for learner in learners):
            raise ValueError(f"the learners hold {[l.n_rows for l in learners]} rows; train them on the same dataset")
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
        runtime = self.learners[0].runtime
        while self.epoch < self.epochs:
            if self.epoch_order is None:
                self.epoch_order = self.plan.order(self.epoch)
            batches = self.epoch_order.split(self.batch_size)
            bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not self.progress or not runtime.is_main,
                       desc=f"{self.description} {self.epoch + 1}/{self.epochs}")
            for indices in batches[self.step_in_epoch:]:
                local = shard(indices)
                positions = shard(torch.arange(len(indices)))
                local_batches = [learner.make_batch(local) for learner in self.learners]
                masks = self.plan.select(self.epoch, indices, local_batches)
                for learner, batch, mask in zip(self.learners, local_batches, masks):
                    if mask is None and runtime.world_size == 1:
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
