"""Tests of the uncertainty helpers: accuracies' standard errors, paired bootstraps, and policy comparisons."""

import numpy as np
import pytest

from course_lib.engine.uncertainty import (
    accuracy_estimate,
    detectable_effect,
    error_bars,
    mean_estimate,
    paired_bootstrap,
    policy_difference,
    policy_mean,
)


def test_accuracy_estimate_is_the_binomial_standard_error():
    outcomes = np.r_[np.ones(300), np.zeros(100)]
    estimate = accuracy_estimate(outcomes)
    assert estimate.mean == pytest.approx(0.75)
    assert estimate.se == pytest.approx(np.sqrt(0.75 * 0.25 / 400))


def test_accuracy_estimate_with_strata_averages_sections():
    outcomes = np.r_[np.ones(90), np.zeros(10), np.ones(50), np.zeros(50)]
    strata = ["a"] * 100 + ["b"] * 100
    estimate = accuracy_estimate(outcomes, strata)
    assert estimate.mean == pytest.approx((0.9 + 0.5) / 2)
    assert estimate.se == pytest.approx(np.sqrt(0.09 / 100 + 0.25 / 100) / 2)
    with pytest.raises(ValueError, match="labels"):
        accuracy_estimate(outcomes, strata[:10])


def test_paired_bootstrap_cancels_shared_item_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 5, 500)
    a, b = difficulty + 0.3 + rng.normal(0, 0.1, 500), difficulty
    paired = paired_bootstrap(a, b)
    assert paired.excludes_zero and paired.low > 0.25 and paired.high < 0.35
    assert not mean_estimate(a).low > mean_estimate(b).high  # unpaired, the shared spread hides it


def test_stratified_bootstrap_weights_sections_equally():
    a = np.r_[np.ones(900), np.zeros(100)]  # large section: a always right; small section: a always wrong
    b = np.r_[np.zeros(900), np.ones(100)]
    strata = ["big"] * 900 + ["small"] * 100
    assert paired_bootstrap(a, b, strata=strata).mean == pytest.approx(0.0)
    assert paired_bootstrap(a, b).mean == pytest.approx(0.8)


def test_bootstrap_over_seeds_and_items_widens_with_seed_noise():
    rng = np.random.default_rng(1)
    items = rng.integers(0, 2, size=2000).astype(float)
    steady = np.stack([items + 0.05 for _ in range(5)])
    noisy = np.stack([items + 0.05 + shift for shift in rng.normal(0, 0.1, 5)])
    base = np.stack([items] * 5)
    tight, wide = paired_bootstrap(steady, base), paired_bootstrap(noisy, base)
    assert tight.mean == pytest.approx(0.05)
    assert tight.high - tight.low < 1e-9  # every seed and item differ by exactly 0.05
    assert wide.high - wide.low > 0.05
    assert wide.n == 10000


def test_paired_bootstrap_rejects_unpaired_or_bad_input():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="mean only"):
        paired_bootstrap([[1.0, 2.0]], [[0.0, 1.0]], statistic=np.median)


# ----------------------------------------------------------------------------- policy comparisons

def _two_way(n_seeds, n_prompts, seed_sd, prompt_sd, noise_sd, effect, rng):
    """Gold of two policies: arm b, and arm a = b + effect + seed, prompt and residual noise."""
    b = rng.normal(3.0, 1.0, size=(n_seeds, n_prompts))
    d = (effect + rng.normal(0, seed_sd, size=(n_seeds, 1)) + rng.normal(0, prompt_sd, size=(1, n_prompts))
         + rng.normal(0, noise_sd, size=(n_seeds, n_prompts)))
    return b + d, b


def test_policy_difference_with_one_seed_is_the_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = _two_way(1, 200, 0.0, 0.5, 0.3, 0.1, rng)
    estimate = policy_difference(a[0], b[0])
    reference = mean_estimate(a[0] - b[0])
    assert estimate.mean == pytest.approx(reference.mean)
    assert (estimate.low, estimate.high) == pytest.approx((reference.low, reference.high))


def test_policy_difference_covers_the_truth_when_seeds_and_prompts_both_vary():
    """95% intervals cover the true effect about 95% of the time, with 3 seeds and shared prompts."""
    rng = np.random.default_rng(1)
    covered, widths = [], []
    for _ in range(400):
        a, b = _two_way(3, 100, 0.15, 0.4, 0.5, 0.2, rng)
        estimate = policy_difference(a, b)
        covered.append(estimate.low <= 0.2 <= estimate.high)
        widths.append(estimate.high - estimate.low)
    assert 0.92 <= np.mean(covered) <= 0.99, np.mean(covered)
    # Ignoring the seed or the prompt variance under-covers: a t interval over seed means alone
    # misses the shared prompts' noise, a bootstrap over prompts alone misses the seeds'.
    seeds_only = np.mean([(lambda e: e.low <= 0.2 <= e.high)(mean_estimate((a - b).mean(1)))
                          for a, b in (_two_way(3, 100, 0.0, 0.4, 0.1, 0.2, rng) for _ in range(200))])
    assert seeds_only < 0.85


def test_policy_difference_agrees_with_the_seeds_by_items_bootstrap_for_many_seeds():
    rng = np.random.default_rng(2)
    a, b = _two_way(20, 150, 0.1, 0.3, 0.5, 0.05, rng)
    t_interval = policy_difference(a, b)
    bootstrap = paired_bootstrap(a, b, n_resamples=3000, seed=0)
    assert t_interval.mean == pytest.approx(bootstrap.mean)
    assert t_interval.se == pytest.approx(bootstrap.se, rel=0.15)


def test_policy_difference_uses_few_degrees_of_freedom_with_few_seeds_and_bonferroni_widens():
    rng = np.random.default_rng(3)
    a, b = _two_way(3, 100, 0.3, 0.1, 0.2, 0.0, rng)
    estimate = policy_difference(a, b)
    half_width = (estimate.high - estimate.low) / 2
    assert half_width / estimate.se > 2.5, "with 3 seeds the t quantile is far above 1.96"
    wider = policy_difference(a, b, confidence=1 - 0.05 / 4)
    assert wider.low < estimate.low and wider.high > estimate.high
    assert "(95% CI" in str(estimate) and "(98.8% CI" in str(wider), "the text names the interval's own level"
    mean = policy_mean(a)
    assert mean.mean == pytest.approx(a.mean()) and mean.low < a.mean() < mean.high


def test_policy_difference_calls_rounding_noise_no_difference():
    a = np.array([[0.1 + 0.2, 1.0, 2.0], [0.3, 1.0, 2.0]])
    b = np.array([[0.3, 1.0, 2.0], [0.3, 1.0, 2.0]])
    estimate = policy_difference(a, b)
    assert estimate.mean == 0.0 and not estimate.excludes_zero
    assert "within noise" in estimate.verdict()


def test_policy_difference_rejects_unpaired_or_bad_input():
    with pytest.raises(ValueError, match="paired arrays"):
        policy_difference(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least 2 prompts"):
        policy_difference(np.zeros((3, 1)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="finite"):
        policy_difference([1.0, np.nan], [0.0, 0.0])


def test_detectable_effect_is_the_power_formula_and_shrinks_with_n():
    assert detectable_effect(1.0, 100) == pytest.approx((1.959964 + 0.841621) / 10, rel=1e-5)
    assert detectable_effect(1.0, 400) == pytest.approx(detectable_effect(1.0, 100) / 2)
    assert detectable_effect(1.0, 100, dof=2) > detectable_effect(1.0, 100)
    with pytest.raises(ValueError, match="positive integer n"):
        detectable_effect(1.0, 0)


def test_error_bars_are_the_interval_arms_and_refuse_a_missing_interval():
    estimates = [policy_mean(np.array([[1.0, 2.0, 3.0]])), policy_mean(np.array([[2.0, 2.5, 4.0]]))]
    means, yerr = error_bars(estimates)
    assert means.tolist() == [e.mean for e in estimates]
    assert yerr[0].tolist() == pytest.approx([e.mean - e.low for e in estimates])
    assert yerr[1].tolist() == pytest.approx([e.high - e.mean for e in estimates])
    with pytest.raises(ValueError, match="no interval"):
        error_bars([mean_estimate([1.0])])
