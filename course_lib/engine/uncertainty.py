"""Uncertainty of a measured figure: standard errors and paired bootstrap intervals.

Every comparison the course reports carries one of these, and a difference is called
real only when its interval excludes zero (``Estimate.excludes_zero``); otherwise the
text says "within noise".

Defined in Chapter 02 (accuracies); paired bootstraps over seeds and benchmark items from
Chapter 03, over prompts in Chapters 07-08.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and a 95% interval ``[low, high]``."""

    mean: float
    se: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:+.3f} ± {self.se:.3f} (95% CI [{self.low:+.3f}, {self.high:+.3f}], n={self.n})"

    def verdict(self, what: str = "difference") -> str:
        """``"<what> is positive"`` / ``"negative"`` when the interval excludes 0, else ``"within noise"``."""
        if not self.excludes_zero:
            return f"{what} within noise"
        return f"{what} is {'positive' if self.mean > 0 else 'negative'}"


def _values(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"{name}: need a non-empty array of finite numbers, got {array.size} values")
    return array


def mean_estimate(values, name: str = "mean_estimate") -> Estimate:
    """Mean of ``values`` with its standard error ``sd / sqrt(n)`` and the normal 95% interval.

    The interval uses Student's t with ``n - 1`` degrees of freedom, which matters for
    the few values of a comparison over seeds.
    """
    array = _values(values, name)
    n = array.size
    se = float(array.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    quantile = float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")
    mean = float(array.mean())
    return Estimate(mean, se, mean - quantile * se, mean + quantile * se, n)


def paired_bootstrap(a, b, *, n_resamples: int = 2000, seed: int = 0, statistic=np.mean, strata=None) -> Estimate:
    """``statistic(a - b)`` over paired items (same prompts, same pairs), with a percentile bootstrap interval.

    Resampling items, not the two arms separately, keeps the pairing: the item-to-item
    spread that both arms share cancels (Efron & Tibshirani 1993, ch. 13).

    Two extensions for benchmark comparisons (Chapters 02-06 and ``course sweep``):

    - ``strata``: one label per item (a MiniRewardBench section). The statistic is then
      the mean of the per-stratum means (RewardBench's average of sections), and items
      are resampled within their stratum.
    - ``a`` and ``b`` of shape ``(seeds, items)``: one row per seed (each seed trains
      both arms anew; items are shared). Seeds and items are resampled together, so
      the interval holds both sources of noise: the training run and the benchmark's
      finite size.

    Both use the mean; ``statistic`` applies to the plain 1-D case only.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: a and b must be paired, got shapes {a.shape} and {b.shape}")
    if a.ndim not in (1, 2) or a.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"paired_bootstrap: need 1-D (items) or 2-D (seeds x items) finite arrays, got shape {a.shape}")
    rng = np.random.default_rng(seed)
    difference = a - b
    if difference.ndim == 1 and strata is None:
        draws = difference[rng.integers(0, difference.size, size=(n_resamples, difference.size))]
        resampled = np.apply_along_axis(statistic, 1, draws) if statistic is not np.mean else draws.mean(1)
        low, high = np.percentile(resampled, [2.5, 97.5])
        return Estimate(float(statistic(difference)), float(resampled.std(ddof=1)), float(low), float(high), difference.size)
    if statistic is not np.mean:
        raise ValueError("paired_bootstrap: strata and seeds x items support the mean only")
    per_seed = np.atleast_2d(difference)
    n_seeds, n_items = per_seed.shape
    labels = np.zeros(n_items, dtype=int) if strata is None else np.unique(np.asarray(list(strata)), return_inverse=True)[1]
    if labels.shape != (n_items,):
        raise ValueError(f"paired_bootstrap: strata has {labels.size} labels for {n_items} items")
    groups = [np.flatnonzero(labels == k) for k in range(labels.max() + 1)]
    weights = np.zeros(n_items)  # the statistic is seed_weights @ difference @ item_weights
    for members in groups:
        weights[members] = 1.0 / (members.size * len(groups))
    point = float(per_seed.mean(0) @ weights)
    resampled = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):
        rows = min(256, n_resamples - start)
        seed_weights = (rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=rows) / n_seeds
                        if n_seeds > 1 else np.ones((rows, 1)))
        item_weights = np.zeros((rows, n_items))
        for members in groups:  # resample each stratum's items with replacement: counts per item
            size = members.size
            draws = rng.integers(0, size, size=(rows, size)) + size * np.arange(rows)[:, None]
            counts = np.bincount(draws.ravel(), minlength=rows * size).reshape(rows, size)
            item_weights[:, members] = counts / (size * len(groups))
        resampled[start : start + rows] = ((seed_weights @ per_seed) * item_weights).sum(1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Estimate(point, float(resampled.std(ddof=1)), float(low), float(high), difference.size)


def accuracy_estimate(outcomes, strata=None, name: str = "accuracy_estimate") -> Estimate:
    """An accuracy (mean of 0/1 outcomes, ties 0.5) with its binomial standard error.

    With ``strata`` (a section per item) the accuracy is RewardBench's mean of the
    per-section accuracies, and ``se = sqrt(sum_k se_k^2) / K`` with
    ``se_k = sqrt(p_k (1 - p_k) / n_k)``. This is the noise from the benchmark's
    finite size alone; a comparison of two models on the same items should use
    :func:`paired_bootstrap`, which is much tighter because the items are shared.

    Defined in Chapter 02.
    """
    outcomes = _values(outcomes, name)
    labels = np.zeros(outcomes.size, dtype=int) if strata is None else np.unique(np.asarray(list(strata)), return_inverse=True)[1]
    if labels.shape != outcomes.shape:
        raise ValueError(f"{name}: strata has {labels.size} labels for {outcomes.size} outcomes")
    means, variances = [], []
    for k in range(labels.max() + 1):
        group = outcomes[labels == k]
        means.append(group.mean())
        variances.append(group.mean() * (1 - group.mean()) / group.size)
    mean = float(np.mean(means))
    se = float(np.sqrt(np.sum(variances)) / len(means))
    return Estimate(mean, se, mean - 1.96 * se, mean + 1.96 * se, outcomes.size)


def difference_estimate(a, b, name: str = "difference_estimate") -> Estimate:
    """``mean(a) - mean(b)`` of two independent samples, with Welch's standard error and t interval.

    For measurements that are not paired (two windows of a training run, two sets of
    answers to different prompts): ``se = sqrt(se_a^2 + se_b^2)``, and the
    Welch-Satterthwaite degrees of freedom for the 95% interval.

    Defined in Chapter 08.
    """
    a, b = _values(a, f"{name} a"), _values(b, f"{name} b")
    if a.size < 2 or b.size < 2:
        raise ValueError(f"{name}: need at least 2 values in each sample, got {a.size} and {b.size}")
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = float(np.sqrt(var_a + var_b))
    dof = (var_a + var_b) ** 2 / (var_a**2 / (a.size - 1) + var_b**2 / (b.size - 1)) if se > 0 else a.size + b.size - 2
    quantile = float(stats.t.ppf(0.975, dof))
    mean = float(a.mean() - b.mean())
    return Estimate(mean, se, mean - quantile * se, mean + quantile * se, a.size + b.size)
