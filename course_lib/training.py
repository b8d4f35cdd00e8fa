"""Bradley-Terry training of reward models, with per-pair training dynamics.

:class:`BradleyTerryTrainer` fits a :class:`~course_lib.reward_model.RewardModel` to
preference pairs by minimizing the Bradley-Terry loss (with TRL's optional margin and
reward-centering terms, :func:`course_lib.losses.bradley_terry_loss`). It is built to
be reused step by step:

- ``fit()`` runs the whole loop: epochs, progress bar, evaluation, checkpoints.
- ``epoch_order(epoch)`` gives the order pairs are visited in; pass
  ``order_fn(epoch, trainer) -> indices`` to replace it (Chapter 05's curriculum).
- ``make_batch(indices)``, ``pair_losses(batch)`` (no gradient) and
  ``train_step(batch, pair_weights)`` let a custom loop train two models on each
  other's selections (Chapter 04's Co-teaching and CRM peer review); ``end_epoch()``
  closes an epoch.
- Every epoch, each visited pair's loss, margin ``r_chosen - r_rejected`` and
  gradient norm are recorded in :class:`TrainingHistory` (Chapter 03).

Batches put the chosen and rejected sequences of all pairs through the encoder in one
forward pass, padded only to the batch's longest sequence; texts are tokenized once,
and by default pairs of similar length are batched together. In frozen mode the
encoder's features are computed once and only the head trains.

``accelerate`` places everything on the chosen device; under ``accelerate launch``
each process takes an equal share of every batch. Runs are deterministic for a seed,
and a run resumed from a checkpoint ends exactly where an uninterrupted one does
(for one process).

Defined in Chapter 02; per-pair statistics are read in Chapter 03, the step-level
methods drive Chapter 04, ``order_fn`` drives Chapter 05.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.func import functional_call, grad, vmap
from transformers import get_scheduler

from course_lib.losses import bradley_terry_loss, conservative_bradley_terry_loss, unbiased_bradley_terry_loss
from course_lib.progress import tqdm
from course_lib.reward_model import RewardHead, RewardModel, atomic_torch_save, trainable_state_dict

CHECKPOINT_FILE = "checkpoint.pt"
# Pair losses a trainer can use; the robust ones take the assumed flip rate (Chapter 04).
LOSSES = {
    "bradley_terry": bradley_terry_loss,
    "conservative": conservative_bradley_terry_loss,
    "unbiased": unbiased_bradley_terry_loss,
}
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class TrainingConfig:
    """Settings of a Bradley-Terry training run, with TRL's ``RewardConfig`` names where they exist.

    - ``lr``, ``weight_decay``: AdamW; ``lr_scheduler`` is a ``transformers``
      scheduler name (``"linear"`` as in TRL, ``"constant"``, ``"cosine"``...) with
      ``warmup_ratio`` of the steps warming up; ``max_grad_norm`` clips (``None``: off).
    - ``margin_column``: dataset column holding a per-pair margin (Llama 2), or ``None``.
    - ``center_rewards_coefficient``: weight of the ``(r_c + r_r)^2`` term, or ``None``.
    - ``loss``: ``"bradley_terry"`` (default), or a noise-robust variant from
      :mod:`course_lib.losses`: ``"conservative"`` (label smoothing) or ``"unbiased"``
      (rDPO-style), both with ``assumed_flip_rate``. Per-pair gradient norms are
      recorded for the BT loss only (NaN otherwise).
    - ``group_by_length``: the default epoch order batches pairs of similar token
      length together (less padding; ignored in frozen mode and with ``order_fn``).
    - ``forward_chunks``: a batch's sequences are sorted by length and encoded in
      this many groups, each padded to its own longest sequence (less padding, same
      result; 1 = one padded forward pass, which suits large GPU batches).
    - ``eval_batch_size``: batch size for evaluation and for computing features.
    - ``log_every``: steps between loss updates on the progress bar.
    - ``record_grad_norms``: record each pair's gradient norm (Chapter 03's
      dynamics); it costs most of a frozen-mode step, so sweeps turn it off (NaN).
    - ``checkpoint_dir``: where a checkpoint is written after every epoch and, with
      ``checkpoint_every``, every that many steps; ``None``: no checkpoints.
    - ``feature_cache_dir``: disk cache for frozen-mode features, or ``None``.
    - ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"``; ``mixed_precision``: ``"no"`` or
      ``"bf16"`` (autocast through ``accelerate``).

    The maximum sequence length belongs to the model (``RewardModelConfig.max_length``)
    because scoring must truncate the same way training did.

    Defined in Chapter 02.
    """

    lr: float = 1e-3
    epochs: int = 3
    batch_size: int = 32
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = None
    seed: int = 0
    margin_column: str | None = None
    center_rewards_coefficient: float | None = None
    loss: str = "bradley_terry"
    assumed_flip_rate: float = 0.0
    group_by_length: bool = True
    forward_chunks: int = 2
    eval_batch_size: int = 64
    log_every: int = 10
    record_grad_norms: bool = True
    progress: bool = True
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    feature_cache_dir: str | Path | None = None
    device: str = "cpu"
    mixed_precision: str = "no"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every", "forward_chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.loss not in LOSSES:
            raise ValueError(f"TrainingConfig: loss must be one of {tuple(LOSSES)}, got {self.loss!r}")
        if self.loss != "bradley_terry" and (self.margin_column or self.center_rewards_coefficient is not None):
            raise ValueError("TrainingConfig: margin_column and center_rewards_coefficient apply to loss='bradley_terry' only")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"TrainingConfig: device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"TrainingConfig: mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("TrainingConfig: device='cuda' but no CUDA GPU is visible; use 'cpu' or 'auto'")


@dataclass
class TrainingHistory:
    """What a run recorded. Per-pair arrays have shape ``(epochs, n_pairs)``, indexed by dataset row.

    ``pair_loss``, ``pair_margin`` (``r_chosen - r_rejected``) and
    ``pair_grad_norm`` come from the forward pass that updated the model, i.e. before
    that step's update, as in dataset cartography (Swayamdipta et al. 2020). A pair
    not visited in an epoch holds NaN. ``step_loss`` is the mean training loss of
    every optimizer step; ``eval_metrics`` one dict per epoch when an eval set is given.

    Defined in Chapter 02; read in Chapter 03.
    """

    pair_loss: np.ndarray
    pair_margin: np.ndarray
    pair_grad_norm: np.ndarray
    step_loss: list[float] = field(default_factory=list)
    eval_metrics: list[dict] = field(default_factory=list)
    epochs_done: int = 0

    @classmethod
    def empty(cls, epochs: int, n_pairs: int) -> TrainingHistory:
        return cls(*(np.full((epochs, n_pairs), np.nan, dtype=np.float32) for _ in range(3)))

    def state_dict(self) -> dict:
        return {
            "pair_stats": torch.from_numpy(np.stack([self.pair_loss, self.pair_margin, self.pair_grad_norm])),
            "step_loss": torch.tensor(self.step_loss, dtype=torch.float64),
            "eval_metrics": self.eval_metrics,
            "epochs_done": self.epochs_done,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> TrainingHistory:
        loss, margin, grad_norm = state["pair_stats"].numpy()
        return cls(loss, margin, grad_norm, state["step_loss"].tolist(), state["eval_metrics"], state["epochs_done"])


@dataclass
class PairBatch:
    """One batch: dataset rows, model inputs (all chosen sequences, then all rejected) and margins.

    Defined in Chapter 02.
    """

    indices: torch.Tensor
    inputs: dict[str, torch.Tensor]
    margin: torch.Tensor | None = None


@dataclass
class _PairData:
    """A dataset ready for batching: features or padded token ids for rows ``[chosen; rejected]``."""

    n_pairs: int
    tensors: dict[str, torch.Tensor]
    lengths: torch.Tensor | None
    margin: torch.Tensor | None


def read_pair_columns(dataset, name: str = "dataset", margin_column: str | None = None) -> dict[str, list]:
    """Columns ``prompt``, ``chosen``, ``rejected`` (and the margin column) of a Dataset or list of dicts.

    Raises ``ValueError`` naming the problem: an empty dataset, a missing column, a
    row whose text is not a string.

    Defined in Chapter 02.
    """
    needed = PAIR_COLUMNS + ((margin_column,) if margin_column else ())
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty: it needs at least one (prompt, chosen, rejected) pair")
    if isinstance(dataset, (list, tuple)):
        for row, record in enumerate(dataset):
            missing = [c for c in needed if c not in record]
            if missing:
                raise ValueError(f"{name} row {row}: missing column {missing[0]!r}")
        columns = {c: [record[c] for record in dataset] for c in needed}
    else:
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{name} has no column {missing[0]!r} (columns: {dataset.column_names})")
        columns = {c: list(dataset[c]) for c in needed}
    for column in PAIR_COLUMNS:
        for row, value in enumerate(columns[column]):
            if not isinstance(value, str):
                raise ValueError(
                    f"{name} row {row}: {column!r} must be a string, got {type(value).__name__} "
                    "(course_lib.data.load_preferences converts conversational rows)"
                )
    return columns


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


def shuffled_order(epoch: int, trainer: BradleyTerryTrainer) -> torch.Tensor:
    """The default epoch order: a permutation fixed by ``(seed, epoch)``, grouped by length if asked.

    Length grouping follows ``transformers``' ``LengthGroupedSampler``: within chunks
    of 50 batches, pairs are sorted by token length and cut into batches; the full
    batches are then shuffled (a smaller last batch stays last).

    Defined in Chapter 02.
    """
    config = trainer.config
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(trainer.n_pairs, generator=generator)
    lengths = trainer.train_data.lengths
    if not config.group_by_length or lengths is None:
        return order
    batches = []
    for chunk in order.split(config.batch_size * 50):
        batches.extend(chunk[torch.argsort(lengths[chunk], descending=True, stable=True)].split(config.batch_size))
    tail = [batches.pop()] if len(batches[-1]) < config.batch_size else []
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator)] + tail)


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


class BradleyTerryTrainer:
    """Train a reward model on ``(prompt, chosen, rejected)`` pairs with the Bradley-Terry loss.

    ``train_dataset`` / ``eval_dataset``: a ``datasets.Dataset`` or a list of dicts
    with string columns ``prompt``, ``chosen``, ``rejected``. ``order_fn(epoch,
    trainer)`` returns the dataset rows to visit in an epoch, in order (default
    :func:`shuffled_order`). Texts are tokenized (or, in frozen mode, encoded) once,
    here.

    Defined in Chapter 02.
    """

    def __init__(
        self, model: RewardModel, train_dataset, config: TrainingConfig | None = None, eval_dataset=None, order_fn=None
    ):
        self.config = config = config or TrainingConfig()
        self.accelerator = Accelerator(cpu=config.device == "cpu", mixed_precision=config.mixed_precision)
        set_seed(config.seed)
        self.order_fn = order_fn or shuffled_order
        model.to(self.accelerator.device)
        self.train_data = self._prepare(model, train_dataset, "train_dataset")
        self.eval_data = None if eval_dataset is None else self._prepare(model, eval_dataset, "eval_dataset")
        self.n_pairs = self.train_data.n_pairs
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        total_steps = config.epochs * math.ceil(self.n_pairs / config.batch_size)
        self.scheduler = get_scheduler(
            config.lr_scheduler, optimizer, round(config.warmup_ratio * total_steps), total_steps
        )
        self._reward_model = model
        self.model, self.optimizer = self.accelerator.prepare(model), optimizer
        self._tiny_steps = model.config.mode == "frozen" and self.accelerator.device.type == "cpu"
        self.history = TrainingHistory.empty(config.epochs, self.n_pairs)
        self.epoch = 0
        self.global_step = 0
        self._epoch_order: torch.Tensor | None = None
        self._step_in_epoch = 0
        self._reset_pending()

    @property
    def reward_model(self) -> RewardModel:
        """The trained model without any ``accelerate`` wrapper."""
        return self._reward_model

    def _prepare(self, model: RewardModel, dataset, name: str) -> _PairData:
        columns = read_pair_columns(dataset, name, self.config.margin_column)
        n = len(columns["prompt"])
        prompts, responses = columns["prompt"] * 2, columns["chosen"] + columns["rejected"]
        device = self.accelerator.device
        margin = None
        if self.config.margin_column:
            margin = torch.tensor(columns[self.config.margin_column], dtype=torch.float32, device=device)
        if model.config.mode == "frozen":
            features = model.embed(
                prompts, responses, self.config.eval_batch_size, self.config.feature_cache_dir, self.config.progress
            )
            return _PairData(n, {"features": features}, None, margin)
        ids = model.tokenize(prompts, responses)
        lengths = torch.tensor([len(s) for s in ids])
        input_ids = torch.full((2 * n, int(lengths.max())), model.tokenizer.pad_token_id, dtype=torch.long)
        for row, sequence in enumerate(ids):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
        tensors = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
        return _PairData(n, tensors, torch.maximum(lengths[:n], lengths[n:]), margin)

    def _batch(self, data: _PairData, indices: torch.Tensor) -> PairBatch:
        indices = torch.as_tensor(indices, dtype=torch.long)
        rows = torch.cat([indices, indices + data.n_pairs]).to(self.accelerator.device)
        if data.lengths is None:
            inputs = {name: t[rows] for name, t in data.tensors.items()}
        else:
            longest = int(data.lengths[indices].max())
            inputs = {name: t[rows, :longest] for name, t in data.tensors.items()}
        margin = None if data.margin is None else data.margin[rows[: len(indices)]]
        return PairBatch(indices.to(self.accelerator.device), inputs, margin)

    def make_batch(self, indices) -> PairBatch:
        """The training batch of these dataset rows (this process's share of them).

        Defined in Chapter 02; used in Chapter 04.
        """
        indices = torch.as_tensor(indices, dtype=torch.long)
        return self._batch(self.train_data, indices[self.accelerator.process_index :: self.accelerator.num_processes])

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Dataset rows in the order epoch ``epoch`` visits them (``order_fn``).

        Defined in Chapter 02; replaced in Chapter 05.
        """
        return torch.as_tensor(self.order_fn(epoch, self), dtype=torch.long).cpu()

    def _set_training(self, training: bool) -> None:
        if self.model.training != training:
            self.model.train(training)

    def _rewards(self, batch: PairBatch, return_features: bool = False):
        chunks = 1 if "features" in batch.inputs else self.config.forward_chunks
        rewards, features = self.model(**batch.inputs, return_features=True, chunks=chunks)
        chosen, rejected = rewards.float().chunk(2)
        return (chosen, rejected, features) if return_features else (chosen, rejected)

    def _pair_losses(self, chosen, rejected, margin):
        if self.config.loss == "bradley_terry":
            return bradley_terry_loss(chosen, rejected, margin, self.config.center_rewards_coefficient, reduction="none")
        return LOSSES[self.config.loss](chosen, rejected, self.config.assumed_flip_rate, reduction="none")

    @torch.no_grad()
    def pair_losses(self, batch: PairBatch) -> torch.Tensor:
        """Per-pair BT losses of a batch under the current model, without gradient (eval mode).

        Defined in Chapter 02; used in Chapter 04 to select pairs.
        """
        with single_threaded(self._tiny_steps):
            self._set_training(False)
            return self._pair_losses(*self._rewards(batch), batch.margin)

    @torch.no_grad()
    def pair_margins(self, batch: PairBatch) -> torch.Tensor:
        """Per-pair reward margins ``r_chosen - r_rejected`` of a batch, without gradient (eval mode).

        Defined in Chapter 02; used in Chapter 05 to sort pairs from easy to hard.
        """
        with single_threaded(self._tiny_steps):
            self._set_training(False)
            chosen, rejected = self._rewards(batch)
            return chosen - rejected

    def train_step(self, batch: PairBatch, pair_weights: torch.Tensor | None = None) -> torch.Tensor:
        """One optimizer step on ``batch``; returns the (weighted) mean loss.

        ``pair_weights``: a boolean mask or float weights, one per pair; the loss is
        then ``sum(w * loss) / sum(w)`` (the mean over selected pairs for a mask; an
        all-zero mask gives a zero gradient). Statistics are recorded for every pair
        of the batch, selected or not.

        Defined in Chapter 02; used with peer-selected masks in Chapter 04.
        """
        with single_threaded(self._tiny_steps):
            self._set_training(True)
            chosen, rejected, features = self._rewards(batch, return_features=True)
            losses = self._pair_losses(chosen, rejected, batch.margin)
            if pair_weights is None:
                loss = losses.mean()
            else:
                weights = torch.as_tensor(pair_weights, device=losses.device).float()
                loss = (losses * weights).sum() / weights.sum().clamp_min(1e-12)
            chosen_features, rejected_features = features.detach().float().chunk(2)
            if self.config.loss == "bradley_terry" and self.config.record_grad_norms:
                grad_norms = head_gradient_norms(
                    self.reward_model.head,
                    chosen_features,
                    rejected_features,
                    batch.margin,
                    self.config.center_rewards_coefficient,
                )
            else:
                grad_norms = torch.full_like(losses, float("nan")).detach()
            margins = (chosen - rejected).detach()
            self._pair_stats[:, batch.indices] = torch.stack([losses.detach(), margins, grad_norms])
            loss.backward()
            if self.config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            self._step_losses.append(loss.detach())
            return loss.detach()

    @torch.no_grad()
    def evaluate(self, dataset=None) -> dict[str, float]:
        """Mean BT loss and accuracy (share of pairs with ``r_chosen > r_rejected``) on the eval set.

        Defined in Chapter 02.
        """
        data = self.eval_data if dataset is None else self._prepare(self.reward_model, dataset, "eval_dataset")
        if data is None:
            raise ValueError("evaluate: no eval_dataset was given to the trainer and none was passed")
        with single_threaded(self._tiny_steps):
            self._set_training(False)
            losses, correct = [], []
            for indices in torch.arange(data.n_pairs).split(self.config.eval_batch_size):
                batch = self._batch(data, indices)
                chosen, rejected = self._rewards(batch)
                losses.append(self._pair_losses(chosen, rejected, batch.margin))
                correct.append(chosen > rejected)
            return {"loss": torch.cat(losses).mean().item(), "accuracy": torch.cat(correct).float().mean().item()}

    def end_epoch(self) -> None:
        """Store the epoch's per-pair statistics and step losses, evaluate, checkpoint.

        Defined in Chapter 02; called by custom loops in Chapter 04.
        """
        stats, step_losses = self._merged_pending()
        for array, values in zip((self.history.pair_loss, self.history.pair_margin, self.history.pair_grad_norm), stats):
            array[self.epoch] = values
        self.history.step_loss.extend(step_losses)
        if self.eval_data is not None:
            self.history.eval_metrics.append({"epoch": self.epoch, **self.evaluate()})
        self.epoch += 1
        self.history.epochs_done = self.epoch
        self._epoch_order, self._step_in_epoch = None, 0
        self._reset_pending()
        if self.config.checkpoint_dir is not None:
            self.save_checkpoint()

    def fit(self, resume: bool = False) -> TrainingHistory:
        """Train for ``config.epochs`` epochs and return the history.

        ``resume=True`` continues from the checkpoint in ``config.checkpoint_dir``
        (if there is one) and ends with exactly the parameters and history of an
        uninterrupted run. A run from step 0 first seeds every RNG with ``config.seed``.

        Defined in Chapter 02.
        """
        config = self.config
        if resume:
            if config.checkpoint_dir is None:
                raise ValueError("fit(resume=True) needs TrainingConfig.checkpoint_dir")
            if (Path(config.checkpoint_dir) / CHECKPOINT_FILE).exists():
                self.load_checkpoint()
        if self.global_step == 0:
            set_seed(config.seed)  # a fresh run does not depend on what ran before it
        with single_threaded(self._tiny_steps):
            while self.epoch < config.epochs:
                if self._epoch_order is None:
                    self._epoch_order = self.epoch_order(self.epoch)
                batches = self._epoch_order.split(config.batch_size)
                bar = tqdm(
                    total=len(batches),
                    initial=self._step_in_epoch,
                    desc=f"epoch {self.epoch + 1}/{config.epochs}",
                    disable=not config.progress or not self.accelerator.is_main_process,
                )
                for indices in batches[self._step_in_epoch :]:
                    loss = self.train_step(self.make_batch(indices))
                    self._step_in_epoch += 1
                    bar.update()
                    if self.global_step % config.log_every == 0:
                        bar.set_postfix(loss=f"{loss.item():.4f}")
                    every = config.checkpoint_every
                    if config.checkpoint_dir is not None and every and self.global_step % every == 0:
                        self.save_checkpoint()
                bar.close()
                self.end_epoch()
        return self.history

    def _reset_pending(self) -> None:
        self._pair_stats = torch.full((3, self.n_pairs), float("nan"), device=self.accelerator.device)
        self._step_losses: list[torch.Tensor] = []

    def _merged_pending(self) -> tuple[np.ndarray, list[float]]:
        """This epoch's statistics so far, merged over processes (each pair comes from the process that saw it)."""
        stats = torch.nanmean(self.accelerator.gather(self._pair_stats[None]), dim=0)
        losses = torch.stack(self._step_losses) if self._step_losses else torch.zeros(0, device=self.accelerator.device)
        losses = self.accelerator.gather(losses[None]).mean(0)
        return stats.cpu().numpy(), losses.double().cpu().tolist()

    def save_checkpoint(self) -> Path:
        """Write model, optimizer, scheduler, RNG and history state to ``checkpoint_dir``, atomically.

        Defined in Chapter 02.
        """
        stats, step_losses = self._merged_pending()
        path = Path(self.config.checkpoint_dir) / CHECKPOINT_FILE
        if self.accelerator.is_main_process:
            state = {
                "n_pairs": self.n_pairs,
                "model": trainable_state_dict(self.reward_model),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "history": self.history.state_dict(),
                "epoch": self.epoch,
                "global_step": self.global_step,
                "step_in_epoch": self._step_in_epoch,
                "epoch_order": self._epoch_order,
                "pending_stats": torch.from_numpy(stats),
                "pending_step_losses": torch.tensor(step_losses, dtype=torch.float64),
            }
            atomic_torch_save(state, path)
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path=None) -> None:
        """Restore the state written by :meth:`save_checkpoint` (default: the one in ``checkpoint_dir``).

        Defined in Chapter 02.
        """
        path = Path(path or Path(self.config.checkpoint_dir) / CHECKPOINT_FILE)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["n_pairs"] != self.n_pairs:
            raise ValueError(
                f"load_checkpoint: {path} was written for {state['n_pairs']} pairs, this run has {self.n_pairs}"
            )
        mismatched = set(trainable_state_dict(self.reward_model)) ^ set(state["model"])
        if mismatched:
            raise ValueError(
                f"load_checkpoint: {path} does not match the model's trainable parameters: {sorted(mismatched)[:5]}"
            )
        if state["history"]["pair_stats"].shape[1] != self.config.epochs:
            raise ValueError(
                f"load_checkpoint: {path} was written for another number of epochs than {self.config.epochs}"
            )
        self.reward_model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"]:
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.history = TrainingHistory.from_state_dict(state["history"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self._step_in_epoch, self._epoch_order = state["step_in_epoch"], state["epoch_order"]
        device = self.accelerator.device
        self._pair_stats = state["pending_stats"].to(device)
        self._step_losses = [loss.float().to(device) for loss in state["pending_step_losses"]]
