"""Uncertainty of a measured figure: standard errors and paired bootstrap intervals.

Every comparison the course reports carries one of these, and a difference is called
real only when its interval excludes zero (``Estimate.excludes_zero``); otherwise the
text says "within noise".

Defined in Chapter 02 (accuracies); paired bootstraps over seeds and benchmark items from
Chapter 03. Policies (Chapters 07-09) are compared with :func:`policy_difference`: the
gold of both policies on the same prompts, seeds x prompts, a t interval that holds
both the seed and the prompt variance; :func:`detectable_effect` states before a run
what it can resolve, and :func:`error_bars` draws every interval (a bar without one is
an error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and an interval ``[low, high]`` at ``confidence`` (95% unless widened)."""

    mean: float
    se: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        level = f"{100 * self.confidence:.1f}".rstrip("0").rstrip(".")
        return f"{self.mean:+.3f} ± {self.se:.3f} ({level}% CI [{self.low:+.3f}, {self.high:+.3f}], n={self.n})"

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


def policy_difference(a, b, *, confidence: float = 0.95, name: str = "policy_difference") -> Estimate:
    """``mean(a - b)`` for two policies scored on the same prompts by several seeds, with a t interval.

    ``a`` and ``b`` have shape ``(seeds, prompts)`` (or ``(prompts,)`` for one seed): the
    gold of each policy's answer to each prompt, seed by seed; both arms answer the same
    prompts. The difference ``d[s, p]`` has a seed effect, a prompt effect and a residual
    (a two-way random-effects model), and its mean has variance

        Var(mean d) = (MS_seed + MS_prompt - MS_residual) / (S P)

    from the two-way ANOVA mean squares (each effect's share estimated without bias;
    Searle, Casella & McCulloch 1992, ch. 4), so the interval holds both sources of noise:
    which seeds trained the policies and which prompts judged them. The interval uses
    Student's t with Satterthwaite's degrees of freedom, which stay small when seeds
    are few (3 seeds: at most about 2 for the seed part), not +-1.96 SE. With one seed
    it is the paired t interval over prompts. For many seeds it agrees with
    ``paired_bootstrap`` on ``(seeds, items)`` arrays (the tests check both).

    When ``k`` comparisons are read together (several methods against one baseline),
    pass ``confidence=1 - 0.05 / k`` (Bonferroni): each interval widens so that all
    ``k`` hold together with 95% probability, and a verdict survives the multiple tests.

    Defined in Chapter 07; used for every policy comparison in Chapters 07-09.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"{name}: a and b must be paired arrays of shape (seeds, prompts) or (prompts,), "
                         f"got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{name}: a and b must be finite")
    if not 0.5 < confidence < 1:
        raise ValueError(f"{name}: confidence must be in (0.5, 1), got {confidence!r}")
    # Differences at the level of rounding (two arms that computed the same value two ways) are
    # zero: otherwise identical arms would get a zero-width interval around 1e-16 and a verdict.
    d = np.atleast_2d(np.where(np.isclose(a, b, rtol=1e-12, atol=1e-12), 0.0, a - b))
    n_seeds, n_prompts = d.shape
    if n_prompts < 2:
        raise ValueError(f"{name}: need at least 2 prompts, got {n_prompts}")
    mean = float(d.mean())
    prompt_means = d.mean(0)
    ms_prompt = n_seeds * float(((prompt_means - mean) ** 2).sum()) / (n_prompts - 1)
    if n_seeds == 1:
        variance, dof = ms_prompt / n_prompts, n_prompts - 1
    else:
        seed_means = d.mean(1)
        ms_seed = n_prompts * float(((seed_means - mean) ** 2).sum()) / (n_seeds - 1)
        residual = d - seed_means[:, None] - prompt_means[None, :] + mean
        ms_res = float((residual**2).sum()) / ((n_seeds - 1) * (n_prompts - 1))
        terms = [(ms_seed, n_seeds - 1), (ms_prompt, n_prompts - 1), (-ms_res, (n_seeds - 1) * (n_prompts - 1))]
        total = sum(ms for ms, _ in terms)
        if total <= ms_res:  # negative variance components: fall back to the residual alone
            terms, total = [(ms_res, (n_seeds - 1) * (n_prompts - 1))], ms_res
        variance = total / (n_seeds * n_prompts)
        denominator = sum(ms**2 / df for ms, df in terms)
        dof = total**2 / denominator if denominator > 0 else n_seeds * n_prompts - 1
    se = float(np.sqrt(variance))
    quantile = float(stats.t.ppf(0.5 + confidence / 2, dof))
    return Estimate(mean, se, mean - quantile * se, mean + quantile * se, d.size, confidence)


def policy_mean(values, *, confidence: float = 0.95) -> Estimate:
    """The mean gold of one policy over ``(seeds, prompts)``, with the same interval as :func:`policy_difference`.

    Defined in Chapter 07.
    """
    values = np.asarray(values, dtype=np.float64)
    return policy_difference(values, np.zeros_like(values), confidence=confidence, name="policy_mean")


def detectable_effect(sd: float, n: int, *, dof: float | None = None, power: float = 0.8,
                      confidence: float = 0.95) -> float:
    """The smallest true difference an experiment finds with probability ``power``.

    ``sd`` is the standard deviation of one item's difference (e.g. per-prompt gold
    differences, or ``sqrt(2)`` times one policy's per-prompt SD when nothing is known
    about the pairing), ``n`` the number of items averaged. A two-sided test at
    ``confidence`` then detects effects of at least

        (t_{(1+confidence)/2} + t_{power}) * sd / sqrt(n)

    (with ``dof`` degrees of freedom; normal quantiles when None). State it before an
    experiment runs, so that "within noise" is read against what the run could have seen.

    Defined in Chapter 07.
    """
    if not (sd >= 0 and np.isfinite(sd)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"detectable_effect: need sd >= 0 and a positive integer n, got sd={sd!r}, n={n!r}")
    quantile = (lambda q: float(stats.norm.ppf(q))) if dof is None else (lambda q: float(stats.t.ppf(q, dof)))
    return (quantile(0.5 + confidence / 2) + quantile(power)) * float(sd) / np.sqrt(n)


def error_bars(estimates) -> tuple[np.ndarray, np.ndarray]:
    """``(means, yerr)`` for ``ax.bar``/``ax.errorbar`` from a list of :class:`Estimate`: asymmetric interval arms.

    Every estimate must have an interval (a missing one is an error, never a zero-length bar).

    Defined in Chapter 07.
    """
    estimates = list(estimates)
    bad = [i for i, e in enumerate(estimates) if not (np.isfinite(e.low) and np.isfinite(e.high))]
    if bad:
        raise ValueError(f"error_bars: estimates {bad} have no interval; use policy_difference/policy_mean, "
                         "which give one from a single seed too")
    means = np.array([e.mean for e in estimates])
    return means, np.array([[e.mean - e.low for e in estimates], [e.high - e.mean for e in estimates]])
