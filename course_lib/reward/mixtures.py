r"""Mixtures of Bradley-Terry heads with a context router, and adapting them to a new user.

Shen et al. (2025), "MiCRo: Mixture Modeling and Context-aware Routing for Personalized
Preference Learning", arXiv 2505.24846. When people disagree, one reward function for
everyone has an irreducible error; MiCRo models the population as a mixture of
:math:`K` Bradley-Terry (BT) models whose weights depend on who is asking:

.. math::

    P(y_c \succ y_r \mid x, c) = \sum_{k=1}^{K} w_k(c)\,\sigma\big(r_k(x, y_c) - r_k(x, y_r)\big),
    \qquad w(c) = \operatorname{softmax}(A\,\psi(c) + b)

- :math:`r_k` are scalar heads on shared features :math:`\phi(x, y)` (here the frozen
  encoder of :mod:`course_lib.reward.model`, optionally through one shared hidden layer);
- :math:`w(c)` is the **router**: a linear map of a context representation
  :math:`\psi(c)` (a user's self-description, encoded by the same encoder), then a
  softmax. Without context the router is its bias alone, one static mixture for all.

Stage 1 fits heads and router together on binary preferences
(:func:`mixture_bradley_terry_loss` plus :func:`load_balance_loss`, :func:`fit_mixture`);
stage 2 adapts the weights of a new user from a few labelled pairs with multiplicative
weights over the heads (:func:`multiplicative_weights`).

Everything here works on precomputed feature tensors, so a fit takes seconds on a CPU.
With ``n_heads=1`` the model is a plain BT reward model and the loss is
:func:`course_lib.engine.losses.bradley_terry_loss` (tested).

Defined in Chapter 06.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.config import RunConfig
from ..engine.learner import Learner, StepOutput
from ..engine.loop import EpochPlan, TrainingLoop
from ..engine.losses import reduce_losses
from ..engine.runtime import fingerprint


def _check_rewards_and_weights(chosen_rewards, rejected_rewards, weights, name: str) -> None:
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.ndim != 2:
        raise ValueError(
            f"{name}: chosen_rewards and rejected_rewards must both have shape (n_pairs, n_heads), got "
            f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}"
        )
    if weights.shape not in (chosen_rewards.shape, chosen_rewards.shape[1:]):
        raise ValueError(
            f"{name}: weights must have shape (n_pairs, n_heads) = {tuple(chosen_rewards.shape)} or "
            f"(n_heads,) = {tuple(chosen_rewards.shape[1:])}, got {tuple(weights.shape)}"
        )


def mixture_bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, weights: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    r"""Negative log-likelihood of a mixture of Bradley-Terry models (MiCRo stage 1).

    Shen et al. (2025), arXiv 2505.24846, eq. for the mixture likelihood:

    .. math::

        \ell = -\log \sum_{k=1}^{K} w_k\,\sigma\big(r_k(x, y_c) - r_k(x, y_r)\big)

    ``chosen_rewards`` and ``rejected_rewards`` have shape ``(n_pairs, K)`` (head k's
    rewards in column k); ``weights`` is ``(n_pairs, K)`` (a router's output, rows
    summing to 1) or ``(K,)`` (one static mixture for every pair). Computed as
    ``-logsumexp(log w + logsigmoid(d))`` so that it stays finite for huge margins.
    With ``K = 1`` it is the BT loss.

    Defined in Chapter 06.
    """
    _check_rewards_and_weights(chosen_rewards, rejected_rewards, weights, "mixture_bradley_terry_loss")
    log_weights = torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))
    losses = -torch.logsumexp(log_weights + F.logsigmoid(chosen_rewards - rejected_rewards), dim=-1)
    return reduce_losses(losses, reduction, "mixture_bradley_terry_loss")


def load_balance_loss(weights: torch.Tensor) -> torch.Tensor:
    r"""How unevenly the heads are used: :math:`\mathrm{KL}(\bar w \,\|\, \mathrm{uniform})`.

    With :math:`\bar w = \frac{1}{n}\sum_i w(c_i)` the average routing weight of a batch,

    .. math::

        \mathcal{R} = \sum_{k=1}^{K} \bar w_k \log (K \bar w_k) = \log K - H(\bar w) \;\ge 0,

    zero when every head gets the same share, :math:`\log K` when one head gets all.
    Added to the mixture loss with a small coefficient it keeps heads from dying early
    in training (the "collapse" of mixtures of experts); MiCRo regularizes the router
    weights for the same reason. ``weights``: ``(n_pairs, K)`` or ``(K,)``.

    Defined in Chapter 06.
    """
    if weights.ndim not in (1, 2):
        raise ValueError(f"load_balance_loss: weights must have shape (n_pairs, K) or (K,), got {tuple(weights.shape)}")
    mean = weights.reshape(-1, weights.shape[-1]).mean(0)
    return (mean * torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny) * mean.numel())).sum()


def preference_probability(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""The mixture's probability that the chosen response wins, :math:`\sum_k w_k \sigma(d_k)`, shape ``(n_pairs,)``.

    Defined in Chapter 06.
    """
    _check_rewards_and_weights(chosen_rewards, rejected_rewards, weights, "preference_probability")
    return (weights * torch.sigmoid(chosen_rewards - rejected_rewards)).sum(-1)


def preference_log_odds(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""The log-odds of the mixture's preference, :math:`\log P - \log(1 - P)` with :math:`P = \sum_k w_k \sigma(d_k)`.

    Shape ``(n_pairs,)``. Computed from ``logsumexp`` of ``log w + logsigmoid(±d)``, so it stays
    finite where ``P`` rounds to 0 or 1. With one head it is the BT margin :math:`d`; for any
    ``K`` it plays the margin's role in :mod:`course_lib.reward.calibration` (``sigmoid`` of it is
    :math:`P`, and temperature scaling divides it by ``T``), so single models and mixtures are
    calibrated and scored the same way.

    Defined in Chapter 06.
    """
    _check_rewards_and_weights(chosen_rewards, rejected_rewards, weights, "preference_log_odds")
    log_weights = torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))
    margins = chosen_rewards - rejected_rewards
    return (torch.logsumexp(log_weights + F.logsigmoid(margins), dim=-1)
            - torch.logsumexp(log_weights + F.logsigmoid(-margins), dim=-1))


def multiplicative_weights(prior: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                           eta: float = 1.0) -> torch.Tensor:
    r"""Adapt mixture weights to one user, pair by pair: multiplicative weights over the heads (MiCRo stage 2).

    After each labelled pair :math:`(y_c \succ y_r)` of the user, every head is
    reweighted by the probability it gave that label, to the power :math:`\eta`:

    .. math::

        w_k^{(t)} = \frac{w_k^{(t-1)}\,\sigma(d_{k,t})^{\eta}}{\sum_j w_j^{(t-1)}\,\sigma(d_{j,t})^{\eta}},
        \qquad d_{k,t} = r_k(x_t, y_{c,t}) - r_k(x_t, y_{r,t})

    This is Hedge (Freund & Schapire 1997) with the log loss :math:`-\log\sigma(d_k)`;
    with :math:`\eta = 1` it is Bayes' rule for "this user answers like one of the
    heads", with the prior as prior. MiCRo's online routing updates the mixture
    weights from a user's feedback in the same spirit.

    ``prior``: ``(K,)``; ``chosen_rewards`` / ``rejected_rewards``: ``(k_pairs, K)``,
    in the order the pairs arrive. Returns ``(k_pairs + 1, K)``: row ``t`` holds the
    weights after ``t`` pairs (row 0 is the prior).

    Defined in Chapter 06.
    """
    if prior.ndim != 1 or (prior < 0).any() or not torch.isclose(prior.sum(), prior.new_tensor(1.0), atol=1e-5):
        raise ValueError(f"multiplicative_weights: prior must be a (K,) probability vector, got {prior}")
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.ndim != 2 or chosen_rewards.shape[1] != len(prior):
        raise ValueError(
            f"multiplicative_weights: rewards must have shape (k_pairs, K={len(prior)}), got "
            f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}"
        )
    if not eta >= 0:
        raise ValueError(f"multiplicative_weights: eta must be >= 0, got {eta}")
    log_likelihoods = F.logsigmoid(chosen_rewards - rejected_rewards)
    log_weights = torch.log(prior.clamp_min(torch.finfo(prior.dtype).tiny)) + eta * torch.cumsum(log_likelihoods, 0)
    log_weights = torch.cat([torch.log(prior.clamp_min(torch.finfo(prior.dtype).tiny))[None], log_weights])
    return torch.softmax(log_weights, dim=-1)


class MixtureOfHeads(nn.Module):
    r"""K scalar reward heads on shared features and a linear router on context features.

    ``head_rewards(features)`` gives the ``(n, K)`` rewards :math:`r_k(x, y)` from
    pooled features :math:`\phi(x, y)` (a linear map, or one shared ReLU layer of
    ``hidden_size`` then a linear map). ``route(context)`` gives the ``(n, K)``
    weights :math:`\operatorname{softmax}(A\psi(c) + b)`; ``route(None)`` the static
    weights :math:`\operatorname{softmax}(b)`, shape ``(K,)``. Parameters are
    initialized from ``seed``.

    Defined in Chapter 06.
    """

    def __init__(self, in_features: int, context_features: int, n_heads: int, hidden_size: int | None = None,
                 seed: int = 0):
        super().__init__()
        if n_heads < 1:
            raise ValueError(f"MixtureOfHeads: n_heads must be >= 1, got {n_heads}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.hidden = None if hidden_size is None else nn.Linear(in_features, hidden_size)
            self.heads = nn.Linear(in_features if hidden_size is None else hidden_size, n_heads)
            self.router = nn.Linear(context_features, n_heads)

    @property
    def n_heads(self) -> int:
        return self.heads.out_features

    def head_rewards(self, features: torch.Tensor) -> torch.Tensor:
        x = features if self.hidden is None else torch.relu(self.hidden(features))
        return self.heads(x)

    def route(self, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            return torch.softmax(self.router.bias, dim=-1)
        if context.ndim != 2 or context.shape[1] != self.router.in_features:
            raise ValueError(
                f"MixtureOfHeads.route: context must have shape (n, {self.router.in_features}), got {tuple(context.shape)}"
            )
        return torch.softmax(self.router(context), dim=-1)

    def forward(self, chosen_features, rejected_features, context=None):
        """``(chosen_rewards, rejected_rewards, weights)``, rewards of shape ``(n, K)``."""
        return self.head_rewards(chosen_features), self.head_rewards(rejected_features), self.route(context)


@dataclass
class MixtureConfig(RunConfig):
    """Settings of :func:`fit_mixture`, on top of :class:`~course_lib.engine.config.RunConfig`.

    ``n_heads`` K (1: a single BT reward model); ``hidden_size``: width of a shared
    hidden layer under the heads (``None``: linear heads); ``balance``: coefficient of
    :func:`load_balance_loss`. AdamW with ``lr`` and ``weight_decay`` on mini-batches
    of ``batch_size`` pairs for ``epochs`` passes, at a constant rate by default;
    ``seed`` fixes initialization and batch order; ``device`` / ``precision`` as every run.

    Defined in Chapter 06.
    """

    lr: float = 1e-2
    epochs: int = 30
    batch_size: int = 128
    n_heads: int = 4
    hidden_size: int | None = None
    balance: float = 0.1

    POSITIVE: ClassVar[tuple[str, ...]] = RunConfig.POSITIVE + ("n_heads",)

    def __post_init__(self):
        super().__post_init__()
        if self.balance < 0:
            self.fail(f"balance must be >= 0, got {self.balance}")


class MixtureLearner(Learner):
    """A :class:`MixtureOfHeads` as a learner of the course's training loop (:mod:`course_lib.engine.loop`).

    Batches are rows of precomputed features (and context); the per-pair loss is the
    mixture NLL, and the load-balance term is the step's batch-level extra.

    Defined in Chapter 06.
    """

    def __init__(self, model: MixtureOfHeads, chosen_features, rejected_features, context, known_weights,
                 config: MixtureConfig):
        super().__init__(model, config, len(chosen_features))
        tensors = {"chosen": chosen_features, "rejected": rejected_features, "context": context,
                   "known_weights": known_weights}
        self.tensors = {name: None if value is None else value.to(self.device) for name, value in tensors.items()}
        self.single_threaded = self.device.type == "cpu"

    def make_batch(self, indices):
        rows = torch.as_tensor(indices).to(self.device)
        return SimpleNamespace(indices=rows, **{k: None if v is None else v[rows] for k, v in self.tensors.items()})

    def forward(self, batch, module) -> StepOutput:
        chosen, rejected, weights = module(batch.chosen, batch.rejected, batch.context)
        if batch.known_weights is not None:
            weights = batch.known_weights
        losses = mixture_bradley_terry_loss(chosen, rejected, weights, reduction="none")
        balanced = self.config.n_heads > 1 and batch.known_weights is None
        return StepOutput(losses, self.config.balance * load_balance_loss(weights) if balanced else None)

    def settings(self) -> dict:
        return self.config.settings()

    def data_fingerprint(self) -> str:
        return fingerprint(*(v for v in self.tensors.values() if v is not None))


def fit_mixture(chosen_features: torch.Tensor, rejected_features: torch.Tensor, context: torch.Tensor | None = None,
                config: MixtureConfig | None = None, known_weights: torch.Tensor | None = None
                ) -> tuple[MixtureOfHeads, list[float]]:
    r"""Fit a :class:`MixtureOfHeads` by minimizing the MiCRo stage-1 objective; returns ``(model, epoch_losses)``.

    .. math::

        \mathcal{L} = \frac{1}{n}\sum_i -\log \sum_k w_k(c_i)\,\sigma(r_k(x_i, y_{c,i}) - r_k(x_i, y_{r,i}))
            \;+\; \lambda\, \mathrm{KL}(\bar w \,\|\, \mathrm{uniform})

    ``chosen_features`` / ``rejected_features``: ``(n, d)`` pooled features of each
    pair's two responses; ``context``: ``(n, d_c)`` features of who labelled each pair,
    or ``None`` for a static mixture (one set of weights for everyone). ``epoch_losses``
    holds the mean mixture NLL (without the balance term) of every epoch.

    ``known_weights``: ``(n, K)`` weights to use instead of the router (for example
    one-hot true groups: an oracle that knows who labelled each pair); the router
    is then not trained and there is no balance term.

    Trained by the course's one training loop (:class:`course_lib.engine.loop.TrainingLoop`):
    AdamW on mini-batches in an order drawn from ``config.seed``.

    Defined in Chapter 06.
    """
    config = config or MixtureConfig()
    if chosen_features.shape != rejected_features.shape or chosen_features.ndim != 2:
        raise ValueError(
            f"fit_mixture: chosen_features and rejected_features must both be (n_pairs, d), got "
            f"{tuple(chosen_features.shape)} and {tuple(rejected_features.shape)}"
        )
    n = len(chosen_features)
    if context is not None and (context.ndim != 2 or len(context) != n):
        raise ValueError(f"fit_mixture: context must be (n_pairs={n}, d_c) or None, got {tuple(context.shape)}")
    if known_weights is not None and known_weights.shape != (n, config.n_heads):
        raise ValueError(f"fit_mixture: known_weights must be (n_pairs={n}, n_heads={config.n_heads}), "
                         f"got {tuple(known_weights.shape)}")
    context_features = 1 if context is None else context.shape[1]
    model = MixtureOfHeads(chosen_features.shape[1], context_features, config.n_heads, config.hidden_size, config.seed)
    learner = MixtureLearner(model, chosen_features, rejected_features, context, known_weights, config)
    generator = torch.Generator().manual_seed(config.seed)
    orders = [torch.randperm(n, generator=generator) for _ in range(config.epochs)]
    TrainingLoop([learner], EpochPlan(orders.__getitem__), config.epochs, config.batch_size, progress=config.progress,
                 description=f"fitting {config.n_heads} head(s), epoch").run()
    sizes = [len(rows) for rows in orders[0].split(config.batch_size)]
    step_losses = learner.history.step_loss
    losses = [sum(loss * size for loss, size in zip(step_losses[e * len(sizes):], sizes)) / n for e in range(config.epochs)]
    model.eval()
    return model, losses


@torch.no_grad()
def mixture_accuracy(model: MixtureOfHeads, chosen_features, rejected_features, weights) -> torch.Tensor:
    """Per-pair correctness (1, 0, or 0.5 for a tie) of the mixture's prediction under ``weights``.

    A pair is correct when :func:`preference_probability` is above 1/2. ``weights``:
    ``(n, K)`` or ``(K,)``. Returns a float tensor of shape ``(n,)``.

    Defined in Chapter 06.
    """
    probability = preference_probability(model.head_rewards(chosen_features), model.head_rewards(rejected_features), weights)
    return torch.where(probability > 0.5, 1.0, torch.where(probability < 0.5, 0.0, 0.5))

