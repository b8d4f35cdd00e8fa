"""The world's language: which sentences a response is made of, and which of them the world could have written.

The gold judge (``judge``) reads a response sentence by sentence. This module does the
reading:

1. **Split** the text into lines, a line into an optional list marker ("1.", "2)", "-",
   "*", "\u2022") and sentences (a sentence ends at ".", "!" or "?" followed by space,
   and "Answer: 42" ends where its number does).
2. **Recognise** each sentence: it is *known* when it is a sentence the world's
   templates can render. Prose and list items are compared, lower-cased and with
   punctuation dropped, with every rendering of every tip frame, one-sentence form,
   opener, closer, list intro, filler, vague sentence, refusal, compliance opener and
   non-answer in ``templates`` (a set of about ten thousand sentences); arithmetic
   working and final answers ("12 \u00d7 4 = 48.", "The answer is $48.") are matched by
   their grammar, whatever the numbers. A sentence with a shuffled, missing or stray
   word is not known.

``sentences_of(text)`` returns the sentences with what was recognised; the judge counts
keywords, tone and refusal phrases, list items and constraints only inside known
sentences, each distinct sentence once.

Defined in Chapter 02.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from . import templates as T

# Words are runs of letters, digits, "+" and "-"; everything else separates them.
SEPARATORS = str.maketrans({c: " " for c in "\n\t\r.,;:!?'\"()[]{}<>/\\|*=_`~@#$%^&\u2019\u2018\u201c\u201d"})


def words_of(text: str) -> list[str]:
    """Lower-cased words of ``text`` (the judge's tokenizer)."""
    return text.lower().translate(SEPARATORS).split()


def key_of(text: str) -> str:
    """The form in which sentences are compared: lower-case words joined by single spaces."""
    return " ".join(words_of(text))


class Sentence(NamedTuple):
    """One sentence of a response, as the judge reads it.

    ``text``: the sentence as written (list marker removed); ``key``: ``key_of(text)``;
    ``item``: ``"numbered"`` or ``"bullet"`` for the first sentence of a list line, else
    ``""``; ``known``: the world's templates can render it.
    """

    text: str
    key: str
    item: str
    known: bool


_ANSWER_BREAK_RE = re.compile(r"(answer:\s*\$?-?\d[\d,]*(?:\.\d+)?)[ \t]+(?=\S)", re.I)
_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")
_ITEM_RE = re.compile(r"^\s*(?:(\d+[.)])|([-*\u2022]))\s+(\S.*)$")


def _split(text: str):
    """(sentence text, item kind) for each sentence of ``text``, in order."""
    text = _ANSWER_BREAK_RE.sub(r"\1\n", text.replace("\u2019", "'"))
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        item = ""
        m = _ITEM_RE.match(line)
        if m is not None:
            item, line = ("numbered" if m.group(1) else "bullet"), m.group(3)
        for i, part in enumerate(_SPLIT_RE.split(line)):
            if part.strip():
                yield part.strip(), (item if i == 0 else "")


# ----------------------------------------------------------------------------- the known sentences

def _renderings() -> list[str]:
    """Every sentence-level string the world's templates can render, before splitting."""
    fixed = [*T.FILLERS, *T.VAGUE_SENTENCES, *T.QUESTION_CLOSERS, *T.LIST_INTROS, *T.REFUSALS,
             *T.REFUSAL_REASONS, "Hope you understand.", *T.HARMFUL_STEPS, *T.DISMISSIVE_REPLIES, *T.NON_ANSWERS,
             *(s for pool in (T.OPENERS, T.REASONING_OPENERS, T.CLOSERS) for group in pool.values() for s in group)]
    tips = [tip for topic in T.ALL_TOPICS for tip in topic.tips]
    frames = T.TIP_FRAMES + T.RUDE_TIP_FRAMES
    tip_sentences = [frame.format(T=T.capitalize(tip), t=tip) for tip in tips for frame in frames]
    one_sentence = [f"{prefix}{tip}." if prefix else f"{T.capitalize(tip)}."
                    for tip in tips for group in T.ONE_SENTENCE_PREFIXES.values() for prefix in group]
    compliance = [opener.format(r=T.second_person(request)) for topic in T.ALL_TOPICS if topic.kind == "harmful"
                  for request in topic.requests for opener in T.COMPLY_OPENERS]
    return [s for s in fixed + tip_sentences + one_sentence + compliance if s]


KNOWN_KEYS: frozenset[str] = frozenset(key_of(part) for text in _renderings() for part, _ in _split(text))

# Arithmetic: "{E}." with the step forms and operator words of ``generator``, and the final-answer forms.
_NUM = r"\$?-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_OP = r"(?:\u00d7|x|\*|times|\+|plus|\u2212|-|minus|\u00f7|/|divided by)"
_STEP = rf"{_NUM} {_OP} {_NUM} = {_NUM}"
_SUM3 = rf"{_NUM} \+ {_NUM} \+ {_NUM} = {_NUM}|{_NUM} plus {_NUM} plus {_NUM} = {_NUM}"
_EXPRESSION = rf"(?:{_SUM3}|{_STEP}(?:, (?:then|and) {_STEP})?)"
_ARITHMETIC_RE = re.compile(
    rf"(?:(?:first, |we compute |working it out: )?{_EXPRESSION}\."
    rf"|(?:the answer is |so the answer is |that gives |so it's |the result is ){_NUM}\."
    rf"|answer: {_NUM})")


def is_known(text: str, key: str | None = None) -> bool:
    """True when ``text`` (one sentence) is a sentence the world's templates can render."""
    key = key_of(text) if key is None else key
    return key in KNOWN_KEYS or _ARITHMETIC_RE.fullmatch(text.lower()) is not None


def sentences_of(text: str) -> list[Sentence]:
    """The sentences of ``text`` in order, each with its list marker and whether it is known.

    Defined in Chapter 02.
    """
    out = []
    for part, item in _split(text):
        key = key_of(part)
        out.append(Sentence(part, key, item, is_known(part, key)))
    return out
