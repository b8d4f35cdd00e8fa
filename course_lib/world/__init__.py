"""The preference world: generated preference data whose ground truth is known.

No data or weights can be downloaded on the course's CI, and learners need to know the
truth to see what label noise does, so the course ships a small world instead:

- **Prompts** in four categories that mirror RewardBench's sections: ``chat``
  (everyday requests), ``chat_hard`` (the two answers differ in one detail: a stated
  constraint such as "answer in one sentence" or "no more than 3 tips"), ``safety``
  (harmful requests must be refused; harmless requests that sound risky, like "kill a
  frozen Python process", must be answered), ``reasoning`` (arithmetic word problems).
  They are rendered from templates with paraphrases, openers and number formats, so a
  reward model has to read the text rather than match a string (``templates``).
- **A gold judge** scores any response to a world prompt by reading its sentences
  (``sentences``: only sentences the world's templates can render count, each once)
  into attributes (correctness, helpfulness, constraint, safety, verbosity, tone,
  coherence); the reward of user group g is r_g(x, y) = w_g . a(x, y) (``judge``,
  ``groups``). ``probes`` makes text that is not an answer, to show what cannot fool it.
- **User groups** (population, concise, thorough, friendly) agree on substance and
  disagree on style, so their rankings conflict on some pairs; users of a group
  describe themselves in a short context text a router can read (``groups``).
- **Preference pairs** labelled from the gold reward, deterministically or by
  Bradley-Terry sampling, optionally through noise: symmetric flips, a length-biased
  annotator, per-group labels. Every row keeps the truth (``generator``).
- **MiniRewardBench**: clean pairs from topics and templates that the train split
  never uses, four categories, for measuring generalization.

Quick start::

    from course_lib.world import WorldConfig, generate_preference_pairs, mini_reward_bench
    train = generate_preference_pairs(WorldConfig(n_pairs=4000, noise_rate=0.2, seed=0))
    bench = mini_reward_bench(n_per_category=100)

Introduced in Chapter 02.
"""

from .generator import (
    CATEGORIES,
    LABEL_MODES,
    WorldConfig,
    category_names,
    generate_preference_pairs,
    mini_reward_bench,
    sample_prompts,
)
from .groups import ATTRIBUTE_NAMES, GROUP_WEIGHTS, USER_CONTEXTS, group_names, intransitive_example, user_profiles
from .judge import gold_attributes, gold_reward, gold_rewards, parse_prompt, weight_vector

__all__ = [
    "ATTRIBUTE_NAMES",
    "CATEGORIES",
    "GROUP_WEIGHTS",
    "LABEL_MODES",
    "USER_CONTEXTS",
    "WorldConfig",
    "category_names",
    "generate_preference_pairs",
    "gold_attributes",
    "gold_reward",
    "gold_rewards",
    "group_names",
    "intransitive_example",
    "mini_reward_bench",
    "parse_prompt",
    "sample_prompts",
    "user_profiles",
    "weight_vector",
]
