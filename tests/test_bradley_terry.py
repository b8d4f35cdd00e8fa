"""Unit tests of Chapter 01's Bradley-Terry code."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression

from course_lib.reward import bradley_terry as bt
from course_lib.engine.losses import bradley_terry_loss


def test_loss_matches_closed_form_and_is_stable():
    chosen = torch.tensor([2.0, 0.0, -500.0], dtype=torch.float64)
    rejected = torch.tensor([1.0, 0.0, 500.0], dtype=torch.float64)
    per_pair = bradley_terry_loss(chosen, rejected, reduction="none")
    expected = [math.log1p(math.exp(-1.0)), math.log(2.0), 1000.0]
    assert torch.allclose(per_pair, torch.tensor(expected, dtype=torch.float64))
    assert torch.isfinite(per_pair).all()
    assert bradley_terry_loss(chosen, rejected) == pytest.approx(sum(expected) / 3)


def test_loss_margin_and_centering_terms():
    chosen, rejected = torch.tensor([1.5, 0.2]), torch.tensor([0.5, 0.4])
    margin = torch.tensor([0.3, 0.0])
    got = bradley_terry_loss(chosen, rejected, margin=margin, center_rewards_coefficient=0.01)
    d = chosen - rejected - margin
    expected = (-torch.nn.functional.logsigmoid(d)).mean() + 0.01 * ((chosen + rejected) ** 2).mean()
    assert torch.allclose(got, expected)


def test_loss_rejects_mismatched_shapes_and_bad_reduction():
    with pytest.raises(ValueError, match="shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="reduction"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), reduction="avg")


def test_fit_matches_logistic_regression_after_centering():
    _, w, l = bt.simulate_arena(10, 600, seed=3)
    scores = bt.fit_bradley_terry(w, l, 10)
    X, y = bt.pairwise_design_matrix(w, l, 10)
    logistic = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X, y)
    assert np.abs(scores - bt.center_scores(logistic.coef_[0])).max() < 1e-5


def test_fit_with_ridge_matches_logistic_regression_with_same_penalty():
    _, w, l = bt.simulate_arena(8, 300, seed=5)
    scores = bt.fit_bradley_terry(w, l, 8, l2=2.0)
    X, y = bt.pairwise_design_matrix(w, l, 8)
    logistic = LogisticRegression(C=0.5, fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X, y)
    assert np.abs(scores - logistic.coef_[0]).max() < 1e-5


def test_fit_is_centered_and_shift_invariant_likelihood():
    _, w, l = bt.simulate_arena(6, 200, seed=1)
    scores = bt.fit_bradley_terry(w, l, 6)
    assert abs(scores.mean()) < 1e-12
    assert bt.mean_nll(scores + 7.0, w, l) == pytest.approx(bt.mean_nll(scores, w, l), abs=1e-12)
    assert bt.mean_nll(scores, w, l) < bt.mean_nll(np.zeros(6), w, l)


def test_two_player_mle_is_log_odds():
    # 3 wins to 1: the MLE difference is log(3).
    scores = bt.fit_bradley_terry([0, 0, 0, 1], [1, 1, 1, 0], 2)
    assert scores[0] - scores[1] == pytest.approx(math.log(3.0), abs=1e-8)


def test_arena_recovery_meets_course_claim():
    true, w, l = bt.simulate_arena(20, 2000, seed=0)
    assert spearmanr(bt.fit_bradley_terry(w, l, 20), true).statistic >= 0.95


def test_simulate_arena_is_deterministic_and_valid():
    a = bt.simulate_arena(5, 100, seed=9)
    b = bt.simulate_arena(5, 100, seed=9)
    c = bt.simulate_arena(5, 100, seed=10)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    assert np.all(a[1] != a[2])


def test_elo_equals_online_sgd_in_score_units():
    _, w, l = bt.simulate_arena(7, 400, seed=2)
    elo = bt.elo_ratings(w, l, 7, k=10.0, initial=1500.0)
    sgd = bt.bt_online_sgd(w, l, 7, lr=10.0 / bt.ELO_SCALE)
    np.testing.assert_allclose((elo - 1500.0) / bt.ELO_SCALE, sgd, atol=1e-12)
    assert elo.sum() == pytest.approx(1500.0 * 7)  # zero-sum updates


def test_elo_history_shape_and_last_row():
    _, w, l = bt.simulate_arena(4, 30, seed=4)
    ratings, history = bt.elo_ratings(w, l, 4, return_history=True)
    assert history.shape == (30, 4)
    np.testing.assert_array_equal(history[-1], ratings)


def test_bootstrap_batched_fit_equals_separate_weighted_fits():
    _, w, l = bt.simulate_arena(5, 150, seed=6)
    boot = bt.bootstrap_scores(w, l, 5, n_resamples=4, l2=0.01, seed=1)
    counts = np.random.default_rng(1).multinomial(150, np.full(150, 1 / 150), size=4)
    for row, weights in zip(boot, counts):
        np.testing.assert_allclose(row, bt.fit_bradley_terry(w, l, 5, l2=0.01, weights=weights.astype(float)), atol=1e-6)
    assert boot.shape == (4, 5)


def test_cycle_has_irreducible_gap():
    w = np.array([0] * 9 + [1] * 1 + [1] * 9 + [2] * 1 + [2] * 9 + [0] * 1)
    l = np.array([1] * 9 + [0] * 1 + [2] * 9 + [1] * 1 + [0] * 9 + [2] * 1)
    scores = bt.fit_bradley_terry(w, l, 3)
    np.testing.assert_allclose(scores, 0.0, atol=1e-8)
    assert bt.mean_nll(scores, w, l) == pytest.approx(math.log(2.0))
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert bt.best_possible_nll(w, l) == pytest.approx(entropy)


def test_design_matrix_likelihood_equals_bt():
    _, w, l = bt.simulate_arena(5, 50, seed=8)
    X, y = bt.pairwise_design_matrix(w, l, 5)
    s = np.random.default_rng(0).normal(size=5)
    z = X @ s
    logistic_nll = np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y))
    assert logistic_nll == pytest.approx(bt.mean_nll(s, w, l))
    assert set(np.unique(y)) == {0, 1}


@pytest.mark.parametrize(
    "winners, losers, message",
    [
        ([0, 1], [1], "equal length"),
        ([], [], "empty"),
        ([0, 5], [1, 2], r"winners\[1\] = 5"),
        ([0, 1], [1, 1], "comparison 1: player 1 cannot play against itself"),
        ([0.0, 1.0], [1.0, 0.0], "integer"),
    ],
)
def test_bad_comparisons_are_named(winners, losers, message):
    with pytest.raises(ValueError, match=message):
        bt.fit_bradley_terry(winners, losers, 3)


def test_win_probability_types():
    assert bt.win_probability(0.0, 0.0) == pytest.approx(0.5)
    t = bt.win_probability(torch.tensor([1.0]), torch.tensor([0.0]))
    assert isinstance(t, torch.Tensor) and t.item() == pytest.approx(1 / (1 + math.exp(-1)))


def test_unbeaten_player_warns_and_ridge_keeps_scores_finite():
    w, l = [0, 0, 1], [1, 2, 2]  # player 0 never lost
    assert not bt.mle_exists(w, l, 3)
    with pytest.warns(RuntimeWarning, match="l2 > 0"):
        bt.fit_bradley_terry(w, l, 3)
    assert bt.mle_exists([0, 1, 2], [1, 2, 0], 3)
    scores = bt.fit_bradley_terry(w, l, 3, l2=0.1)
    assert np.all(np.isfinite(scores)) and scores[0] > scores[1] > scores[2]
