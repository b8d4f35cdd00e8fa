"""The two-model trainer: the exchange rules drive which pairs each model learns from."""

import pytest
import torch

from course_lib.collaborative import CollaborativeConfig, train_two_models
from course_lib.reward_model import RewardModel, RewardModelConfig, frozen_model_with_new_head
from course_lib.training import BradleyTerryTrainer, TrainingConfig

PAIRS = [
    {"prompt": f"Question {i} about {topic}?", "chosen": f"A careful answer about {topic}, number {i}.", "rejected": f"No idea, {i}."}
    for i, topic in enumerate(["tea", "maps", "bikes", "rain", "chess", "bread", "knots", "stars"] * 3)
]


@pytest.fixture(scope="module")
def base(tiny_backbone):
    return RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="frozen"))


def trainers(base, epochs=3):
    config = TrainingConfig(lr=1e-2, epochs=epochs, batch_size=8, progress=False)
    return [BradleyTerryTrainer(frozen_model_with_new_head(base, head_hidden_size=8, seed=s), PAIRS, config) for s in (1, 2)]


@pytest.mark.parametrize("method", ["ensemble", "peer_review", "self_review"])
def test_selection_shares_follow_the_schedule(base, method):
    a, b = trainers(base)
    result = train_two_models(a, b, CollaborativeConfig(method=method, noise_rate=0.5, ramp_epochs=2), progress=False)
    kept = result.selected_a.float().mean(dim=1).tolist()
    if method == "ensemble":
        assert kept == [1.0, 1.0, 1.0]
    else:  # keep 1 - forget_rate of each batch of 8: 8, int(0.75 * 8) = 6, int(0.5 * 8) = 4
        assert kept == pytest.approx([1.0, 0.75, 0.5])
    assert result.history_a.epochs_done == 3 and result.history_b.pair_loss.shape == (3, len(PAIRS))


def test_peer_review_updates_each_model_on_its_peers_choice(base):
    a, b = trainers(base, epochs=2)
    peer = train_two_models(a, b, CollaborativeConfig(method="peer_review", noise_rate=0.5, ramp_epochs=1), progress=False)
    a, b = trainers(base, epochs=2)
    own = train_two_models(a, b, CollaborativeConfig(method="self_review", noise_rate=0.5, ramp_epochs=1), progress=False)
    # Same models, same first epoch, so in epoch 1 peer review hands each model what self review gives the other.
    assert torch.equal(peer.selected_a[1], own.selected_b[1])
    assert torch.equal(peer.selected_b[1], own.selected_a[1])
    assert not torch.equal(peer.selected_a[1], own.selected_a[1])


def test_curriculum_selects_per_epoch_and_keeps_the_share(base):
    a, b = trainers(base)
    result = train_two_models(a, b, CollaborativeConfig(method="peer_review", noise_rate=0.25, ramp_epochs=1, curriculum=True), progress=False)
    assert result.selected_a[1:].sum(dim=1).tolist() == [18, 18]  # int(0.75 * 24) over the whole epoch


def test_mismatched_trainers_are_rejected(base):
    a, _ = trainers(base)
    other = BradleyTerryTrainer(frozen_model_with_new_head(base), PAIRS[:8], TrainingConfig(epochs=3, batch_size=8, progress=False))
    with pytest.raises(ValueError, match="same dataset"):
        train_two_models(a, other, CollaborativeConfig(), progress=False)
    with pytest.raises(ValueError, match="method"):
        CollaborativeConfig(method="co-teaching")
