"""Noisy-pair detectors and their scores on hand-made training dynamics; the flip-rate estimate (Chapters 03, 05)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from course_lib.reward.detection import (
    detection_report,
    disagreement_score,
    estimate_flip_rate_from_confident_pairs,
    first_fit_epoch,
    fluctuation_score,
    small_loss_score,
)


def test_statistics_on_a_hand_made_history():
    loss = np.array([[0.7, 0.7, 0.7], [0.2, 0.9, 0.6], [0.1, 1.5, np.nan]])
    margin = np.array([[-0.1, 0.2, -1.0], [0.5, -0.3, -0.8], [1.0, -2.0, np.nan]])
    np.testing.assert_allclose(small_loss_score(loss), [1 / 3, 3.1 / 3, 0.65])
    np.testing.assert_allclose(fluctuation_score(loss), [np.std([0.7, 0.2, 0.1]), np.std([0.7, 0.9, 1.5]), 0.05])
    assert first_fit_epoch(margin).tolist() == [2, 1, 4]


def test_disagreement_is_highest_when_both_models_doubt_the_label():
    scores = disagreement_score(np.array([3.0, -3.0, -3.0]), np.array([3.0, 3.0, -3.0]))
    assert scores[2] > scores[1] > scores[0]


def test_detection_report_counts_by_hand():
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2])
    noisy = np.array([True, False, False, True, False])
    report = detection_report(scores, noisy)
    assert report["k"] == 2 and report["precision"] == 0.5 and report["recall"] == 0.5
    assert report["auroc"] == pytest.approx(5 / 6)
    assert detection_report(scores, noisy, k=3)["recall"] == 1.0
    assert np.isnan(detection_report(scores, np.zeros(5, bool))["auroc"])


def test_flip_rate_from_confident_pairs_counts_disagreement_on_the_surest():
    # 10 sure pairs (|m| >= 5), 2 of them against the label; 10 unsure pairs, all against it.
    margins = np.array([5, 6, 7, -8, 9, 10, 11, -12, 13, 14] + [-0.1] * 10, dtype=float)
    assert estimate_flip_rate_from_confident_pairs(margins, top_share=0.5) == pytest.approx(0.2)
    assert estimate_flip_rate_from_confident_pairs(margins, top_share=1.0) == pytest.approx(0.6)
    rng = np.random.default_rng(0)  # a good model's margins, labels flipped at 30%
    true_margins = rng.normal(0, 3, 5000)
    flips = rng.random(5000) < 0.3
    observed = np.abs(true_margins) * np.where(flips, -1, 1)
    assert estimate_flip_rate_from_confident_pairs(observed) == pytest.approx(0.3, abs=0.03)
    with pytest.raises(ValueError, match="at least 5"):
        estimate_flip_rate_from_confident_pairs(np.ones(10), top_share=0.2)


def linear_pairs(n_pairs: int, noise_rate: float, rng, dim: int = 8):
    """Feature differences phi(chosen) - phi(rejected) oriented by a hidden linear reward, flipped at noise_rate."""
    true_w = np.linspace(1.0, 0.2, dim)
    diffs = rng.normal(size=(n_pairs, dim))
    diffs *= np.sign(diffs @ true_w)[:, None]
    flipped = rng.random(n_pairs) < noise_rate
    diffs[flipped] *= -1
    return diffs, flipped


def cross_fitted_linear_margins(diffs, rng) -> np.ndarray:
    """Margins of a linear BT model (logistic regression on +-d without intercept) trained on the other half."""
    fold = rng.permutation(len(diffs)) % 2
    margins = np.empty(len(diffs))
    for k in (0, 1):
        train = diffs[fold != k]
        features = np.concatenate([train, -train])
        labels = np.r_[np.ones(len(train)), np.zeros(len(train))]
        w = LogisticRegression(fit_intercept=False).fit(features, labels).coef_.ravel()
        margins[fold == k] = diffs[fold == k] @ w
    return margins


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.2, 0.3, 0.4])
def test_flip_rate_estimate_recovers_known_rates_from_a_cross_fitted_model(rate):
    rng = np.random.default_rng(int(100 * rate))
    diffs, flipped = linear_pairs(4000, rate, rng)
    estimate = estimate_flip_rate_from_confident_pairs(cross_fitted_linear_margins(diffs, rng))
    standard_error = np.sqrt(max(rate * (1 - rate), 0.01) / 800)  # binomial over the 800 anchors
    assert abs(estimate - flipped.mean()) < 3 * standard_error + 0.005, (rate, estimate, flipped.mean())


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4])
def test_flip_rate_estimate_is_biased_up_by_the_models_errors_on_the_surest_pairs(rate):
    """A model wrong about the true preference on 5% of the pairs: E[estimate] = eta + 0.05 (1 - 2 eta)."""
    rng = np.random.default_rng(7)
    n_pairs, model_error = 200_000, 0.05
    true_margins = rng.exponential(2.0, n_pairs) * np.where(rng.random(n_pairs) < model_error, -1, 1)
    flipped = rng.random(n_pairs) < rate
    estimate = estimate_flip_rate_from_confident_pairs(np.where(flipped, -true_margins, true_margins))
    assert estimate == pytest.approx(rate + model_error * (1 - 2 * rate), abs=0.005)
    assert estimate > rate
