"""User groups: who is judging, as a weight vector over the gold attributes.

The gold reward of a response for group g is r_g(x, y) = w_g . a(x, y), where a(x, y)
are the attributes the gold judge reads off the text (``judge.gold_attributes``).
Every group agrees on the things that matter most (a correct answer, a refusal of a
harmful request, following a stated constraint); they disagree on style, so some pairs
are ranked differently by different groups:

    concise    dislikes length
    thorough   likes detail and length
    friendly   cares most about tone

``population`` is the default annotator, the one MiniRewardBench uses.
"""

from __future__ import annotations

import random

ATTRIBUTE_NAMES = ("correctness", "helpfulness", "constraint", "safety", "verbosity", "tone", "coherence")

# Coherence (the share of a response's sentences that are known world sentences, each
# counted once) has the same weight, 1.0, for every group: nobody wants word salad or
# the same sentence six times, so the groups agree on it as they do on substance. The
# world's own text always has coherence 1, so the weight moves every world answer's
# gold by the same +1.0 and no world pair's ordering or margin; it separates answers
# from text that only looks like one (a policy's half sentences, repeats, keyword lists).
GROUP_WEIGHTS: dict[str, dict[str, float]] = {
    "population": {"correctness": 3.0, "helpfulness": 2.0, "constraint": 2.5, "safety": 3.0,
                   "verbosity": 0.0, "tone": 0.5, "coherence": 1.0},
    "concise": {"correctness": 3.0, "helpfulness": 2.0, "constraint": 2.5, "safety": 3.0,
                "verbosity": -1.5, "tone": 0.3, "coherence": 1.0},
    "thorough": {"correctness": 3.0, "helpfulness": 3.0, "constraint": 2.5, "safety": 3.0,
                 "verbosity": 1.0, "tone": 0.2, "coherence": 1.0},
    "friendly": {"correctness": 3.0, "helpfulness": 1.5, "constraint": 2.5, "safety": 3.0,
                 "verbosity": 0.2, "tone": 2.0, "coherence": 1.0},
}


def group_names() -> list[str]:
    """Names of the user groups, ``population`` first.

    Defined in Chapter 02; the groups are used in Chapter 06.
    """
    return list(GROUP_WEIGHTS)


def check_group(name: str, where: str = "user_group") -> None:
    """Raise a ValueError naming the known groups when ``name`` is not one of them."""
    if name not in GROUP_WEIGHTS:
        raise ValueError(f"{where} must be one of {group_names()}, got {name!r}")


# Three answers to one prompt on which concise, thorough and friendly, voting by
# majority, prefer A over B, B over C and C over A: a Condorcet cycle, so no single
# ranking (and no single Bradley-Terry reward) agrees with the mixture on all three.
#   A short, polite, thin      concise: C > A > B
#   B long, plain, complete    thorough: B > C > A
#   C short, rude, complete    friendly: A > B > C
INTRANSITIVE_PROMPT = "How do I start running as a beginner?"
INTRANSITIVE_RESPONSES = {
    "A": "Happy to help! Run at a conversational pace. Good luck!",
    "B": ("Alternate one minute of jogging with two minutes of walking. Buy shoes fitted at a running store. "
          "Run at a conversational pace. Add no more than ten percent mileage per week. Schedule a rest day "
          "between runs. This makes a bigger difference than most people expect. Small, consistent steps "
          "usually beat big changes. Give it a week or two and you'll notice the change. Keep notes on what "
          "works so you can repeat it. Don't worry if the first attempt isn't perfect. Patience matters more "
          "than any single trick."),
    "C": ("Seriously? This is basic stuff. Alternate one minute of jogging with two minutes of walking. "
          "Run at a conversational pace. Buy shoes fitted at a running store."),
}


def intransitive_example() -> tuple[str, dict[str, str], tuple[str, str, str]]:
    """A prompt, three responses and three groups whose majority vote is cyclic.

    Returns ``(prompt, {"A": ..., "B": ..., "C": ...}, ("concise", "thorough",
    "friendly"))``. Under the gold judge the majority of the three groups prefers A to
    B, B to C and C to A (the tests check this).

    Defined in Chapter 02; used in Chapter 06.
    """
    return INTRANSITIVE_PROMPT, dict(INTRANSITIVE_RESPONSES), ("concise", "thorough", "friendly")


# What users of each group say about themselves when asked ("Tell us how you like your
# answers"). A router can read this context; the labels never depend on it. The first
# four of each group are the "train" users' words, the last two are held out ("eval")
# so that new users can describe themselves in words the router never saw.
USER_CONTEXTS: dict[str, tuple[str, ...]] = {
    "population": ("I ask about all sorts of everyday things.",
                   "Just a regular person looking for good answers.",
                   "I use this for questions that come up during my day.",
                   "Nothing special about me, I want answers that are right.",
                   "I'm an ordinary user with everyday questions.",
                   "Whatever works best, I have no special wishes."),
    "concise": ("I'm busy. Keep it short and to the point.",
                "Brief answers please, I hate reading long texts.",
                "Skip the fluff and give me the short version.",
                "Short and sweet: fewer words are better for me.",
                "I only have a minute, so be brief.",
                "Please answer in as few words as possible."),
    "thorough": ("I like detailed answers that cover everything.",
                 "Give me all the steps and the reasons behind them.",
                 "The more complete the explanation, the happier I am.",
                 "I want depth: long, thorough, careful answers.",
                 "Explain it fully, I enjoy reading every detail.",
                 "Leave nothing out; a complete answer is worth the length."),
    "friendly": ("Please be kind, I get nervous asking questions.",
                 "A warm and friendly tone matters a lot to me.",
                 "I appreciate answers that are polite and encouraging.",
                 "Be nice to me, a cheerful reply makes my day.",
                 "Gentle, supportive answers help me the most.",
                 "I care about how things are said, so please be warm."),
}
_TRAIN_CONTEXTS = 4


def user_profiles(n_per_group: int, groups=None, split: str = "train", seed: int = 0) -> list[dict]:
    """Users with a group and a short self-description: the context a router can read.

    Returns ``n_per_group`` users for each name in ``groups`` (default: all groups),
    each a dict ``{"user_id", "user_group", "user_context"}``. A user's context is
    one of the group's ``USER_CONTEXTS``: one of the first four for ``split="train"``,
    one of the last two (words a model trained on train users never saw) for
    ``split="eval"``. User ids are ``"{split}-{group}-{i}"``; the same arguments
    always give the same users.

    Defined in Chapter 06.
    """
    if not isinstance(n_per_group, int) or n_per_group < 1:
        raise ValueError(f"user_profiles: n_per_group must be a positive integer, got {n_per_group!r}")
    if split not in ("train", "eval"):
        raise ValueError(f"user_profiles: split must be 'train' or 'eval', got {split!r}")
    groups = group_names() if groups is None else list(groups)
    users = []
    for group in groups:
        check_group(group, "user_profiles: groups")
        contexts = USER_CONTEXTS[group]
        pool = contexts[:_TRAIN_CONTEXTS] if split == "train" else contexts[_TRAIN_CONTEXTS:]
        rng = random.Random(f"{seed}-{split}-{group}")
        for i in range(n_per_group):
            context = pool[i % len(pool)] if i < len(pool) else rng.choice(pool)
            users.append({"user_id": f"{split}-{group}-{i}", "user_group": group, "user_context": context})
    return users
