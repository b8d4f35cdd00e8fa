"""The two-model trainer: the exchange rules drive which pairs each model learns from."""

import numpy as np
import pytest
import torch

from course_lib.engine.collaborative import CollaborativeConfig, train_two_models
from course_lib.reward.model import RewardModel, RewardModelConfig, frozen_model_with_new_head
from course_lib.reward.training import BradleyTerryTrainer, TrainingConfig

PAIRS = [
    {"prompt": f"Question {i} about {topic}?", "chosen": f"A careful answer about {topic}, number {i}.", "rejected": f"No idea, {i}."}
    for i, topic in enumerate(["tea", "maps", "bikes", "rain", "chess", "bread", "knots", "stars"] * 3)
]


@pytest.fixture(scope="module")
def base(tiny_backbone):
    return RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="frozen"))


def trainers(base, epochs=3):
    config = TrainingConfig(lr=1e-2, epochs=epochs, batch_size=8, progress=False)
    return [BradleyTerryTrainer(frozen_model_with_new_head(base, head_hidden_size=8, seed=s), config, PAIRS) for s in (1, 2)]


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
    other = BradleyTerryTrainer(frozen_model_with_new_head(base), TrainingConfig(epochs=3, batch_size=8, progress=False), PAIRS[:8])
    with pytest.raises(ValueError, match="same dataset"):
        train_two_models(a, other, CollaborativeConfig(), progress=False)
    with pytest.raises(ValueError, match="method"):
        CollaborativeConfig(method="co-teaching")


@pytest.mark.parametrize("curriculum", [False, True])
def test_an_interrupted_run_resumes_to_the_same_end(base, tmp_path, curriculum):
    config = CollaborativeConfig(method="peer_review", noise_rate=0.25, ramp_epochs=1, curriculum=curriculum)
    uninterrupted = trainers(base)
    whole = train_two_models(*uninterrupted, config, progress=False)
    first = trainers(base)
    calls = []
    real_end_epoch = first[1].end_epoch

    def end_epoch_then_stop():
        real_end_epoch()
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped during the third epoch's bookkeeping, after two saved epochs

    first[1].end_epoch = end_epoch_then_stop
    with pytest.raises(KeyboardInterrupt):
        train_two_models(*first, config, progress=False, checkpoint_dir=tmp_path / "run")
    resumed_a, resumed_b = trainers(base)
    epochs_trained = []
    real_resumed_end = resumed_b.end_epoch
    resumed_b.end_epoch = lambda: (epochs_trained.append(1), real_resumed_end())
    resumed = train_two_models(resumed_a, resumed_b, config, progress=False, checkpoint_dir=tmp_path / "run", resume=True)
    assert len(epochs_trained) == 2, "the resumed run trains only the epochs that were not saved"
    assert torch.equal(resumed.selected_a, whole.selected_a) and torch.equal(resumed.selected_b, whole.selected_b)
    for fresh, reference in zip((resumed_a, resumed_b), uninterrupted):
        np.testing.assert_array_equal(fresh.history.pair_loss, reference.history.pair_loss)
        assert fresh.history.step_loss == reference.history.step_loss
        for name, value in fresh.reward_model.head.state_dict().items():
            assert torch.equal(value, reference.reward_model.head.state_dict()[name]), name
    other = CollaborativeConfig(method="self_review", noise_rate=0.25, ramp_epochs=1, curriculum=curriculum)
    with pytest.raises(ValueError, match="collaborative.method: checkpoint 'peer_review', this run 'self_review'"):
        train_two_models(*trainers(base), other, progress=False, checkpoint_dir=tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        train_two_models(*trainers(base), config, progress=False, resume=True)


def test_a_batch_with_no_selected_pair_does_not_step(base):
    a, _ = trainers(base)
    batch = a.make_batch(torch.arange(8))
    before = [p.detach().clone() for p in a.reward_model.head.parameters()]
    assert a.train_step(batch, torch.zeros(8, dtype=torch.bool)) is None
    assert a.global_step == 0 and a.scheduler.last_epoch == 0 and not a.optimizer.state
    assert all(torch.equal(p, q) for p, q in zip(before, a.reward_model.head.parameters()))
    assert not np.isnan(a.history.pair_loss[0, :8]).any(), "statistics are still recorded"
    assert a.train_step(batch, torch.ones(8, dtype=torch.bool)) is not None and a.global_step == 1
