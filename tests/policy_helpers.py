"""Helpers shared by the policy tests: a briefly trained tiny policy, its fixtures, and a trainer that crashes at a step.

A test module that wants the fixtures imports them by name (``from policy_helpers import model, one_thread,
prompts``) and defines its own ``tokenizer`` fixture.
"""

from __future__ import annotations

import pytest
import torch

from course_lib.policy import PolicyConfig, build_policy
from course_lib.engine.runtime import single_threaded
from course_lib.world import WorldConfig, generate_preference_pairs, sample_prompts

TINY = PolicyConfig(n_layer=1, n_embd=32, n_head=2, n_positions=160)


def briefly_trained_policy(config, tokenizer):
    """A tiny policy after 30 full-batch steps on short world answers.

    A freshly initialised model repeats one token whatever the prompt; a little
    training makes its answers depend on the prompt, end at different steps, and
    sometimes not end at all, which is what the samplers' tests need to see.
    """
    policy = build_policy(config, tokenizer, seed=0)
    pairs = generate_preference_pairs(WorldConfig(n_pairs=48, seed=5))
    rows = [tokenizer.prompt_ids(p) + tokenizer.response_ids(r) for p, r in zip(pairs["prompt"], pairs["chosen"])]
    rows = [row for row in rows if len(row) <= 64]  # short examples: cheap steps, and answers that end
    ids = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_id)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    mask = (ids != tokenizer.pad_id).long()
    optimizer = torch.optim.Adam(policy.parameters(), lr=2e-2)
    for _ in range(30):
        logits = policy(input_ids=ids, attention_mask=mask).logits[:, :-1]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy.eval()


def crash_during_fit(trainer, step: int) -> None:
    """Run ``trainer.fit()`` and stop it (KeyboardInterrupt) when it is about to take optimizer step ``step``."""
    original = trainer.train_step

    def crashing(*args, **kwargs):
        if trainer.global_step == step:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    trainer.train_step = crashing
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def sft_policy_for_tests(config, tokenizer):
    """A tiny policy after three epochs of SFT on 256 world pairs, so that it writes something other than noise."""
    from course_lib.policy.sft import PolicyTrainingConfig, SFTTrainer

    data = generate_preference_pairs(WorldConfig(n_pairs=256, seed=1))
    policy = build_policy(config, tokenizer, seed=0)
    SFTTrainer(policy, PolicyTrainingConfig(epochs=3, lr=5e-3, progress=False), data, tokenizer=tokenizer).fit()
    return policy.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to share out; on a busy CPU a second thread only waits."""
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def model(tokenizer):
    """The tiny policy after a few supervised steps (see ``briefly_trained_policy``)."""
    return briefly_trained_policy(TINY, tokenizer)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return list(sample_prompts(8, seed=1)["prompt"])
