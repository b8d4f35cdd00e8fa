"""Mixtures of BT heads (MiCRo): loss by hand, the K=1 case, router, load balance, multiplicative weights, a tiny fit."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.engine.losses import bradley_terry_loss
from course_lib.reward.mixtures import (
    MixtureConfig,
    MixtureOfHeads,
    fit_mixture,
    load_balance_loss,
    mixture_accuracy,
    mixture_bradley_terry_loss,
    multiplicative_weights,
    preference_log_odds,
    preference_probability,
)
from course_lib.world import USER_CONTEXTS, group_names, user_profiles


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_mixture_loss_equals_hand_computation():
    chosen = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    rejected = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    weights = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    first = -math.log(0.25 * sigmoid(1.0) + 0.75 * sigmoid(-1.0))
    second = -math.log(0.5 * sigmoid(0.5) + 0.5 * sigmoid(3.0))
    losses = mixture_bradley_terry_loss(chosen, rejected, weights, reduction="none")
    assert torch.allclose(losses, torch.tensor([first, second]), atol=1e-6)
    assert mixture_bradley_terry_loss(chosen, rejected, weights).item() == pytest.approx((first + second) / 2, abs=1e-6)
    assert mixture_bradley_terry_loss(chosen, rejected, weights, reduction="sum").item() == pytest.approx(first + second, abs=1e-6)
    static = torch.tensor([0.25, 0.75])
    assert torch.allclose(mixture_bradley_terry_loss(chosen, rejected, static, reduction="none")[0], torch.tensor(first))
    probability = preference_probability(chosen, rejected, weights)
    assert torch.allclose(probability, torch.exp(-losses), atol=1e-6)


def test_mixture_loss_with_one_head_is_the_bradley_terry_loss_and_stays_finite():
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(50, 1, generator=generator), torch.randn(50, 1, generator=generator)
    mixed = mixture_bradley_terry_loss(chosen, rejected, torch.ones(50, 1))
    assert torch.allclose(mixed, bradley_terry_loss(chosen[:, 0], rejected[:, 0]), atol=1e-6)
    huge = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = mixture_bradley_terry_loss(huge[:, :1], huge[:, 1:] + 1000.0, torch.ones(1))
    assert loss.item() == pytest.approx(1000.0, abs=1e-3)
    loss.backward()
    assert torch.isfinite(huge.grad).all()


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="n_pairs, n_heads"):
        mixture_bradley_terry_loss(torch.zeros(3), torch.zeros(3), torch.ones(1))
    with pytest.raises(ValueError, match="weights must have shape"):
        mixture_bradley_terry_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        mixture_bradley_terry_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(2) / 2, reduction="max")
    with pytest.raises(ValueError, match="n_heads must be >= 1"):
        MixtureConfig(n_heads=0)
    with pytest.raises(ValueError, match="known_weights"):
        fit_mixture(torch.zeros(4, 3), torch.zeros(4, 3), config=MixtureConfig(n_heads=2, progress=False),
                    known_weights=torch.ones(4, 3))


def test_preference_log_odds_is_the_logit_of_the_mixture_probability_and_stays_finite():
    chosen = torch.tensor([[1.0, 0.0], [0.5, 2.0], [3.0, -2.0]])
    rejected = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 0.0]])
    weights = torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]])
    p = 0.25 * sigmoid(1.0) + 0.75 * sigmoid(-1.0)
    log_odds = preference_log_odds(chosen, rejected, weights)
    assert log_odds[0].item() == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
    assert torch.allclose(torch.sigmoid(log_odds), preference_probability(chosen, rejected, weights), atol=1e-6)
    one_head = preference_log_odds(chosen[:, :1], rejected[:, :1], torch.ones(1))
    assert torch.allclose(one_head, chosen[:, 0] - rejected[:, 0], atol=1e-5), "with one head: the BT margin"
    extreme = preference_log_odds(torch.tensor([[60.0, 80.0], [-60.0, -80.0]]), torch.zeros(2, 2), torch.tensor([0.5, 0.5]))
    assert torch.isfinite(extreme).all() and extreme[0].item() == pytest.approx(60.0 - math.log(0.5 + 0.5 * math.exp(-20.0)), abs=1e-4)
    assert extreme[1].item() == pytest.approx(-extreme[0].item(), abs=1e-4), "swapping the answers flips the sign"
    with pytest.raises(ValueError, match="preference_log_odds"):
        preference_log_odds(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(3))


def test_router_weights_are_a_softmax_that_sums_to_one():
    model = MixtureOfHeads(in_features=8, context_features=5, n_heads=3, hidden_size=4, seed=1)
    context = torch.randn(10, 5)
    weights = model.route(context)
    assert weights.shape == (10, 3) and (weights > 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(10))
    assert torch.allclose(weights, torch.softmax(context @ model.router.weight.T + model.router.bias, -1))
    assert model.route(None).shape == (3,) and model.route(None).sum().item() == pytest.approx(1.0)
    assert model.head_rewards(torch.randn(7, 8)).shape == (7, 3)
    with pytest.raises(ValueError, match="context must have shape"):
        model.route(torch.randn(10, 4))
    again = MixtureOfHeads(in_features=8, context_features=5, n_heads=3, hidden_size=4, seed=1)
    assert torch.equal(again.heads.weight, model.heads.weight), "the seed fixes the initialization"


def test_load_balance_is_zero_when_balanced_and_log_k_when_collapsed():
    assert load_balance_loss(torch.full((6, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-7)
    balanced_on_average = torch.eye(4)  # each pair on one head, every head used equally
    assert load_balance_loss(balanced_on_average).item() == pytest.approx(0.0, abs=1e-7)
    collapsed = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 5)
    assert load_balance_loss(collapsed).item() == pytest.approx(math.log(4), abs=1e-6)
    skewed = torch.tensor([0.7, 0.1, 0.1, 0.1])
    expected = sum(p * math.log(4 * p) for p in skewed.tolist())
    assert load_balance_loss(skewed).item() == pytest.approx(expected, abs=1e-6)
    assert 0 < expected < math.log(4)


def test_multiplicative_weights_matches_a_hand_example():
    prior = torch.tensor([0.5, 0.5])
    chosen = torch.tensor([[2.0, -1.0], [0.0, 0.0]])
    rejected = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    trajectory = multiplicative_weights(prior, chosen, rejected, eta=1.0)
    assert trajectory.shape == (3, 2) and torch.allclose(trajectory[0], prior)
    w1 = torch.tensor([0.5 * sigmoid(2.0), 0.5 * sigmoid(-1.0)])
    w1 = w1 / w1.sum()
    w2 = w1 * torch.tensor([sigmoid(-1.0), sigmoid(0.0)])
    w2 = w2 / w2.sum()
    assert torch.allclose(trajectory[1], w1, atol=1e-6)
    assert torch.allclose(trajectory[2], w2, atol=1e-6)
    assert torch.allclose(multiplicative_weights(prior, chosen, rejected, eta=0.0), prior.expand(3, 2))
    half = multiplicative_weights(prior, chosen, rejected, eta=0.5)[1]
    unnormalized = prior * torch.sigmoid(chosen[0] - rejected[0]) ** 0.5
    assert torch.allclose(half, unnormalized / unnormalized.sum(), atol=1e-6)
    with pytest.raises(ValueError, match="prior"):
        multiplicative_weights(torch.tensor([0.5, 0.6]), chosen, rejected)
    with pytest.raises(ValueError, match="k_pairs, K=2"):
        multiplicative_weights(prior, chosen[:, :1], rejected[:, :1])


def _planted_groups(n_pairs: int, generator: torch.Generator):
    """Two groups ranking pairs by opposite halves of a hidden direction; context says the group (noisily)."""
    d = 6
    w_a = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    w_b = torch.tensor([1.0, -1.0, -1.0, 0.0, 0.0, 0.0])
    group = torch.randint(0, 2, (n_pairs,), generator=generator)
    first, second = torch.randn(n_pairs, d, generator=generator), torch.randn(n_pairs, d, generator=generator)
    w = torch.where(group[:, None] == 0, w_a, w_b)
    first_wins = ((first - second) * w).sum(-1, keepdim=True) > 0
    chosen, rejected = torch.where(first_wins, first, second), torch.where(first_wins, second, first)
    context = torch.nn.functional.one_hot(group, 2).float() + 0.1 * torch.randn(n_pairs, 2, generator=generator)
    return chosen, rejected, context, group


def test_a_tiny_fit_recovers_two_planted_groups():
    generator = torch.Generator().manual_seed(0)
    chosen, rejected, context, group = _planted_groups(1500, generator)
    test_chosen, test_rejected, test_context, test_group = _planted_groups(1000, generator)
    config = MixtureConfig(n_heads=2, epochs=40, lr=3e-2, batch_size=100, balance=0.05, progress=False)
    mixture, losses = fit_mixture(chosen, rejected, context, config)
    single, _ = fit_mixture(chosen, rejected, None, MixtureConfig(n_heads=1, epochs=40, lr=3e-2, batch_size=100,
                                                                  progress=False))
    assert losses[-1] < losses[0]
    with torch.no_grad():
        routed = mixture_accuracy(mixture, test_chosen, test_rejected, mixture.route(test_context)).mean().item()
        alone = mixture_accuracy(single, test_chosen, test_rejected, torch.ones(1)).mean().item()
        heads = mixture.route(test_context).argmax(-1)
    assert routed > 0.9, f"routed mixture accuracy {routed:.3f}"
    assert routed > alone + 0.1, f"mixture {routed:.3f} vs single {alone:.3f}"
    agreement = (heads == test_group).float().mean().item()
    assert max(agreement, 1 - agreement) > 0.95, "each planted group gets its own head"
    again, _ = fit_mixture(chosen, rejected, context, config)
    assert torch.equal(again.heads.weight, mixture.heads.weight), "fits are deterministic for a seed"


def test_known_weights_train_one_head_per_group():
    generator = torch.Generator().manual_seed(1)
    chosen, rejected, _, group = _planted_groups(800, generator)
    one_hot = torch.nn.functional.one_hot(group, 2).float()
    oracle, _ = fit_mixture(chosen, rejected, config=MixtureConfig(n_heads=2, epochs=30, lr=3e-2, progress=False),
                            known_weights=one_hot)
    assert mixture_accuracy(oracle, chosen, rejected, one_hot).mean().item() > 0.9


def test_user_profiles_give_each_group_its_own_words():
    train = user_profiles(5, seed=0)
    held_out = user_profiles(3, split="eval", seed=0)
    assert len(train) == 5 * len(group_names()) and user_profiles(5, seed=0) == train
    for users in (train, held_out):
        for user in users:
            assert user["user_context"] in USER_CONTEXTS[user["user_group"]]
    assert not {u["user_context"] for u in train} & {u["user_context"] for u in held_out}
    assert len({u["user_id"] for u in train}) == len(train)
    with pytest.raises(ValueError, match="groups must be one of"):
        user_profiles(2, groups=["martians"])
    with pytest.raises(ValueError, match="split"):
        user_profiles(2, split="test")
