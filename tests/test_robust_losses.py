"""Robust Bradley-Terry losses: closed forms, unbiasedness under flips, TRL's formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.losses import bradley_terry_loss, conservative_bradley_terry_loss, unbiased_bradley_terry_loss


def test_conservative_loss_mixes_both_directions():
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.5])
    eps = 0.1
    expected = (1 - eps) * bradley_terry_loss(chosen, rejected, reduction="none") + eps * bradley_terry_loss(rejected, chosen, reduction="none")
    assert torch.allclose(conservative_bradley_terry_loss(chosen, rejected, eps, reduction="none"), expected)
    assert torch.allclose(conservative_bradley_terry_loss(chosen, rejected, 0.0), bradley_terry_loss(chosen, rejected))


def test_conservative_loss_minimum_is_at_one_minus_eps():
    eps = 0.2
    d = torch.linspace(-6, 6, 2001)
    losses = conservative_bradley_terry_loss(d, torch.zeros_like(d), eps, reduction="none")
    assert torch.sigmoid(d[losses.argmin()]).item() == pytest.approx(1 - eps, abs=2e-3)


def test_unbiased_loss_expectation_over_flips_equals_clean_loss():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(1000, dtype=torch.float64) * 3, torch.randn(1000, dtype=torch.float64) * 3
    for eps in (0.1, 0.2, 0.4):
        kept = unbiased_bradley_terry_loss(chosen, rejected, eps, reduction="none")
        flipped = unbiased_bradley_terry_loss(rejected, chosen, eps, reduction="none")
        expectation = (1 - eps) * kept + eps * flipped
        assert torch.allclose(expectation, bradley_terry_loss(chosen, rejected, reduction="none"), atol=1e-10)


def test_unbiased_loss_monte_carlo_over_random_flips():
    generator = torch.Generator().manual_seed(1)
    d_true = torch.randn(200, dtype=torch.float64)
    eps, draws = 0.3, 4000
    flips = torch.rand(draws, 200, generator=generator, dtype=torch.float64) < eps
    observed = torch.where(flips, -d_true, d_true)
    estimate = unbiased_bradley_terry_loss(observed, torch.zeros_like(observed), eps, reduction="none").mean(0)
    clean = -F.logsigmoid(d_true)
    assert abs(estimate.mean() - clean.mean()) < 0.01  # unbiased on average
    assert torch.allclose(estimate, clean, atol=0.25)  # and pair by pair, up to Monte Carlo error


def test_unbiased_loss_matches_trl_robust_dpo_formula():
    # TRL DPOTrainer, loss_type="robust" (trl/trainer/dpo_trainer.py), with beta = 1 and
    # delta_score = chosen - rejected, is:
    #   (-(1 - ls) * logsigmoid(delta) - (-ls * logsigmoid(-delta))) / (1 - 2 * ls)
    chosen, rejected, ls = torch.tensor([1.3, -0.2, 4.0]), torch.tensor([0.1, 0.9, -3.0]), 0.15
    delta = chosen - rejected
    trl = (-(1 - ls) * F.logsigmoid(delta) - (-ls * F.logsigmoid(-delta))) / (1 - 2 * ls)
    assert torch.allclose(unbiased_bradley_terry_loss(chosen, rejected, ls, reduction="none"), trl)


def test_rate_errors_are_named():
    with pytest.raises(ValueError, match="flip_rate"):
        unbiased_bradley_terry_loss(torch.zeros(2), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        conservative_bradley_terry_loss(torch.zeros(2), torch.zeros(2), -0.1)
    assert math.isfinite(unbiased_bradley_terry_loss(torch.tensor([50.0]), torch.tensor([-50.0]), 0.4).item())
