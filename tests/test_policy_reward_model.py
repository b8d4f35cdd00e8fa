"""Reward models on the course's own transformer: framing, last-token pooling, gradients, BT training, resume,
two minds in the two-model methods, saving.

Everything runs on the tiny GPT-2 (1 layer x 32) and a 400-id tokenizer.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from course_lib.policy import PairTokenizer, build_policy, train_tokenizer, world_texts
from course_lib.reward.model import (RewardModel, load_reward_model, pad_batch, reward_model_reward, save_reward_model,
                                     score)
from course_lib.reward.training import BradleyTerryTrainer, TrainingConfig
from course_lib.studies import reproduction
from course_lib.studies.policy_reward import (load_policy_reward_model, policy_reward_model,
                                              save_policy_reward_model)
from course_lib.world import WorldConfig, generate_preference_pairs, mini_reward_bench

from policy_helpers import TINY, crash_during_fit, one_thread  # noqa: F401  (one_thread: a module fixture)

MAX_LENGTH = 96


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(world_texts(300), vocab_size=400)


@pytest.fixture(scope="module")
def policies(tokenizer):
    """Two policies of different seeds: the backbones of two minds."""
    return [build_policy(TINY, tokenizer, seed=seed).eval() for seed in (0, 1)]


@pytest.fixture(scope="module")
def pairs():
    return generate_preference_pairs(WorldConfig(n_pairs=40, seed=3))


def rm(policy, tokenizer, **fields):
    return policy_reward_model(policy, tokenizer, **{"max_length": MAX_LENGTH, **fields})


def test_pair_ids_frame_the_pair_as_the_policy_reads_it_and_cut_the_prompt_start_first(tokenizer):
    pair = PairTokenizer(tokenizer)
    assert pair.pad_token_id == tokenizer.pad_id
    assert pair.pair_ids("What is 2+2?", "Four.", 64) == tokenizer.prompt_ids("What is 2+2?") + tokenizer.response_ids("Four.")

    long_prompt = " ".join(f"word{i}" for i in range(60)) + " final question"
    ids = pair.pair_ids(long_prompt, "short answer", 24)
    answer = tokenizer.response_ids("short answer")
    assert len(ids) == 24 and ids[-len(answer):] == answer and ids[-len(answer) - 1] == tokenizer.sep_id
    assert tokenizer.decode(ids).endswith("final questionshort answer")  # the prompt lost its start, not its end

    ids = pair.pair_ids("q", " ".join(["yes"] * 40), 10)  # a response alone too long: its end goes, <eos> stays
    assert len(ids) == 10 and ids[0] == tokenizer.sep_id and ids[-1] == tokenizer.eos_id
    assert ids[1:-1] == tokenizer.encode(" ".join(["yes"] * 40))[:8]
    with pytest.raises(ValueError, match="no room"):
        pair.pair_ids("q", "a", 2)


def test_last_token_pooling_equals_a_hand_written_forward_and_ignores_padding(tokenizer, policies, pairs):
    policy = policies[0]
    model = rm(policy, tokenizer, seed=3)
    every = [tokenizer.prompt_ids(p) + tokenizer.response_ids(r) for p, r in zip(pairs["prompt"], pairs["chosen"])]
    rows = [i for i, row in enumerate(every) if len(row) <= MAX_LENGTH][:6]  # short enough to be read whole
    prompts, responses = [pairs["prompt"][i] for i in rows], [pairs["chosen"][i] for i in rows]
    ids = [every[i] for i in rows]
    assert len(ids) == 6 and len({len(row) for row in ids}) > 2
    assert model.tokenize(prompts, responses) == ids

    weight, bias = model.head.out.weight[0], model.head.out.bias[0]
    with torch.no_grad():  # by hand: the policy's own transformer, each pair alone, read at its <|endoftext|>
        expected = torch.stack([policy.transformer(torch.tensor([row])).last_hidden_state[0, -1] @ weight + bias
                                for row in ids])
        batch_ids, mask = pad_batch(ids, tokenizer.pad_id)
        padded = model(batch_ids, mask)  # one right-padded batch: shorter rows read past their end
        wrong = model.head(model.encoder(input_ids=batch_ids, attention_mask=mask).last_hidden_state[:, -1])
    torch.testing.assert_close(padded, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(score(model, prompts, responses, batch_size=4)), expected, rtol=0, atol=1e-5)
    alone = [score(model, prompts[i:i + 1], responses[i:i + 1])[0] for i in range(len(ids))]
    np.testing.assert_allclose(alone, expected.numpy(), rtol=0, atol=1e-5)
    shorter = [i for i, row in enumerate(ids) if len(row) < batch_ids.shape[1]]
    assert (padded[shorter] - wrong[shorter]).abs().min() > 1e-4, "reading the last column would read padding"


def test_the_policy_is_copied_and_full_mode_sends_gradients_into_the_backbone(tokenizer, policies, pairs):
    policy = policies[0]
    full, frozen = rm(policy, tokenizer), rm(policy, tokenizer, mode="frozen")
    for model in (full, frozen):
        assert model.config.pooling == "last" and model.config.backbone.startswith("in-memory:course-policy:")
        assert not {id(p) for p in model.encoder.parameters()} & {id(p) for p in policy.parameters()}
    assert full.config.backbone == frozen.config.backbone != rm(policies[1], tokenizer).config.backbone

    ids, mask = pad_batch(full.tokenize(list(pairs["prompt"][:4]), list(pairs["chosen"][:4])), tokenizer.pad_id)
    full(ids, mask).sum().backward()
    grads = {name: p.grad for name, p in full.encoder.named_parameters()}
    assert all(p.requires_grad for p in full.encoder.parameters())
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), [n for n, g in grads.items() if g is None]

    frozen.train()
    frozen(ids, mask).sum().backward()
    assert not any(p.requires_grad or p.grad is not None for p in frozen.encoder.parameters())
    assert frozen.head.out.weight.grad.abs().sum() > 0
    assert policy.transformer.wte.weight.grad is None  # the policy itself took no gradient


def test_frozen_mode_caches_features_per_policy(tokenizer, policies, pairs, tmp_path):
    prompts, responses = list(pairs["prompt"][:8]), list(pairs["rejected"][:8])
    cached = [rm(policy, tokenizer, mode="frozen") for policy in policies]
    for model in cached:
        model.embed(prompts, responses, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("features-*.pt"))) == 2, "two policies, two feature files"
    again = rm(policies[0], tokenizer, mode="frozen")
    again.pool = None  # reads the disk cache: no forward pass
    np.testing.assert_array_equal(again.embed(prompts, responses, cache_dir=tmp_path, progress=False).numpy(),
                                  cached[0].embed(prompts, responses, progress=False).numpy())
    np.testing.assert_allclose(score(cached[0], prompts, responses), score(rm(policies[0], tokenizer), prompts, responses),
                               rtol=0, atol=1e-5)  # the same model frozen or not: the same rewards


def test_bradley_terry_training_fits_world_pairs(tokenizer, policies, pairs):
    trainer = BradleyTerryTrainer(rm(policies[0], tokenizer),
                                  TrainingConfig(epochs=6, batch_size=8, lr=3e-3, progress=False), pairs)
    before = trainer.evaluate(pairs)
    history = trainer.fit()
    after = trainer.evaluate(pairs)
    assert after["loss"] < before["loss"] / 2 and after["accuracy"] >= max(0.9, before["accuracy"] + 0.3), (before, after)
    assert np.isfinite(history.pair_grad_norm).all()


def test_resume_after_a_crash_is_bit_identical(tokenizer, policies, pairs, tmp_path):
    config = TrainingConfig(epochs=2, batch_size=8, lr=3e-3, progress=False, checkpoint_dir=tmp_path, checkpoint_every=3)
    reference = BradleyTerryTrainer(rm(policies[1], tokenizer), replace(config, checkpoint_dir=None), pairs)
    reference.fit()
    crash_during_fit(BradleyTerryTrainer(rm(policies[1], tokenizer), config, pairs), 7)
    resumed = BradleyTerryTrainer(rm(policies[1], tokenizer), config, pairs)
    resumed.fit(resume=True)
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history.step_loss == reference.history.step_loss
    assert not torch.equal(reference.model.encoder.wte.weight, policies[1].transformer.wte.weight)


@pytest.mark.parametrize("method", ["crm", "self_review"])
def test_two_minds_from_two_policies_train_with_the_two_model_methods(tokenizer, policies, method):
    config = reproduction.ReproductionConfig(n_pairs=24, n_bench=4, epochs=2, batch_size=8, head_hidden_size=None,
                                             max_length=64, encoder="full_copy", lr=3e-3)
    bases = [rm(policy, tokenizer, mode="frozen") for policy in policies]
    train = reproduction.noisy_pairs(config, 0.25, seed=0)
    models, history = reproduction.train_method(method, bases, train, config, eta=0.25, seed=0)
    assert [m.config.backbone for m in models] == [b.config.backbone for b in bases]  # model a from policy a, b from b
    assert all(m.config.mode == "full" and m.config.max_length == 64 for m in models)
    for model, base, policy in zip(models, bases, policies):
        start = policy.transformer.h[0].mlp.c_fc.weight
        assert not torch.equal(model.encoder.h[0].mlp.c_fc.weight, start)  # each trained its own copy
        assert torch.equal(base.encoder.h[0].mlp.c_fc.weight, start)  # the bases are left as they were
    assert history.selected_a[-1].float().mean().item() == pytest.approx(0.875)  # epoch 1 of 2 forgets eta / 2
    bench = mini_reward_bench(n_per_category=3, seed=0)
    scores = reproduction.score_models(models, bench)
    assert 0.0 <= scores["average"] <= 1.0


def test_reward_function_and_saving_round_trip(tokenizer, policies, pairs, tmp_path):
    model = rm(policies[0], tokenizer, head_hidden_size=8, seed=2)
    prompts, responses = list(pairs["prompt"][:5]), list(pairs["chosen"][:5])
    np.testing.assert_array_equal(reward_model_reward(model)(prompts, responses), score(model, prompts, responses))

    path = save_policy_reward_model(model, tmp_path / "rm")
    loaded = load_policy_reward_model(path)
    assert loaded.config == model.config
    np.testing.assert_array_equal(score(loaded, prompts, responses), score(model, prompts, responses))
    with pytest.raises(ValueError, match="load_policy_reward_model"):
        load_reward_model(path)  # the generic loader has no folder to rebuild the transformer from
    with pytest.raises(ValueError, match="no folder"):
        save_reward_model(model, tmp_path / "generic")
    with pytest.raises(FileNotFoundError, match="save_policy_reward_model"):
        load_policy_reward_model(tmp_path)


def test_lora_adapts_gpt2_layers_and_bad_settings_are_named(tokenizer, policies):
    lora = rm(policies[0], tokenizer, mode="lora", lora_rank=2)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any("c_attn" in n for n in trainable) and any("c_fc" in n for n in trainable)
    with pytest.raises(ValueError, match="cannot be saved"):
        save_policy_reward_model(lora, "unused")
    with pytest.raises(ValueError, match="not in the policy"):
        rm(policies[0], tokenizer, mode="lora", lora_target_modules=["query"])
    with pytest.raises(ValueError, match="pooling"):
        rm(policies[0], tokenizer, pooling="pooler")
    with pytest.raises(ValueError, match="context"):
        rm(policies[0], tokenizer, max_length=TINY.n_positions + 1)
    assert isinstance(lora, RewardModel)
