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


# ---------------------------------------------------------------- the GRPO family (Chapter 08)
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
ADVANTAGE_SCALES = ("group", "batch", "none")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    r"""Group-relative advantages: each completion's reward against the other completions of its prompt.

    ``rewards`` has shape ``(n_prompts * group_size,)`` in group-contiguous order (the
    ``group_size`` completions of prompt 0, then those of prompt 1, ...). With
    :math:`\bar r_g` the mean reward of completion :math:`i`'s group :math:`g`:

    .. math::

        A_i = \frac{r_i - \bar r_g}{s + \epsilon}

    - ``scale="group"``, **GRPO** (Shao et al. 2024, "DeepSeekMath: Pushing the Limits of
      Mathematical Reasoning in Open Language Models"): :math:`s` is the std of group :math:`g`.
      The mean is a baseline learned from nothing: no value network.
    - ``scale="batch"``: :math:`s` is the std of all the batch's rewards (TRL's ``"batch"``;
      Liu et al. 2025, "Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning").
      The baseline is still the group mean.
    - ``scale="none"``, **Dr. GRPO** (Liu et al. 2025, "Understanding R1-Zero-Like Training:
      A Critical Perspective"): :math:`A_i = r_i - \bar r_g`, no division and no ``eps``.
      Dividing by the group std up-weights prompts whose completions nearly all agree (too
      easy or too hard): a question-level difficulty bias.

    Conventions, exactly as TRL's ``GRPOTrainer`` (trl 1.16, ``_generate_and_score_completions``):
    the std is the **unbiased** one (Bessel's correction, ``n - 1``; TRL's ``nanstd``), and
    ``eps`` is added to the std, outside the square root (``(r - mean) / (std + eps)``). A
    group whose rewards are all equal gets advantage 0 everywhere. With one completion per
    group (``scale="group"``) or one reward in all (``scale="batch"``) the std is taken as 0,
    as TRL does, so the advantage is 0 rather than NaN.

    Defined in Chapter 08.
    """
    if rewards.dim() != 1:
        raise ValueError(f"group_advantages: rewards must be 1-D (n_prompts * group_size,), got shape "
                         f"{tuple(rewards.shape)}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_advantages: group_size must be a positive int, got {group_size!r}")
    if rewards.numel() % group_size != 0:
        raise ValueError(f"group_advantages: {rewards.numel()} rewards cannot be split into groups of {group_size} "
                         f"(the length must be divisible by group_size)")
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"group_advantages: scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    grouped = rewards.view(-1, group_size)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "none":
        return advantages
    if scale == "group":
        std = grouped.std(dim=1, unbiased=True).repeat_interleave(group_size) if group_size > 1 else \
            torch.zeros_like(rewards)
    else:
        std = rewards.std(unbiased=True).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    return advantages / (std + eps)


def k3_kl(logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    r"""Per-token k3 estimate of :math:`KL(\pi_\theta \| \pi_{ref})` from tokens sampled from :math:`\pi_\theta`.

    Schulman (2020), "Approximating KL Divergence" (blog note); used by GRPO (Shao et al.
    2024) and TRL's ``GRPOTrainer`` for its ``beta`` term. With
    :math:`\log\rho = \log\pi_{ref}(y_t) - \log\pi_\theta(y_t)`:

    .. math::

        k_3 = e^{\log\rho} - \log\rho - 1

    It is :math:`\ge 0` for every token (:math:`e^x \ge 1 + x`), 0 where the two log-probs
    are equal, and unbiased: :math:`E_{y\sim\pi_\theta}[\rho] = 1`, so
    :math:`E[k_3] = E[-\log\rho] = KL(\pi_\theta\|\pi_{ref})`. Near the reference (small
    KL, where the penalty is meant to keep the policy) it has much lower variance than the
    plain :math:`-\log\rho` (k1), which is negative on many tokens; far from it the
    :math:`e^{\log\rho}` term makes it heavy-tailed and its variance can exceed k1's
    (Chapter 08 measures both).

    Defined in Chapter 08.
    """
    if logps.shape != reference_logps.shape:
        raise ValueError(f"k3_kl: logps {tuple(logps.shape)} and reference_logps {tuple(reference_logps.shape)} "
                         f"must have one shape")
    log_ratio = reference_logps - logps
    return torch.exp(log_ratio) - log_ratio - 1


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    reference_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""The GRPO family's clipped policy loss on per-token log-probs; returns the scalar loss.

    ``logps``, ``old_logps``, ``reference_logps``, ``completion_mask``: ``(B, T)``, the
    completion tokens' log-probs under the policy being trained, under the policy that
    sampled them, under the frozen reference, and 1 for real (0 for padding) tokens.
    ``advantages``: ``(B,)``, one per completion (:func:`group_advantages`).
    ``old_logps=None`` means one update per batch (``old_logps = logps.detach()``, ratio 1
    in value, gradient of :math:`A\,\nabla\log\pi`).

    Per token, with the importance ratio :math:`r_t = \pi_\theta(y_t)/\pi_{old}(y_t)`
    (PPO's clipped surrogate: Schulman et al. 2017, "Proximal Policy Optimization
    Algorithms"):

    .. math::

        \ell_t = -\min\big(r_t A,\ \mathrm{clip}(r_t, 1-\varepsilon_{low}, 1+\varepsilon_{high})\,A\big)
                 + \beta\, k_3(\pi_\theta, \pi_{ref})_t

    (:func:`k3_kl`; the KL term only when ``reference_logps`` is given; ``beta > 0`` needs it).
    ``epsilon_high > epsilon_low`` is DAPO's "clip-higher" (0.28 in the paper). With
    :math:`m` the mask and :math:`|o_i| = \sum_t m_{it}`, the reductions:

    - ``"grpo"`` (Shao et al. 2024, DeepSeekMath):
      :math:`\frac1B\sum_i \frac{1}{|o_i|}\sum_t m_{it}\ell_{it}` -- each sequence's token
      mean, then the mean over sequences. Every completion weighs the same whatever its
      length, so each token of a long completion counts less: long wrong answers are
      punished less per token and short right ones rewarded more (the length bias Dr. GRPO
      points out).
    - ``"bnpo"``: :math:`\frac{\sum_{i,t} m_{it}\ell_{it}}{\sum_{i,t} m_{it}}` -- token mean
      over the (local) batch.
    - ``"dr_grpo"`` (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical
      Perspective"): :math:`\frac{\sum_{i,t} m_{it}\ell_{it}}{B \cdot L_{max}}` with the
      constant :math:`L_{max}` = ``max_completion_length`` (required): no length
      normalisation at all.
    - ``"dapo"`` (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at
      Scale"): token-level mean :math:`\frac{\sum_{i,t} m_{it}\ell_{it}}{\sum_{i,t} m_{it}}`.
      For one process and one micro-batch this is exactly ``"bnpo"``. They differ only in
      what the count spans: TRL 1.16's ``"dapo"`` (its default) divides by the token count
      of the whole *generation* batch, over all processes and accumulation steps
      (``num_items_in_batch``), so every token in an optimizer step weighs the same; its
      ``"bnpo"`` divides each micro-batch by its own count.

    The masked tokens are excluded from every sum; a completion with no tokens counts as
    one token (TRL's ``clamp(min=1)``). Checked against TRL's ``GRPOTrainer._compute_loss``
    (``tests/test_grpo_losses.py``).

    ``reduction="none"`` returns each completion's share instead, ``(B,)``, whose mean is
    the loss (e.g. ``"dapo"``: :math:`B\sum_t m_{it}\ell_{it} / \sum_{i,t} m_{it}`); the
    course's training loop averages per-row losses.

    Defined in Chapter 08.
    """
    if logps.dim() != 2:
        raise ValueError(f"grpo_loss: logps must be (B, T), got shape {tuple(logps.shape)}")
    named = {"old_logps": old_logps, "completion_mask": completion_mask, "reference_logps": reference_logps}
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != logps.shape:
            raise ValueError(f"grpo_loss: {name} has shape {tuple(tensor.shape)} but logps has "
                             f"{tuple(logps.shape)}; they must match")
    if advantages.shape != logps.shape[:1]:
        raise ValueError(f"grpo_loss: advantages must be (B,) = ({logps.shape[0]},), one per completion, got "
                         f"{tuple(advantages.shape)}")
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"grpo_loss: loss_type must be one of {GRPO_LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "dr_grpo" and (max_completion_length is None or max_completion_length < 1):
        raise ValueError(f"grpo_loss: loss_type='dr_grpo' needs max_completion_length >= 1 (the constant "
                         f"normaliser), got {max_completion_length!r}")
    if not (0.0 <= epsilon_low < 1.0) or epsilon_high < 0.0:
        raise ValueError(f"grpo_loss: need 0 <= epsilon_low < 1 and epsilon_high >= 0, got epsilon_low="
                         f"{epsilon_low}, epsilon_high={epsilon_high}")
    if beta < 0:
        raise ValueError(f"grpo_loss: beta must be >= 0, got {beta}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"grpo_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    if beta != 0.0 and reference_logps is None:
        raise ValueError(f"grpo_loss: beta={beta} needs reference_logps for the KL term")

    if old_logps is None:
        old_logps = logps.detach()
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    advantage = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * advantage, clipped * advantage)
    if reference_logps is not None and beta != 0.0:
        per_token = per_token + beta * k3_kl(logps, reference_logps)

    mask = completion_mask.to(per_token.dtype)
    sequence_sums = (per_token * mask).sum(-1)
    if loss_type == "grpo":
        shares = sequence_sums / mask.sum(-1).clamp(min=1.0)
    elif loss_type == "dr_grpo":
        shares = sequence_sums / max_completion_length
    else:  # "bnpo" and, on one process and micro-batch, "dapo": the batch's token mean
        shares = sequence_sums * (logps.shape[0] / mask.sum().clamp(min=1.0))
    return shares.mean() if reduction == "mean" else shares
