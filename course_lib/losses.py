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
    return _reduce(losses, reduction, "bradley_terry_loss")


def _reduce(losses: torch.Tensor, reduction: str, name: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
