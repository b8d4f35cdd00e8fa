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

    Mitchell (2023), "A note on DPO with noisy preferences" (cDPO); TRL's DPO
    ``loss_type="sigmoid"`` with ``label_smoothing``. With flip probability
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
