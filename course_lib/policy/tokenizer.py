"""The policy's tokenizer: byte-level BPE trained on the preference world's text.

The course's policy is a small causal language model trained from scratch, so it needs
a vocabulary of its own. Byte-level BPE (the GPT-2 scheme, Radford et al. 2019) starts
from the 256 byte values and merges the most frequent adjacent pairs until the vocabulary
is full. Every string can be encoded (there is no unknown token) and decoding gives the
exact text back: case, newlines, digits, punctuation and non-ASCII symbols such as ``÷``
survive, which matters because the gold judge parses the policy's answers.

Three special tokens frame a training example::

    prompt tokens  <|answer|>  response tokens  <|endoftext|>   <|pad|> ...

``<|answer|>`` (:data:`SEP`) tells the model that the response starts here;
``<|endoftext|>`` (:data:`EOS`) is what the model emits to stop; ``<|pad|>``
(:data:`PAD`) fills batches and is always masked out. Text is encoded with
``encode_special_tokens`` on, so a text that happens to contain the string
``"<|endoftext|>"`` is encoded as ordinary bytes and cannot end a response early.

Defined in Chapter 07.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..engine.files import write_text_atomic
from ..world import WorldConfig, generate_preference_pairs

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SEP = "<|answer|>"
SPECIAL_TOKENS = (EOS, PAD, SEP)
TOKENIZER_FILE = "tokenizer.json"
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # every byte, plus the specials


def _check_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{where} must be a str, got {type(text).__name__} ({text!r:.60})")
    return text


class PolicyTokenizer:
    """A trained byte-level BPE ``tokenizers.Tokenizer`` with the policy's special tokens.

    ``encode`` / ``decode`` work on plain text (no special tokens added, special tokens
    dropped); ``prompt_ids`` and ``response_ids`` add the separator and the end-of-text
    token that frame an example. Build one with :func:`train_tokenizer` or
    :meth:`load`.
    """

    def __init__(self, tokenizer: Tokenizer):
        missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
        if missing:
            raise ValueError(f"PolicyTokenizer: the tokenizer lacks the special token(s) {missing}; "
                             "build it with train_tokenizer()")
        tokenizer.encode_special_tokens = True  # "<|endoftext|>" inside a text is just text
        self.tokenizer = tokenizer
        self.eos_id, self.pad_id, self.sep_id = (tokenizer.token_to_id(token) for token in SPECIAL_TOKENS)
        self._special_ids = {self.eos_id, self.pad_id, self.sep_id}

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included (the model's embedding rows)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``; no special token is added."""
        return self.tokenizer.encode(_check_text(text, "encode: text"), add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (a list, or a 1-D tensor or array); special tokens are dropped."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        bad = next((i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"decode: every id must be an int in [0, {self.vocab_size}), got {bad!r}")
        return self.tokenizer.decode([i for i in ids if i not in self._special_ids], skip_special_tokens=False)

    def prompt_ids(self, prompt: str) -> list[int]:
        """What the policy reads before answering: ``encode(prompt) + [sep_id]``."""
        return self.encode(_check_text(prompt, "prompt_ids: prompt")) + [self.sep_id]

    def response_ids(self, response: str) -> list[int]:
        """What the policy should write: ``encode(response) + [eos_id]``."""
        return self.encode(_check_text(response, "response_ids: response")) + [self.eos_id]

    def save(self, directory) -> Path:
        """Write ``directory/tokenizer.json`` atomically (a temporary file renamed into place)."""
        path = Path(directory) / TOKENIZER_FILE
        write_text_atomic(path, self.tokenizer.to_str())
        return path

    @classmethod
    def load(cls, directory) -> PolicyTokenizer:
        """The tokenizer saved by :meth:`save` in ``directory``."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"PolicyTokenizer.load: no {TOKENIZER_FILE} in {directory}")
        return cls(Tokenizer.from_file(str(path)))

    def __repr__(self) -> str:
        return (f"PolicyTokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id}, pad_id={self.pad_id}, "
                f"sep_id={self.sep_id})")


class PairTokenizer:
    """The policy's tokenizer seen by a reward model: ``prompt <|answer|> response <|endoftext|>``.

    A reward model reads a (prompt, response) pair through any object with
    ``pair_ids(prompt, response, max_length)`` and ``pad_token_id``
    (:meth:`course_lib.reward.model.RewardModel.tokenize`). This one frames the pair
    exactly as the policy reads and writes it, ``prompt_ids(prompt) +
    response_ids(response)``, so a reward model made of the policy's transformer
    (InstructGPT's reward model is initialised from the SFT model, Ouyang et al. 2022)
    sees the text the policy was trained on, and its last token is the end-of-text
    token that closes the response. A pair longer than ``max_length`` loses the start
    of the prompt first, then (only if the response alone is too long) the end of the
    response text; the separator and the end-of-text token are always kept.

    Defined in Chapter 04.
    """

    def __init__(self, tokenizer: PolicyTokenizer):
        if not isinstance(tokenizer, PolicyTokenizer):
            raise ValueError(f"PairTokenizer: tokenizer must be a PolicyTokenizer, got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_id

    def pair_ids(self, prompt: str, response: str, max_length: int) -> list[int]:
        """``prompt_ids(prompt) + response_ids(response)``, cut to at most ``max_length`` ids."""
        budget = max_length - 2  # the separator and the end-of-text token
        if budget < 1:
            raise ValueError(f"pair_ids: max_length={max_length} leaves no room for text")
        prompt = self.tokenizer.encode(_check_text(prompt, "pair_ids: prompt"))
        response = self.tokenizer.encode(_check_text(response, "pair_ids: response"))[:budget]
        prompt = prompt[max(0, len(prompt) + len(response) - budget):]
        return prompt + [self.tokenizer.sep_id] + response + [self.tokenizer.eos_id]

    def __repr__(self) -> str:
        return f"PairTokenizer({self.tokenizer!r})"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PolicyTokenizer:
    """Train a byte-level BPE tokenizer of ``vocab_size`` ids (special tokens included) on ``texts``.

    Deterministic: the same texts give the same vocabulary and merges. The byte
    alphabet is always in the vocabulary, so any text round-trips exactly, even one
    with characters the training texts never used.
    """
    if isinstance(texts, str):
        raise ValueError("train_tokenizer: texts must be a list of strings, got a single str")
    texts = [_check_text(text, f"train_tokenizer: texts[{i}]") for i, text in enumerate(texts)]
    if not texts:
        raise ValueError("train_tokenizer: texts is empty; pass the corpus to learn merges from (world_texts())")
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"train_tokenizer: vocab_size must be an int >= {MIN_VOCAB_SIZE} (256 bytes + "
                         f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size!r}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PolicyTokenizer(tokenizer)


def world_texts(n_pairs: int = 3000, seed: int = 0) -> list[str]:
    """The tokenizer's corpus: prompts, chosen and rejected responses of ``n_pairs`` train-split world pairs."""
    pairs = generate_preference_pairs(WorldConfig(n_pairs=n_pairs, seed=seed, split="train"))
    return [*pairs["prompt"], *pairs["chosen"], *pairs["rejected"]]
