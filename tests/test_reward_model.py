"""Reward models: backbone loading, pair encoding, feature cache, scoring, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from course_lib.reward.model import (
    RewardModel,
    RewardModelConfig,
    encode_pairs,
    load_backbone,
    load_reward_model,
    save_reward_model,
    score,
)

PROMPTS = ["What is two plus two?", "Name a colour.", "Say hello politely.", "What is two plus two?"]
RESPONSES = ["Four.", "Blue is a colour.", "Hello, nice to meet you!", "It is five, I believe."]


def test_load_backbone_defaults_to_bundled_minilm():
    encoder, tokenizer = load_backbone()
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    assert tokenizer.sep_token == "[SEP]"


def test_load_backbone_reports_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_backbone(tmp_path)


def test_encode_pairs_joins_as_sentence_pair_and_cuts_the_prompt_start_first(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    short = encode_pairs(tokenizer, ["hello there"], ["general kenobi"], max_length=32)[0]
    assert short == tokenizer("hello there", "general kenobi")["input_ids"]

    long_prompt = " ".join(f"word{i}" for i in range(50)) + " final question"
    ids = encode_pairs(tokenizer, [long_prompt], ["short answer"], max_length=16)[0]
    text = tokenizer.decode(ids)
    assert len(ids) == 16 and text.startswith("[CLS]") and text.endswith("final question [SEP] short answer [SEP]")

    long_response = " ".join(["yes"] * 40)
    ids = encode_pairs(tokenizer, ["q"], [long_response], max_length=10)[0]
    assert len(ids) == 10 and tokenizer.decode(ids) == "[CLS] [SEP] " + " ".join(["yes"] * 7) + " [SEP]"


def test_config_rejects_unknown_mode_and_pooling():
    with pytest.raises(ValueError, match="mode must be one of"):
        RewardModelConfig(mode="partial")
    with pytest.raises(ValueError, match="pooling must be one of"):
        RewardModelConfig(pooling="max")


def test_embed_encodes_each_text_once_and_uses_disk_cache(tiny_backbone, tmp_path, monkeypatch):
    model = RewardModel(RewardModelConfig(backbone=tiny_backbone))
    calls = []
    original_pool = model.pool
    monkeypatch.setattr(model, "pool", lambda *a: calls.append(len(a[0])) or original_pool(*a))
    features = model.embed(PROMPTS, RESPONSES, batch_size=2, cache_dir=tmp_path, progress=False)
    assert features.shape == (4, 32) and sum(calls) == 4
    again = model.embed(PROMPTS + PROMPTS[:1], RESPONSES + RESPONSES[:1], cache_dir=tmp_path, progress=False)
    assert sum(calls) == 4 and torch.equal(again[:4], features) and torch.equal(again[4], features[0])

    fresh = RewardModel(RewardModelConfig(backbone=tiny_backbone))
    monkeypatch.setattr(fresh, "pool", lambda *a: pytest.fail("features should come from the disk cache"))
    assert torch.equal(fresh.embed(PROMPTS, RESPONSES, cache_dir=tmp_path, progress=False), features)
    assert len(list(tmp_path.glob("features-*.pt"))) == 1


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_score_matches_forward_in_any_order(tiny_backbone, mode):
    model = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode=mode, head_hidden_size=8))
    rewards = score(model, PROMPTS, RESPONSES, batch_size=3)
    assert rewards.shape == (4,) and rewards.dtype == np.float32
    order = [2, 0, 3, 1]
    shuffled = score(model, [PROMPTS[i] for i in order], [RESPONSES[i] for i in order], batch_size=2)
    np.testing.assert_allclose(shuffled, rewards[order], atol=1e-6)
    ids = model.tokenize(PROMPTS[:1], RESPONSES[:1])
    with torch.no_grad():
        direct = model(torch.tensor(ids), torch.ones(1, len(ids[0]), dtype=torch.long))
    np.testing.assert_allclose(rewards[0], direct.item(), atol=1e-6)


def test_same_seed_same_head_and_different_seed_different_head(tiny_backbone):
    first, second, other = (RewardModel(RewardModelConfig(backbone=tiny_backbone, seed=s)) for s in (1, 1, 2))
    assert torch.equal(first.head.out.weight, second.head.out.weight)
    assert not torch.equal(first.head.out.weight, other.head.out.weight)


@pytest.mark.parametrize(
    "config",
    [
        dict(mode="frozen", head_hidden_size=16, head_dropout=0.1),
        dict(mode="lora", lora_rank=4),
        dict(mode="full", pooling="pooler"),
    ],
)
def test_save_load_round_trip_gives_identical_scores(tiny_backbone, tmp_path, config):
    model = RewardModel(RewardModelConfig(backbone=tiny_backbone, seed=3, **config))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))  # as if trained
    path = save_reward_model(model, tmp_path / "rm")
    save_reward_model(model, tmp_path / "rm")  # overwriting an existing model works
    loaded = load_reward_model(path)
    assert loaded.config == model.config
    np.testing.assert_array_equal(score(loaded, PROMPTS, RESPONSES), score(model, PROMPTS, RESPONSES))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]


def test_load_reward_model_explains_a_wrong_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_reward_model"):
        load_reward_model(tmp_path)


def test_chunked_encoding_gives_the_same_features(tiny_backbone):
    model = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="full"))
    ids = model.tokenize(PROMPTS, RESPONSES)
    longest = max(len(s) for s in ids)
    input_ids = torch.tensor([s + [0] * (longest - len(s)) for s in ids])
    attention_mask = (input_ids != 0).long()
    with torch.no_grad():
        one_pass = model.pool(input_ids, attention_mask)
        chunked = model.pool(input_ids, attention_mask, chunks=3)
    torch.testing.assert_close(chunked, one_pass, rtol=1e-5, atol=1e-6)


def test_new_head_shares_encoder_and_feature_cache(tiny_backbone):
    from course_lib.reward.model import frozen_model_with_new_head

    base = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="frozen"))
    base.embed(PROMPTS, RESPONSES, progress=False)
    other = frozen_model_with_new_head(base, head_hidden_size=16, seed=3)
    assert other.encoder is base.encoder and other._feature_cache is base._feature_cache
    assert len(other._feature_cache) == len(set(zip(PROMPTS, RESPONSES)))
    assert other.config.head_hidden_size == 16 and base.config.head_hidden_size is None
    assert score(other, PROMPTS, RESPONSES).shape == (4,)
    with pytest.raises(ValueError, match="frozen mode"):
        frozen_model_with_new_head(RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="full")))
