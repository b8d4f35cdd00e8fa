"""Chapter 07's policy training: sequences, log-probs, SFT, DPO, CRM-DPO, on-policy pairs, evaluation.

Everything runs on a tiny GPT-2 (1 layer x 32) and a small tokenizer, in a few seconds
each. TRL parity of the DPO losses is in ``test_dpo_trl.py``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.engine.losses import dpo_implied_rewards, dpo_loss, rpo_nll_loss
from course_lib.policy import build_policy, train_tokenizer, world_texts
from course_lib.policy.dpo import DPOConfig, DPOTrainer
from course_lib.policy.evaluation import PolicyEvaluation, compare_policies, evaluate_policy
from course_lib.policy.logprobs import score_sequences, sequence_logprobs, token_logprobs
from course_lib.policy.methods import ReferenceScores, train_dpo_method
from course_lib.policy.onpolicy import flip_labels, on_policy_pairs, relabel_pairs
from course_lib.policy.sequences import Sequences
from course_lib.policy.sft import PolicyTrainingConfig, SFTTrainer, train_sft_policy
from course_lib.engine.uncertainty import mean_estimate, paired_bootstrap, policy_difference
from course_lib.world import WorldConfig, generate_preference_pairs, gold_rewards, sample_prompts

from policy_helpers import TINY, crash_during_fit, sft_policy_for_tests


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(world_texts(300), vocab_size=400)


@pytest.fixture(scope="module")
def pairs():
    return generate_preference_pairs(WorldConfig(n_pairs=48, seed=0))


@pytest.fixture(scope="module")
def sft_policy(tokenizer):
    """A tiny policy after a little SFT (see ``sft_policy_for_tests``)."""
    return sft_policy_for_tests(TINY, tokenizer)


def dpo_config(**overrides):
    return DPOConfig(**{"epochs": 1, "batch_size": 8, "lr": 1e-3, "progress": False, **overrides})


# ---------------------------------------------------------------- losses
def test_dpo_loss_is_the_bt_loss_of_the_implied_rewards():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g) * 5 for _ in range(4))
    implied_c, implied_r = dpo_implied_rewards(pc, rc, 0.3), dpo_implied_rewards(pr, rr, 0.3)
    expected = -F.logsigmoid(implied_c - implied_r)
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta=0.3, reduction="none"), expected)
    assert dpo_loss(pc, pc, pc, pc).item() == pytest.approx(math.log(2)), "policy == reference: loss log 2"
    ipo = dpo_loss(pc, pr, rc, rr, beta=0.3, loss_type="ipo", reduction="none")
    torch.testing.assert_close(ipo, ((pc - rc) - (pr - rr) - 1 / 0.6) ** 2)
    # rDPO is unbiased: its mean over the flip of each label equals the clean loss.
    eps = 0.3
    robust = lambda c, r: dpo_loss(c, r, rc * 0, rr * 0, beta=1.0, loss_type="robust", label_smoothing=eps, reduction="none")  # noqa: E731
    torch.testing.assert_close((1 - eps) * robust(pc, pr) + eps * robust(pr, pc), -F.logsigmoid(pc - pr))
    torch.testing.assert_close(rpo_nll_loss(torch.tensor([-6.0, -2.0]), torch.tensor([3, 1])), torch.tensor(2.0))


def test_dpo_loss_names_bad_input():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(x, torch.zeros(2), x, x)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, loss_type="hinge2")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)


# ---------------------------------------------------------------- sequences and log-probs
def test_sequences_mark_response_tokens_and_pad_on_the_right(tokenizer):
    prompts, responses = ["Hi there?", "A much longer prompt about knives?"], ["Yes.", "No way, not today."]
    seqs = Sequences.from_texts(tokenizer, prompts, responses, max_length=160)
    batch = seqs.batch([0, 1])
    for row, (p, r) in enumerate(zip(prompts, responses)):
        ids = tokenizer.prompt_ids(p) + tokenizer.response_ids(r)
        assert batch.input_ids[row, : len(ids)].tolist() == ids
        assert (batch.input_ids[row, len(ids):] == tokenizer.pad_id).all()
        assert batch.input_ids[row][batch.response_mask[row]].tolist() == tokenizer.response_ids(r)
    assert batch.response_lengths.tolist() == [len(tokenizer.response_ids(r)) for r in responses]
    with pytest.raises(ValueError, match="row 1: the prompt has"):
        Sequences.from_texts(tokenizer, ["ok", "word " * 200], ["a", "b"], max_length=50)
    with pytest.raises(ValueError, match="row 0: prompt and response must be strings"):
        Sequences.from_texts(tokenizer, [None], ["a"], max_length=50)


def test_sequence_logprobs_sum_the_response_tokens_and_ignore_padding(tokenizer):
    policy = build_policy(TINY, tokenizer, seed=0).eval()
    seqs = Sequences.from_texts(tokenizer, ["Short?", "A longer question about the kitchen?"], ["Fine.", "Keep it clean and dry."], 160)
    with torch.no_grad():
        together = sequence_logprobs(policy, seqs.batch([0, 1]))
        for row in range(2):
            alone = seqs.batch([row])
            logits = policy(input_ids=alone.input_ids).logits[0].log_softmax(-1)
            ids, start = alone.input_ids[0], seqs.starts[row]
            manual = sum(logits[t - 1, ids[t]] for t in range(start, len(ids)))
            assert together[row].item() == pytest.approx(manual.item(), abs=1e-4), "padding must not change a row's log-prob"
        tokens = token_logprobs(policy, seqs.batch([0, 1]))  # columns from the batch's first response token on
        first = min(seqs.starts) - 1
        assert (tokens[1, : seqs.starts[1] - 1 - first] == 0).all(), "prompt tokens do not count"
        assert (tokens[0, : seqs.starts[0] - 1 - first] == 0).all() and tokens[0, seqs.starts[0] - 1 - first] < 0
    scored = score_sequences(policy, seqs, batch_size=1)
    torch.testing.assert_close(scored, together, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- SFT
def test_sft_lowers_the_response_nll_and_resumes_exactly(tokenizer, pairs, tmp_path):
    config = PolicyTrainingConfig(epochs=2, batch_size=8, lr=5e-3, progress=False, checkpoint_dir=tmp_path / "a")
    full = SFTTrainer(build_policy(TINY, tokenizer, seed=0), config, pairs, tokenizer=tokenizer)
    full.fit()
    assert np.mean(full.history.step_loss[-3:]) < np.mean(full.history.step_loss[:3]) - 0.3

    interrupted = replace(config, epochs=1, checkpoint_dir=tmp_path / "b")
    SFTTrainer(build_policy(TINY, tokenizer, seed=0), interrupted, pairs, tokenizer=tokenizer).fit()
    # A resumed run must have the same settings: epochs=2 differs from the checkpoint's 1 -> refused by name.
    resumed = SFTTrainer(build_policy(TINY, tokenizer, seed=0), replace(config, checkpoint_dir=tmp_path / "b"), pairs, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="epochs"):
        resumed.fit(resume=True)


def test_sft_resume_after_a_crash_is_bit_identical(tokenizer, pairs, tmp_path):
    config = PolicyTrainingConfig(epochs=2, batch_size=8, lr=5e-3, progress=False, checkpoint_dir=tmp_path,
                                  checkpoint_every=4)
    reference = SFTTrainer(build_policy(TINY, tokenizer, seed=0), replace(config, checkpoint_dir=None), pairs, tokenizer=tokenizer)
    reference.fit()
    crashing = SFTTrainer(build_policy(TINY, tokenizer, seed=0), config, pairs, tokenizer=tokenizer)
    crash_during_fit(crashing, 7)
    resumed = SFTTrainer(build_policy(TINY, tokenizer, seed=0), config, pairs, tokenizer=tokenizer)
    resumed.fit(resume=True)
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history.step_loss == reference.history.step_loss


def test_a_cached_sft_run_is_loaded_not_retrained_and_a_changed_setting_trains_anew(tokenizer, pairs, tmp_path, monkeypatch):
    config = PolicyTrainingConfig(epochs=2, batch_size=8, lr=5e-3, progress=False)
    plain = train_sft_policy(build_policy(TINY, tokenizer, seed=0), config, pairs, tokenizer=tokenizer)
    first = train_sft_policy(build_policy(TINY, tokenizer, seed=0), config, pairs, tokenizer=tokenizer, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("sft-*"))) == 1 and not first.from_cache and not plain.from_cache
    steps = []
    monkeypatch.setattr(SFTTrainer, "train_step", lambda self, *a, **k: steps.append(1))  # a loaded run takes no step
    again = train_sft_policy(build_policy(TINY, tokenizer, seed=0), config, pairs, tokenizer=tokenizer, cache_dir=tmp_path)
    assert not steps and again.from_cache
    for trained in (first, again):  # the same weights, history and random streams as training without the cache
        for (name, a), b in zip(plain.model.state_dict().items(), trained.model.state_dict().values()):
            assert torch.equal(a, b), name
        assert trained.history.step_loss == plain.history.step_loss
        assert torch.equal(trained.random_state.state_dict()["torch"], plain.random_state.state_dict()["torch"])
    monkeypatch.undo()
    for changed in (dict(policy_seed=1), dict(lr=4e-3)):  # another initialisation or setting: another cached run
        policy = build_policy(TINY, tokenizer, seed=changed.pop("policy_seed", 0))
        train_sft_policy(policy, replace(config, **changed), pairs, tokenizer=tokenizer, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("sft-*"))) == 3


# ---------------------------------------------------------------- DPO
def test_dpo_starts_at_log2_and_widens_the_implied_margin(tokenizer, pairs, sft_policy):
    trainer = DPOTrainer(copy.deepcopy(sft_policy), dpo_config(epochs=3), pairs, tokenizer=tokenizer)
    batch = trainer.make_batch(torch.arange(len(pairs)))
    assert trainer.pair_losses(batch).mean().item() == pytest.approx(math.log(2), abs=1e-5)
    assert trainer.pair_margins(batch).abs().max().item() < 1e-5, "the policy starts as its own reference"
    history = trainer.fit()
    margins = trainer.pair_margins(batch)
    assert margins.mean().item() > 0.5, "DPO must widen the implied-reward margin on its training pairs"
    assert (margins > 0).float().mean() > 0.8
    assert np.isfinite(history.pair_margin[-1]).all()
    steps, chosen, rejected = np.array(trainer.log_ratios).T
    assert len(steps) == trainer.global_step and (chosen - rejected)[-1] > 0


@pytest.mark.parametrize("overrides", [dict(loss_type="ipo"), dict(loss_type="robust", label_smoothing=0.3),
                                       dict(label_smoothing=0.3), dict(rpo_alpha=1.0), dict(precision="bf16")])
def test_every_dpo_variant_trains(tokenizer, pairs, sft_policy, overrides):
    trainer = DPOTrainer(copy.deepcopy(sft_policy), dpo_config(**overrides), pairs, tokenizer=tokenizer)
    before = copy.deepcopy(trainer.model.state_dict())
    trainer.fit()
    assert trainer.global_step > 0 and np.isfinite(trainer.history.step_loss).all()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_rpo_keeps_the_chosen_answers_likely(tokenizer, pairs, sft_policy):
    ratios = {}
    for alpha in (None, 2.0):
        trainer = DPOTrainer(copy.deepcopy(sft_policy), dpo_config(epochs=4, rpo_alpha=alpha, lr=3e-3), pairs, tokenizer=tokenizer)
        trainer.fit()
        ratios[alpha] = np.mean([chosen for _, chosen, _ in trainer.log_ratios[-3:]])
    assert ratios[2.0] > ratios[None], f"RPO's NLL term must keep chosen log-ratios higher: {ratios}"


def test_dpo_bad_settings_are_named(tokenizer, pairs, sft_policy):
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="column 'rejected'"):
        DPOTrainer(sft_policy, dpo_config(), pairs.remove_columns("rejected"), tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"reference_logps must have shape \(48, 2\)"):
        DPOTrainer(copy.deepcopy(sft_policy), dpo_config(), pairs, tokenizer=tokenizer, reference_logps=torch.zeros(3, 2))


def test_dpo_resume_is_bit_identical(tokenizer, pairs, sft_policy, tmp_path):
    config = dpo_config(epochs=2, checkpoint_dir=tmp_path)
    uninterrupted = DPOTrainer(copy.deepcopy(sft_policy), replace(config, checkpoint_dir=None), pairs, tokenizer=tokenizer)
    uninterrupted.fit()
    DPOTrainer(copy.deepcopy(sft_policy), replace(config, epochs=1, checkpoint_dir=tmp_path / "x"), pairs, tokenizer=tokenizer).fit()
    first = DPOTrainer(copy.deepcopy(sft_policy), config, pairs, tokenizer=tokenizer)
    first.fit()
    resumed = DPOTrainer(copy.deepcopy(sft_policy), config, pairs, tokenizer=tokenizer)
    resumed.fit(resume=True)  # finds the finished run's checkpoint: nothing left to do
    assert resumed.global_step == uninterrupted.global_step == first.global_step
    assert resumed.log_ratios == uninterrupted.log_ratios
    for a, b in zip(uninterrupted.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- CRM-DPO and the other methods
def test_crm_dpo_updates_each_policy_on_its_peers_selection(tokenizer, pairs, sft_policy):
    noisy = flip_labels(pairs, 0.4, seed=0)
    config = dpo_config(epochs=3)
    scores = ReferenceScores(sft_policy, tokenizer, noisy, config)
    run = train_dpo_method("crm_dpo", sft_policy, tokenizer, noisy, config, 0.4, scores, ramp_epochs=1)
    policies = [trainer.model for trainer in run.trainers]
    assert len(policies) == 2 and run.policy is policies[0]
    kept = run.selections.selected_a.float().mean(1)
    assert kept[0] == 0.5 and kept[1] == pytest.approx(0.6, abs=0.05), "split warm-up, then 1 - eta of each batch"
    assert any(not torch.equal(a, b) for a, b in zip(policies[0].parameters(), policies[1].parameters()))
    with pytest.raises(ValueError, match="rm_relabel needs a scorer"):
        train_dpo_method("rm_relabel", sft_policy, tokenizer, noisy, config, 0.4, scores)
    with pytest.raises(ValueError, match="method must be one of"):
        train_dpo_method("crm", sft_policy, tokenizer, noisy, config, 0.4, scores)


def test_crm_dpo_plan_keeps_one_minus_eta_after_the_ramp(tokenizer, pairs, sft_policy):
    from course_lib.engine.collaborative import CollaborativeConfig, train_two_models

    config = dpo_config(epochs=3)
    a, b = (DPOTrainer(copy.deepcopy(sft_policy), replace(config, seed=s), pairs, tokenizer=tokenizer) for s in (0, 1))
    history = train_two_models(a, b, CollaborativeConfig("peer_review", 0.25, ramp_epochs=1, curriculum=True), progress=False)
    kept = history.selected_a.float().mean(1)
    assert kept[0].item() == 1.0, "the ramp starts with every pair"
    assert kept[2].item() == pytest.approx(0.75, abs=0.05)


def test_reference_scores_follow_relabelled_pairs(tokenizer, pairs, sft_policy):
    config = dpo_config()
    scores = ReferenceScores(sft_policy, tokenizer, pairs, config)
    flipped = flip_labels(pairs, 0.25, seed=0)
    table = scores.lookup(flipped)
    swapped = np.array(flipped["is_flipped"])
    original = scores.lookup(pairs)
    torch.testing.assert_close(table[swapped], original[swapped].flip(1))
    torch.testing.assert_close(table[~swapped], original[~swapped])
    with pytest.raises(ValueError, match="no reference log-prob"):
        scores.lookup(generate_preference_pairs(WorldConfig(n_pairs=2, seed=9)))


# ---------------------------------------------------------------- on-policy pairs, noise, relabelling
def test_on_policy_pairs_are_ordered_by_the_judge_and_flips_nest(tokenizer, sft_policy):
    prompts = sample_prompts(32, seed=3)
    # The tiny policy writes no sentence the judge knows, so only length (which the
    # thorough group weighs) tells its answers apart.
    data = on_policy_pairs(sft_policy, tokenizer, prompts, group="thorough", max_new_tokens=24, seed=0)
    assert 0 < len(data) <= 32
    assert (np.array(data["gold_chosen"]) > np.array(data["gold_rejected"])).all()
    np.testing.assert_allclose(gold_rewards(data["prompt"], data["chosen"], group="thorough"), data["gold_chosen"],
                               rtol=1e-6)
    assert not any(data["is_flipped"])
    low, high = flip_labels(data, 0.2, seed=1), flip_labels(data, 0.4, seed=1)
    assert sum(high["is_flipped"]) == round(0.4 * len(data))
    assert set(np.flatnonzero(low["is_flipped"])) <= set(np.flatnonzero(high["is_flipped"])), "20% flips are among the 40%"
    repaired = relabel_pairs(high, lambda p, r: gold_rewards(p, r, group="thorough"))
    assert not any(repaired["is_flipped"]) and list(repaired["chosen"]) == list(data["chosen"])
    with pytest.raises(ValueError, match="rate must be in"):
        flip_labels(data, 0.5)


# ---------------------------------------------------------------- evaluation and uncertainty
def test_policy_evaluation_and_comparison(tokenizer, sft_policy):
    prompts = sample_prompts(40, seed=5)
    result = evaluate_policy(sft_policy, tokenizer, prompts, reference=sft_policy, max_new_tokens=24, seed=0)
    assert len(result.frame) == 40
    assert result.kl().mean == pytest.approx(0.0, abs=1e-4), "KL of a policy to itself is 0"
    np.testing.assert_allclose(result.gold, gold_rewards(prompts["prompt"], result.frame["response"]))
    same = compare_policies(result, result)
    assert same.gold_gain.mean == 0 and same.win_rate.mean == 0.5 and not same.gold_gain.excludes_zero
    better_frame = result.frame.copy()
    better_frame["gold"] = better_frame["gold"] + np.linspace(0.0, 0.4, len(better_frame))
    better = compare_policies(PolicyEvaluation(better_frame), result)
    expected = policy_difference(better_frame["gold"], result.gold)  # the course's one standard: a paired t interval
    assert (better.gold_gain.low, better.gold_gain.high) == pytest.approx((expected.low, expected.high))
    assert better.gold_gain.excludes_zero and better.win_rate.mean == pytest.approx(39.5 / 40)
    rates = result.refusal_rates()
    assert set(rates) == {"harmful", "harmless"}
    summary = result.summary()
    assert summary.loc["all", "n"] == 40 and "gold_se" in summary
    other = evaluate_policy(sft_policy, tokenizer, sample_prompts(40, seed=6), max_new_tokens=24)
    with pytest.raises(ValueError, match="same prompts"):
        compare_policies(result, other)
    with pytest.raises(ValueError, match="plain sampling"):
        evaluate_policy(sft_policy, tokenizer, prompts, reference=sft_policy, greedy=True)


def test_uncertainty_estimates():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    estimate = mean_estimate(values)
    assert estimate.se == pytest.approx(values.std(ddof=1) / 2)
    assert estimate.high - estimate.mean == pytest.approx(3.182 * estimate.se, rel=1e-3), "Student t with 3 dof"
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    shifted = paired_bootstrap(base + 0.3 + rng.normal(scale=0.1, size=400), base, seed=0)
    assert shifted.low < 0.3 < shifted.high and shifted.excludes_zero and shifted.verdict() == "difference is positive"
    assert not paired_bootstrap(base + rng.normal(scale=0.1, size=400), base).excludes_zero
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(base, base[:10])
    with pytest.raises(ValueError, match="finite"):
        mean_estimate([1.0, float("nan")])
