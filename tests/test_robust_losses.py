"""Robust Bradley-Terry losses: closed forms, unbiasedness under flips, TRL's code on the same inputs, the floor."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.engine.losses import bradley_terry_loss, conservative_bradley_terry_loss, unbiased_bradley_terry_loss
from trl_reference import trl_dpo_loss


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


def test_losses_match_trl_dpo_trainer_on_the_same_scores():
    # TRL's DPOTrainer code runs on scores given as log-ratios (beta = 1): its "sigmoid" loss is
    # the BT loss, its "robust" loss (rDPO) is the unbiased BT loss without a floor.
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(64, generator=generator) * 3, torch.randn(64, generator=generator) * 3
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), trl_dpo_loss("sigmoid", chosen, rejected))
    for rate in (0.0, 0.15, 0.4):
        torch.testing.assert_close(unbiased_bradley_terry_loss(chosen, rejected, rate),
                                   trl_dpo_loss("robust", chosen, rejected, label_smoothing=rate))
    # TRL 1.x dropped cDPO's label smoothing from "sigmoid"; the conservative loss is TRL's sigmoid
    # loss on the label and on the flipped label, mixed (1 - eps) : eps, pair by pair.
    eps = 0.2
    for i in range(4):
        c, r = chosen[i : i + 1], rejected[i : i + 1]
        mixed = (1 - eps) * trl_dpo_loss("sigmoid", c, r) + eps * trl_dpo_loss("sigmoid", r, c)
        torch.testing.assert_close(conservative_bradley_terry_loss(c, r, eps), mixed)


def test_floor_raises_the_reduced_loss_only():
    chosen = torch.linspace(-4, 4, 33)
    rejected = torch.zeros_like(chosen)
    trl = trl_dpo_loss("robust", chosen[20:], rejected[20:], label_smoothing=0.3)  # large margins: a negative mean
    assert trl < 0
    assert unbiased_bradley_terry_loss(chosen[20:], rejected[20:], 0.3, floor=0.0) == 0.0
    torch.testing.assert_close(unbiased_bradley_terry_loss(chosen, rejected, 0.3, floor=0.0),
                               trl_dpo_loss("robust", chosen, rejected, label_smoothing=0.3))  # a positive mean stays
    with pytest.raises(ValueError, match="floor bounds the reduced loss"):
        unbiased_bradley_terry_loss(chosen, rejected, 0.3, reduction="none", floor=0.0)


@pytest.mark.parametrize(("floor", "bounded"), [(None, False), (0.0, True)])
def test_margins_on_pure_noise_stay_finite_only_with_the_floor(floor, bounded):
    """The most flexible model (one free margin per pair) fitted to labels that are pure noise."""
    generator = torch.Generator().manual_seed(0)
    margins = (0.1 * torch.randn(200, generator=generator)).requires_grad_()
    optimizer = torch.optim.Adam([margins], lr=0.05)
    for _ in range(600):
        loss = unbiased_bradley_terry_loss(margins, torch.zeros(200), 0.4, floor=floor)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    largest = margins.detach().abs().max().item()
    if bounded:
        assert math.isfinite(largest) and largest < 2.0  # stops soon after the mean loss reaches 0
    else:
        assert largest > 20.0  # the plain unbiased loss keeps pushing every margin up


def test_rate_errors_are_named():
    with pytest.raises(ValueError, match="flip_rate"):
        unbiased_bradley_terry_loss(torch.zeros(2), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        conservative_bradley_terry_loss(torch.zeros(2), torch.zeros(2), -0.1)
    assert math.isfinite(unbiased_bradley_terry_loss(torch.tensor([50.0]), torch.tensor([-50.0]), 0.4).item())
