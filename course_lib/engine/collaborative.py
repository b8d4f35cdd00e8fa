"""Two models trained together: ensemble, Co-teaching / CRM peer review, Self-Review.

Both models see the same batches in the same order. Before each update, each
model scores the batch's pairs (per-pair loss, no gradient); the selection
rule of :mod:`course_lib.engine.selection` decides which pairs each model is updated
on. The two models are any :class:`course_lib.engine.learner.Learner` of the course's
one training loop (reward models, :class:`course_lib.reward.training.BradleyTerryTrainer`,
and policies, :class:`course_lib.policy.dpo.DPOTrainer`, for CRM-DPO); this module only
adds the exchange, as an epoch plan (:class:`CollaborativePlan`).

Methods (``CollaborativeConfig.method``):

- ``"ensemble"``: two independent models on all pairs (average their rewards at
  the end): the baseline with the same compute as peer review;
- ``"peer_review"``: Co-teaching (Han et al. 2018) / CRM peer review (arXiv
  2505.10597): each model is updated on the small-loss pairs its PEER kept;
- ``"self_review"``: the ablation: each model is updated on the pairs IT kept;
- ``"coteaching_plus"``: Co-teaching+ (Yu et al. 2019): peer review while the
  forget rate ramps up, then peer review restricted to the pairs the two models
  disagree on (:func:`course_lib.engine.selection.disagreement_select`).

With ``curriculum=True`` every epoch visits the pairs from easy to hard by the
two models' summed margins (CRM's Curriculum Sort, Chapter 05); otherwise the
first trainer's shuffled order is used for both.

Defined in Chapter 04 (curriculum: Chapter 05).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .learner import Learner, TrainingHistory
from .loop import EpochPlan, TrainingLoop, global_pair_losses
from .runtime import gather_rows, shard
from .selection import curriculum_sort, disagreement_select, forget_rate_schedule, peer_review_select, self_review_select

EXCHANGES = ("ensemble", "peer_review", "self_review", "coteaching_plus")
RULES = {"peer_review": peer_review_select, "self_review": self_review_select, "coteaching_plus": peer_review_select}


@dataclass
class CollaborativeConfig:
    """How two models share their data.

    ``noise_rate``: the (known or estimated) share of flipped pairs, eta; each
    model keeps ``1 - forget_rate`` of every batch, with ``forget_rate`` ramped
    from 0 to eta over ``ramp_epochs`` epochs. ``curriculum``: Curriculum Sort.
    ``split_warmup``: while no pair is dropped (the first epoch of the ramp), each model
    is updated on its own random half of every batch instead of all of it. Peer review
    needs two models that disagree; reward heads get that from different
    initialisations, but two policies fine-tuned from one SFT model start identical,
    and without noise in training (no dropout) they would stay identical (Chapter 07).
    """

    method: str = "peer_review"
    noise_rate: float = 0.2
    ramp_epochs: int = 2
    curriculum: bool = False
    split_warmup: bool = False

    def __post_init__(self):
        if self.method not in EXCHANGES:
            raise ValueError(f"CollaborativeConfig.method must be one of {EXCHANGES}, got {self.method!r}")
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


def all_pair_margins(trainer: Learner) -> torch.Tensor:
    """Margins of every training pair under the trainer's current model, in dataset order (every process)."""
    rows = shard(torch.arange(trainer.n_rows))
    parts = [trainer.pair_margins(trainer.make_batch(part)).cpu() for part in rows.split(trainer.config.eval_batch_size)]
    return gather_rows(torch.cat(parts) if parts else torch.zeros(0), trainer.n_rows)


class CollaborativePlan(EpochPlan):
    """The exchange between two trainers as an epoch plan of the training loop.

    Each epoch keeps ``1 - forget_rate`` of the pairs (:func:`forget_rate_schedule`).
    Per batch, the rule (peer or self review) picks each model's update set from the
    two models' per-pair losses. With the curriculum, from the second epoch on, the
    epoch visits pairs easy to hard (:func:`curriculum_sort`) and the selection is
    made once over the whole epoch: sorted batches would otherwise be all easy or all
    hard. ``selected[i]`` records model i's update sets.
    """

    def __init__(self, trainer_a: Learner, trainer_b: Learner, config: CollaborativeConfig):
        self.trainers, self.config = (trainer_a, trainer_b), config
        epochs, n_pairs = trainer_a.config.epochs, trainer_a.n_rows
        self.selected = [torch.zeros(epochs, n_pairs, dtype=torch.bool) for _ in range(2)]
        self.rule = RULES.get(config.method, self_review_select)
        self.epoch_masks: list[torch.Tensor] | None = None

    def keep_ratio(self, epoch: int) -> float:
        return 1.0 - forget_rate_schedule(epoch, self.config.noise_rate, self.config.ramp_epochs)

    def rule_of(self, epoch: int):
        """The selection rule of this epoch (Co-teaching+ switches to disagreement after the ramp)."""
        if self.config.method == "coteaching_plus" and epoch >= self.config.ramp_epochs:
            return disagreement_select
        return self.rule

    def selecting(self, epoch: int) -> bool:
        return self.config.method != "ensemble" and self.keep_ratio(epoch) < 1.0

    def order(self, epoch: int) -> torch.Tensor:
        self.epoch_masks = None
        if not (self.config.curriculum and epoch > 0):
            return self.trainers[0].epoch_order(epoch)
        margins = [all_pair_margins(trainer) for trainer in self.trainers]
        if self.selecting(epoch):
            losses = [-F.logsigmoid(m) for m in margins]
            self.epoch_masks = list(self.rule_of(epoch)(*losses, self.keep_ratio(epoch)))
        return curriculum_sort(*margins)

    def select(self, epoch: int, indices: torch.Tensor, batches: list) -> list[torch.Tensor]:
        if self.config.split_warmup and self.keep_ratio(epoch) == 1.0:
            generator = torch.Generator().manual_seed(epoch * 1_000_003 + int(indices[0]))
            first = torch.randperm(len(indices), generator=generator) < (len(indices) + 1) // 2
            masks = [first, ~first]
        elif not self.selecting(epoch):
            masks = [torch.ones(len(indices), dtype=torch.bool)] * 2
        elif self.epoch_masks is not None:
            masks = [mask[indices] for mask in self.epoch_masks]
        else:
            losses = [global_pair_losses(t, b, len(indices)) for t, b in zip(self.trainers, batches)]
            masks = list(self.rule_of(epoch)(*losses, self.keep_ratio(epoch)))
        for selected, mask in zip(self.selected, masks):
            selected[epoch, indices] = mask
        return masks

    def settings(self) -> dict:
        return {f"collaborative.{k}": v for k, v in asdict(self.config).items()}

    def state_dict(self) -> dict:
        return {"selected": self.selected, "epoch_masks": self.epoch_masks}

    def load_state_dict(self, state: dict) -> None:
        self.selected, self.epoch_masks = state["selected"], state["epoch_masks"]


def train_two_models(
    trainer_a: Learner, trainer_b: Learner, config: CollaborativeConfig, progress: bool = True,
    checkpoint_dir=None, resume: bool = False,
) -> CollaborativeHistory:
    """Train two models (built on the same training pairs) with the chosen exchange rule.

    Both trainers must use the same ``epochs`` and ``batch_size``. Returns both
    histories and the selection masks.

    With ``checkpoint_dir``, both models, their optimizers and random states and the
    selection masks are saved together after every epoch; ``resume=True`` continues
    from the last finished epoch (refusing other settings or data) and ends where an
    uninterrupted run does.

    Defined in Chapter 04.
    """
    if trainer_a.n_rows != trainer_b.n_rows:
        raise ValueError(f"train_two_models: the trainers hold {trainer_a.n_rows} and {trainer_b.n_rows} pairs; use the same dataset")
    epochs, batch_size = trainer_a.config.epochs, trainer_a.config.batch_size
    if (trainer_b.config.epochs, trainer_b.config.batch_size) != (epochs, batch_size):
        raise ValueError("train_two_models: both trainers need the same epochs and batch_size")
    if resume and checkpoint_dir is None:
        raise ValueError("train_two_models(resume=True) needs a checkpoint_dir")
    plan = CollaborativePlan(trainer_a, trainer_b, config)
    loop = TrainingLoop([trainer_a, trainer_b], plan, epochs, batch_size, checkpoint_dir=checkpoint_dir,
                        progress=progress, description=config.method)
    history_a, history_b = loop.run(resume)
    return CollaborativeHistory(history_a, history_b, *plan.selected)
