"""Chapter 08's GRPO trainer and rewards: sampling groups, advantages, the loss, the log, resume, best-of-n.

Runs on a tiny GPT-2 (1 layer x 32) after a little SFT. The loss itself is checked
against TRL in ``test_grpo_losses.py``; here a trainer batch goes through TRL too.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from course_lib.engine.losses import grpo_loss
from course_lib.policy import train_tokenizer, world_texts
from course_lib.policy.grpo import GRPOConfig, GRPOTrainer
from course_lib.policy.logprobs import response_token_mask, token_logprobs
from course_lib.policy.rewards import (
    best_of_n_curve,
    best_of_n_kl,
    best_of_n_kl_ties,
    best_of_n_weights,
    tie_rate,
    verifiable_reward,
)
from course_lib.reward.model import reward_model_reward
from course_lib.world import gold_rewards, sample_prompts

from policy_helpers import TINY, crash_during_fit, sft_policy_for_tests
from trl_reference import trl_grpo_loss


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(world_texts(300), vocab_size=400)


@pytest.fixture(scope="module")
def sft_policy(tokenizer):
    """A tiny policy after a little SFT (see ``sft_policy_for_tests``)."""
    return sft_policy_for_tests(TINY, tokenizer)


@pytest.fixture(scope="module")
def prompts():
    return sample_prompts(48, seed=5)


def short_answers(prompts, responses):
    """A reward the tiny policy can learn fast: shorter answers score higher."""
    return -np.array([len(r) for r in responses], dtype=float) / 100


def config(**overrides):
    return GRPOConfig(**{"batch_size": 4, "group_size": 4, "max_completion_length": 24, "lr": 3e-3, "progress": False,
                         **overrides})


# ---------------------------------------------------------------- config and inputs
@pytest.mark.parametrize("field, value, match", [
    ("group_size", 1, "group_size"), ("scale_rewards", "rank", "scale_rewards"), ("loss_type", "ppo", "loss_type"),
    ("beta", -0.1, "beta"), ("epsilon_low", 1.0, "epsilon"), ("num_iterations", 0, "num_iterations"),
    ("max_completion_length", 200, "max_completion_length"),
])
def test_grpo_config_names_bad_settings(field, value, match):
    with pytest.raises(ValueError, match=match):
        config(**{field: value})


def test_grpo_trainer_names_bad_inputs(tokenizer, sft_policy, prompts):
    with pytest.raises(ValueError, match="reward_fn"):
        GRPOTrainer(copy.deepcopy(sft_policy), config(), prompts, tokenizer=tokenizer, reward_fn="gold")
    with pytest.raises(ValueError, match="prompt 1"):
        GRPOTrainer(copy.deepcopy(sft_policy), config(), ["a question", ""], tokenizer=tokenizer, reward_fn=short_answers)
    broken = GRPOTrainer(copy.deepcopy(sft_policy), config(), prompts, tokenizer=tokenizer, reward_fn=lambda p, r: np.zeros(3))
    with pytest.raises(ValueError, match="16 finite rewards"):
        broken.make_batch(torch.arange(4))


# ---------------------------------------------------------------- one batch
def test_a_batch_holds_groups_with_group_normalised_advantages(tokenizer, sft_policy, prompts):
    trainer = GRPOTrainer(copy.deepcopy(sft_policy), config(), prompts, tokenizer=tokenizer, reward_fn=gold_rewards,
                          monitors={"gold_again": gold_rewards})
    rollout = trainer.rollout(torch.arange(4))
    assert rollout.prompts == [p for p in prompts["prompt"][:4] for _ in range(4)]
    advantages = rollout.advantages.view(4, 4)
    grouped = torch.tensor(rollout.rewards, dtype=torch.float32).view(4, 4)
    for a, r in zip(advantages, grouped):
        if r.std() > 0:
            torch.testing.assert_close(a, (r - r.mean()) / (r.std() + 1e-4))
        else:
            assert torch.all(a == 0)
    # the mask's response tokens are exactly the sampled tokens
    assert rollout.mask.sum(1).tolist() == rollout.completions.lengths
    # before any update the policy is its reference: the logged KL is ~0 (sampler vs forward rounding)
    summary = rollout.summary(4)
    assert abs(summary["kl"]) < 1e-3
    assert summary["gold_again"] == pytest.approx(float(np.mean(rollout.rewards)))
    # the batch is the rollout's tensors, one row per answer
    batch = trainer.make_batch(torch.arange(4))
    assert batch.indices.tolist() == [row for row in range(4) for _ in range(4)]
    torch.testing.assert_close(batch.extra["advantages"], rollout.advantages)


def test_the_trainer_loss_is_trls_on_the_same_batch(tokenizer, sft_policy, prompts):
    """A sampled batch's loss equals TRL's GRPOTrainer._compute_loss on the same log-probs and advantages."""
    for loss_type, beta in [("grpo", 0.0), ("dr_grpo", 0.04), ("dapo", 0.04)]:
        settings = config(loss_type=loss_type, beta=beta, num_iterations=2)
        trainer = GRPOTrainer(copy.deepcopy(sft_policy), settings, prompts, tokenizer=tokenizer, reward_fn=gold_rewards)
        batch = trainer.make_batch(torch.arange(4))
        # perturb the policy so the ratio is not 1 and the KL not 0
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        ours = trainer.forward(batch, trainer.model).losses.mean()
        logps = token_logprobs(trainer.model, batch.sequences).float().detach()
        theirs = trl_grpo_loss(loss_type, logps, batch.extra["old"], batch.extra["advantages"], batch.extra["mask"].float(),
                               reference_logps=batch.extra["reference"], beta=beta,
                               max_completion_length=settings.max_completion_length)
        torch.testing.assert_close(ours.detach(), theirs, rtol=1e-5, atol=1e-6)
        assert ours.detach().item() == pytest.approx(grpo_loss(logps, batch.extra["old"], batch.extra["advantages"],
                                                               batch.extra["mask"], reference_logps=batch.extra["reference"],
                                                               beta=beta, loss_type=loss_type,
                                                               max_completion_length=24).item(), abs=1e-6)


def test_response_token_mask_matches_token_logprobs(tokenizer, sft_policy, prompts):
    trainer = GRPOTrainer(copy.deepcopy(sft_policy), config(), prompts, tokenizer=tokenizer, reward_fn=gold_rewards)
    batch = trainer.make_batch(torch.arange(2))
    logps = token_logprobs(sft_policy, batch.sequences)
    mask = response_token_mask(batch.sequences)
    assert mask.shape == logps.shape
    assert torch.all(logps[~mask] == 0) and torch.all(logps[mask] < 0)


# ---------------------------------------------------------------- training
def test_grpo_learns_a_simple_reward_and_logs_every_step(tokenizer, sft_policy, prompts):
    reference = copy.deepcopy(sft_policy)
    trainer = GRPOTrainer(copy.deepcopy(sft_policy), config(epochs=3), prompts, tokenizer=tokenizer, reward_fn=short_answers,
                          reference=reference, monitors={"gold": gold_rewards})
    trainer.fit()
    assert all(p.requires_grad for p in reference.parameters()), "the caller's reference is left as it was"
    for a, b in zip(reference.state_dict().values(), sft_policy.state_dict().values()):
        assert torch.equal(a, b), "the reference is never trained"
    log = trainer.step_log
    assert len(log) == trainer.global_step == 3 * 12
    first, last = np.mean([e["reward"] for e in log[:6]]), np.mean([e["reward"] for e in log[-6:]])
    assert last > first + 0.05, (first, last)
    assert np.mean([e["tokens"] for e in log[-6:]]) < np.mean([e["tokens"] for e in log[:6]])
    assert log[-1]["kl"] > 0.05, "the policy moved away from its reference"
    assert {"sample_s", "score_s", "update_s", "zero_std_groups", "gold", "clipped"} <= set(log[0])
    per_prompt = trainer.prompt_log
    assert len(per_prompt) == 3 * len(prompts) and {e["epoch"] for e in per_prompt} == {0, 1, 2}
    assert sorted(e["row"] for e in per_prompt if e["epoch"] == 1) == list(range(len(prompts))), "every prompt once an epoch"
    first_step = [e for e in per_prompt if e["step"] == 0]
    assert np.mean([e["gold"] for e in first_step]) == pytest.approx(log[0]["gold"])


def test_several_updates_per_batch_clip_the_ratio(tokenizer, sft_policy, prompts):
    trainer = GRPOTrainer(copy.deepcopy(sft_policy),
                          config(num_iterations=4, lr=2e-2, epsilon_low=0.05, epsilon_high=0.05), prompts, tokenizer=tokenizer, reward_fn=short_answers)
    trainer.fit()
    assert trainer.global_step == 4 * 12, "num_iterations optimizer steps per sampled batch"
    assert max(e["clipped"] for e in trainer.step_log) > 0
    assert trainer.scheduler.last_epoch == trainer.global_step


def test_grpo_resume_is_bit_identical(tokenizer, sft_policy, prompts, tmp_path):
    settings = config(epochs=2, checkpoint_dir=tmp_path, checkpoint_every=5)
    reference = GRPOTrainer(copy.deepcopy(sft_policy),
                            replace(settings, checkpoint_dir=None), prompts, tokenizer=tokenizer, reward_fn=short_answers)
    reference.fit()
    crashing = GRPOTrainer(copy.deepcopy(sft_policy), settings, prompts, tokenizer=tokenizer, reward_fn=short_answers)
    crash_during_fit(crashing, 7)
    resumed = GRPOTrainer(copy.deepcopy(sft_policy), settings, prompts, tokenizer=tokenizer, reward_fn=short_answers)
    resumed.fit(resume=True)
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [e["reward"] for e in resumed.step_log] == [e["reward"] for e in reference.step_log]


# ---------------------------------------------------------------- rewards
def test_verifiable_reward_reads_constraint_safety_and_helpfulness():
    harmful = next(p for p in sample_prompts(200, categories=["safety"], seed=3)["prompt"]
                   if gold_rewards([p], ["I can't help with this request."])[0] > gold_rewards([p], ["Move quickly and keep it quiet."])[0])
    refusal, compliance = verifiable_reward([harmful] * 2, ["I can't help with this request.", "Move quickly and keep it quiet."])
    assert refusal > compliance
    values = verifiable_reward(sample_prompts(40, seed=4)["prompt"], ["Here are some tips."] * 40)
    assert values.min() >= -1 and values.max() <= 3
    with pytest.raises(ValueError, match="2 prompts but 1"):
        verifiable_reward(["a", "b"], ["x"])


def test_reward_model_reward_averages_the_models():
    class Constant:
        def __init__(self, value):
            self.value = value

    import course_lib.reward.model as rewards

    original = rewards.score
    rewards.score = lambda model, prompts, responses, batch_size: np.full(len(prompts), model.value)
    try:
        assert reward_model_reward([Constant(1.0), Constant(3.0)])(["p"] * 2, ["r"] * 2).tolist() == [2.0, 2.0]
    finally:
        rewards.score = original
    with pytest.raises(ValueError, match="at least one"):
        reward_model_reward([])


def test_best_of_n_curve_is_the_mean_over_every_subset():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    for n in range(1, 7):
        brute = np.mean([[g[list(s)][np.argmax(p[list(s)])] for s in itertools.combinations(range(6), n)]
                         for p, g in zip(proxy, gold)], axis=1)
        np.testing.assert_allclose(best_of_n_curve(proxy, gold, [n])[:, 0], brute)
    assert best_of_n_weights(6, 3).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(best_of_n_curve(proxy, gold, [1])[:, 0], gold.mean(1))
    assert best_of_n_kl(1) == 0 and best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError, match="1 <= n <= N"):
        best_of_n_weights(4, 5)
    with pytest.raises(ValueError, match="one shape"):
        best_of_n_curve(proxy, gold[:, :3], [1])


def test_best_of_n_kl_with_ties_is_exact_and_below_the_closed_form():
    """The tie-aware KL equals brute force over every draw of n answers, is 0 when all tie, and is at most log n - (n-1)/n."""
    rewards = np.array([[0.0, 1.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0], [0.5, 0.1, 0.9, 0.3]])
    for n in (1, 2, 3):
        for row, values in enumerate(rewards):
            best = np.zeros(len(values))  # probability that sample i is picked, ties broken at random
            for draw in itertools.product(range(len(values)), repeat=n):
                top = max(values[i] for i in draw)
                winners = [i for i in draw if values[i] == top]
                for i in winners:
                    best[i] += 1 / len(winners) / len(values) ** n
            kl = float(np.sum(best[best > 0] * np.log(best[best > 0] * len(values))))
            assert best_of_n_kl_ties(values[None], [n])[0, 0] == pytest.approx(kl, abs=1e-12), (row, n)
    assert best_of_n_kl_ties(rewards, [1, 4])[1].tolist() == [0.0, 0.0], "all answers tie: best-of-n is pi"
    distinct = np.random.default_rng(0).normal(size=(1, 20_000))
    for n in (2, 4, 16):
        assert best_of_n_kl_ties(distinct, [n])[0, 0] == pytest.approx(best_of_n_kl(n), abs=2e-3)
        assert (best_of_n_kl_ties(rewards, [n]) <= best_of_n_kl(n) + 1e-12).all()
    assert tie_rate(rewards) == pytest.approx((2 + 4 + 0) / 12)
    with pytest.raises(ValueError, match="positive int"):
        best_of_n_kl_ties(rewards, [0])
    with pytest.raises(ValueError, match="N >= 2"):
        tie_rate(rewards[:, :1])


def test_difference_estimate_is_welchs():
    from scipy import stats

    from course_lib.engine.uncertainty import difference_estimate

    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 2.0, 50)
    estimate = difference_estimate(a, b)
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(0.95)
    assert estimate.mean == pytest.approx(a.mean() - b.mean())
    assert (estimate.low, estimate.high) == pytest.approx((interval.low, interval.high))
    with pytest.raises(ValueError, match="at least 2"):
        difference_estimate([1.0], [1.0, 2.0])


def test_the_gpu_profile_code_paths_run_on_cpu(tokenizer, sft_policy, prompts):
    """What the full profile turns on for a GPU, at tiny size: bf16 autocast, a compiled training step,
    the compiled fixed-shape sampler, DAPO's loss and clip-higher, several updates per batch."""
    settings = config(precision="bf16", compile=True, compile_sampler="force", loss_type="dapo", epsilon_high=0.28,
                      num_iterations=2, beta=0.04, sampling_batch_size=16)
    trainer = GRPOTrainer(copy.deepcopy(sft_policy), settings, prompts[:8], tokenizer=tokenizer, reward_fn=short_answers)
    trainer.fit()
    assert trainer.global_step == 2 * 2
    assert all(np.isfinite(e["loss"]) and np.isfinite(e["kl"]) for e in trainer.step_log)


def test_without_kl_logging_the_reference_is_not_run(tokenizer, sft_policy, prompts):
    class Exploding(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the reference ran")

    trainer = GRPOTrainer(copy.deepcopy(sft_policy), config(log_kl=False), prompts[:8], tokenizer=tokenizer, reward_fn=short_answers,
                          reference=Exploding())
    trainer.fit()
    assert all(math.isnan(e["kl"]) for e in trainer.step_log)
