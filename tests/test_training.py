"""The Bradley-Terry trainer: loss vs TRL, per-pair statistics, resume, LoRA, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, BertForSequenceClassification

from course_lib.engine.losses import bradley_terry_loss
from course_lib.reward.model import RewardHead, RewardModel, RewardModelConfig
from course_lib.reward.training import BradleyTerryTrainer, TrainingConfig, head_gradient_norms


def toy_pairs(n: int = 48) -> list[dict]:
    """Learnable pairs: the chosen answer is polite and correct, the rejected one rude and wrong."""
    topics = ["the weather", "a recipe", "my homework", "a trip", "a poem", "the news", "a bug", "music"]
    return [
        {
            "prompt": f"Can you help me with {topics[i % 8]}? Request {i}.",
            "chosen": f"Of course, happy to help with {topics[i % 8]}. Here is a careful answer.",
            "rejected": "No. Figure it out yourself." if i % 2 else "Whatever, that is wrong anyway.",
            "margin": float(i % 3) / 2,
            "category": "chat",
        }
        for i in range(n)
    ]


def make_trainer(backbone, data=None, model_kwargs=None, **config_kwargs):
    model = RewardModel(RewardModelConfig(backbone=backbone, **(model_kwargs or {})))
    config = TrainingConfig(**{"epochs": 2, "batch_size": 8, "progress": False, **config_kwargs})
    return BradleyTerryTrainer(model, config, toy_pairs() if data is None else data)


def test_bt_loss_equals_trl_reward_trainer_compute_loss(tiny_backbone, tmp_path):
    import trl  # a pinned dev dependency: an import error must fail, not skip
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    classifier = BertForSequenceClassification.from_pretrained(tiny_backbone, num_labels=1)
    trainer = make_trainer(
        tiny_backbone,
        model_kwargs=dict(mode="full", pooling="pooler"),
        margin_column="margin",
        center_rewards_coefficient=0.05,
    )
    model = trainer.reward_model
    model.encoder.load_state_dict(classifier.bert.state_dict())
    model.head.out.load_state_dict(classifier.classifier.state_dict())
    pairs = toy_pairs()
    n = len(pairs)
    ids = model.tokenize([p["prompt"] for p in pairs] * 2, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
    rows = [{"chosen_ids": ids[i], "rejected_ids": ids[i + n], "margin": pairs[i]["margin"]} for i in range(n)]
    reference = trl.RewardTrainer(
        model=classifier,
        args=trl.RewardConfig(
            output_dir=str(tmp_path),
            center_rewards_coefficient=0.05,
            report_to="none",
            use_cpu=True,
            bf16=False,
            max_length=None,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )

    # 1. the same rewards give the same loss (margin and centering on)
    chosen, rejected, margin = torch.randn(8), torch.randn(8), torch.rand(8)

    class GivenLogits(torch.nn.Module):
        def forward(self, **inputs):
            return type("Output", (), {"logits": torch.cat([chosen, rejected])[:, None]})()

    inputs = {"input_ids": torch.zeros(16, 3, dtype=torch.long), "attention_mask": torch.ones(16, 3), "margin": margin}
    expected = reference.compute_loss(GivenLogits(), inputs)
    torch.testing.assert_close(trainer._pair_losses(chosen, rejected, margin).mean(), expected, rtol=0, atol=1e-6)

    # 2. the same model and batch give the same loss end to end
    batch_rows = list(range(8))
    collated = reference.data_collator([reference.train_dataset[i] for i in batch_rows])
    classifier.eval()
    with torch.no_grad():
        expected = reference.compute_loss(classifier, collated)
    ours = trainer.pair_losses(trainer.make_batch(batch_rows)).mean()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_training_reduces_the_loss_on_a_learnable_set():
    model = RewardModel(RewardModelConfig())  # the pretrained MiniLM, frozen
    data = Dataset.from_list(toy_pairs(64))
    trainer = BradleyTerryTrainer(model, TrainingConfig(epochs=6, batch_size=16, lr=1e-2, progress=False), data, eval_dataset=data)
    history = trainer.fit()
    assert len(history.step_loss) == 6 * 4 and len(history.eval_metrics) == 6
    assert np.mean(history.step_loss[-4:]) < 0.5 * np.mean(history.step_loss[:4])
    assert history.eval_metrics[-1]["accuracy"] == 1.0


def test_per_pair_statistics_have_one_row_per_epoch_and_column_per_pair(tiny_backbone):
    trainer = make_trainer(tiny_backbone, epochs=3)
    history = trainer.fit()
    for array in (history.pair_loss, history.pair_margin, history.pair_grad_norm):
        assert array.shape == (3, 48) and not np.isnan(array).any()
    np.testing.assert_allclose(history.pair_loss, -np.log(1 / (1 + np.exp(-history.pair_margin))), rtol=1e-4)
    assert history.epochs_done == 3 and len(history.step_loss) == 3 * 6


@pytest.mark.parametrize("hidden_size", [None, 8])
def test_head_gradient_norms_equal_autograd(hidden_size):
    torch.manual_seed(0)
    head = RewardHead(6, hidden_size, dropout=0.3)
    chosen, rejected, margin = torch.randn(5, 6), torch.randn(5, 6), torch.rand(5)
    fast = head_gradient_norms(head, chosen, rejected, margin, center_rewards_coefficient=0.1)
    head.eval()
    for i in range(5):
        loss = bradley_terry_loss(head(chosen[i : i + 1]), head(rejected[i : i + 1]), margin[i], 0.1)
        grads = torch.autograd.grad(loss, list(head.parameters()))
        torch.testing.assert_close(fast[i], torch.sqrt(sum(g.pow(2).sum() for g in grads)), rtol=1e-5, atol=1e-6)


def test_runs_are_deterministic_for_a_seed(tiny_backbone):
    first, second = (make_trainer(tiny_backbone, model_kwargs=dict(head_dropout=0.2)) for _ in range(2))
    np.testing.assert_array_equal(first.fit().pair_loss, second.fit().pair_loss)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize(("checkpoint_every", "crash_at_step"), [(None, 6), (4, 9)], ids=["epoch", "mid-epoch"])
def test_resume_reaches_exactly_the_uninterrupted_result(tiny_backbone, tmp_path, checkpoint_every, crash_at_step):
    model_kwargs = dict(head_hidden_size=8, head_dropout=0.2)  # dropout: the RNG state must be restored too
    settings = dict(epochs=3, margin_column="margin", center_rewards_coefficient=0.01)
    straight = make_trainer(tiny_backbone, model_kwargs=model_kwargs, **settings)
    expected = straight.fit()

    checkpoints = dict(checkpoint_dir=tmp_path, checkpoint_every=checkpoint_every)
    crashing = make_trainer(tiny_backbone, model_kwargs=model_kwargs, **settings, **checkpoints)
    real_step = crashing.train_step

    def crash_at(batch, pair_weights=None):
        if crashing.global_step == crash_at_step:
            raise Interrupted
        return real_step(batch, pair_weights)

    crashing.train_step = crash_at
    with pytest.raises(Interrupted):
        crashing.fit()

    resumed = make_trainer(tiny_backbone, model_kwargs=model_kwargs, **settings, **checkpoints)
    history = resumed.fit(resume=True)
    for name, parameter in straight.reward_model.head.named_parameters():
        assert torch.equal(parameter, dict(resumed.reward_model.head.named_parameters())[name]), name
    for name in ("pair_loss", "pair_margin", "pair_grad_norm"):
        np.testing.assert_array_equal(getattr(history, name), getattr(expected, name))
    assert history.step_loss == expected.step_loss


def test_lora_trains_only_adapters_and_head(tiny_backbone):
    trainer = make_trainer(
        tiny_backbone, model_kwargs=dict(mode="lora", lora_rank=2), epochs=1, lr=1e-2, center_rewards_coefficient=0.1
    )  # centering, because the plain BT loss gives the head's bias no gradient
    model = trainer.reward_model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit()
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]) == (name not in trainable), name


def test_pair_mask_trains_on_the_selected_pairs_only(tiny_backbone):
    masked, subset = (make_trainer(tiny_backbone, center_rewards_coefficient=0.1) for _ in range(2))
    rows = torch.arange(8)
    selected = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    losses = masked.pair_losses(masked.make_batch(rows))
    assert losses.shape == (8,)
    masked.train_step(masked.make_batch(rows), selected)
    subset.train_step(subset.make_batch(rows[selected]))
    for a, b in zip(masked.reward_model.head.parameters(), subset.reward_model.head.parameters()):
        torch.testing.assert_close(a, b)
    assert not np.isnan(masked.history.pair_loss[0, :8]).any()


def test_order_fn_decides_which_pairs_an_epoch_visits(tiny_backbone):
    trainer = make_trainer(tiny_backbone)
    trainer.order_fn = lambda epoch, trainer: torch.arange(epoch, 48, 2)
    history = trainer.fit()
    assert np.isnan(history.pair_loss[0, 1::2]).all() and not np.isnan(history.pair_loss[0, ::2]).any()
    assert np.isnan(history.pair_loss[1, ::2]).all() and len(history.step_loss) == 2 * 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "train_dataset is empty"),
        ([{"prompt": "p", "chosen": "c"}], "row 0: missing column 'rejected'"),
        (Dataset.from_list([{"prompt": "p", "chosen": "c", "answer": "r"}]), "no column 'rejected'"),
        ([{"prompt": "p", "chosen": "c", "rejected": 3}], "row 0: 'rejected' must be a string, got int"),
    ],
)
def test_bad_datasets_raise_clear_errors(tiny_backbone, data, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tiny_backbone, data=data)


def test_bad_settings_raise_clear_errors(tiny_backbone, tmp_path):
    with pytest.raises(ValueError, match="missing column 'score'"):
        make_trainer(tiny_backbone, margin_column="score")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown device .tpu."):
        TrainingConfig(device="tpu")
    with pytest.raises(ValueError, match="needs TrainingConfig.checkpoint_dir"):
        make_trainer(tiny_backbone).fit(resume=True)


@pytest.mark.parametrize("loss", ["conservative", "unbiased"])
def test_robust_losses_with_zero_flip_rate_train_exactly_like_bt(tiny_backbone, loss):
    plain = make_trainer(tiny_backbone, model_kwargs={"mode": "frozen"})
    plain.fit()
    robust = make_trainer(tiny_backbone, model_kwargs={"mode": "frozen"}, loss=loss, assumed_flip_rate=0.0)
    history = robust.fit()
    for a, b in zip(plain.reward_model.head.parameters(), robust.reward_model.head.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert np.isnan(history.pair_grad_norm).all()


def test_robust_loss_changes_training_and_bad_settings_are_named(tiny_backbone):
    plain = make_trainer(tiny_backbone, model_kwargs={"mode": "frozen"})
    plain.fit()
    robust = make_trainer(tiny_backbone, model_kwargs={"mode": "frozen"}, loss="conservative", assumed_flip_rate=0.3)
    robust.fit()
    assert not torch.allclose(next(plain.reward_model.head.parameters()), next(robust.reward_model.head.parameters()))
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainingConfig(loss="focal")
    with pytest.raises(ValueError, match="apply to loss='bradley_terry' only"):
        TrainingConfig(loss="unbiased", center_rewards_coefficient=0.01)


def test_unbiased_loss_keeps_margins_bounded_on_pure_noise(tiny_backbone):
    """Labels that are coin flips: the trainer's unbiased loss is floored, so no margin runs away."""
    rng = np.random.default_rng(0)
    noise = [dict(p, chosen=p["rejected"], rejected=p["chosen"]) if rng.random() < 0.5 else p for p in toy_pairs()]
    trainer = make_trainer(tiny_backbone, data=noise, model_kwargs={"mode": "frozen", "head_hidden_size": 16},
                           loss="unbiased", assumed_flip_rate=0.4, epochs=20, lr=3e-2)
    history = trainer.fit()
    assert np.isfinite(history.pair_margin).all()
    assert np.abs(history.pair_margin[-1]).max() < 2.0


def test_lora_layers_adapt_only_the_named_encoder_layers(tiny_backbone):
    model = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="lora", lora_rank=2, lora_layers=[1]))
    adapted = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    assert adapted and all(".layer.1." in n for n in adapted)


def test_keep_best_restores_the_epoch_with_the_best_eval_accuracy(tiny_backbone):
    data = toy_pairs()
    swapped = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in data]
    # the eval set's labels are the training labels flipped: training makes eval accuracy worse each epoch
    trainer = BradleyTerryTrainer(RewardModel(RewardModelConfig(backbone=tiny_backbone)),
                                  TrainingConfig(epochs=4, batch_size=8, lr=5e-2, progress=False, keep_best=True), data,
                                  eval_dataset=swapped)
    history = trainer.fit()
    accuracies = [m["accuracy"] for m in history.eval_metrics]
    best = int(np.argmax(accuracies))  # the first epoch with the highest accuracy
    assert history.best_epoch == best < 3
    restored = trainer.evaluate()
    assert restored["accuracy"] == pytest.approx(accuracies[best])
    assert restored["loss"] == pytest.approx(history.eval_metrics[best]["loss"], rel=1e-5)  # that epoch's weights
    assert restored["loss"] < history.eval_metrics[-1]["loss"]  # not the last epoch's
    with pytest.raises(ValueError, match="keep_best needs an eval_dataset"):
        make_trainer(tiny_backbone, keep_best=True)
