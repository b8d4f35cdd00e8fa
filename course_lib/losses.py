"""Preference losses as pure functions of reward (or score) tensors.

Every loss here takes tensors and returns a tensor; nothing reads global state or
touches a model. Each docstring gives the formula and the paper it comes from.
Tests check them against closed forms and against TRL's trainers on the same
inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_rewards_coefficient: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Negative log-likelihood of the Bradley-Terry model.

    Bradley & Terry (1952), "Rank Analysis of Incomplete Block Designs"; used for
    reward models by Ouyang et al. (2022, InstructGPT) and Llama 2 (margin term):

    .. math::

        \ell = -\log \sigma(r_c - r_r - m) + \lambda\,(r_c + r_r)^2

    where :math:`m` is an optional per-pair margin (Touvron et al. 2023) and
    :math:`\lambda` the optional reward-centering coefficient (Eisenstein et al.
    2023), exactly as TRL's ``RewardTrainer`` computes them. ``-log sigma`` is
    computed with ``logsigmoid`` so large negative differences do not overflow.

    ``reduction``: ``"mean"`` (TRL's choice), ``"sum"``, or ``"none"`` for the
    per-pair losses (Chapter 03 tracks them pair by pair).

    Defined in Chapter 01; the margin and centering terms are used from Chapter 02.
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            f"bradley_terry_loss: chosen_rewards has shape {tuple(chosen_rewards.shape)} but "
            f"rejected_rewards has shape {tuple(rejected_rewards.shape)}; they must match"
        )
    difference = chosen_rewards - rejected_rewards
    if margin is not None:
        difference = difference - margin
    losses = -F.logsigmoid(difference)
    if center_rewards_coefficient is not None:
        losses = losses + center_rewards_coefficient * (chosen_rewards + rejected_rewards) ** 2
    return reduce_losses(losses, reduction, "bradley_terry_loss")


def reduce_losses(losses: torch.Tensor, reduction: str, name: str) -> torch.Tensor:
    """Per-pair losses reduced as ``reduction`` says ('mean', 'sum' or 'none'); ``name`` goes in the error."""
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def conservative_bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, label_smoothing: float, reduction: str = "mean"
) -> torch.Tensor:
    r"""BT loss with label smoothing ("conservative" BT, as cDPO).

    Mitchell (2023), "A note on DPO with noisy preferences" (cDPO; TRL's DPO
    ``loss_type="sigmoid"`` with ``label_smoothing`` before trl 1.0, which dropped it). With flip probability
    :math:`\varepsilon` believed for every label,

    .. math::

        \ell = -(1 - \varepsilon)\log\sigma(d) - \varepsilon\log\sigma(-d), \qquad d = r_c - r_r .

    Its minimum over :math:`d` is at :math:`\sigma(d) = 1 - \varepsilon`: the model
    is never pushed to infinite margins, so a flipped pair costs a bounded amount.

    Defined in Chapter 04.
    """
    _check_rate(label_smoothing, "label_smoothing", upper=0.5)
    difference = chosen_rewards - rejected_rewards
    losses = -(1 - label_smoothing) * F.logsigmoid(difference) - label_smoothing * F.logsigmoid(-difference)
    return reduce_losses(losses, reduction, "conservative_bradley_terry_loss")


def unbiased_bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    flip_rate: float,
    reduction: str = "mean",
    floor: float | None = None,
) -> torch.Tensor:
    r"""BT loss made unbiased for labels flipped at rate :math:`\varepsilon` (rDPO applied to BT).

    Chowdhury et al. (2024), "Provably Robust DPO" (rDPO; TRL's DPO
    ``loss_type="robust"``), after Natarajan et al. (2013):

    .. math::

        \ell = \frac{(1 - \varepsilon)\,\big(-\log\sigma(d)\big) - \varepsilon\,\big(-\log\sigma(-d)\big)}{1 - 2\varepsilon}

    If each observed label is flipped independently with probability
    :math:`\varepsilon`, the expectation of this loss over the flips equals the
    clean BT loss :math:`-\log\sigma(d_{\text{true}})` (tested numerically).

    The price: :math:`\ell` has no lower bound. Its slope in :math:`d` is negative
    everywhere (about :math:`-\varepsilon/(1-2\varepsilon)` for large :math:`d`), so a
    model flexible enough to move pairs on their own can drive the loss, and every
    margin, without limit (on pure noise it does, tested). ``floor`` bounds the
    *reduced* loss (``"mean"`` or ``"sum"``): it is raised to ``floor``, which stops
    the gradient there. With ``floor=0`` this is the non-negative risk correction of
    Kiryo et al. (2017), "Positive-Unlabeled Learning with Non-Negative Risk
    Estimator": the clean risk being estimated is never negative, so a negative
    estimate over a batch is certain overfitting. The floor acts on the batch, not on
    each pair: a per-pair floor would stop every pair at the small margin where its
    loss crosses 0 (about 0.3 at :math:`\varepsilon = 0.4`) and throw the signal away
    (on the course's world it cost about 0.12 MiniRewardBench accuracy at 40% flips).
    The course's trainers apply the same floor to each batch's loss (Chapter 04);
    ``None`` gives the plain formula.

    Defined in Chapter 04.
    """
    _check_rate(flip_rate, "flip_rate", upper=0.5, closed=False)
    difference = chosen_rewards - rejected_rewards
    losses = ((1 - flip_rate) * -F.logsigmoid(difference) - flip_rate * -F.logsigmoid(-difference)) / (1 - 2 * flip_rate)
    reduced = reduce_losses(losses, reduction, "unbiased_bradley_terry_loss")
    if floor is None:
        return reduced
    if reduction == "none":
        raise ValueError("unbiased_bradley_terry_loss: floor bounds the reduced loss; use reduction='mean' or 'sum'")
    return reduced.clamp_min(floor)


def _check_rate(value: float, name: str, upper: float, closed: bool = True) -> None:
    if not (0.0 <= value <= upper if closed else 0.0 <= value < upper):
        bracket = "]" if closed else ")"
        raise ValueError(f"{name} must be in [0, {upper}{bracket}, got {value}")


# ---------------------------------------------------------------- the DPO family (Chapter 07)
DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo")


def dpo_implied_rewards(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> torch.Tensor:
    r"""DPO's implied reward of a response: :math:`\hat r(x, y) = \beta \log \frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}`.

    Rafailov et al. (2023), "Direct Preference Optimization: Your Language Model is
    Secretly a Reward Model": the KL-regularised objective
    :math:`\max_\pi E_\pi[r] - \beta\,KL(\pi \| \pi_{ref})` is maximised by
    :math:`\pi^*(y|x) \propto \pi_{ref}(y|x)\, e^{r(x,y)/\beta}`, so any policy defines the
    reward it is optimal for, up to a per-prompt constant that cancels in a pair.

    Defined in Chapter 07.
    """
    return beta * (policy_logps - reference_logps)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""The DPO family on sequence log-probs (summed over response tokens) of a batch of pairs.

    With :math:`h = \log\frac{\pi_\theta(y_c|x)}{\pi_{ref}(y_c|x)} - \log\frac{\pi_\theta(y_r|x)}{\pi_{ref}(y_r|x)}`:

    - ``"sigmoid"``, DPO (Rafailov et al. 2023): the Bradley-Terry loss of the implied
      rewards, :math:`-\log\sigma(\beta h)`. With ``label_smoothing`` :math:`\varepsilon > 0`
      it is **conservative DPO** (cDPO; Mitchell 2023, "A note on DPO with noisy
      preferences"): :math:`-(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h)`.
    - ``"robust"``, **rDPO** (Chowdhury et al. 2024, "Provably Robust DPO"), unbiased for
      labels flipped at rate :math:`\varepsilon` = ``label_smoothing``:
      :math:`\frac{(1-\varepsilon)(-\log\sigma(\beta h)) - \varepsilon(-\log\sigma(-\beta h))}{1-2\varepsilon}`.
    - ``"ipo"``, **IPO** (Azar et al. 2023, "A General Theoretical Paradigm to Understand
      Learning from Human Preferences"): :math:`(h - \frac{1}{2\beta})^2`, a squared loss that
      aims at a finite margin instead of pushing it to infinity. TRL's IPO averages the
      log-probs over response tokens first; pass per-token means to get its numbers.

    These are exactly the Chapter 01 and 04 Bradley-Terry losses applied to the implied
    rewards :func:`dpo_implied_rewards` (tested against TRL's ``DPOTrainer``).

    Defined in Chapter 07.
    """
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                        reference_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"dpo_loss: the four log-prob tensors must have one shape, got {sorted(shapes)}")
    if beta <= 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    chosen = dpo_implied_rewards(policy_chosen_logps, reference_chosen_logps, beta)
    rejected = dpo_implied_rewards(policy_rejected_logps, reference_rejected_logps, beta)
    if loss_type == "sigmoid":
        return conservative_bradley_terry_loss(chosen, rejected, label_smoothing, reduction)
    if loss_type == "robust":
        return unbiased_bradley_terry_loss(chosen, rejected, label_smoothing, reduction)
    if loss_type == "ipo":
        losses = ((chosen - rejected) / beta - 1 / (2 * beta)) ** 2
        return reduce_losses(losses, reduction, "dpo_loss")
    raise ValueError(f"dpo_loss: loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")


def rpo_nll_loss(chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""RPO's extra term: the negative log-likelihood of the chosen response per token.

    Pang et al. (2024), "Iterative Reasoning Preference Optimization", and Liu et al.
    (2024), "Provably Mitigating Overoptimization in RLHF" (RPO): adding
    :math:`\alpha \cdot \big(-\frac{1}{|y_c|}\log\pi_\theta(y_c|x)\big)` to the DPO loss keeps
    the chosen response likely. Plain DPO only widens the *gap* between chosen and
    rejected; on pairs far from what the policy writes it can lower both (likelihood
    displacement, Razin et al. 2024) and drift off the data. TRL's ``rpo_alpha`` before
    trl 1.0; trl 1.x writes it as ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, alpha]``,
    whose NLL is a token mean over the whole batch rather than a mean of per-answer means
    (``tests/test_dpo_trl.py`` checks both against each other).

    ``chosen_logps``: summed log-probs of the chosen responses; ``chosen_lengths``: their
    token counts.

    Defined in Chapter 07.
    """
    if chosen_logps.shape != chosen_lengths.shape:
        raise ValueError(f"rpo_nll_loss: chosen_logps {tuple(chosen_logps.shape)} and chosen_lengths "
                         f"{tuple(chosen_lengths.shape)} must have one shape")
    return reduce_losses(-chosen_logps / chosen_lengths.clamp_min(1), reduction, "rpo_nll_loss")
