"""The sampler's compiled decode step (``generate(compile=...)``), checked against the plain loop on a CPU.

``compile="force"`` runs the GPU's code path (fixed-shape static cache, fixed batch
size with dummy rows, the one-token step compiled with ``fullgraph=True``, the
finished check every ``CHECK_EVERY`` steps) on a CPU, without CUDA graphs. Each
compilation takes seconds, so the tiny policy's greedy and sampling steps are compiled
once each for the whole file (the compiled step is shared by every call with the same
shapes), and the outputs that several tests compare are computed once.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch._dynamo.utils import counters

from course_lib.policy import build_policy, generate, sampling, train_tokenizer, world_texts

from policy_helpers import TINY, model, one_thread, prompts  # noqa: F401 (shared fixtures)


BATCH = 3  # 8 prompts: batches of 3, 3 and 2 (the last padded with a dummy row)
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "seed": 17}  # a seed whose first batch ends between two checks


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(world_texts(n_pairs=600))


@pytest.fixture(scope="module")
def greedy_pair(model, tokenizer, prompts):
    """Greedy completions from the plain loop (dynamic cache) and the forced compiled path (compiles once)."""
    settings = {"max_new_tokens": 24, "greedy": True, "batch_size": BATCH}
    return generate(model, tokenizer, prompts, **settings), generate(model, tokenizer, prompts, compile="force",
                                                                     **settings)


@pytest.fixture(scope="module")
def sampled_pair(model, tokenizer, prompts):
    """Sampled completions (temperature and top-p) from both paths, with the same seed."""
    settings = {"max_new_tokens": 24, "batch_size": BATCH, **SAMPLING}
    return generate(model, tokenizer, prompts, **settings), generate(model, tokenizer, prompts, compile="force",
                                                                     **settings)


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_compiled_greedy_tokens_equal_the_plain_loop(greedy_pair):
    plain, compiled = greedy_pair
    assert any(plain.finished) and not all(plain.finished)  # early ends and cut answers are both exercised
    assert compiled.token_ids == plain.token_ids
    assert compiled.finished == plain.finished and compiled.texts == plain.texts


def test_compiled_logprobs_match_the_plain_loop(greedy_pair, sampled_pair):
    for plain, compiled in (greedy_pair, sampled_pair):
        for ours, theirs in zip(compiled.logprobs, plain.logprobs):
            torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), atol=1e-4, rtol=0)


def test_compiled_sampling_draws_the_same_tokens_with_the_same_seed(sampled_pair, greedy_pair, tokenizer, prompts):
    plain, compiled = sampled_pair
    assert plain.token_ids != greedy_pair[0].token_ids  # it really sampled
    # The first batch (the shortest prompts) ends between two of the compiled path's finished-checks, so the later
    # batches draw the same tokens only if the generator is put back where the plain loop stopped drawing.
    first = sorted(range(len(prompts)), key=lambda i: len(tokenizer.prompt_ids(prompts[i])))[:BATCH]
    assert all(plain.finished[i] for i in first) and max(plain.lengths[i] for i in first) % sampling.CHECK_EVERY
    assert compiled.token_ids == plain.token_ids and compiled.finished == plain.finished


def test_last_batch_is_padded_and_one_compiled_step_serves_every_batch(model, tokenizer, prompts, greedy_pair):
    graphs = compiled_graphs()  # the greedy step is compiled already (greedy_pair)
    for some in (prompts[:7], prompts[:1], prompts[3:5]):  # 3+3+1, 1 and 2 prompts: all padded to 3 rows
        out = generate(model, tokenizer, some, max_new_tokens=20, greedy=True, batch_size=BATCH, compile="force")
        assert len(out) == len(some)
        assert out.token_ids == generate(model, tokenizer, some, max_new_tokens=20, greedy=True).token_ids
    assert compiled_graphs() == graphs  # no new compilation for a new number of prompts or of new tokens
    cache = sampling._FAST_STATE[model][1]
    assert cache.layers[0].keys.shape[0] == BATCH and cache.layers[0].keys.shape[2] == TINY.n_positions


def test_compiled_path_stops_early_when_every_row_has_ended(model, tokenizer, prompts, greedy_pair, monkeypatch):
    plain_24 = greedy_pair[0]
    ending = [p for p, done in zip(prompts, plain_24.finished) if done]
    assert len(ending) > 1
    compiled_step = sampling._compiled_step(torch.device("cpu"))
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return compiled_step(*args, **kwargs)

    monkeypatch.setitem(sampling._COMPILED_STEPS, "default", counting)
    out = generate(model, tokenizer, ending, max_new_tokens=100, greedy=True, batch_size=BATCH, compile="force")
    plain = generate(model, tokenizer, ending, max_new_tokens=100, greedy=True, batch_size=BATCH)
    assert out.token_ids == plain.token_ids and all(out.finished)
    # per batch (prompts sorted by length): steps up to the first multiple of CHECK_EVERY at or after the batch's last
    # end, one compiled call per step but the first (the prefill's logits choose the first token)
    every = sampling.CHECK_EVERY
    order = sorted(range(len(ending)), key=lambda i: len(tokenizer.prompt_ids(ending[i])))
    lengths = [max(plain.lengths[i] for i in order[start:start + BATCH]) for start in range(0, len(order), BATCH)]
    assert len(calls) == sum(-(-k // every) * every - 1 for k in lengths) < len(lengths) * 99


def test_compile_true_on_cpu_falls_back_to_the_plain_loop(model, tokenizer, prompts, monkeypatch):
    def no_compiled_step(*args, **kwargs):
        raise AssertionError("the compiled step ran on a CPU with compile=True")

    monkeypatch.setitem(sampling._COMPILED_STEPS, "default", no_compiled_step)
    for settings in ({"greedy": True}, SAMPLING):
        plain = generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=BATCH, **settings)
        fallback = generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=BATCH, compile=True, **settings)
        assert fallback.token_ids == plain.token_ids and fallback.logprobs == plain.logprobs


def test_compiled_state_does_not_keep_the_model_alive(tokenizer, prompts, greedy_pair):
    policy = build_policy(TINY, tokenizer, seed=1).eval()
    generate(policy, tokenizer, prompts[:2], max_new_tokens=4, greedy=True, batch_size=BATCH, compile="force")
    assert policy in sampling._FAST_STATE
    alive = weakref.ref(policy)
    del policy
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("value", ["yes", "Force", "cuda", 1, 0, None])
def test_bad_compile_values_say_what_is_wrong(model, tokenizer, value):
    with pytest.raises(ValueError, match=r"compile must be one of \(False, True, 'force'\)"):
        generate(model, tokenizer, ["Hi?"], max_new_tokens=4, compile=value)


def test_inverse_cdf_draws_follow_the_distribution_and_skip_zero_probabilities():
    from course_lib.policy.sampling import _draw

    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([_draw(probs.expand(1000, -1), generator) for _ in range(40)])
    counts = torch.bincount(draws, minlength=5).double() / len(draws)
    assert counts[1] == 0 and counts[4] == 0, "a token outside the nucleus is never drawn"
    assert torch.allclose(counts, probs.double(), atol=0.01), counts  # 40,000 draws: SE < 0.0025
    # rows that do not sum to 1 (a filtered distribution before renormalising) are drawn in proportion
    half = _draw(torch.tensor([[0.1, 0.1]]).expand(20000, -1), generator)
    assert abs(half.double().mean().item() - 0.5) < 0.02
