"""The policy's text layer: tokenizer round trips, the model's build and save, and the KV-cache sampler.

The sampler is checked against a reference written here without any cache or padding:
one full forward pass over the growing sequence per token, one prompt at a time.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from course_lib.policy import (
    EOS,
    POLICY_SIZES,
    Completions,
    PolicyConfig,
    PolicyTokenizer,
    build_policy,
    generate,
    load_policy,
    policy_config,
    save_policy,
    train_tokenizer,
    world_texts,
)

from policy_helpers import TINY, model, one_thread, prompts  # noqa: F401 (shared fixtures)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return world_texts(n_pairs=600)


@pytest.fixture(scope="module")
def tokenizer(texts) -> PolicyTokenizer:
    return train_tokenizer(texts)


@pytest.fixture(scope="module")
def reference(model, tokenizer, prompts) -> list[list[int]]:
    return [reference_greedy(model, tokenizer, prompt, 32) for prompt in prompts]


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_world_texts_exactly(tokenizer, texts):
    sample = texts[:: len(texts) // 500][:500]
    assert any("\n" in text for text in sample) and any(c.isdigit() for text in sample for c in text)
    assert [tokenizer.decode(tokenizer.encode(text)) for text in sample] == sample
    odd = "Ünïcødé ÷ 🙂\n\n  two  spaces\tand a tab; a literal <|endoftext|> is just text"
    ids = tokenizer.encode(odd)
    assert tokenizer.decode(ids) == odd
    assert tokenizer.eos_id not in ids


def test_special_tokens_are_distinct_and_frame_an_example(tokenizer):
    specials = {tokenizer.eos_id, tokenizer.pad_id, tokenizer.sep_id}
    assert len(specials) == 3 and max(specials) < tokenizer.vocab_size == 2000
    assert tokenizer.prompt_ids("Hi?") == tokenizer.encode("Hi?") + [tokenizer.sep_id]
    assert tokenizer.response_ids("Hello.") == tokenizer.encode("Hello.") + [tokenizer.eos_id]
    example = tokenizer.prompt_ids("Hi?") + tokenizer.response_ids("Hello.")
    assert tokenizer.decode(example) == tokenizer.decode(torch.tensor(example)) == "Hi?Hello."


def test_tokenizer_training_is_deterministic(tokenizer, texts):
    assert train_tokenizer(texts).tokenizer.to_str() == tokenizer.tokenizer.to_str()


def test_tokenizer_save_load_gives_identical_ids(tokenizer, texts, tmp_path):
    path = tokenizer.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    loaded = PolicyTokenizer.load(tmp_path)
    assert (loaded.eos_id, loaded.pad_id, loaded.sep_id, loaded.vocab_size) == (
        tokenizer.eos_id, tokenizer.pad_id, tokenizer.sep_id, tokenizer.vocab_size)
    assert [loaded.encode(t) for t in texts[:200]] == [tokenizer.encode(t) for t in texts[:200]]


@pytest.mark.parametrize("call, message", [
    (lambda tok: tok.encode(3), "encode: text must be a str, got int"),
    (lambda tok: tok.prompt_ids(None), "prompt_ids: prompt must be a str"),
    (lambda tok: tok.decode([0, 99999]), r"decode: every id must be an int in \[0, 2000\), got 99999"),
    (lambda tok: train_tokenizer(["fine", 4.5]), r"texts\[1\] must be a str, got float"),
    (lambda tok: train_tokenizer("one string"), "a single str"),
    (lambda tok: train_tokenizer([]), "texts is empty"),
    (lambda tok: train_tokenizer(["abc"], vocab_size=100), "vocab_size must be an int >= 259"),
])
def test_tokenizer_bad_inputs_say_what_is_wrong(tokenizer, call, message):
    with pytest.raises(ValueError, match=message):
        call(tokenizer)


def test_tokenizer_load_from_a_folder_without_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        PolicyTokenizer.load(tmp_path)


# ---------------------------------------------------------------- model


def test_policy_sizes_and_config_validation():
    assert policy_config("standard") == POLICY_SIZES["standard"] == PolicyConfig(2, 128, 4, 160)
    assert policy_config("smoke", dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="profile must be one of"):
        policy_config("huge")
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        PolicyConfig(1, 30, 4, 64)
    with pytest.raises(ValueError, match="n_layer must be a positive int"):
        PolicyConfig(0, 32, 2, 64)
    with pytest.raises(ValueError, match="dropout"):
        PolicyConfig(1, 32, 2, 64, dropout=1.0)


def test_build_policy_is_seeded_tied_and_leaves_global_rng_alone(tokenizer):
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    first, again = build_policy(TINY, tokenizer, seed=3), build_policy(TINY, tokenizer, seed=3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist() and random.getstate() == python_state
    assert torch.equal(first.transformer.wte.weight, again.transformer.wte.weight)
    assert not torch.equal(first.transformer.wte.weight, build_policy(TINY, tokenizer, seed=4).transformer.wte.weight)
    assert first.lm_head.weight is first.transformer.wte.weight
    assert first.config.vocab_size == tokenizer.vocab_size and first.config.eos_token_id == tokenizer.eos_id
    assert first.config._attn_implementation in ("sdpa", "eager")


def test_save_load_policy_gives_identical_logits(model, tokenizer, tmp_path):
    target = tmp_path / "policy"
    assert save_policy(model, tokenizer, str(target)) == target
    save_policy(model, tokenizer, target)  # replacing a saved policy works too
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]  # no staging folder left behind
    loaded, loaded_tokenizer = load_policy(target)
    ids = torch.tensor([tokenizer.prompt_ids("How do I water a cactus?")])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert loaded_tokenizer.encode("3 + 4 = 7\n") == tokenizer.encode("3 + 4 = 7\n")
    with pytest.raises(FileNotFoundError, match="does not hold a saved policy"):
        load_policy(tmp_path / "missing")


# ---------------------------------------------------------------- sampling


def reference_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy decoding without cache or padding: a full forward pass over the growing sequence per token."""
    sequence = tokenizer.prompt_ids(prompt)
    response = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax())
            sequence.append(token)
            response.append(token)
            if token == tokenizer.eos_id:
                break
    return response


def full_pass_logprobs(model, tokenizer, prompt: str, response_ids: list[int]) -> torch.Tensor:
    """log pi(token) of every response token, from one forward pass over prompt + response."""
    prompt_ids = tokenizer.prompt_ids(prompt)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + response_ids])).logits[0]
    logprobs = logits[len(prompt_ids) - 1 : -1].log_softmax(-1)
    return logprobs.gather(-1, torch.tensor(response_ids)[:, None]).squeeze(-1)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_cached_greedy_equals_no_cache_reference(model, tokenizer, prompts, reference, cache):
    assert len({len(tokenizer.prompt_ids(p)) for p in prompts}) > 3  # left padding is exercised
    out = generate(model, tokenizer, prompts, max_new_tokens=32, greedy=True, batch_size=len(prompts), cache=cache)
    assert out.token_ids == reference
    assert any(out.finished) and not all(out.finished)
    for prompt, ids, logprobs in zip(prompts, out.token_ids, out.logprobs):
        torch.testing.assert_close(torch.tensor(logprobs), full_pass_logprobs(model, tokenizer, prompt, ids),
                                   atol=1e-4, rtol=0)


def test_results_do_not_depend_on_batching(model, tokenizer, prompts):
    whole = generate(model, tokenizer, prompts, max_new_tokens=30, greedy=True, batch_size=len(prompts))
    small = generate(model, tokenizer, prompts, max_new_tokens=30, greedy=True, batch_size=5)
    assert small.token_ids == whole.token_ids and small.texts == whole.texts
    assert whole.texts == [tokenizer.decode(ids) for ids in whole.token_ids]


def test_sampling_is_seeded_and_reports_logprobs_before_temperature(model, tokenizer, prompts):
    settings = {"max_new_tokens": 24, "temperature": 0.7, "top_p": 0.9, "batch_size": 8}
    first = generate(model, tokenizer, prompts, seed=0, **settings)
    assert first.token_ids == generate(model, tokenizer, prompts, seed=0, **settings).token_ids
    assert first.token_ids != generate(model, tokenizer, prompts, seed=1, **settings).token_ids
    for prompt, ids, logprobs in zip(prompts, first.token_ids, first.logprobs):
        torch.testing.assert_close(torch.tensor(logprobs), full_pass_logprobs(model, tokenizer, prompt, ids),
                                   atol=1e-4, rtol=0)


def test_rows_stop_at_eos_and_the_batch_stops_when_all_have(model, tokenizer, prompts, reference):
    out = generate(model, tokenizer, prompts * 3, max_new_tokens=30, temperature=1.5, seed=2)
    assert isinstance(out, Completions) and len(out) == 3 * len(prompts)
    assert any(out.finished) and not all(out.finished)
    for ids, done, length in zip(out.token_ids, out.finished, out.lengths):
        assert (tokenizer.eos_id in ids) == done and tokenizer.pad_id not in ids
        assert (ids.index(tokenizer.eos_id) == length - 1) if done else (length == 30)
    assert all(EOS not in text for text in out.texts)

    ending = [p for p, ids in zip(prompts, reference) if ids[-1] == tokenizer.eos_id]
    forward_calls = []
    hook = model.transformer.register_forward_hook(lambda *_: forward_calls.append(1))
    try:
        greedy = generate(model, tokenizer, ending, max_new_tokens=100, greedy=True)
    finally:
        hook.remove()
    assert len(ending) > 1 and all(greedy.finished)
    assert len(forward_calls) == max(greedy.lengths)  # prefill, then one step per token until the last row ended


def test_tiny_top_p_equals_greedy(model, tokenizer, prompts):
    greedy = generate(model, tokenizer, prompts, max_new_tokens=30, greedy=True)
    nucleus = generate(model, tokenizer, prompts, max_new_tokens=30, top_p=1e-6, temperature=1.3, seed=7)
    assert nucleus.token_ids == greedy.token_ids


def test_generate_leaves_global_rng_and_training_flag_alone(tokenizer, prompts):
    policy = build_policy(PolicyConfig(1, 32, 2, 160, dropout=0.5), tokenizer).train()
    state = torch.get_rng_state()
    first = generate(policy, tokenizer, prompts[:4], max_new_tokens=12, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert policy.training  # restored, and dropout was off while sampling:
    assert generate(policy, tokenizer, prompts[:4], max_new_tokens=12, seed=0).token_ids == first.token_ids


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_bf16_runs_on_cpu(model, tokenizer, prompts, cache):
    out = generate(model, tokenizer, prompts, max_new_tokens=16, precision="bf16", cache=cache, seed=0)
    assert len(out) == len(prompts) and all(1 <= n <= 16 for n in out.lengths)
    assert all(0 <= i < tokenizer.vocab_size for ids in out.token_ids for i in ids)
    assert all(np.isfinite(lp) and lp <= 0 for row in out.logprobs for lp in row)


def test_long_prompts_are_cut_from_the_left_with_a_warning(model, tokenizer, prompts):
    long_prompt = " ".join(prompts)  # longer than the 160 - 8 tokens of context left for it
    assert len(tokenizer.prompt_ids(long_prompt)) > 152
    with pytest.warns(UserWarning, match="1 prompt\\(s\\) longer than 152 tokens were cut from the left"):
        out = generate(model, tokenizer, [long_prompt, prompts[0]], max_new_tokens=8, greedy=True)
    cut = tokenizer.decode(tokenizer.prompt_ids(long_prompt)[-152:])
    assert tokenizer.prompt_ids(cut) == tokenizer.prompt_ids(long_prompt)[-152:]  # the cut falls between words
    assert out.token_ids[0] == generate(model, tokenizer, [cut], max_new_tokens=8, greedy=True).token_ids[0]
    assert generate(model, tokenizer, [], max_new_tokens=8).texts == []


@pytest.mark.parametrize("kwargs, message", [
    ({"prompts": "one prompt"}, "prompts must be a list of strings"),
    ({"max_new_tokens": 160}, r"max_new_tokens must be an int in \[1, 160\)"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
    ({"cache": "paged"}, "cache must be one of"),
    ({"precision": "fp8"}, "precision must be one of"),
])
def test_generate_bad_arguments_say_what_is_wrong(model, tokenizer, kwargs, message):
    kwargs = {"prompts": ["Hi?"], **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, tokenizer, kwargs.pop("prompts"), **kwargs)
