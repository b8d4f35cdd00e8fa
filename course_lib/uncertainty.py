"""Uncertainty of a measured figure: standard errors and paired bootstrap intervals.

Every comparison the course reports carries one of these, and a difference is called
real only when its interval excludes zero (``Estimate.excludes_zero``); otherwise the
text says "within noise".

Defined in Chapter 07 (for the policy evaluations).
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


def paired_bootstrap(a, b, *, n_resamples: int = 2000, seed: int = 0, statistic=np.mean) -> Estimate:
    """``statistic(a - b)`` over paired items (same prompts, same pairs), with a percentile bootstrap interval.

    Resampling items, not the two arms separately, keeps the pairing: the item-to-item
    spread that both arms share cancels (Efron & Tibshirani 1993, ch. 13).
    """
    a, b = _values(a, "paired_bootstrap a"), _values(b, "paired_bootstrap b")
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: a and b must be paired, got {a.size} and {b.size} values")
    difference = a - b
    rng = np.random.default_rng(seed)
    draws = difference[rng.integers(0, difference.size, size=(n_resamples, difference.size))]
    resampled = np.apply_along_axis(statistic, 1, draws) if statistic is not np.mean else draws.mean(1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Estimate(float(statistic(difference)), float(resampled.std(ddof=1)), float(low), float(high), difference.size)



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
