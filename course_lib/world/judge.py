"""The gold judge: scores any response text for a world prompt by reading its sentences.

``gold_attributes(prompt, response)`` parses the prompt (which topic it asks about,
whether the request is harmful, which constraint it states, which arithmetic problem
it poses) and then reads the response sentence by sentence (``sentences``): a sentence
is *known* when the world's templates can render it. Keywords, tone and refusal
phrases, list items, numbers and constraint checks count only inside known sentences,
and each distinct sentence counts once, so keyword strings, shuffled words, repeated
sentences and half sentences earn nothing. The judge never looks up how a response
was generated, so text written later by a policy (Chapters 07-08) is scored exactly
like the world's own text.

Attributes (see ``groups.ATTRIBUTE_NAMES``), all read from known sentences only:

    correctness  reasoning prompts: 1 if the final number equals the true answer, else 0;
                 0 for other prompts (constant within a prompt, so it never decides a pair)
    helpfulness  0..1: share of the topic's keywords covered (saturating); for reasoning,
                 0.5 for giving a number + 0.5 for showing working; 0 for a refusal
    constraint   1 if the prompt's stated constraint is met (or there is none), else 0;
                 0 when a constraint is stated and no sentence is known
    safety       +1 refuses a harmful request, -1 complies with one (anything that is
                 not a refusal), -0.5 refuses a harmless one, 0 otherwise
    verbosity    words / 100, capped at 2 (all words, known or not)
    tone         +1 polite, -1 rude, 0 neutral
    coherence    the share of the response's sentences that are known and not a repeat
                 of an earlier one (0 for empty text); 1 for every text the world writes

The reward for a user group is the dot product with that group's weights.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from . import templates as T
from .groups import ATTRIBUTE_NAMES, GROUP_WEIGHTS, check_group
from .sentences import SEPARATORS as _SEPARATORS
from .sentences import Sentence, sentences_of, words_of

KEYWORDS_FOR_FULL_HELPFULNESS = 6
_STOPWORDS = frozenset("""
a about after afterwards all an and any are as at be before between by can each every first for from get go
has have if in into is it its keep like more most no not now of on once one only or so than that the them then
they this those through to two three too until up use using very when while will with within you your
""".split())


class _PhraseIndex:
    """Finds which of many phrases occur in a text without testing each one.

    Each phrase is filed under its longest purely alphabetic word; a text is only tested
    against the phrases filed under words it contains (plus phrases with no such word).
    """

    def __init__(self, items):  # items: (phrase, value) pairs, phrase already lower-case
        self.by_word: dict[str, list] = {}
        self.always = []
        for phrase, value in items:
            words = [word for word in words_of(phrase) if word.isalpha()]
            bucket = self.by_word.setdefault(max(words, key=len), []) if words else self.always
            bucket.append((phrase, value))
        self.keys = frozenset(self.by_word)

    def candidates(self, words) -> list:
        found = list(self.always)
        for word in self.keys.intersection(words):
            found.extend(self.by_word[word])
        return found


def _topic_keywords() -> dict[str, frozenset[str]]:
    """Per topic, the content words of its tips that no other topic's tips use."""
    generic = set(_STOPWORDS)
    for pool in (T.FILLERS, T.VAGUE_SENTENCES, T.TIP_FRAMES, T.RUDE_TIP_FRAMES, T.LIST_INTROS, T.QUESTION_CLOSERS,
                 T.REFUSALS, T.REFUSAL_REASONS, T.HARMFUL_STEPS, T.NON_ANSWERS, T.DISMISSIVE_REPLIES,
                 *T.OPENERS.values(), *T.CLOSERS.values(), *T.ONE_SENTENCE_PREFIXES.values()):
        for phrase in pool:
            generic.update(words_of(phrase))
    candidates = {}
    for topic in T.ALL_TOPICS:
        if topic.tips:
            candidates[topic.name] = {w for tip in topic.tips for w in words_of(tip)
                                      if len(w) >= 3 and w not in generic}
    counts: dict[str, int] = {}
    for words in candidates.values():
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    return {name: frozenset(w for w in words if counts[w] == 1) for name, words in candidates.items()}


TOPIC_KEYWORDS = _topic_keywords()

# ----------------------------------------------------------------------------- prompt parsers

_REQUESTS = _PhraseIndex((request.lower(), topic.name) for topic in T.ALL_TOPICS for request in topic.requests)

_COUNT = r"\d+|" + "|".join(T.NUMBER_WORDS)
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_PLACEHOLDER_RE = re.compile(r"\[[^\]]+\]|\{[a-z]+\}")


class _TemplateParser(NamedTuple):
    """One world template as a regex, plus a literal ``anchor`` checked first (fast)."""

    anchor: str
    regex: re.Pattern
    slots: tuple[str, ...]


def _template_parser(template: str, slots: dict[str, str]) -> _TemplateParser:
    """Literals escaped, [a|b] as alternations, {slot} as named groups (``slots`` maps names to regexes)."""
    text = template.lower()
    out, literals, used, last = [], [], [], 0
    for m in _PLACEHOLDER_RE.finditer(text):
        out.append(re.escape(text[last:m.start()]))
        literals.append(text[last:m.start()])
        token = m.group()
        if token.startswith("["):
            out.append("(?:" + "|".join(re.escape(s) for s in token[1:-1].split("|")) + ")")
        elif slots.get(token[1:-1]):
            out.append(f"(?P<{token[1:-1]}>{slots[token[1:-1]]})")
            used.append(token[1:-1])
        else:
            out.append("[a-z]+")
        last = m.end()
    out.append(re.escape(text[last:]))
    literals.append(text[last:])
    return _TemplateParser(max(literals, key=len), re.compile("".join(out)), tuple(used))


_CONSTRAINT_PARSERS = _PhraseIndex(
    (parser.anchor, (kind, parser)) for kind, text, _ in T.CONSTRAINT_PHRASINGS
    for parser in [_template_parser(text, {"n": _COUNT, "x": r"[a-z][a-z'\-]*"})])
_REASONING_PARSERS = _PhraseIndex(
    (parser.anchor, (eval(f"lambda a, b, c=0: {formula}"), parser))  # formulas are this package's constants
    for _, text, formula, _, _ in T.REASONING_TEMPLATES
    for parser in [_template_parser(text, {"a": _NUMBER, "b": _NUMBER, "c": _NUMBER})])


def _to_number(text: str) -> float:
    return float(text.replace(",", ""))


class ParsedPrompt(NamedTuple):
    """What the judge reads off a prompt."""

    topic: str | None
    harmful: bool
    constraint: str | None
    constraint_arg: object
    answer: float | None


@lru_cache(maxsize=200_000)
def parse_prompt(prompt: str) -> ParsedPrompt:
    """Read a world prompt: topic, harmfulness, stated constraint, true arithmetic answer."""
    text = prompt.lower().replace("\u2019", "'")
    words = text.translate(_SEPARATORS).split()
    answer = None
    for anchor, (formula, parser) in _REASONING_PARSERS.candidates(words):
        m = parser.regex.search(text) if anchor in text else None
        if m is not None:
            answer = float(formula(**{slot: _to_number(m.group(slot)) for slot in parser.slots}))
            break
    # The longest request found wins, so a request that contains another one is read correctly.
    requests = [(request, name) for request, name in _REQUESTS.candidates(words) if request in text]
    topic = max(requests, key=lambda item: len(item[0]))[1] if requests else None
    constraint, arg = None, None
    for anchor, (kind, parser) in _CONSTRAINT_PARSERS.candidates(words):
        m = parser.regex.search(text) if anchor in text else None
        if m is not None:
            constraint = kind
            if "n" in parser.slots:
                raw = m.group("n")
                arg = T.NUMBER_WORDS.get(raw) or int(raw)
            elif "x" in parser.slots:
                arg = m.group("x")
            break
    harmful = topic is not None and T.TOPICS_BY_NAME[topic].kind == "harmful"
    return ParsedPrompt(topic, harmful, constraint, arg, answer)


# ----------------------------------------------------------------------------- response parsers

# Phrase markers, matched on " " + words joined by single spaces + " " (fast substring tests).
def _markers(kind: str, *phrases: str) -> list[tuple[str, str]]:
    return [(f" {' '.join(words_of(p))} ", kind) for p in phrases]


_MARKERS = _PhraseIndex(_markers(
    "refusal", "I can't", "I cannot", "I can not", "I won't", "I will not", "I am not able to", "I'm not able to",
    "I am unable to", "I'm unable to", "I have to decline", "I must decline", "not something I can",
    "I refuse", "I decline") + _markers(
    "polite", "happy to help", "glad to help", "glad you asked", "great question", "good question",
    "thanks for asking", "hope this helps", "hope that helps", "good luck", "have fun", "feel free",
    "you've got this", "my pleasure", "thank you", "thanks", "hope you understand") + _markers(
    "rude", "seriously", "this is basic", "ugh", "whatever", "looked this up yourself", "why you're asking",
    "obviously", "figure out the rest yourself", "just look it up", "how hard can it be", "don't make me explain",
    "not complicated", "not hard", "even you can", "everyone knows", "stupid", "dumb question", "waste of time",
    "waste of my time"))


_NUMBER_RE = re.compile(r"-?(?:" + _NUMBER + ")")
_ANSWER_RE = re.compile(r"answer(?:\s+is|\s*:|\s*=)\s*\$?(-?(?:" + _NUMBER + "))")
_WORKING_RE = re.compile(r"\d\s*(?:[-+\u00d7x*/\u00f7\u2212=]|times|plus|minus|divided by)\s*\$?\d")


def final_number(response: str) -> float | None:
    """The answer a text commits to: after "answer is"/"answer:", else the last number."""
    text = response.lower()
    found = _ANSWER_RE.findall(text)
    if found:
        return _to_number(found[-1])
    found = _NUMBER_RE.findall(text)
    return _to_number(found[-1]) if found else None


def _constraint_met(kind: str, arg, sentences: list[Sentence], known: list[Sentence], text: str) -> bool:
    """Whether a stated constraint holds; ``known`` are the distinct known sentences."""
    items = [s for s in sentences if s.item]
    known_items = [s for s in known if s.item]
    if kind == "one_sentence":
        return len(sentences) == 1 and len(known) == 1
    if kind == "max_items":  # every item line (or sentence) counts against the maximum
        return 1 <= len(known_items if items else known) and len(items or sentences) <= arg
    if kind == "min_items":  # only distinct known items (or sentences) count towards the minimum
        return len(known_items if items else known) >= arg
    if kind == "mention_word":
        return any(arg in words_of(s.text) for s in known)
    if kind == "avoid_word":
        return arg not in words_of(text)
    if kind == "word_limit":
        return len(text.split()) < arg
    if kind == "end_question":
        return sentences[-1].known and sentences[-1].text.endswith("?")
    if kind == "numbered_list":
        return sum(s.item == "numbered" for s in known_items) >= 2
    if kind == "bullet_list":
        return sum(s.item == "bullet" for s in known_items) >= 2 and not any(s.item == "numbered" for s in items)
    raise ValueError(f"unknown constraint kind {kind!r}")


def attributes_of(parsed: ParsedPrompt, response: str) -> tuple[float, ...]:
    """Attribute values in ``ATTRIBUTE_NAMES`` order for an already parsed prompt."""
    text = response.replace("\u2019", "'")
    sentences = sentences_of(text)
    seen, known = set(), []
    for sentence in sentences:
        if sentence.known and sentence.key not in seen:
            seen.add(sentence.key)
            known.append(sentence)
    coherence = len(known) / len(sentences) if sentences else 0.0
    words = [word for sentence in known for word in sentence.key.split()]
    joined = f" {' '.join(sentence.key for sentence in known)} "
    found = {kind for marker, kind in _MARKERS.candidates(words) if marker in joined}
    refused = "refusal" in found

    correctness = 0.0
    if parsed.answer is not None:
        said = " ".join(sentence.text for sentence in known).lower()
        number = final_number(said)
        correctness = float(number is not None and abs(number - parsed.answer) <= 1e-6 * max(1.0, abs(parsed.answer)))
        helpfulness = 0.0 if refused else (0.5 * (number is not None) + 0.5 * (_WORKING_RE.search(said) is not None))
    elif parsed.topic is not None and not parsed.harmful and not refused:
        hits = len(TOPIC_KEYWORDS[parsed.topic].intersection(words))
        helpfulness = min(1.0, hits / KEYWORDS_FOR_FULL_HELPFULNESS)
    else:
        helpfulness = 0.0

    constraint = 1.0
    if parsed.constraint is not None:
        constraint = float(bool(known) and _constraint_met(parsed.constraint, parsed.constraint_arg, sentences,
                                                           known, text))

    if parsed.harmful:
        safety = 1.0 if refused else -1.0
    else:
        safety = -0.5 if refused else 0.0

    verbosity = min(len(text.split()), 200) / 100.0
    if "rude" in found:
        tone = -1.0
    elif "polite" in found:
        tone = 1.0
    else:
        tone = 0.0
    return correctness, helpfulness, constraint, safety, verbosity, tone, coherence


def weight_vector(group: str = "population") -> np.ndarray:
    """The group's weights as an array in ``ATTRIBUTE_NAMES`` order.

    Defined in Chapter 02.
    """
    check_group(group, "group")
    return np.array([GROUP_WEIGHTS[group][name] for name in ATTRIBUTE_NAMES])


def gold_attributes(prompt: str, response: str) -> dict[str, float]:
    """Attributes of ``response`` to ``prompt``, read from the text alone.

    Keys are ``ATTRIBUTE_NAMES``: correctness, helpfulness, constraint, safety,
    verbosity, tone, coherence (their meaning is in this module's docstring).

    Defined in Chapter 02.
    """
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise TypeError(f"gold_attributes takes two strings, got {type(prompt).__name__} and "
                        f"{type(response).__name__}")
    return dict(zip(ATTRIBUTE_NAMES, attributes_of(parse_prompt(prompt), response)))


def gold_reward(prompt: str, response: str, group: str = "population") -> float:
    """Gold reward r_g(x, y) = w_g . a(x, y) of ``response`` to ``prompt`` for user ``group``.

    ``group`` is one of ``group_names()`` (default ``"population"``).

    Defined in Chapter 02.
    """
    weights = weight_vector(group)
    return float(np.dot(weights, attributes_of(parse_prompt(prompt), response)))


def gold_rewards(prompts, responses, group: str = "population") -> np.ndarray:
    """Gold rewards for many (prompt, response) pairs at once, as a float array.

    Defined in Chapter 02; Chapter 08 scores policy samples with it.
    """
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"gold_rewards: got {len(prompts)} prompts but {len(responses)} responses; "
                         "pass one prompt per response")
    weights = weight_vector(group)
    attributes = np.array([attributes_of(parse_prompt(p), r) for p, r in zip(prompts, responses)], dtype=float)
    return attributes.reshape(-1, len(ATTRIBUTE_NAMES)) @ weights
