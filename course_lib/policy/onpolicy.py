"""Preference pairs from the policy's own answers, labelled by a judge, and the ways labels go wrong.

DPO learns most from pairs the policy itself could have written (on-policy): two
answers sampled per prompt, the better one (by the judge: the world's gold reward, a
reward model, or a noisy annotator) becomes ``chosen``. Pairs whose two answers score
the same teach nothing and are dropped. :func:`flip_labels` simulates annotators who
pick the wrong answer at a given rate, keeping the truth in ``is_flipped``;
:func:`relabel_pairs` lets a reward model re-decide every pair (Chapter 07's
"RM-relabelling": a CRM-trained reward model cleans the labels before DPO).

Defined in Chapter 07.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from ..world import gold_rewards
from .sampling import generate


def on_policy_pairs(policy, tokenizer, prompts, *, scorer=None, group: str = "population", max_new_tokens: int = 96,
                    temperature: float = 1.0, batch_size: int = 64, seed: int = 0, precision: str = "fp32",
                    progress: bool = False) -> Dataset:
    """Two sampled answers per prompt, ordered by ``scorer(prompts, responses) -> rewards`` (default: ``group``'s gold).

    ``prompts``: a Dataset or dict with ``prompt`` and ``category``. Returns the pairs
    whose answers differ in score, with columns ``prompt``, ``category``, ``chosen``,
    ``rejected``, ``gold_chosen``, ``gold_rejected`` (the gold rewards of user group
    ``group``, kept as the truth whoever labelled) and ``is_flipped`` (False: labels
    are as the scorer decided).

    Defined in Chapter 07.
    """
    texts, categories = list(prompts["prompt"]), list(prompts["category"])
    answers = [generate(policy, tokenizer, texts, max_new_tokens=max_new_tokens, temperature=temperature,
                        batch_size=batch_size, seed=seed * 2 + k, precision=precision,
                        progress=progress).texts for k in range(2)]
    gold = [gold_rewards(texts, a, group=group) for a in answers]
    scores = gold if scorer is None else [np.asarray(scorer(texts, a), dtype=np.float64) for a in answers]
    keep = [i for i in range(len(texts)) if scores[0][i] != scores[1][i] and answers[0][i] != answers[1][i]]
    better = [0 if scores[0][i] > scores[1][i] else 1 for i in keep]  # which sample wins each kept prompt
    return Dataset.from_dict({
        "prompt": [texts[i] for i in keep],
        "category": [categories[i] for i in keep],
        "chosen": [answers[b][i] for i, b in zip(keep, better)],
        "rejected": [answers[1 - b][i] for i, b in zip(keep, better)],
        "gold_chosen": [float(gold[b][i]) for i, b in zip(keep, better)],
        "gold_rejected": [float(gold[1 - b][i]) for i, b in zip(keep, better)],
        "is_flipped": [False] * len(keep),
    })


def flip_labels(pairs: Dataset, rate: float, seed: int = 0) -> Dataset:
    """Swap chosen and rejected on a random ``rate`` share of pairs (symmetric label noise); marks them ``is_flipped``.

    The flipped rows are the first ``round(rate * n)`` of a permutation fixed by
    ``seed``, so the pairs flipped at 20% are among those flipped at 40%.

    Defined in Chapter 07.
    """
    if not 0 <= rate < 0.5:
        raise ValueError(f"flip_labels: rate must be in [0, 0.5), got {rate}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    flipped = np.zeros(len(pairs), dtype=bool)
    flipped[order[: round(rate * len(pairs))]] = True
    return _swap(pairs, flipped)


def relabel_pairs(pairs: Dataset, scorer) -> Dataset:
    """Let ``scorer(prompts, responses) -> rewards`` decide every pair: swap where it prefers the rejected answer.

    ``is_flipped`` is recomputed against the gold judge's order, so the share of wrong
    labels before and after is measured, not assumed.

    Defined in Chapter 07.
    """
    chosen = np.asarray(scorer(pairs["prompt"], pairs["chosen"]), dtype=np.float64)
    rejected = np.asarray(scorer(pairs["prompt"], pairs["rejected"]), dtype=np.float64)
    return _swap(pairs, rejected > chosen)


def _swap(pairs: Dataset, swap: np.ndarray) -> Dataset:
    columns = {name: list(pairs[name]) for name in pairs.column_names}
    for i in np.flatnonzero(swap):
        for a, b in (("chosen", "rejected"), ("gold_chosen", "gold_rejected")):
            columns[a][i], columns[b][i] = columns[b][i], columns[a][i]
    columns["is_flipped"] = [gc < gr for gc, gr in zip(columns["gold_chosen"], columns["gold_rejected"])]
    return Dataset.from_dict(columns)
