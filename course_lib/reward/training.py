"""Bradley-Terry training of reward models, with per-pair training dynamics.

:class:`BradleyTerryTrainer` fits a :class:`~course_lib.reward.model.RewardModel` to
preference pairs by minimizing the Bradley-Terry loss (with TRL's optional margin and
reward-centering terms, :func:`course_lib.engine.losses.bradley_terry_loss`), or a
noise-robust variant. It is a :class:`~course_lib.engine.learner.Learner` of the course's one
training loop (:mod:`course_lib.engine.loop`), which it runs with ``fit()``:

- texts are encoded (frozen mode) or tokenized once (:mod:`course_lib.reward.pairs`);
- ``epoch_order(epoch)`` gives the order pairs are visited in; pass
  ``order_fn(epoch, trainer) -> indices`` to replace it;
- ``make_batch(indices)``, ``pair_losses(batch)`` and ``pair_margins(batch)`` (no
  gradient) and ``train_step(batch, pair_weights)`` let the loop train two models on
  each other's selections (Chapter 04's Co-teaching and CRM peer review,
  :mod:`course_lib.engine.collaborative`);
- every epoch, each visited pair's loss, margin ``r_chosen - r_rejected`` and
  gradient norm are recorded in :class:`~course_lib.engine.learner.TrainingHistory` (Chapter 03).

Device, precision, random state, processes and checkpoints come from
:mod:`course_lib.engine.runtime`: runs are deterministic for a seed without reseeding the
caller's generators, and a run resumed from a checkpoint ends exactly where an
uninterrupted one does.

Defined in Chapter 02; per-pair statistics are read in Chapter 03, the step-level
methods drive Chapter 04, ``order_fn`` Chapter 05.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch
from torch.func import functional_call, grad, vmap

from ..engine.losses import bradley_terry_loss, conservative_bradley_terry_loss, unbiased_bradley_terry_loss
from ..engine.config import RunConfig
from ..engine.learner import Learner, StepOutput, TrainingHistory, shuffled_order
from ..engine.loop import EpochPlan, TrainingLoop
from .pairs import PairBatch, pair_batch, prepare_pairs
from .model import RewardHead, RewardModel
from ..engine.runtime import single_threaded

__all__ = ["LOSSES", "BradleyTerryTrainer", "PairBatch", "TrainingConfig", "TrainingHistory", "head_gradient_norms"]

# Pair losses a trainer can use; the robust ones take the assumed flip rate (Chapter 04).
LOSSES = {
    "bradley_terry": bradley_terry_loss,
    "conservative": conservative_bradley_terry_loss,
    "unbiased": unbiased_bradley_terry_loss,
}
# Lower bounds of a batch's mean loss: unbounded, the unbiased loss drives margins to infinity
# (the non-negative risk correction, see unbiased_bradley_terry_loss).
BATCH_FLOORS = {"unbiased": 0.0}
@dataclass
class TrainingConfig(RunConfig):
    """Settings of a Bradley-Terry training run, on top of :class:`~course_lib.engine.config.RunConfig`
    (TRL's ``RewardConfig`` names where they exist).

    - ``margin_column``: dataset column holding a per-pair margin (Llama 2), or ``None``.
    - ``center_rewards_coefficient``: weight of the ``(r_c + r_r)^2`` term, or ``None``.
    - ``loss``: ``"bradley_terry"`` (default), or a noise-robust variant from
      :mod:`course_lib.engine.losses`: ``"conservative"`` (label smoothing) or ``"unbiased"``
      (rDPO-style; a batch whose mean loss is below 0 does not step), both with
      ``assumed_flip_rate``. Per-pair gradient norms are recorded for the BT loss only
      (NaN otherwise).
    - ``group_by_length``: the default epoch order batches pairs of similar token
      length together (less padding; ignored in frozen mode and with ``order_fn``).
    - ``forward_chunks``: a batch's sequences are sorted by length and encoded in
      this many groups, each padded to its own longest sequence (less padding, same
      result; 1 = one padded forward pass, which suits large GPU batches).
    - ``record_grad_norms``: record each pair's gradient norm (Chapter 03's
      dynamics); it costs most of a frozen-mode step, so sweeps turn it off (NaN).
    - ``feature_cache_dir``: disk cache for frozen-mode features, or ``None``.
    - ``keep_best``: early stopping. With an ``eval_dataset``, ``fit`` ends with the
      trainable weights of the epoch whose eval accuracy was highest (the first such
      epoch); ``history.best_epoch`` says which. On noisy labels the eval set is a
      noisy validation split, as a practitioner would have (Chapter 05's baseline).

    The maximum sequence length belongs to the model (``RewardModelConfig.max_length``)
    because scoring must truncate the same way training did.

    Defined in Chapter 02.
    """

    lr: float = 1e-3
    epochs: int = 3
    lr_scheduler: str = "linear"
    margin_column: str | None = None
    center_rewards_coefficient: float | None = None
    loss: str = "bradley_terry"
    assumed_flip_rate: float = 0.0
    group_by_length: bool = True
    forward_chunks: int = 2
    record_grad_norms: bool = True
    feature_cache_dir: str | Path | None = None
    keep_best: bool = False

    BOOKKEEPING: ClassVar[tuple[str, ...]] = RunConfig.BOOKKEEPING + ("feature_cache_dir",)
    POSITIVE: ClassVar[tuple[str, ...]] = RunConfig.POSITIVE + ("forward_chunks",)

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in LOSSES:
            self.fail(f"loss must be one of {tuple(LOSSES)}, got {self.loss!r}")
        if self.loss != "bradley_terry" and (self.margin_column or self.center_rewards_coefficient is not None):
            self.fail("margin_column and center_rewards_coefficient apply to loss='bradley_terry' only")


def head_gradient_norms(
    head: RewardHead, chosen_features, rejected_features, margin=None, center_rewards_coefficient=None
) -> torch.Tensor:
    r"""Per-pair norm of the gradient of the pair's BT loss w.r.t. the head's parameters.

    Features are treated as fixed inputs and dropout is off. For a linear head
    :math:`r = w^\top\phi + b`, with :math:`d = r_c - r_r`, :math:`s = r_c + r_r`:

    .. math::

        \nabla_w \ell = -\sigma(-(d - m))\,(\phi_c - \phi_r) + 2\lambda s\,(\phi_c + \phi_r),
        \qquad \partial_b \ell = 4 \lambda s

    (the bias cancels in :math:`d`, so only the centering term moves it). An MLP
    head's per-pair gradients are computed with ``torch.func.vmap(grad(...))``.

    Defined in Chapter 02; used in Chapter 03.
    """
    coefficient = center_rewards_coefficient or 0.0
    if margin is None:
        margin = torch.zeros(len(chosen_features), device=chosen_features.device)
    if head.is_linear:
        weight, bias = head.out.weight[0].detach().float(), head.out.bias.detach().float()
        chosen, rejected = chosen_features @ weight + bias, rejected_features @ weight + bias
        total = chosen + rejected
        grad_weight = -torch.sigmoid(margin - (chosen - rejected))[:, None] * (chosen_features - rejected_features)
        grad_weight = grad_weight + 2 * coefficient * total[:, None] * (chosen_features + rejected_features)
        return torch.sqrt(grad_weight.pow(2).sum(1) + (4 * coefficient * total) ** 2)

    params = {name: p.detach() for name, p in head.named_parameters()}

    def pair_loss(params, chosen, rejected, pair_margin):
        rewards = functional_call(head, params, (torch.stack([chosen, rejected]),))
        return bradley_terry_loss(rewards[:1], rewards[1:], pair_margin, center_rewards_coefficient)

    was_training = head.training
    head.eval()
    grads = vmap(grad(pair_loss), in_dims=(None, 0, 0, 0))(params, chosen_features, rejected_features, margin)
    head.train(was_training)
    return torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))


class BradleyTerryTrainer(Learner):
    """Train a reward model on ``(prompt, chosen, rejected)`` pairs with the Bradley-Terry loss.

    Every trainer of the course takes ``(model, config, data)``; ``config=None`` is the
    default :class:`TrainingConfig`. ``train_dataset`` / ``eval_dataset``: a ``datasets.Dataset`` or a list of dicts
    with string columns ``prompt``, ``chosen``, ``rejected``. ``order_fn(epoch,
    trainer)`` returns the dataset rows to visit in an epoch, in order (default:
    :func:`course_lib.engine.learner.shuffled_order`). Texts are tokenized (or, in frozen
    mode, encoded) once, here.

    Defined in Chapter 02.
    """

    def __init__(self, model: RewardModel, config: TrainingConfig | None, train_dataset, eval_dataset=None,
                 order_fn=None):
        config = config or TrainingConfig()
        runtime = config.runtime()
        model.to(runtime.device)
        prepare = partial(prepare_pairs, model, margin_column=config.margin_column, feature_batch_size=config.eval_batch_size,
                          feature_cache_dir=config.feature_cache_dir, progress=config.progress)
        self.train_data = prepare(train_dataset, "train_dataset")
        self.eval_data = None if eval_dataset is None else prepare(eval_dataset, "eval_dataset")
        if config.keep_best and eval_dataset is None:
            raise ValueError("TrainingConfig.keep_best needs an eval_dataset (a validation split) to pick the best epoch")
        super().__init__(model, config, self.train_data.n_pairs, runtime=runtime)
        self.best: dict | None = None
        self.order_fn = order_fn or default_order
        self.single_threaded = model.config.mode == "frozen" and self.device.type == "cpu"

    @property
    def reward_model(self) -> RewardModel:
        return self.model

    def make_batch(self, indices) -> PairBatch:
        """The training batch of these dataset rows.

        Defined in Chapter 02; used in Chapter 04.
        """
        with single_threaded(self.single_threaded):  # a gather of a few rows: a second thread only waits
            return pair_batch(self.train_data, indices)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Dataset rows in the order epoch ``epoch`` visits them (``order_fn``).

        Defined in Chapter 02; replaced in Chapter 05.
        """
        return torch.as_tensor(self.order_fn(epoch, self), dtype=torch.long).cpu()

    def _pair_losses(self, chosen, rejected, margin):
        if self.config.loss == "bradley_terry":
            return bradley_terry_loss(chosen, rejected, margin, self.config.center_rewards_coefficient, reduction="none")
        return LOSSES[self.config.loss](chosen, rejected, self.config.assumed_flip_rate, reduction="none")

    def forward(self, batch: PairBatch, module) -> StepOutput:
        chunks = 1 if "features" in batch.inputs else self.config.forward_chunks
        rewards, features = module(**batch.inputs, return_features=True, chunks=chunks)
        chosen, rejected = rewards.float().chunk(2)
        losses = self._pair_losses(chosen, rejected, batch.margin)
        stats = {"margin": (chosen - rejected).detach()}
        if torch.is_grad_enabled() and self.config.loss == "bradley_terry" and self.config.record_grad_norms:
            chosen_features, rejected_features = features.detach().float().chunk(2)
            stats["grad_norm"] = head_gradient_norms(self.model.head, chosen_features, rejected_features, batch.margin,
                                                     self.config.center_rewards_coefficient)
        return StepOutput(losses, None, stats, BATCH_FLOORS.get(self.config.loss))

    @torch.no_grad()
    def evaluate(self, dataset=None) -> dict[str, float]:
        """Mean loss and accuracy (share of pairs with ``r_chosen > r_rejected``) on the eval set.

        Defined in Chapter 02.
        """
        data = self.eval_data
        if dataset is not None:
            data = prepare_pairs(self.model, dataset, "eval_dataset", self.config.margin_column,
                                 self.config.eval_batch_size, self.config.feature_cache_dir, self.config.progress)
        if data is None:
            raise ValueError("evaluate: no eval_dataset was given to the trainer and none was passed")
        losses, correct = [], []
        for indices in torch.arange(data.n_pairs).split(self.config.eval_batch_size):
            batch = pair_batch(data, indices)
            losses.append(self.pair_losses(batch))
            correct.append(self.pair_margins(batch) > 0)
        return {"loss": torch.cat(losses).mean().item(), "accuracy": torch.cat(correct).float().mean().item()}

    def evaluate_epoch(self) -> dict | None:
        return None if self.eval_data is None else self.evaluate()

    def end_epoch(self) -> None:
        super().end_epoch()
        if self.config.keep_best and self.history.eval_metrics:
            last = self.history.eval_metrics[-1]
            if self.best is None or last["accuracy"] > self.best["accuracy"]:
                self.best = {"accuracy": last["accuracy"], "epoch": last["epoch"], "state": self.trainable_state()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.best = state.get("best")

    def settings(self) -> dict:
        return {**self.config.settings(), "n_pairs": self.n_rows, "model": asdict(self.model.config)}

    def data_fingerprint(self) -> str:
        return self.train_data.fingerprint()

    def fit(self, resume: bool = False) -> TrainingHistory:
        """Train for ``config.epochs`` epochs and return the history.

        ``resume=True`` continues from the checkpoint in ``config.checkpoint_dir`` (if
        there is one; it must come from a run with the same settings and data) and
        ends with exactly the parameters and history of an uninterrupted run.

        Defined in Chapter 02.
        """
        config = self.config
        if resume and config.checkpoint_dir is None:
            raise ValueError("fit(resume=True) needs TrainingConfig.checkpoint_dir")
        loop = TrainingLoop([self], EpochPlan(self.epoch_order), config.epochs, config.batch_size,
                            checkpoint_dir=config.checkpoint_dir, checkpoint_every=config.checkpoint_every,
                            progress=config.progress, log_every=config.log_every)
        loop.run(resume)
        if config.keep_best and self.best is not None:
            self.model.load_state_dict(self.best["state"], strict=False)
            self.history.best_epoch = self.best["epoch"]
        return self.history


def default_order(epoch: int, trainer: BradleyTerryTrainer) -> torch.Tensor:
    """The trainer's default epoch order: shuffled by ``(seed, epoch)``, grouped by token length if asked.

    Defined in Chapter 02.
    """
    config = trainer.config
    lengths = trainer.train_data.lengths if config.group_by_length else None
    return shuffled_order(trainer.n_rows, config.seed, epoch, config.batch_size, lengths)
