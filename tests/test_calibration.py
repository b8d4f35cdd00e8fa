"""Tests of calibration: reliability table, ECE, NLL and temperature scaling (Chapters 02 and 06)."""

import numpy as np
import pytest
from scipy.special import expit

from course_lib.reward.calibration import expected_calibration_error, fit_temperature, preference_nll, reliability_table


def calibrated_sample(n=20000, scale=1.0, seed=0):
    """Margins and outcomes drawn so that sigmoid(margin / scale) is the true probability."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 2, n)
    outcomes = (rng.random(n) < expit(true)).astype(float)
    return true * scale, outcomes


def test_a_calibrated_model_has_small_ece_and_an_overconfident_one_does_not():
    margins, outcomes = calibrated_sample()
    assert expected_calibration_error(margins, outcomes) < 0.02
    assert expected_calibration_error(3 * margins, outcomes) > 0.08


def test_temperature_scaling_recovers_the_overconfidence_and_keeps_the_ranking():
    margins, outcomes = calibrated_sample(scale=3.0)
    temperature = fit_temperature(margins, outcomes)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert preference_nll(margins, outcomes, temperature) < preference_nll(margins, outcomes) - 0.05
    assert expected_calibration_error(margins, outcomes, temperature=temperature) < 0.02


def test_nll_of_a_coin_is_ln2_and_reliability_bins_count_every_pair():
    assert preference_nll(np.zeros(10)) == pytest.approx(np.log(2))
    margins, outcomes = calibrated_sample(n=1000)
    table = reliability_table(margins, outcomes, n_bins=5)
    assert table.n_pairs.sum() == 1000
    assert ((table.confidence >= 0.5) & (table.confidence <= 1)).all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="outcomes must be 0 or 1"):
        preference_nll([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        expected_calibration_error([np.nan])
    with pytest.raises(ValueError, match="temperature"):
        preference_nll([1.0], 1, temperature=0)
