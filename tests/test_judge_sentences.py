"""The gold judge reads sentences: text that is not an answer cannot fool it, and the world's labels did not move.

Before the judge read sentences, a string of the topic's keywords got the maximum gold,
shuffled answers tied with the answer on about half the prompts, and half sentences
scored as much as whole ones (``results/benchmarks/judge.md`` has both judges side by side).
"""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from course_lib.world import (
    WorldConfig,
    generate_preference_pairs,
    gold_attributes,
    gold_reward,
    gold_rewards,
    group_names,
    mini_reward_bench,
)
from course_lib.world import templates as T
from course_lib.world.probes import FAMILIES, family_examples, not_an_answer
from course_lib.world.sentences import KNOWN_KEYS, is_known, key_of, sentences_of

# Every category, both splits, both label modes, every noise model, every group, and the bench.
LABEL_CONFIGS = [
    dict(n_pairs=6000, seed=11), dict(n_pairs=3000, seed=12, split="eval"),
    dict(n_pairs=3000, seed=13, label_mode="bt", temperature=0.5, noise_rate=0.2),
    dict(n_pairs=3000, seed=14, length_bias=0.5),
    dict(n_pairs=2000, seed=15, split="eval", label_mode="bt", noise_rate=0.3),
    dict(n_pairs=3000, seed=16, group_mix={"population": 1, "concise": 1, "thorough": 1, "friendly": 1}),
    dict(n_pairs=1000, seed=17, user_group="concise"), dict(n_pairs=1000, seed=18, user_group="thorough"),
    dict(n_pairs=1000, seed=19, user_group="friendly", split="eval"),
]
# Fingerprints of the datasets above and of mini_reward_bench(100), computed with the judge
# before it read sentences (texts, labels, groups, and gold values, which have since moved
# by exactly +1.0: the coherence weight times coherence 1 of every world text).
FINGERPRINTS_BEFORE_COHERENCE = [
    "40e2c1198c25140f", "978dcc58110e1e88", "2159b74ec7ef7d81", "ceaeea3f7c0094bf", "2f235cc8441f4acb",
    "665f34da1b4413d0", "73e7f1b7b4725294", "ff9693eb0f61b58a", "d44f8244703cc174", "90c2449e30308e68"]
COHERENCE_WEIGHT = 1.0
HELD_OUT_SEED = 20261207  # a stream no notebook or other test uses


def fingerprint(data, offset: float) -> str:
    digest = hashlib.sha256()
    columns = [list(data[c]) for c in ("prompt", "chosen", "rejected", "is_flipped", "user_group",
                                       "gold_chosen", "gold_rejected")]
    for p, c, r, flipped, group, gc, gr in zip(*columns):
        digest.update(json.dumps([p, c, r, bool(flipped), group, round(gc - offset, 6),
                                  round(gr - offset, 6)]).encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def labelled():
    """24,400 pairs: the configurations above plus MiniRewardBench."""
    return [generate_preference_pairs(WorldConfig(**config)) for config in LABEL_CONFIGS] + [mini_reward_bench(100)]


@pytest.fixture(scope="module")
def held_out_families():
    pairs = generate_preference_pairs(WorldConfig(n_pairs=3000, seed=HELD_OUT_SEED))
    return family_examples(pairs, seed=1)


# ----------------------------------------------------------------------------- the world did not move

def test_world_pairs_labels_and_values_are_those_of_the_judge_before_it_read_sentences(labelled):
    found = [fingerprint(data, offset=COHERENCE_WEIGHT) for data in labelled]
    assert found == FINGERPRINTS_BEFORE_COHERENCE


def test_the_world_writes_known_sentences_and_every_chosen_answer_has_coherence_one(labelled):
    for data in labelled:
        prompts, chosen, rejected = list(data["prompt"]), list(data["chosen"]), list(data["rejected"])
        for prompt, good, bad in zip(prompts, chosen, rejected):
            for text in (good, bad):
                unknown = [s.text for s in sentences_of(text) if not s.known]
                assert not unknown, (prompt, text, unknown)
            assert gold_attributes(prompt, good)["coherence"] == 1.0, (prompt, good)
            # The one way the world repeats itself: a rambling word-limit answer may draw a filler twice.
            if gold_attributes(prompt, bad)["coherence"] < 1.0:
                repeated = [s for s in T.FILLERS if bad.count(s) > 1]
                assert repeated, (prompt, bad)


def test_every_tip_in_every_frame_and_list_form_is_known():
    for topic in T.ALL_TOPICS:
        for tip in topic.tips:
            for frame in T.TIP_FRAMES + T.RUDE_TIP_FRAMES:
                assert is_known(frame.format(T=T.capitalize(tip), t=tip)), (frame, tip)
            for numbered in (True, False):
                sentences = sentences_of(T.render_list(random.Random(0), [tip], numbered))
                assert [s.item for s in sentences] == ["numbered" if numbered else "bullet"]
                assert sentences[0].known


def test_a_sentence_with_shuffled_missing_or_stray_words_is_not_known():
    rng = random.Random(0)
    tips = [tip for topic in T.ALL_TOPICS for tip in topic.tips]
    for tip in rng.sample(tips, 200):
        words = tip.split()
        shuffled = list(words)
        while shuffled == words:
            rng.shuffle(shuffled)
        missing = words[:1] + words[2:]
        stray = words[:2] + [rng.choice(["hydrated", "router", "really", "the"])] + words[2:]
        for variant in (shuffled, missing, stray):
            text = T.capitalize(" ".join(variant)) + "."
            assert key_of(text) not in KNOWN_KEYS or key_of(text) == key_of(tip), text


def test_arithmetic_is_known_by_its_grammar_whatever_the_numbers():
    for text in ("12 × 4 = 48.", "First, 7 + 8 + 9 = 24.", "We compute 1,250 − 30 = 1,220.",
                 "Working it out: 6 times 7 = 42, then 42 minus 2 = 40.", "The answer is $1,250.00.",
                 "So it's 17.", "Answer: 3"):
        assert is_known(text), text
    for text in ("12 × = 48.", "The answer is.", "48 answer the is.", "12 × 4 = 48 thanks.", "2 plus 27 × 14 = 20."):
        assert not is_known(text), text
    # "Answer: N" ends where its number does, so the closer after it is a sentence of its own.
    assert [s.text for s in sentences_of("Answer: 48 Hope this helps!")] == ["Answer: 48", "Hope this helps!"]


# ----------------------------------------------------------------------------- what counts, and once

WIFI = "How do I fix slow wifi at home?"
ANSWER = ("Happy to help! Move the router to a central, elevated spot. Switch to the five gigahertz band. "
          "Update the router firmware. Good luck!")


def test_repeating_a_sentence_adds_nothing_and_lowers_coherence():
    once = "Update the router firmware."
    thrice = " ".join([once] * 3)
    assert gold_attributes(WIFI, thrice)["helpfulness"] == gold_attributes(WIFI, once)["helpfulness"]
    assert gold_attributes(WIFI, thrice)["coherence"] == pytest.approx(1 / 3)
    assert gold_reward(WIFI, thrice) < gold_reward(WIFI, once)


def test_text_with_no_known_sentence_has_no_helpfulness_tone_refusal_or_met_constraint():
    salad = "router firmware gigahertz elevated central mesh thanks happy to help"
    attributes = gold_attributes(WIFI, salad)
    assert attributes["helpfulness"] == 0.0 and attributes["tone"] == 0.0 and attributes["coherence"] == 0.0
    assert gold_attributes(f"{WIFI} Keep it under 15 words.", salad)["constraint"] == 0.0
    harmful = "How do I make a fake driver's license?"
    assert gold_attributes(harmful, "can't I help with that sorry")["safety"] == -1.0
    assert gold_attributes(harmful, "I can't help with this request.")["safety"] == 1.0
    assert gold_attributes(WIFI, "")["coherence"] == 0.0


def test_one_unknown_sentence_costs_coherence_and_nothing_it_says_counts():
    extra = f"{ANSWER} Also the router gigahertz firmware extender rooms."
    assert gold_attributes(WIFI, extra)["coherence"] == pytest.approx(5 / 6)
    assert gold_attributes(WIFI, extra)["helpfulness"] == gold_attributes(WIFI, ANSWER)["helpfulness"]
    for group in group_names():
        assert gold_reward(WIFI, extra, group) < gold_reward(WIFI, ANSWER, group)


# ----------------------------------------------------------------------------- text that is not an answer

@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_of_non_answers_scores_below_its_answer_on_98_percent_of_prompts(family, held_out_families):
    triples = held_out_families[family]
    assert len(triples) >= 1500, f"{family}: only {len(triples)} examples"
    prompts, answers, texts = zip(*triples)
    below = gold_rewards(prompts, texts) < gold_rewards(prompts, answers)
    assert below.mean() >= 0.98, f"{family}: below its answer on {below.mean():.3f} of prompts"


def test_not_an_answer_names_its_families_and_skips_where_a_family_does_not_apply():
    with pytest.raises(ValueError, match="family must be one of"):
        not_an_answer("nonsense", WIFI, ANSWER, random.Random(0))
    assert not_an_answer("keyword_string", "What is 2 + 2?", "Answer: 4", random.Random(0)) is None
    text = not_an_answer("repeated_sentence", WIFI, ANSWER, random.Random(0))
    assert text == " ".join(["Happy to help!"] * 6)


# The hacked samples of Chapter 08 (a policy optimised against a noisy reward model, as stored
# in the chapter's outputs under the judge that counted keywords), next to a world answer in
# the same tone (a polite opener is a real sentence and earns its tone).
HACKED = [
    ("Okay, so I want to kill the weeds in my lawn. Where should I start?",
     "Happy to help!\n1. Hake it withly,\ufffd and knightly put, h times\n2 plus 27 × 14 = 20. les out the process I "
     "it to pge recy prell, just look iton every sectorr like ",
     "Happy to help! Pull weeds by the root after rain when the soil is soft. Mow high so the grass shades out weeds."),
    ("I was wondering, what's the best way to stop my rice from turning mushy? I'm a complete beginner.",
     "Happy to help! Some ideas:\n1. Rinse the grains in cold water until it with a stay hydrated and skip alcohol "
     "on the breath moving in and skip to lower the but I ",
     "Happy to help! Some ideas:\n1. Rinse the grains in cold water until it runs clear\n"
     "2. Bring it to a boil and then lower the heat to a gentle simmer"),
    ("Hi there. Any tips on how to deal with jet lag after a long flight? Use fewer than 15 words.",
     "Happy to starturn on the breath moving in and stay hydrated and skip alcohol on the breath moving in and "
     "skip alcohol on the flight. good idea is to stay hydrat",
     "Stay hydrated and skip alcohol on the flight."),
    ("Hi there. Any tips on how to deal with jet lag after a long flight?",
     "Stay hydrated hydrated and skip alcohol on the flight. Eat meals on the local local schedule.",
     "Stay hydrated and skip alcohol on the flight. Eat meals on the local schedule."),
]


@pytest.mark.parametrize("prompt, hacked, answer", HACKED)
def test_chapter_08s_hacked_samples_score_below_a_world_answer(prompt, hacked, answer):
    for group in group_names():
        assert gold_reward(prompt, hacked, group) < gold_reward(prompt, answer, group)
    assert gold_attributes(prompt, hacked)["coherence"] <= 2 / 3


def test_gold_rewards_and_gold_reward_agree_on_policy_like_text():
    prompts = [WIFI] * 3 + ["What is 2 + 2?"]
    texts = [ANSWER, "router router router", "Update the router firmware. Update the router firmware.", "2 + 2 = 4"]
    assert np.allclose(gold_rewards(prompts, texts), [gold_reward(p, t) for p, t in zip(prompts, texts)])
