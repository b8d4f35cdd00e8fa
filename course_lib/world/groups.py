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

ATTRIBUTE_NAMES = ("correctness", "helpfulness", "constraint", "safety", "verbosity", "tone")

GROUP_WEIGHTS: dict[str, dict[str, float]] = {
    "population": {"correctness": 3.0, "helpfulness": 2.0, "constraint": 2.5, "safety": 3.0,
                   "verbosity": 0.0, "tone": 0.5},
    "concise": {"correctness": 3.0, "helpfulness": 2.0, "constraint": 2.5, "safety": 3.0,
                "verbosity": -1.5, "tone": 0.3},
    "thorough": {"correctness": 3.0, "helpfulness": 3.0, "constraint": 2.5, "safety": 3.0,
                 "verbosity": 1.0, "tone": 0.2},
    "friendly": {"correctness": 3.0, "helpfulness": 1.5, "constraint": 2.5, "safety": 3.0,
                 "verbosity": 0.2, "tone": 2.0},
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
