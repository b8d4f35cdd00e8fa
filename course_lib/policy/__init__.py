"""The course's own policy: a byte-level BPE tokenizer, a small GPT-2 model, and a sampler.

The policy is trained from scratch on the preference world's text, so Chapter 07's DPO
runs end to end on a laptop with nothing to download:

- :mod:`~course_lib.policy.tokenizer`: byte-level BPE trained on world text, with the
  special tokens that frame an example (``prompt <|answer|> response <|endoftext|>``);
- :mod:`~course_lib.policy.model`: the model's sizes per profile, building, saving
  and loading a policy with its tokenizer;
- :mod:`~course_lib.policy.sampling`: batched sampling with a key-value cache,
  returning every response token's log-probability.

Defined in Chapter 07.
"""

from .model import (
    POLICY_SIZES,
    PolicyConfig,
    build_policy,
    load_policy,
    policy_config,
    save_policy,
)
from .sampling import Completions, generate
from .tokenizer import EOS, PAD, SEP, PairTokenizer, PolicyTokenizer, train_tokenizer, world_texts

__all__ = [
    "EOS",
    "PAD",
    "POLICY_SIZES",
    "SEP",
    "Completions",
    "PairTokenizer",
    "PolicyConfig",
    "PolicyTokenizer",
    "build_policy",
    "generate",
    "load_policy",
    "policy_config",
    "save_policy",
    "train_tokenizer",
    "world_texts",
]
