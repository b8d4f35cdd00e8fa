"""Preference pairs from the world: prompts, two responses, a label, and the truth.

Each pair is drawn from a per-pair random stream (so row i is the same whatever
``n_pairs`` is), scored by the gold judge, and labelled. Labels come from the gold
reward of the row's user group, then pass through the configured noise. The texts of a
pair depend only on ``seed``, ``split`` and the category mix: changing the noise,
the label mode or the user group relabels the same pairs, and the noise draws are
shared too, so the pairs flipped at 20% noise are a subset of those flipped at 40%.
"""

from __future__ import annotations

import math
import random
from operator import mul
from dataclasses import dataclass, field

from datasets import Dataset

from . import templates as T
from .groups import ATTRIBUTE_NAMES, GROUP_WEIGHTS, check_group, group_names
from .judge import TOPIC_KEYWORDS, attributes_of, parse_prompt, words_of

CATEGORIES = ("chat", "chat_hard", "safety", "reasoning")
LABEL_MODES = ("deterministic", "bt")
# A pair is redrawn when some group would (almost) tie on it.
MIN_GOLD_MARGIN = 0.05
_MAX_REDRAWS = 20
_STREAMS = {"train": 1, "eval": 2, "bench": 3, "prompts": 4}


def category_names() -> list[str]:
    """The four MiniRewardBench categories: chat, chat_hard, safety, reasoning.

    Defined in Chapter 02.
    """
    return list(CATEGORIES)


@dataclass
class WorldConfig:
    """What ``generate_preference_pairs`` makes.

    n_pairs        number of pairs
    seed           random seed; the same config always gives the same dataset
    split          "train", or "eval" for topics and templates that train never uses
    category_mix   {category: weight}; None means equal shares of the four categories
    label_mode     "deterministic" (higher gold reward is chosen) or "bt"
                   (a is chosen with probability sigmoid((r_a - r_b) / temperature))
    temperature    BT temperature, > 0 (only used when label_mode == "bt")
    noise_rate     symmetric flips: each label is flipped with this probability, in [0, 0.5)
    length_bias    a biased annotator: with this probability the longer response is
                   chosen regardless of quality, in [0, 1]
    user_group     whose gold reward labels the pairs (see ``group_names()``)
    group_mix      {group: weight}: each pair is labelled by a group drawn from this
                   mix (overrides user_group); None means every pair uses user_group

    Defined in Chapter 02; the noise fields are used from Chapter 03, group_mix in 06.
    """

    n_pairs: int = 2000
    seed: int = 0
    split: str = "train"
    category_mix: dict[str, float] | None = None
    label_mode: str = "deterministic"
    temperature: float = 1.0
    noise_rate: float = 0.0
    length_bias: float = 0.0
    user_group: str = "population"
    group_mix: dict[str, float] | None = field(default=None)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError that names the bad field and what to do about it."""
        if not isinstance(self.n_pairs, int) or self.n_pairs < 1:
            raise ValueError(f"WorldConfig.n_pairs must be a positive integer, got {self.n_pairs!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"WorldConfig.seed must be a non-negative integer, got {self.seed!r}")
        if self.split not in T.SPLITS:
            raise ValueError(f"WorldConfig.split must be 'train' or 'eval', got {self.split!r}")
        if self.category_mix is not None:
            _check_mix(self.category_mix, CATEGORIES, "category_mix")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"WorldConfig.label_mode must be one of {list(LABEL_MODES)}, got {self.label_mode!r}")
        if not self.temperature > 0:
            raise ValueError(f"WorldConfig.temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.noise_rate < 0.5:
            raise ValueError(f"WorldConfig.noise_rate must be in [0, 0.5), got {self.noise_rate!r}; "
                             "at 0.5 labels carry no information, above it they mostly point the wrong way")
        if not 0.0 <= self.length_bias <= 1.0:
            raise ValueError(f"WorldConfig.length_bias must be in [0, 1], got {self.length_bias!r}")
        check_group(self.user_group, "WorldConfig.user_group")
        if self.group_mix is not None:
            _check_mix(self.group_mix, group_names(), "group_mix")

    def noise_description(self) -> str:
        """A short name for the labelling process, e.g. "bt(T=0.5)+symmetric(eta=0.2)"."""
        parts = []
        if self.label_mode == "bt":
            parts.append(f"bt(T={self.temperature:g})")
        if self.length_bias:
            parts.append(f"length_bias({self.length_bias:g})")
        if self.noise_rate:
            parts.append(f"symmetric(eta={self.noise_rate:g})")
        return "+".join(parts) if parts else "clean"


def _check_mix(mix, allowed, name: str) -> None:
    if not isinstance(mix, dict) or not mix:
        raise ValueError(f"WorldConfig.{name} must be a non-empty dict, got {mix!r}")
    unknown = sorted(set(mix) - set(allowed))
    if unknown:
        raise ValueError(f"WorldConfig.{name} has unknown keys {unknown}; use keys from {list(allowed)}")
    if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"WorldConfig.{name} weights must be >= 0 with a positive sum, got {mix!r}")


def _stream_seed(seed: int, stream: str, index: int, sub: int = 0) -> int:
    return (((seed * 64 + _STREAMS[stream]) * 16 + sub) << 32) + index


def _pick(rng: random.Random, names, weights) -> str:
    """A weighted choice (``names`` and ``weights`` are parallel sequences)."""
    return names[_bisect_weights(weights, rng.random())]


# ----------------------------------------------------------------------------- pair recipes
# Each recipe returns (prompt, response_a, response_b, topic, template, contrast); which
# response wins is decided afterwards by the gold judge, never by the recipe.

_CHAT_CONTRASTS = (("off_topic", "vague", "partial", "rude", "needless_refusal", "dismissive", "style"),
                   (0.1, 0.15, 0.15, 0.2, 0.1, 0.15, 0.15))


def _request_prompt(rng, topic, split, constraint=""):
    template_id, template = T.pick(rng, T.request_templates_for(split))
    return T.render_request_prompt(rng, topic, template, constraint), template_id


def _chat_pair(rng: random.Random, split: str):
    pool = T.topics_for("chat", split)
    topic = T.pick(rng, pool)
    prompt, template_id = _request_prompt(rng, topic, split)
    contrast = _pick(rng, *_CHAT_CONTRASTS)
    tips = T.shuffled(rng, topic.tips)
    tone = T.pick(rng, ("polite", "neutral"))
    other_tone = T.pick(rng, ("polite", "neutral", "neutral", "rude"))
    fmt = T.pick(rng, ("prose", "prose", "bullets", "numbered"))
    good = T.render_answer(rng, tips[:rng.randint(2, 4)], tone, fmt, rng.randint(0, 2))
    if contrast == "off_topic":
        other = T.pick(rng, [t for t in pool if t is not topic])
        bad = T.render_answer(rng, rng.sample(other.tips, rng.randint(2, 4)), other_tone,
                              T.pick(rng, ("prose", "bullets")), rng.randint(0, 2))
    elif contrast == "vague":
        bad = T.render_vague(rng, other_tone, rng.randint(2, 4))
    elif contrast == "partial":
        good = T.render_answer(rng, tips[:rng.randint(3, 4)], tone, fmt, rng.randint(0, 1))
        bad = T.render_answer(rng, tips[4:], other_tone, "prose", rng.randint(2, 3))
    elif contrast == "rude":
        good = T.render_answer(rng, tips[:3], tone, fmt, rng.randint(0, 1))
        bad = T.render_answer(rng, tips[2:5], "rude", fmt, rng.randint(0, 1))
    elif contrast == "dismissive":
        bad = T.pick(rng, T.DISMISSIVE_REPLIES)
    elif contrast == "needless_refusal":
        bad = T.render_refusal(rng, other_tone)
    else:  # style: both complete, one short and one long, in different tones; groups disagree on these
        short_tone, long_tone = T.pick(rng, (("polite", "neutral"), ("neutral", "polite"), ("polite", "rude")))
        good = T.render_answer(rng, tips[:3], short_tone, "prose", 0)
        bad = T.render_answer(rng, tips[:rng.randint(4, 5)], long_tone, fmt, rng.randint(2, 4))
    return prompt, good, bad, topic.name, template_id, contrast


def _mentionable_words(topic: T.Topic) -> list[tuple[str, int]]:
    """(keyword, index of the only tip that contains it) pairs for a topic."""
    keywords = TOPIC_KEYWORDS[topic.name]
    out = []
    for word in sorted(keywords):
        holders = [i for i, tip in enumerate(topic.tips) if word in words_of(tip)]
        if len(holders) == 1 and "-" not in word and "'" not in word:
            out.append((word, holders[0]))
    return out


_MENTIONABLE = {topic.name: _mentionable_words(topic) for topic in T.ALL_TOPICS if topic.tips}


def _word_count(text: str) -> int:
    return len(text.split())


# How often each constraint kind is drawn. Kinds whose two answers look alike apart from
# the prompt (numbered vs bulleted, mention vs avoid a word) are the hardest to learn.
_CONSTRAINT_MIX = (("one_sentence", "word_limit", "end_question", "max_items", "min_items", "mention_word",
                    "avoid_word", "numbered_list", "bullet_list"),
                   (2.5, 2.5, 2.5, 1.5, 0.5, 1.5, 0.5, 1.0, 0.5))


def _chat_hard_pair(rng: random.Random, split: str):
    topic = T.pick(rng, T.topics_for("chat", split))
    kind = _pick(rng, *_CONSTRAINT_MIX)
    tips = T.shuffled(rng, topic.tips)
    follow_tone = T.pick(rng, ("polite", "neutral", "neutral"))
    break_tone = follow_tone
    if rng.random() < 0.2:  # distractor: the response that breaks the constraint is the friendlier one
        follow_tone, break_tone = "neutral", "polite"
    list_fmt = T.pick(rng, ("bullets", "numbered"))
    n, word = None, ""
    if kind == "one_sentence":
        follow = T.render_one_sentence(rng, tips[0], follow_tone)
        if rng.random() < 0.5:
            broken = T.join_sentences(T.render_one_sentence(rng, tips[0], break_tone), T.tip_sentence(rng, tips[1]))
        else:
            broken = T.join_sentences(T.tip_sentence(rng, tips[0]), T.pick(rng, T.FILLERS))
    elif kind == "max_items":
        n = T.pick(rng, (2, 3))
        follow = T.render_answer(rng, tips[:rng.randint(n - 1, n)], follow_tone, list_fmt)
        broken = T.render_answer(rng, tips[:rng.randint(n + 1, n + 2)], break_tone, list_fmt)
    elif kind == "min_items":
        n = T.pick(rng, (3, 4))
        follow = T.render_answer(rng, tips[:rng.randint(n, 5)], follow_tone, list_fmt)
        broken = T.render_answer(rng, tips[:rng.randint(n - 2, n - 1)], break_tone, list_fmt)
    elif kind in ("mention_word", "avoid_word"):
        word, holder = T.pick(rng, _MENTIONABLE[topic.name])
        others = [tip for tip in tips if tip != topic.tips[holder]]
        k = rng.randint(2, 3)
        fmt = T.pick(rng, ("prose", "prose", list_fmt))
        with_word = others[:k - 1] + [topic.tips[holder]]
        rng.shuffle(with_word)
        with_text = T.render_answer(rng, with_word, follow_tone if kind == "mention_word" else break_tone, fmt)
        without_text = T.render_answer(rng, others[:k], break_tone if kind == "mention_word" else follow_tone, fmt)
        follow, broken = (with_text, without_text) if kind == "mention_word" else (without_text, with_text)
    elif kind == "word_limit":
        n = T.pick(rng, (15, 20, 25, 30))
        follow = T.render_one_sentence(rng, min(tips, key=len), "neutral")
        for k in range(1, 4):
            candidate = T.render_answer(rng, tips[:k], follow_tone, "prose", closer="")
            if _word_count(candidate) < n:
                follow = candidate
        broken = T.render_answer(rng, tips[:3], break_tone, "prose")
        while _word_count(broken) < n + 2:
            broken = T.join_sentences(broken, T.pick(rng, T.FILLERS))
    elif kind == "end_question":
        k = rng.randint(2, 3)
        fmt = T.pick(rng, ("prose", "prose", list_fmt))
        follow = T.render_answer(rng, tips[:k], follow_tone, fmt, closer=T.pick(rng, T.QUESTION_CLOSERS))
        broken = T.render_answer(rng, tips[:k], break_tone, fmt, closer=T.pick(rng, T.CLOSERS[break_tone]))
    else:  # numbered_list / bullet_list
        k = rng.randint(2, 4)
        wanted, other = ("numbered", "bullets") if kind == "numbered_list" else ("bullets", "numbered")
        if rng.random() < 0.25:
            other = "prose"
        follow = T.render_answer(rng, tips[:k], follow_tone, wanted)
        broken = T.render_answer(rng, tips[:k], break_tone, other)
    constraint = T.render_constraint(rng, kind, split, n, word)
    prompt, template_id = _request_prompt(rng, topic, split, constraint)
    return prompt, follow, broken, topic.name, template_id, f"constraint:{kind}"


def _safety_pair(rng: random.Random, split: str):
    tone = T.pick(rng, ("polite", "neutral", "neutral", "rude"))
    other_tone = T.pick(rng, ("polite", "neutral", "neutral"))
    if rng.random() < 0.55:
        topic = T.pick(rng, T.topics_for("harmful", split))
        request = T.pick(rng, topic.requests)
        template_id, template = T.pick(rng, T.request_templates_for(split))
        prompt = T.render_request_prompt(rng, T.Topic(topic.name, topic.kind, (request,)), template)
        return (prompt, T.render_refusal(rng, other_tone), T.render_harmful_compliance(rng, request, tone),
                topic.name, template_id, "harmful_request")
    topic = T.pick(rng, T.topics_for("risky_benign", split))
    prompt, template_id = _request_prompt(rng, topic, split)
    tips = rng.sample(topic.tips, rng.randint(2, 4))
    answer = T.render_answer(rng, tips, tone, T.pick(rng, ("prose", "bullets", "numbered")), rng.randint(0, 1))
    return prompt, answer, T.render_refusal(rng, other_tone), topic.name, template_id, "risky_but_harmless"


_OPERATORS = {"*": ("\u00d7", "x", "*", "times"), "+": ("+", "plus"), "-": ("\u2212", "-", "minus"),
              "/": ("\u00f7", "/", "divided by")}
_WRONG_OPERATOR = {"*": "+", "+": "*", "-": "+", "/": "*"}
_REASONING_CONTRASTS = (("both_show_work", "work_vs_bare", "bare_vs_work", "non_answer"), (0.25, 0.35, 0.1, 0.3))
_FINAL_FORMS = ("The answer is {F}.", "So the answer is {F}.", "Answer: {F}", "That gives {F}.", "So it's {F}.",
                "The result is {F}.")
_STEP_FORMS = ("{E}.", "First, {E}.", "We compute {E}.", "Working it out: {E}.")


def _apply(op: str, x: float, y: float) -> float:
    return {"*": x * y, "+": x + y, "-": x - y, "/": x / y}[op]


def _evaluate(ops: list[str], values: list[float]) -> tuple[float, float]:
    """(first intermediate, final) for left-to-right formulas with * and / first."""
    if len(ops) == 2 and ops[1] in "*/" and ops[0] in "+-":
        inner = _apply(ops[1], values[1], values[2])
        return inner, _apply(ops[0], values[0], inner)
    first = _apply(ops[0], values[0], values[1])
    return first, (_apply(ops[1], first, values[2]) if len(ops) == 2 else first)


def _reasoning_numbers(rng: random.Random, formula: str) -> dict[str, int]:
    if formula == "a/b":
        b = rng.randint(2, 12)
        return {"a": b * rng.randint(2, 40), "b": b}
    if formula == "a*b":
        return {"a": rng.randint(3, 60), "b": rng.randint(2, 30)}
    if formula == "a+b":
        return {"a": rng.randint(10, 1500), "b": rng.randint(10, 999)}
    if formula == "a-b":
        a = rng.randint(20, 999)
        return {"a": a, "b": rng.randint(1, a - 1)}
    if formula == "a+b+c":
        return {"a": rng.randint(2, 60), "b": rng.randint(2, 60), "c": rng.randint(2, 60)}
    if formula == "a*b-c":
        a, b = rng.randint(3, 30), rng.randint(3, 30)
        return {"a": a, "b": b, "c": rng.randint(1, a * b - 1)}
    a = rng.randint(20, 80)  # a-b+c
    return {"a": a, "b": rng.randint(1, a - 1), "c": rng.randint(1, 40)}


def _working(rng: random.Random, ops: list[str], values: list[float], final: float, money: bool) -> str:
    def num(v):
        return T.format_number(v, rng)

    symbols = [T.pick(rng, _OPERATORS[op]) for op in ops]
    if len(ops) == 1 or ops == ["+", "+"]:
        terms = f" {symbols[0]} ".join(num(v) for v in values)
        expression = f"{terms} = {num(final)}"
    else:
        first, _ = _evaluate(ops, values)
        if ops[1] in "*/" and ops[0] in "+-":
            expression = (f"{num(values[1])} {symbols[1]} {num(values[2])} = {num(first)}, and "
                          f"{num(values[0])} {symbols[0]} {num(first)} = {num(final)}")
        else:
            expression = (f"{num(values[0])} {symbols[0]} {num(values[1])} = {num(first)}, then "
                          f"{num(first)} {symbols[1]} {num(values[2])} = {num(final)}")
    step = T.pick(rng, _STEP_FORMS).format(E=expression)
    return T.join_sentences(step, T.pick(rng, _FINAL_FORMS).format(F=T.format_number(final, rng, money)))


def _reasoning_response(rng, ops, values, final, money, show_work, tone):
    if show_work:
        body = _working(rng, ops, values, final, money)
    else:
        body = T.pick(rng, _FINAL_FORMS).format(F=T.format_number(final, rng, money))
    return T.join_sentences(T.pick(rng, T.REASONING_OPENERS[tone]), body, T.pick(rng, T.CLOSERS[tone]))


def _reasoning_pair(rng: random.Random, split: str):
    family, template, formula, money, _ = T.pick(rng, T.reasoning_templates_for(split))
    numbers = _reasoning_numbers(rng, formula)
    prompt = T.render_reasoning_prompt(rng, template, numbers)
    ops = [ch for ch in formula if ch in "*+-/"]
    values = [numbers[k] for k in "abc" if k in numbers]
    _, answer = _evaluate(ops, values)
    contrast = _pick(rng, *_REASONING_CONTRASTS)
    wrong_ops = list(ops)
    wrong = answer
    if rng.random() < 0.4:
        position = rng.randrange(len(ops))
        wrong_ops[position] = _WRONG_OPERATOR[ops[position]]
        wrong = _evaluate(wrong_ops, values)[1]
    while wrong == answer or wrong < 0:
        wrong_ops = list(ops)
        slips = (-10, -2, -1, 1, 2, 10, 100) if answer > 100 else (-2, -1, 1, 2, 3)
        wrong = answer + T.pick(rng, slips)
    tone_a = T.pick(rng, ("polite", "polite", "neutral", "neutral", "neutral", "rude"))
    tone_b = T.pick(rng, ("polite", "polite", "neutral", "neutral", "neutral", "rude"))
    work_a, work_b = {"both_show_work": (True, True), "work_vs_bare": (True, False),
                      "bare_vs_work": (False, True), "non_answer": (rng.random() < 0.5, False)}[contrast]
    correct = _reasoning_response(rng, ops, values, answer, money, work_a, tone_a)
    if contrast == "non_answer":
        incorrect = T.join_sentences(T.pick(rng, T.REASONING_OPENERS[tone_b]), T.pick(rng, T.NON_ANSWERS))
    else:
        incorrect = _reasoning_response(rng, wrong_ops, values, wrong, money, work_b, tone_b)
    return prompt, correct, incorrect, family, family, contrast


RECIPES = {"chat": _chat_pair, "chat_hard": _chat_hard_pair, "safety": _safety_pair, "reasoning": _reasoning_pair}


# ----------------------------------------------------------------------------- generation

_WEIGHT_ROWS = tuple((g, tuple(weights[a] for a in ATTRIBUTE_NAMES)) for g, weights in GROUP_WEIGHTS.items())
_COHERENCE = ATTRIBUTE_NAMES.index("coherence")
assert _COHERENCE == len(ATTRIBUTE_NAMES) - 1


def _gold_parts(row, attrs) -> tuple[float, float]:
    """(substance, coherence term) of a gold reward, summed apart.

    Every world text has coherence 1, so a pair's margin is the difference of the
    substance sums, computed in the same floating-point order as before coherence was
    an attribute: every drawn pair and label is bit-identical to what it was then.
    """
    return sum(map(mul, row[:_COHERENCE], attrs[:_COHERENCE])), row[_COHERENCE] * attrs[_COHERENCE]


def _draw_pair(rng: random.Random, category: str, split: str):
    """A pair on which every group has a clear preference, with its gold rewards per group."""
    for _ in range(_MAX_REDRAWS):
        prompt, a, b, topic, template, contrast = RECIPES[category](rng, split)
        parsed = parse_prompt(prompt)
        attrs_a, attrs_b = attributes_of(parsed, a), attributes_of(parsed, b)
        parts_a = {g: _gold_parts(row, attrs_a) for g, row in _WEIGHT_ROWS}
        parts_b = {g: _gold_parts(row, attrs_b) for g, row in _WEIGHT_ROWS}
        margins = {g: (parts_a[g][0] - parts_b[g][0]) + (parts_a[g][1] - parts_b[g][1]) for g in parts_a}
        if a != b and all(abs(margin) >= MIN_GOLD_MARGIN for margin in margins.values()):
            rewards_a = {g: sum(parts) for g, parts in parts_a.items()}
            rewards_b = {g: sum(parts) for g, parts in parts_b.items()}
            return prompt, a, b, topic, template, contrast, rewards_a, rewards_b, margins
    raise RuntimeError(f"could not draw a {category} pair with a clear gold preference in {_MAX_REDRAWS} tries; "
                       "this is a bug in the world's recipes")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


_COLUMNS = ("prompt", "chosen", "rejected", "category", "user_group", "gold_chosen", "gold_rejected",
            "gold_margin", "is_flipped", "pair_id", "topic", "template", "contrast", "split", "noise_model")


def _build(config: WorldConfig, stream: str, plan: list[tuple[str, int]]) -> Dataset:
    """Rows for ``plan``, a list of (category or None, index) with None meaning "draw from the mix"."""
    columns = {name: [] for name in _COLUMNS}
    mix = config.category_mix or dict.fromkeys(CATEGORIES, 1.0)
    cat_names, cat_weights = list(mix), list(mix.values())
    group_names_, group_weights = (list(config.group_mix), list(config.group_mix.values())) \
        if config.group_mix else ([config.user_group], [1.0])
    noise_name = config.noise_description()
    bt = config.label_mode == "bt"
    for category, index in plan:
        rng = random.Random(_stream_seed(config.seed, stream, index))
        if category is None:
            category = _pick(rng, cat_names, cat_weights)
        prompt, a, b, topic, template, contrast, rewards_a, rewards_b, margins = _draw_pair(rng, category,
                                                                                             config.split)
        # Label draws come after the texts and do not depend on the label settings, so every
        # noise setting sees the same uniforms for a pair.
        u_group, u_bt, u_length, u_flip = rng.random(), rng.random(), rng.random(), rng.random()
        group = group_names_[_bisect_weights(group_weights, u_group)]
        ra, rb = rewards_a[group], rewards_b[group]
        a_wins = (u_bt < _sigmoid(margins[group] / config.temperature)) if bt else margins[group] > 0
        if u_length < config.length_bias:
            la, lb = _word_count(a), _word_count(b)
            if la != lb:
                a_wins = la > lb
        if u_flip < config.noise_rate:
            a_wins = not a_wins
        chosen, rejected, gc, gr = (a, b, ra, rb) if a_wins else (b, a, rb, ra)
        columns["prompt"].append(prompt)
        columns["chosen"].append(chosen)
        columns["rejected"].append(rejected)
        columns["category"].append(category)
        columns["user_group"].append(group)
        columns["gold_chosen"].append(gc)
        columns["gold_rejected"].append(gr)
        columns["gold_margin"].append(gc - gr)
        columns["is_flipped"].append(gc < gr)
        columns["pair_id"].append(f"{stream}-{config.seed}-{category if stream == 'bench' else ''}{index}")
        columns["topic"].append(topic)
        columns["template"].append(template)
        columns["contrast"].append(contrast)
        columns["split"].append(config.split)
        columns["noise_model"].append(noise_name)
    return Dataset.from_dict(columns)


def _bisect_weights(weights: list[float], u: float) -> int:
    total, acc = sum(weights), 0.0
    for i, w in enumerate(weights):
        acc += w / total
        if u < acc:
            return i
    return len(weights) - 1


def generate_preference_pairs(config: WorldConfig | None = None) -> Dataset:
    """Preference pairs from the world as a ``datasets.Dataset``.

    Columns: ``prompt``, ``chosen``, ``rejected`` (strings, TRL's format) and the
    ground truth: ``category``; ``user_group`` (whose gold reward labelled the row);
    ``gold_chosen`` / ``gold_rejected`` (that group's gold rewards of the texts in the
    ``chosen`` / ``rejected`` columns, after any noise); ``gold_margin`` (their
    difference, negative when the label is wrong); ``is_flipped`` (the label disagrees
    with the group's gold preference); ``pair_id``; ``topic`` and ``template`` (the
    prompt's topic and request template, or the problem family for reasoning);
    ``contrast`` (how the two responses differ, e.g. ``constraint:max_items``);
    ``split``; ``noise_model`` (``WorldConfig.noise_description()``).

    The same config always gives the same dataset, and row i does not depend on
    ``n_pairs``.

    Defined in Chapter 02; noisy labels from Chapter 03, user groups in Chapter 06.
    """
    config = WorldConfig() if config is None else config
    if not isinstance(config, WorldConfig):
        raise TypeError(f"generate_preference_pairs takes a WorldConfig, got {type(config).__name__}; "
                        "build one with WorldConfig(n_pairs=..., seed=...)")
    config.validate()
    return _build(config, config.split, [(None, i) for i in range(config.n_pairs)])


def mini_reward_bench(n_per_category: int = 100, seed: int = 0) -> Dataset:
    """MiniRewardBench: clean, population-labelled pairs from held-out topics and templates.

    ``n_per_category`` pairs for each of ``category_names()``, in category blocks, with
    the same columns as ``generate_preference_pairs``. Every topic and prompt template
    is one that ``split="train"`` never uses, so accuracy here measures generalization.
    Report accuracy per category and their mean (RewardBench's aggregate).

    Defined in Chapter 02.
    """
    if not isinstance(n_per_category, int) or n_per_category < 1:
        raise ValueError(f"mini_reward_bench: n_per_category must be a positive integer, got {n_per_category!r}")
    config = WorldConfig(n_pairs=n_per_category * len(CATEGORIES), seed=seed, split="eval")
    plan = [(category, i) for category in CATEGORIES for i in range(n_per_category)]
    return _build(config, "bench", plan)


def sample_prompts(n: int, split: str = "train", categories=None, seed: int = 0) -> Dataset:
    """``n`` world prompts with columns ``prompt``, ``category``, ``topic``, ``template``.

    For policies (Chapters 07-08) that write their own answers, scored with
    ``gold_reward``. ``categories`` is a list of category names (default: all four,
    in equal shares).

    Defined in Chapter 02; used in Chapters 07 and 08.
    """
    categories = list(CATEGORIES) if categories is None else list(categories)
    WorldConfig(n_pairs=max(n, 1), seed=seed, split=split, category_mix=dict.fromkeys(categories, 1.0))
    rows = {"prompt": [], "category": [], "topic": [], "template": []}
    for i in range(n):
        rng = random.Random(_stream_seed(seed, "prompts", i, _STREAMS[split]))
        category = T.pick(rng, categories)
        prompt, _, _, topic, template, _ = RECIPES[category](rng, split)
        for key, value in zip(rows, (prompt, category, topic, template)):
            rows[key].append(value)
    return Dataset.from_dict(rows)
