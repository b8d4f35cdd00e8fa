"""Finding noisy preference pairs from training dynamics, and scoring the finders.

A detector gives every training pair a *suspicion score* (higher = more likely
mislabelled). Because the course's world knows which labels were flipped, each
detector can be scored like a classifier: AUROC, and precision / recall when the
``k`` most suspicious pairs are flagged.

Statistics come from :class:`course_lib.reward.training.TrainingHistory`, whose per-pair
arrays have shape ``(epochs, n_pairs)``:

- **small loss** (Arpit et al. 2017; Han et al. 2018): networks fit clean pairs
  before noisy ones, so a pair's mean loss over epochs is high when its label is
  wrong;
- **fluctuation**: the spread (std) of a pair's loss across epochs; CRM (arXiv
  2505.10597) reports that noisy pairs make the loss fluctuate sharply;
- **first-fit epoch**: the first epoch at which the model agrees with the label
  (margin > 0); noisy pairs are fitted late or never (Toneva et al. 2019 count
  "forgetting events" in the same spirit);
- **two-model disagreement**: how much two independently trained models disagree
  with the label and with each other.

An estimate of the flip rate eta (Chapter 05): the disagreement rate on the pairs
a held-out model is most sure about ("anchor points"). Chapter 05 also shows why a
two-component mixture over per-pair losses, a tempting alternative, does not
estimate eta: the losses of a briefly trained model split by difficulty, even when
no label is flipped.

Defined in Chapter 03.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_auc_score


def small_loss_score(pair_loss: np.ndarray) -> np.ndarray:
    """Mean per-pair loss over epochs (NaN epochs ignored). Defined in Chapter 03."""
    return np.nanmean(np.asarray(pair_loss, dtype=float), axis=0)


def fluctuation_score(pair_loss: np.ndarray) -> np.ndarray:
    """Standard deviation of each pair's loss across epochs. Defined in Chapter 03."""
    return np.nanstd(np.asarray(pair_loss, dtype=float), axis=0)


def first_fit_epoch(pair_margin: np.ndarray) -> np.ndarray:
    """First epoch (1-based) whose margin is positive; ``epochs + 1`` if never. Defined in Chapter 03."""
    margins = np.nan_to_num(np.asarray(pair_margin, dtype=float), nan=-np.inf)
    fitted = margins > 0
    return np.where(fitted.any(axis=0), fitted.argmax(axis=0) + 1, margins.shape[0] + 1)


def disagreement_score(margin_a: np.ndarray, margin_b: np.ndarray) -> np.ndarray:
    """Suspicion from two models' final margins: ``-(sigma(m_a) + sigma(m_b)) / 2``.

    Higher when both models doubt the label; two models trained from different
    seeds rarely memorize the same flipped pair, so their joint doubt is a
    steadier signal than one model's loss. Defined in Chapter 03.
    """
    return -(expit(np.asarray(margin_a, dtype=float)) + expit(np.asarray(margin_b, dtype=float))) / 2.0


def detection_report(scores: np.ndarray, is_noisy: np.ndarray, k: int | None = None) -> dict[str, float]:
    """AUROC, and precision / recall of flagging the ``k`` highest scores.

    ``k`` defaults to the true number of noisy pairs (then precision = recall).
    With no noisy or no clean pair AUROC is undefined and reported as NaN.

    Defined in Chapter 03.
    """
    scores, is_noisy = np.asarray(scores, dtype=float), np.asarray(is_noisy, dtype=bool)
    if scores.shape != is_noisy.shape or scores.ndim != 1:
        raise ValueError(f"scores and is_noisy must be 1-D of equal length, got {scores.shape} and {is_noisy.shape}")
    n_noisy = int(is_noisy.sum())
    k = n_noisy if k is None else int(k)
    flagged = np.zeros_like(is_noisy)
    flagged[np.argsort(-scores, kind="stable")[:k]] = True
    true_positives = int((flagged & is_noisy).sum())
    auroc = float(roc_auc_score(is_noisy, scores)) if 0 < n_noisy < len(is_noisy) else float("nan")
    return {
        "auroc": auroc,
        "precision": true_positives / k if k else float("nan"),
        "recall": true_positives / n_noisy if n_noisy else float("nan"),
        "k": k,
    }


def estimate_flip_rate_from_confident_pairs(margins: np.ndarray, top_share: float = 0.2) -> float:
    """Estimate the share of flipped labels from held-out margins: disagreement on the surest pairs.

    ``margins[i]`` is ``r(chosen) - r(rejected)`` for pair ``i`` under a model that did
    NOT train on pair ``i`` (cross-fitting), so it has not memorized its label.
    Among the ``top_share`` of pairs with the largest ``|margin|`` the model is
    almost always right about the true preference, so under symmetric flips the
    label disagrees with it (``margin < 0``) at rate ~eta. These high-confidence
    pairs are the "anchor points" of noise-rate estimation (Liu & Tao 2016;
    Patrini et al. 2017).

    Biased upward by the errors the model makes on them: with flips independent of
    the pair and the model wrong about the true preference on a share ``e`` of the
    anchors, the expected estimate is ``eta + e * (1 - 2 * eta)``. With no flips it
    measures ``e`` itself. Its sampling error is binomial,
    ``sqrt(p * (1 - p) / n_top)`` over the ``n_top`` anchors.

    Defined in Chapter 05.
    """
    margins = np.asarray(margins, dtype=float)
    margins = margins[np.isfinite(margins)]
    if not 0.0 < top_share <= 1.0:
        raise ValueError(f"top_share must be in (0, 1], got {top_share}")
    n_top = int(top_share * margins.size)
    if n_top < 5:
        raise ValueError(f"estimate_flip_rate_from_confident_pairs needs at least 5 confident pairs, got {n_top} "
                         f"({margins.size} finite margins x top_share {top_share})")
    surest = np.argsort(-np.abs(margins), kind="stable")[:n_top]
    return float((margins[surest] < 0).mean())
