"""Two reward models trained together: ensemble, Co-teaching / CRM peer review, Self-Review.

Both models see the same batches in the same order. Before each update, each
model scores the batch's pairs (per-pair BT loss, no gradient); the selection
rule of :mod:`course_lib.selection` decides which pairs each model is updated
on. The single-model machinery (steps, per-pair statistics, progress) is the
:class:`course_lib.training.BradleyTerryTrainer` of Chapter 02; this module only
adds the exchange.

Methods (``CollaborativeConfig.method``):

- ``"ensemble"``: two independent models on all pairs (average their rewards at
  the end): the baseline with the same compute as peer review;
- ``"peer_review"``: Co-teaching (Han et al. 2018) / CRM peer review (arXiv
  2505.10597): each model is updated on the small-loss pairs its PEER kept;
- ``"self_review"``: the ablation: each model is updated on the pairs IT kept.

With ``curriculum=True`` every epoch visits the pairs from easy to hard by the
two models' summed margins (CRM's Curriculum Sort, Chapter 05); otherwise the
first trainer's shuffled order is used for both.

Defined in Chapter 04 (curriculum: Chapter 05).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .progress import tqdm
from .selection import curriculum_sort, forget_rate_schedule, peer_review_select, self_review_select
from .reward_model import atomic_torch_save
from .training import CHECKPOINT_FILE, BradleyTerryTrainer, TrainingHistory

METHODS = ("ensemble", "peer_review", "self_review")
SELECTIONS_FILE = "selections.pt"


@dataclass
class CollaborativeConfig:
    """How two models share their data.

    ``noise_rate``: the (known or estimated) share of flipped pairs, eta; each
    model keeps ``1 - forget_rate`` of every batch, with ``forget_rate`` ramped
    from 0 to eta over ``ramp_epochs`` epochs. ``curriculum``: Curriculum Sort.
    """

    method: str = "peer_review"
    noise_rate: float = 0.2
    ramp_epochs: int = 2
    curriculum: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"CollaborativeConfig.method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 <= self.noise_rate < 1.0:
            raise ValueError(f"CollaborativeConfig.noise_rate must be in [0, 1), got {self.noise_rate}")


@dataclass
class CollaborativeHistory:
    """Both models' histories, plus which pairs each model was updated on in every epoch.

    ``selected_a`` / ``selected_b``: boolean arrays ``(epochs, n_pairs)``.
    """

    history_a: TrainingHistory
    history_b: TrainingHistory
    selected_a: torch.Tensor = field(default=None)
    selected_b: torch.Tensor = field(default=None)


def all_pair_margins(trainer: BradleyTerryTrainer) -> torch.Tensor:
    """Margins of every training pair under the trainer's current model, in dataset order."""
    indices = torch.arange(trainer.n_pairs)
    return torch.cat([trainer.pair_margins(trainer.make_batch(part)).cpu() for part in indices.split(trainer.config.eval_batch_size)])


def _checkpoint_dirs(trainer_a: BradleyTerryTrainer, trainer_b: BradleyTerryTrainer) -> tuple[Path, Path] | None:
    """Both trainers' checkpoint folders (distinct), or None when neither has one."""
    dirs = [trainer.config.checkpoint_dir for trainer in (trainer_a, trainer_b)]
    if dirs == [None, None]:
        return None
    if None in dirs or Path(dirs[0]).resolve() == Path(dirs[1]).resolve():
        raise ValueError("train_two_models: give each trainer its own TrainingConfig.checkpoint_dir (or neither)")
    return Path(dirs[0]), Path(dirs[1])


def train_two_models(
    trainer_a: BradleyTerryTrainer, trainer_b: BradleyTerryTrainer, config: CollaborativeConfig, progress: bool = True,
    resume: bool = False,
) -> CollaborativeHistory:
    """Train two models (built on the same training pairs) with the chosen exchange rule.

    Both trainers must use the same ``epochs`` and ``batch_size``. Returns both
    histories and the selection masks.

    With a ``checkpoint_dir`` in each trainer's config, both models and the masks
    are saved after every epoch; ``resume=True`` continues from the last finished
    epoch and ends where an uninterrupted run does.

    Defined in Chapter 04.
    """
    if trainer_a.n_pairs != trainer_b.n_pairs:
        raise ValueError(f"train_two_models: the trainers hold {trainer_a.n_pairs} and {trainer_b.n_pairs} pairs; use the same dataset")
    epochs, batch_size = trainer_a.config.epochs, trainer_a.config.batch_size
    if (trainer_b.config.epochs, trainer_b.config.batch_size) != (epochs, batch_size):
        raise ValueError("train_two_models: both trainers need the same epochs and batch_size")
    selected_a = torch.zeros(epochs, trainer_a.n_pairs, dtype=torch.bool)
    selected_b = torch.zeros_like(selected_a)
    dirs = _checkpoint_dirs(trainer_a, trainer_b)
    if resume and dirs is None:
        raise ValueError("train_two_models(resume=True) needs a checkpoint_dir in both trainers' configs")
    if resume and all((d / CHECKPOINT_FILE).exists() for d in dirs) and (dirs[0] / SELECTIONS_FILE).exists():
        trainer_a.load_checkpoint()
        trainer_b.load_checkpoint()
        saved = torch.load(dirs[0] / SELECTIONS_FILE, weights_only=True)
        if trainer_a.epoch != trainer_b.epoch or saved["epochs_done"] < trainer_a.epoch:
            raise ValueError(f"train_two_models: checkpoints in {dirs[0]} and {dirs[1]} are at different epochs "
                             f"({trainer_a.epoch}, {trainer_b.epoch}, selections {saved['epochs_done']}); start again without resume")
        selected_a, selected_b = saved["a"], saved["b"]
    rule = peer_review_select if config.method == "peer_review" else self_review_select
    for epoch in tqdm(range(trainer_a.epoch, epochs), desc=config.method, disable=not progress):
        keep_ratio = 1.0 - forget_rate_schedule(epoch, config.noise_rate, config.ramp_epochs)
        select = config.method != "ensemble" and keep_ratio < 1.0
        if config.curriculum and epoch > 0:
            margins_a, margins_b = all_pair_margins(trainer_a), all_pair_margins(trainer_b)
            order = curriculum_sort(margins_a, margins_b)
            if select:  # select over the whole epoch: sorted batches would otherwise be all easy or all hard
                epoch_mask_a, epoch_mask_b = rule(-torch.nn.functional.logsigmoid(margins_a), -torch.nn.functional.logsigmoid(margins_b), keep_ratio)
        else:
            order = trainer_a.epoch_order(epoch)
        for indices in order.split(batch_size):
            batch_a, batch_b = trainer_a.make_batch(indices), trainer_b.make_batch(indices)
            if not select:
                mask_a = mask_b = torch.ones(len(indices), dtype=torch.bool)
            elif config.curriculum and epoch > 0:
                mask_a, mask_b = epoch_mask_a[indices], epoch_mask_b[indices]
            else:
                mask_a, mask_b = rule(trainer_a.pair_losses(batch_a).cpu(), trainer_b.pair_losses(batch_b).cpu(), keep_ratio)
            trainer_a.train_step(batch_a, mask_a)
            trainer_b.train_step(batch_b, mask_b)
            selected_a[epoch, indices] = mask_a
            selected_b[epoch, indices] = mask_b
        if dirs is not None:  # masks first, so they are never behind the models' checkpoints
            atomic_torch_save({"a": selected_a, "b": selected_b, "epochs_done": epoch + 1}, dirs[0] / SELECTIONS_FILE)
        trainer_a.end_epoch()
        trainer_b.end_epoch()
    return CollaborativeHistory(trainer_a.history, trainer_b.history, selected_a, selected_b)
