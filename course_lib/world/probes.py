"""Text that is not an answer: probes of what the gold judge can and cannot be fooled by.

A policy optimised against a judge finds whatever the judge rewards, answer or not. The
course's judge reads sentences (``judge``), so these families of text, each made from a
real world answer, must score below the answer they were made from:

    keyword_string     the prompt topic's keywords strung together, plus "thanks"
    shuffled_words     the answer's words in random order
    repeated_sentence  the answer's first sentence, six times
    cut_mid_sentence   the answer cut in the middle of its last sentence
    other_topic        the answer to a prompt on another topic (same category)

Each is what a policy that learned words but not sentences writes. Chapter 02 shows
them to learners; the tests check every family on a stream of pairs no notebook uses.

Defined in Chapter 02.
"""

from __future__ import annotations

import random

from .judge import TOPIC_KEYWORDS, parse_prompt, sentences_of

FAMILIES = ("keyword_string", "shuffled_words", "repeated_sentence", "cut_mid_sentence", "other_topic")
# Families that need a prompt whose topic has keywords (chat, chat_hard, harmless "risky" requests).
TOPICAL_FAMILIES = ("keyword_string", "other_topic")


def not_an_answer(family: str, prompt: str, answer: str, rng: random.Random, other_answer: str = "") -> str | None:
    """``answer`` turned into text of ``family`` (see ``FAMILIES``), or None where the family does not apply.

    ``other_answer`` is the answer to another topic's prompt (used by ``other_topic``).
    Random choices (word order, where to cut) come from ``rng``.

    Defined in Chapter 02.
    """
    if family not in FAMILIES:
        raise ValueError(f"not_an_answer: family must be one of {list(FAMILIES)}, got {family!r}")
    topic = parse_prompt(prompt).topic
    topical = topic in TOPIC_KEYWORDS
    if family in TOPICAL_FAMILIES and not topical:
        return None
    if family == "keyword_string":
        keywords = sorted(TOPIC_KEYWORDS[topic])
        rng.shuffle(keywords)
        return " ".join(keywords) + " thanks"
    if family == "shuffled_words":
        words = answer.split()
        if len(words) < 3:
            return None
        shuffled = list(words)
        while shuffled == words:
            rng.shuffle(shuffled)
        return " ".join(shuffled)
    if family == "repeated_sentence":
        sentences = sentences_of(answer)
        return " ".join([sentences[0].text] * 6) if sentences else None
    if family == "cut_mid_sentence":
        text = answer.rstrip()
        sentences = sentences_of(text)
        last = sentences[-1].text if sentences else ""
        start = text.rfind(last)
        if len(last) < 4 or start < 0:
            return None
        # Everything before the last sentence as written (lines and list markers kept), then
        # the last sentence stopped somewhere inside it, as a length limit stops a sampler.
        return text[: start + rng.randint(2, len(last) - 2)]
    return other_answer or None


def family_examples(pairs, seed: int = 0) -> dict[str, list[tuple[str, str, str]]]:
    """Per family, ``(prompt, answer, text)`` triples made from the ``chosen`` answers of ``pairs``.

    ``pairs`` is a dataset (or dict of columns) with ``prompt``, ``chosen`` and
    ``category``; ``other_topic`` takes the chosen answer of a random pair of the same
    category on another topic. The same ``pairs`` and ``seed`` give the same texts.

    Defined in Chapter 02.
    """
    rng = random.Random(seed)
    prompts, chosen, categories = list(pairs["prompt"]), list(pairs["chosen"]), list(pairs["category"])
    topics = [parse_prompt(prompt).topic for prompt in prompts]
    by_category: dict[str, list[int]] = {}
    for i, category in enumerate(categories):
        by_category.setdefault(category, []).append(i)
    out = {family: [] for family in FAMILIES}
    for i, (prompt, answer) in enumerate(zip(prompts, chosen)):
        peers = by_category[categories[i]]
        others = (j for j in (rng.choice(peers) for _ in range(20)) if topics[j] != topics[i])
        j = next(others, None)
        other = chosen[j] if j is not None else ""
        for family in FAMILIES:
            text = not_an_answer(family, prompt, answer, rng, other_answer=other)
            if text is not None:
                out[family].append((prompt, answer, text))
    return out
