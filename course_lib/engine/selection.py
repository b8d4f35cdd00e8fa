"""Which pairs to train on: small-loss selection, peer review and curriculum order.

Pure functions of per-pair statistics (losses or margins), so every rule can be
checked on hand-made vectors. The trainers in :mod:`course_lib.engine.collaborative`
call them batch by batch.

Co-teaching (Han et al. 2018, "Co-teaching: Robust training of deep neural
networks with extremely noisy labels"): each of two networks ranks a mini-batch
by its own loss, keeps the ``int((1 - forget_rate) * |B|)`` smallest-loss
samples, and the *other* network is updated on them; ``forget_rate`` rises
linearly from 0 to its final value over the first epochs.

Collaborative Reward Modeling (Zhang et al. 2025, "Two Minds Better Than One:
Collaborative Reward Modeling for LLM Alignment", arXiv 2505.10597) applies peer
review to reward models, with the per-pair Bradley-Terry loss as the statistic,
and adds Curriculum Sort: each epoch visits pairs from easy to hard. What the
paper leaves open, the course decides (and says so in Chapters 04-05):

- the statistic is the reviewing model's per-pair BT loss ``-log sigma(margin)``
  (equivalently its margin: the loss is decreasing in the margin);
- keep ratio ``1 - forget_rate`` per batch, ``forget_rate`` ramped from 0 to the
  (known or estimated) noise rate eta over ``ramp_epochs`` epochs;
- Curriculum Sort orders pairs by the *sum* of the two models' margins, largest
  first, recomputed at the start of every epoch.
"""

from __future__ import annotations

import torch


def forget_rate_schedule(epoch: int, noise_rate: float, ramp_epochs: int = 2) -> float:
    """Co-teaching's schedule: ``noise_rate * min(epoch / ramp_epochs, 1)`` (epoch counted from 0).

    Early on every pair is kept (networks first fit the easy, mostly clean
    pairs); the share dropped grows to ``noise_rate`` after ``ramp_epochs``.

    Defined in Chapter 04.
    """
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"noise_rate must be in [0, 1), got {noise_rate}")
    if ramp_epochs <= 0:
        return noise_rate
    return noise_rate * min(epoch / ramp_epochs, 1.0)


def small_loss_selection(losses: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Boolean mask keeping the ``int(keep_ratio * n)`` smallest losses (at least one).

    Ties are broken by position (a stable sort), so the result is deterministic.

    Defined in Chapter 04.
    """
    if losses.ndim != 1 or losses.numel() == 0:
        raise ValueError(f"losses must be a non-empty 1-D tensor, got shape {tuple(losses.shape)}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    n_keep = max(1, int(keep_ratio * losses.numel()))
    order = torch.sort(losses, stable=True).indices
    mask = torch.zeros_like(losses, dtype=torch.bool)
    mask[order[:n_keep]] = True
    return mask


def peer_review_select(losses_a: torch.Tensor, losses_b: torch.Tensor, keep_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the pairs each model is updated on: the pairs its PEER kept.

    Model A keeps its small-loss pairs and hands them to B; B does the same for
    A. Returns ``(update_a, update_b)`` = ``(kept_by_b, kept_by_a)``.

    Defined in Chapter 04.
    """
    kept_by_a = small_loss_selection(losses_a, keep_ratio)
    kept_by_b = small_loss_selection(losses_b, keep_ratio)
    return kept_by_b, kept_by_a


def self_review_select(losses_a: torch.Tensor, losses_b: torch.Tensor, keep_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Self-Review ablation: each model is updated on the pairs IT kept.

    Without the exchange, a model's own mistakes (a flipped pair it has already
    fitted has a small loss) confirm themselves; peer review breaks that loop
    because two models make different mistakes.

    Defined in Chapter 04.
    """
    return small_loss_selection(losses_a, keep_ratio), small_loss_selection(losses_b, keep_ratio)


def disagreement_select(losses_a: torch.Tensor, losses_b: torch.Tensor, keep_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Co-teaching+ (Yu et al. 2019, "How does Disagreement Help Generalization against Label Corruption?").

    Only pairs on which the two models DISAGREE are candidates: for a pair, a model
    agrees with the label when its BT loss ``-log sigma(margin)`` is below ``ln 2``
    (margin > 0), so the two disagree when exactly one of them is below. Among those,
    each model keeps its small-loss ``keep_ratio`` share and hands it to its peer, as
    in peer review. With no disagreement in the batch, nobody is updated (the paper's
    rule after its warm-up; :mod:`course_lib.engine.collaborative` runs plain peer review
    during the warm-up). Keeping the two models apart is the point: Co-teaching's
    two networks become alike as training goes on, and then review each other's
    mistakes less.

    Defined in Chapter 05 (the reproduction's baselines).
    """
    threshold = torch.log(torch.tensor(2.0, dtype=losses_a.dtype))
    disagree = (losses_a < threshold) != (losses_b < threshold)
    update_a = torch.zeros_like(disagree)
    update_b = torch.zeros_like(disagree)
    if disagree.any():
        rows = torch.nonzero(disagree).flatten()
        kept_for_a, kept_for_b = peer_review_select(losses_a[rows], losses_b[rows], keep_ratio)
        update_a[rows[kept_for_a]] = True
        update_b[rows[kept_for_b]] = True
    return update_a, update_b


def curriculum_sort(margins_a: torch.Tensor, margins_b: torch.Tensor | None = None) -> torch.Tensor:
    """Pair indices from easy to hard: by decreasing summed margin ``m_a + m_b``.

    A large positive margin means both models already agree with the label (an
    easy, probably clean pair); a negative one means they disagree with it (hard,
    or flipped). Ties keep dataset order. CRM's Curriculum Sort, Chapter 05.
    """
    total = margins_a if margins_b is None else margins_a + margins_b
    if total.ndim != 1:
        raise ValueError(f"margins must be 1-D, got shape {tuple(total.shape)}")
    return torch.sort(-total, stable=True).indices
