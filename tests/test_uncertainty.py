"""Tests of the uncertainty helpers: accuracies' standard errors and paired bootstraps over seeds and items."""

import numpy as np
import pytest

from course_lib.engine.uncertainty import accuracy_estimate, mean_estimate, paired_bootstrap


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
