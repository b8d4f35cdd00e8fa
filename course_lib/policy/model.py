"""The policy model: a small GPT-2 trained from scratch on the preference world.

Chapter 07 fine-tunes a policy with DPO, and the course wants learners to watch every
step on a laptop, with no download. So the policy is a GPT-2-style decoder
(``transformers.GPT2LMHeadModel``) sized by a profile, from one layer of width 64 for
smoke tests to eight layers of width 512 for full runs, with the input embedding tied
to the output layer (Press & Wolf 2017), which halves the parameters of a model whose
vocabulary is a large share of it.

:func:`save_policy` writes the model and its tokenizer together, atomically;
:func:`load_policy` reads both back.

Defined in Chapter 07.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel

from ..engine.files import atomic_directory
from ..engine.runtime import LocalRandomState, resolve_device
from .tokenizer import TOKENIZER_FILE, PolicyTokenizer


@dataclass(frozen=True)
class PolicyConfig:
    """The shape of the policy: ``n_layer`` blocks of width ``n_embd`` with ``n_head`` attention heads.

    ``n_positions``: the context, prompt and response together, in tokens.
    ``dropout`` applies to embeddings, residual branches and attention weights.
    """

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PolicyConfig: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"PolicyConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), "
                             "so that every attention head has the same width")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"PolicyConfig: dropout must be in [0, 1), got {self.dropout!r}")


POLICY_SIZES = {
    "smoke": PolicyConfig(n_layer=1, n_embd=64, n_head=2, n_positions=160),
    "standard": PolicyConfig(n_layer=2, n_embd=128, n_head=4, n_positions=160),
    "full": PolicyConfig(n_layer=8, n_embd=512, n_head=8, n_positions=256),
}


def policy_config(profile: str, **overrides) -> PolicyConfig:
    """The policy size of a course profile (``"smoke"``, ``"standard"``, ``"full"``), with optional field overrides."""
    if profile not in POLICY_SIZES:
        raise ValueError(f"policy_config: profile must be one of {list(POLICY_SIZES)}, got {profile!r}")
    return replace(POLICY_SIZES[profile], **overrides)


def build_policy(config: PolicyConfig, tokenizer: PolicyTokenizer, seed: int = 0) -> GPT2LMHeadModel:
    """A freshly initialised policy for ``tokenizer``'s vocabulary, on CPU.

    The weights depend only on ``config``, the vocabulary size and ``seed``; they are
    drawn from the run's own random stream, so the caller's global torch, numpy and
    python generators are left exactly as they were.
    """
    if not isinstance(config, PolicyConfig):
        raise ValueError(f"build_policy: config must be a PolicyConfig (see policy_config()), "
                         f"got {type(config).__name__}")
    gpt2 = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_id,
        eos_token_id=tokenizer.eos_id,
        # No pad token in the model's config: training batches are padded on the right, where
        # causal attention never looks, so they need no attention mask (and the fast causal
        # kernel applies); the sampler passes its own mask. transformers would otherwise warn
        # about a missing mask on every right-padded batch. The tokenizer holds the pad id.
        pad_token_id=None,
    )
    try:  # PyTorch's fused attention (SDPA), or the plain eager attention where SDPA is unavailable
        gpt2._attn_implementation = "sdpa"
        with LocalRandomState(seed):
            return GPT2LMHeadModel(gpt2)
    except (ValueError, ImportError):
        gpt2._attn_implementation = "eager"
        with LocalRandomState(seed):
            return GPT2LMHeadModel(gpt2)


def save_policy(model: GPT2LMHeadModel, tokenizer: PolicyTokenizer, directory) -> Path:
    """Write the model (``save_pretrained``) and its tokenizer to ``directory``, atomically.

    Both are written to a temporary folder beside ``directory`` that is then renamed
    into place, so a crash never leaves a half-written policy. A policy already at
    ``directory`` is moved aside into a hidden folder beside it for the instant of the
    swap, and deleted once the new one is in place.
    """
    directory = Path(directory)
    with atomic_directory(directory) as staging:
        model.save_pretrained(staging)
        tokenizer.save(staging)
    return directory


def load_policy(directory, device: str = "cpu") -> tuple[GPT2LMHeadModel, PolicyTokenizer]:
    """The ``(model, tokenizer)`` saved by :func:`save_policy`, the model on ``device`` in eval mode."""
    directory = Path(directory)
    if not (directory / TOKENIZER_FILE).is_file() or not (directory / "config.json").is_file():
        raise FileNotFoundError(f"load_policy: {directory} does not hold a saved policy (config.json and "
                                f"{TOKENIZER_FILE}); write one with save_policy()")
    tokenizer = PolicyTokenizer.load(directory)
    try:
        model = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="sdpa")
    except (ValueError, ImportError):
        model = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager")
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"load_policy: the model in {directory} has {model.config.vocab_size} token ids, "
                         f"its tokenizer {tokenizer.vocab_size}")
    return model.to(resolve_device(device)).eval(), tokenizer
