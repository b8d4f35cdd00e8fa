"""Tests of preference accuracy and the RewardBench-style scores (Chapter 02)."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from course_lib.reward.benchmark import (
    REWARD_BENCH_EXAMPLE_COUNTS,
    REWARD_BENCH_SECTIONS,
    evaluate_reward_fn,
    mini_reward_bench_score,
    pair_outcomes,
    preference_accuracy,
    reward_bench_score,
    score_pairs,
)

CHOSEN = [2.0, 1.0, 0.0, 3.0, 1.0]
REJECTED = [1.0, 1.0, 1.0, 0.0, 2.0]  # outcomes: right, tie, wrong, right, wrong
CATEGORIES = ["a", "a", "b", "b", "b"]


@pytest.mark.parametrize("convert", [list, np.array, torch.tensor, lambda x: torch.tensor(x, dtype=torch.bfloat16)])
def test_accuracy_per_category_with_ties_as_half(convert):
    report = preference_accuracy(convert(CHOSEN), convert(REJECTED), CATEGORIES)
    assert report.per_category == {"a": pytest.approx(0.75), "b": pytest.approx(1 / 3)}
    assert report.table["n_pairs"].to_dict() == {"a": 2, "b": 3}
    assert report.overall == pytest.approx(2.5 / 5)
    assert report.n_pairs == 5


def test_tie_value_zero_reproduces_rewardbench_convention():
    assert pair_outcomes(CHOSEN, REJECTED, tie_value=0.0).tolist() == [1, 0, 0, 1, 0]
    report = preference_accuracy(CHOSEN, REJECTED, tie_value=0.0)
    assert report.per_category == {"all": pytest.approx(0.4)}


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"same length, got shapes \(5,\) and \(4,\)"):
        preference_accuracy(CHOSEN, REJECTED[:4])
    with pytest.raises(ValueError, match="categories has 2 entries but there are 5 pairs"):
        preference_accuracy(CHOSEN, REJECTED, ["a", "b"])
    with pytest.raises(ValueError, match="rewards contain NaN"):
        preference_accuracy([float("nan")], [0.0])


def test_mini_reward_bench_averages_categories_not_pairs():
    categories = ["chat", "chat", "chat_hard", "safety", "safety", "safety", "safety", "reasoning"]
    chosen = [1, 1, 0, 1, 1, 0, 0, 2]
    rejected = [0, 0, 1, 0, 0, 1, 1, 2]
    report = mini_reward_bench_score(chosen, rejected, categories)
    assert report.sections == {"chat": 1.0, "chat_hard": 0.0, "safety": 0.5, "reasoning": 0.5}
    assert report.score == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert report.subsets.overall == pytest.approx(4.5 / 8)  # pooled accuracy differs
    assert report.to_frame().loc["score", "score"] == pytest.approx(0.5)


def _rewardbench_example():
    """(subset, correct?) pairs; chosen reward 1, rejected 0 if correct else the reverse."""
    outcomes = {
        "alpacaeval-easy": [1, 1],
        "mt-bench-easy": [0],
        "llmbar-natural": [1, 0],
        "xstest-should-refuse": [1],
        "donotanswer": [0],
        "math-prm": [1, 0],
        "hep-cpp": [1],
        "hep-go": [0],
        "hep-java": [1],
        "hep-js": [1],
        "hep-python": [0],
        "hep-rust": [1],
    }
    subsets = [s for s, results in outcomes.items() for _ in results]
    correct = np.array([c for results in outcomes.values() for c in results], dtype=float)
    return correct, 1 - correct, subsets


def test_reward_bench_sections_use_rewardbench_weights():
    chosen, rejected, subsets = _rewardbench_example()
    report = reward_bench_score(chosen, rejected, subsets)
    chat = (1.0 * 100 + 0.0 * 28) / (100 + 28)  # EXAMPLE_COUNTS, not the 2 and 1 pairs here
    chat_hard = 0.5
    safety = (1.0 * 250 + 0.0 * 136) / (250 + 136)
    reasoning = (0.5 + 4 / 6) / 2  # math-prm weighs as much as the six hep-* subsets together
    assert report.sections == {
        "Chat": pytest.approx(chat),
        "Chat Hard": pytest.approx(chat_hard),
        "Safety": pytest.approx(safety),
        "Reasoning": pytest.approx(reasoning),
    }
    assert report.score == pytest.approx((chat + chat_hard + safety + reasoning) / 4)
    assert report.score == pytest.approx(0.628063, abs=1e-6)  # by hand: (0.78125 + 0.5 + 0.64767 + 0.58333) / 4
    assert report.subsets.per_category["math-prm"] == 0.5


def test_reward_bench_constants_are_consistent():
    assert sorted(REWARD_BENCH_EXAMPLE_COUNTS) == sorted(s for ss in REWARD_BENCH_SECTIONS.values() for s in ss)
    hep = [n for s, n in REWARD_BENCH_EXAMPLE_COUNTS.items() if s.startswith("hep-")]
    assert REWARD_BENCH_EXAMPLE_COUNTS["math-prm"] == sum(hep)


def test_unknown_subset_and_missing_section():
    with pytest.raises(ValueError, match=r"unknown subsets \['alpaca-easy'\]"):
        reward_bench_score([1.0], [0.0], ["alpaca-easy"])
    report = mini_reward_bench_score([1.0, 0.0], [0.0, 1.0], ["chat", "safety"])
    assert math.isnan(report.sections["reasoning"]) and math.isnan(report.score)


def test_evaluate_reward_fn_scores_in_batches():
    ds = Dataset.from_dict(
        {
            "prompt": ["p"] * 5,
            "chosen": ["long answer", "ok", "x", "four", "yes!"],
            "rejected": ["short", "no", "yy", "four", "no"],
            "category": ["chat", "chat", "safety", "reasoning", "chat_hard"],
        }
    )
    calls = []

    def length_reward(prompts, responses):
        calls.append(len(responses))
        return torch.tensor([float(len(r)) for r in responses])

    chosen, rejected = score_pairs(length_reward, ds, batch_size=2)
    assert chosen.tolist() == [11, 2, 1, 4, 4] and rejected.tolist() == [5, 2, 2, 4, 2]
    assert calls == [2, 2, 2, 2, 1, 1]
    report = evaluate_reward_fn(length_reward, ds, batch_size=2)
    assert report.per_category == {"chat": 0.75, "chat_hard": 1.0, "reasoning": 0.5, "safety": 0.0}
    mini = evaluate_reward_fn(length_reward, ds, benchmark="mini")
    assert mini.score == pytest.approx((0.75 + 1.0 + 0.5 + 0.0) / 4)
    with pytest.raises(ValueError, match="benchmark must be None, 'mini' or 'rewardbench'"):
        evaluate_reward_fn(length_reward, ds, benchmark="helm")
