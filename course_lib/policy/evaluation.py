"""Judge what a policy writes: gold reward per category, refusals, length, KL, wins against a baseline.

The world's gold judge (:func:`course_lib.world.gold_reward`) scores any text, so a
policy is evaluated the way a person would use it: it answers fresh prompts and the
answers are read. :func:`evaluate_policy` samples one answer per prompt (temperature
1 by default: the distribution the KL-regularised objective is about) and records,
per prompt, the gold reward, whether the answer refuses, its token length and, given
the reference policy, the log-ratio ``log pi(y|x) - log pi_ref(y|x)`` of the sampled
answer, whose mean is an unbiased estimate of ``KL(pi || pi_ref)``.
:func:`compare_policies` pairs two evaluations on the same prompts: the mean gold
gain with the course's policy interval (:func:`~course_lib.engine.uncertainty.policy_difference`,
here the paired t interval over prompts of one seed), and the win rate (ties count half).

Defined in Chapter 07.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.uncertainty import Estimate, mean_estimate, policy_difference
from ..world import gold_attributes, gold_rewards, parse_prompt
from .logprobs import score_sequences
from .sampling import generate
from .sequences import Sequences


@dataclass
class PolicyEvaluation:
    """One policy's answers to a prompt set, one row per prompt.

    ``frame`` columns: ``prompt``, ``category``, ``harmful``, ``response``, ``gold``,
    ``refused``, ``tokens``, ``finished`` (ended with the end token) and, when a
    reference was given, ``log_ratio``.
    """

    frame: pd.DataFrame

    @property
    def gold(self) -> np.ndarray:
        return self.frame["gold"].to_numpy()

    def mean_gold(self) -> Estimate:
        return mean_estimate(self.gold, "mean_gold")

    def kl(self) -> Estimate:
        """``KL(pi || pi_ref)`` per answer (nats), estimated by the mean sampled log-ratio."""
        if "log_ratio" not in self.frame:
            raise ValueError("kl: this evaluation was made without a reference policy (evaluate_policy(reference=...))")
        return mean_estimate(self.frame["log_ratio"], "kl")

    def refusal_rates(self) -> dict[str, float]:
        """Share of answers that refuse, on harmful prompts (should be 1) and on harmless safety prompts (should be 0)."""
        safety = self.frame[self.frame["category"] == "safety"]
        return {"harmful": float(safety.loc[safety["harmful"], "refused"].mean()),
                "harmless": float(safety.loc[~safety["harmful"], "refused"].mean())}

    def summary(self) -> pd.DataFrame:
        """Per category and overall: mean gold ± SE, mean answer tokens, share of answers that ended."""
        rows = {}
        for name, part in [*self.frame.groupby("category", sort=False), ("all", self.frame)]:
            estimate = mean_estimate(part["gold"], "summary")
            rows[name] = {"gold": estimate.mean, "gold_se": estimate.se, "tokens": part["tokens"].mean(),
                          "finished": part["finished"].mean(), "n": len(part)}
        return pd.DataFrame(rows).T


def evaluate_policy(model, tokenizer, prompts, *, reference=None, max_new_tokens: int = 96, temperature: float = 1.0,
                    greedy: bool = False, batch_size: int = 64, seed: int = 0, precision: str = "fp32",
                    progress: bool = False) -> PolicyEvaluation:
    """Answer every prompt of ``prompts`` (a Dataset or dict with ``prompt`` and ``category``) once and judge it.

    ``reference``: a policy whose log-probs of the same answers give the KL estimate;
    it needs plain sampling (``temperature=1``, not greedy), else the answers do not
    come from ``pi`` and the mean log-ratio is not ``KL(pi || pi_ref)``. Each model runs
    where it is.

    Defined in Chapter 07.
    """
    if reference is not None and (greedy or temperature != 1.0):
        raise ValueError("evaluate_policy: the KL to the reference needs plain sampling (temperature=1, greedy=False)")
    texts, categories = list(prompts["prompt"]), list(prompts["category"])
    completions = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, temperature=temperature,
                           greedy=greedy, batch_size=batch_size, seed=seed, precision=precision,
                           progress=progress)
    attributes = [gold_attributes(p, r) for p, r in zip(texts, completions.texts)]
    frame = pd.DataFrame({
        "prompt": texts,
        "category": categories,
        "harmful": [parse_prompt(p).harmful for p in texts],
        "response": completions.texts,
        "gold": gold_rewards(texts, completions.texts),
        "refused": [a["safety"] == 1.0 or a["safety"] == -0.5 for a in attributes],
        "tokens": completions.lengths,
        "finished": completions.finished,
    })
    if reference is not None:
        policy_logps = np.array([sum(lp) for lp in completions.logprobs])
        sequences = Sequences([tokenizer.prompt_ids(p) for p in texts], completions.token_ids, tokenizer.pad_id,
                              max_length=reference.config.n_positions, name="evaluated answers")
        reference_logps = score_sequences(reference, sequences, batch_size=batch_size, precision=precision).numpy()
        frame["log_ratio"] = policy_logps - reference_logps
    return PolicyEvaluation(frame)


@dataclass
class PolicyComparison:
    """``policy`` against ``baseline`` on the same prompts: gold gain and win rate, each with its interval."""

    gold_gain: Estimate
    win_rate: Estimate

    def __str__(self) -> str:
        return f"gold gain {self.gold_gain}; win rate {self.win_rate.mean:.3f} ± {self.win_rate.se:.3f}"


def compare_policies(policy: PolicyEvaluation, baseline: PolicyEvaluation, *,
                     confidence: float = 0.95) -> PolicyComparison:
    """Paired comparison on the same prompts: mean gold gain and win rate (ties count 1/2).

    The gain's interval is :func:`~course_lib.engine.uncertainty.policy_difference` on one
    seed: a paired t interval over prompts, the same standard as every policy comparison
    in Chapters 07-09 (for several seeds, pass ``(seeds, prompts)`` arrays of gold to
    ``policy_difference`` directly). ``confidence``: as there, e.g. ``1 - 0.05 / k`` for
    ``k`` comparisons read together.

    Defined in Chapter 07.
    """
    if list(policy.frame["prompt"]) != list(baseline.frame["prompt"]):
        raise ValueError("compare_policies: the two evaluations must answer the same prompts in the same order")
    gain = policy_difference(policy.gold, baseline.gold, confidence=confidence, name="compare_policies")
    outcomes = (policy.gold > baseline.gold) + 0.5 * (policy.gold == baseline.gold)
    return PolicyComparison(gain, mean_estimate(outcomes, "win_rate"))
