"""Calibration of a reward model's preference probabilities: reliability, ECE, temperature.

A Bradley-Terry reward model does not only rank two answers, it states a
probability ``p = sigmoid(r_a - r_b)`` that ``a`` is preferred. Accuracy ignores
that number; the negative log-likelihood (NLL) punishes it when it is wrong and
confident. Two models with the same accuracy can differ a lot in NLL because one is
overconfident, so NLL comparisons are made after calibration:

- a *reliability table* bins predictions by confidence ``max(p, 1 - p)`` and compares
  each bin's mean confidence with its accuracy (a reliability diagram plots it);
- the *expected calibration error* (ECE, Naeini et al. 2015; Guo et al. 2017, "On
  Calibration of Modern Neural Networks") is the bin-size-weighted mean gap
  ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|``;
- *temperature scaling* (Guo et al. 2017) divides every margin by one ``T > 0`` fitted
  on held-out pairs by minimising the NLL; it changes no ranking, so accuracy stays
  the same while NLL and ECE fall.

Outcomes are 1 when the first answer (``a``, or ``chosen`` of a benchmark pair) is
the preferred one and 0 otherwise.

Defined in Chapter 02; used again in Chapter 06.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import expit, log_expit


def _inputs(margins, outcomes, name: str) -> tuple[np.ndarray, np.ndarray]:
    margins = np.asarray(margins, dtype=np.float64).ravel()
    outcomes = np.broadcast_to(np.asarray(outcomes, dtype=np.float64), margins.shape).ravel()
    if margins.size == 0 or not np.isfinite(margins).all():
        raise ValueError(f"{name}: margins must be a non-empty array of finite numbers, got {margins.size} values")
    if not np.isin(outcomes, (0.0, 1.0)).all():
        raise ValueError(f"{name}: outcomes must be 0 or 1 (is the first answer the preferred one?)")
    return margins, outcomes


def preference_nll(margins, outcomes=1, temperature: float = 1.0) -> float:
    """Mean ``-log P(observed outcome)`` with ``P(a preferred) = sigmoid(margin / temperature)``, in nats.

    ``ln 2 = 0.693`` is the NLL of a model that always says 50%; a model worse than
    that is confidently wrong often enough to lose to a coin.
    """
    margins, outcomes = _inputs(margins, outcomes, "preference_nll")
    if not temperature > 0:
        raise ValueError(f"preference_nll: temperature must be > 0, got {temperature}")
    signed = np.where(outcomes == 1, margins, -margins) / temperature
    return float(-log_expit(signed).mean())


def reliability_table(margins, outcomes=1, n_bins: int = 10, temperature: float = 1.0) -> pd.DataFrame:
    """Predictions binned by confidence ``max(p, 1 - p)`` in equal-width bins over [0.5, 1].

    One row per non-empty bin: ``confidence`` (mean), ``accuracy`` (share of pairs where
    the favoured answer is the preferred one, ties 0.5) and ``n_pairs``.
    """
    margins, outcomes = _inputs(margins, outcomes, "reliability_table")
    if n_bins < 1:
        raise ValueError(f"reliability_table: n_bins must be >= 1, got {n_bins}")
    p = expit(margins / temperature)
    confidence = np.maximum(p, 1 - p)
    correct = np.where(margins == 0, 0.5, (margins > 0) == (outcomes == 1)).astype(np.float64)
    bins = np.minimum(((confidence - 0.5) * 2 * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "confidence": confidence, "accuracy": correct})
    table = frame.groupby("bin").agg(confidence=("confidence", "mean"), accuracy=("accuracy", "mean"),
                                     n_pairs=("accuracy", "size"))
    return table


def expected_calibration_error(margins, outcomes=1, n_bins: int = 10, temperature: float = 1.0) -> float:
    """ECE: ``sum_b n_b / n * |accuracy_b - confidence_b|`` over the bins of :func:`reliability_table`."""
    table = reliability_table(margins, outcomes, n_bins, temperature)
    return float((table.n_pairs * (table.accuracy - table.confidence).abs()).sum() / table.n_pairs.sum())


def fit_temperature(margins, outcomes=1, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The ``T`` in ``bounds`` that minimises :func:`preference_nll` on these (held-out) pairs.

    ``T > 1`` means the model was overconfident. Fit on a validation split and apply
    to the test split; fitting on the test pairs themselves flatters the NLL.
    """
    margins, outcomes = _inputs(margins, outcomes, "fit_temperature")
    result = optimize.minimize_scalar(lambda log_t: preference_nll(margins, outcomes, float(np.exp(log_t))),
                                      bounds=tuple(np.log(bounds)), method="bounded")
    return float(np.exp(result.x))
