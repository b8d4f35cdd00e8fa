"""Sampling completions from the policy: a batched decoding loop with a key-value cache.

DPO needs the policy's answers to evaluate it, and the on-policy methods of Chapter 08
sample thousands of them per step, so sampling must be fast. ``model.generate`` is
general and carries a large per-step overhead that dominates at the course's model
sizes; :func:`generate` is the plain loop instead, and every line of it is something a
learner should see once:

1. **Left padding.** Prompts of a batch have different lengths. Padding them on the
   left lines up their last tokens, so every row's next token is predicted at the same
   column. The ``attention_mask`` hides the padding, and explicit ``position_ids``
   (``cumsum(mask) - 1``) give every row's first real token position 0, as in training.
2. **Prefill.** One forward pass over the padded prompts fills the key-value cache.
3. **Decode.** Each step feeds only the token just chosen; attention reads the keys
   and values of all earlier tokens from the cache (``past_key_values``) instead of
   recomputing them, so a step costs one token's work rather than the whole sequence's.
4. **Choose.** Greedy takes the most likely token. Sampling divides the logits by the
   ``temperature``, keeps the smallest set of most likely tokens whose probability
   reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020), and draws from it.
5. **Stop.** A row is finished once it emits the end-of-text token; the batch stops
   when every row is finished or ``max_new_tokens`` is reached.

Two caches: ``"dynamic"`` (``DynamicCache``) grows by one column per step, the best
choice on CPU; ``"static"`` (``StaticCache``) allocates ``prompt + max_new_tokens``
columns up front and keeps every tensor's shape fixed, which is what ``torch.compile``
and CUDA graphs need on a GPU. Both give the same tokens.

Defined in Chapter 07.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, StaticCache

from ..progress import tqdm
from ..runtime import autocast, check_precision, resolve_device
from .tokenizer import PolicyTokenizer

CACHES = ("dynamic", "static")


@dataclass
class Completions:
    """Sampled responses, in the order of the prompts.

    ``token_ids``: each response's tokens, ending with the end-of-text id when the
    response ended (``finished``), cut at ``max_new_tokens`` otherwise. ``texts``: their
    decoded text (without the end-of-text token).

    ``logprobs``: for every response token, log pi(token | prompt, earlier tokens) under
    the model's own distribution, the plain log-softmax of its logits, *before*
    temperature and top-p reshape it for sampling. That is the quantity the policy
    objectives of Chapters 07-08 need (the log-probability the model assigns, not the
    one the sampler used), and it equals what a training forward pass over
    prompt + response computes, up to float rounding.
    """

    texts: list[str]
    token_ids: list[list[int]]
    logprobs: list[list[float]]
    finished: list[bool]

    @property
    def lengths(self) -> list[int]:
        """Number of tokens of each response (the end-of-text token included)."""
        return [len(ids) for ids in self.token_ids]

    def __len__(self) -> int:
        return len(self.texts)


def _check_arguments(prompts, max_new_tokens, temperature, top_p, batch_size, cache, n_positions) -> None:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("generate: prompts must be a list of strings (wrap a single prompt in a list)")
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens < n_positions:
        raise ValueError(f"generate: max_new_tokens must be an int in [1, {n_positions}) (the model's context "
                         f"n_positions={n_positions} must also hold the prompt), got {max_new_tokens!r}")
    if not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0 (use greedy=True for the most likely tokens), "
                         f"got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"generate: batch_size must be a positive int, got {batch_size!r}")
    if cache not in CACHES:
        raise ValueError(f"generate: cache must be one of {CACHES}, got {cache!r}")


def _prompt_rows(tokenizer: PolicyTokenizer, prompts: list[str], budget: int) -> list[list[int]]:
    """Every prompt's ids (separator included), cut from the left to at most ``budget`` tokens."""
    rows = [tokenizer.prompt_ids(prompt) for prompt in prompts]
    cut = sum(len(row) > budget for row in rows)
    if cut:
        warnings.warn(f"generate: {cut} prompt(s) longer than {budget} tokens were cut from the left, so that "
                      "prompt + max_new_tokens fits the model's context", stacklevel=3)
    return [row[-budget:] for row in rows]


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logits`` with every token outside the nucleus set to -inf.

    The nucleus is the most likely tokens, taken in order of probability until their
    total reaches ``top_p``; the most likely token is always in it.
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def _choose(logits: torch.Tensor, greedy: bool, temperature: float, top_p: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of every row and its log-probability under the model (before temperature and top-p)."""
    logits = logits.float()
    logprobs = logits.log_softmax(dim=-1)
    if greedy:
        tokens = logits.argmax(dim=-1)
    else:
        scaled = logits / temperature
        if top_p < 1:
            scaled = _top_p_filter(scaled, top_p)
        tokens = torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def _decode_batch(model, rows: list[list[int]], tokenizer: PolicyTokenizer, *, max_new_tokens: int, greedy: bool,
                  temperature: float, top_p: float, cache: str, generator: torch.Generator,
                  device: torch.device) -> tuple[list[list[int]], list[list[float]], list[bool]]:
    """Prefill and decode one batch of prompt rows (steps 1-5 of the module docstring)."""
    n, width = len(rows), max(len(row) for row in rows)
    total = width + max_new_tokens
    input_ids = torch.full((n, width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((n, total), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1  # the prompt, and every column a new token will fill
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
    next_position = positions[:, -1:] + 1

    static = cache == "static"
    past = StaticCache(config=model.config, max_cache_len=total) if static else DynamicCache(config=model.config)

    def mask_for(seen: int) -> torch.Tensor:
        """A static cache's mask keeps its full, fixed length; a dynamic one covers the columns cached so far."""
        return mask if static else mask[:, :seen]

    tokens = torch.full((n, max_new_tokens), tokenizer.pad_id, dtype=torch.long, device=device)
    token_logprobs = torch.zeros((n, max_new_tokens), device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    logits = model(input_ids=input_ids, attention_mask=mask_for(width), position_ids=positions,
                   past_key_values=past, use_cache=True, logits_to_keep=1).logits[:, -1]
    steps = 0
    for step in range(max_new_tokens):
        chosen, chosen_logprobs = _choose(logits, greedy, temperature, top_p, generator)
        tokens[:, step], token_logprobs[:, step] = chosen, chosen_logprobs
        finished |= chosen == tokenizer.eos_id
        steps = step + 1
        if steps == max_new_tokens or bool(finished.all()):
            break
        logits = model(input_ids=chosen[:, None], attention_mask=mask_for(width + steps), position_ids=next_position,
                       past_key_values=past, use_cache=True).logits[:, -1]
        next_position = next_position + 1

    tokens, token_logprobs, finished = tokens[:, :steps].tolist(), token_logprobs[:, :steps].tolist(), finished.tolist()
    # a row ends at its first end-of-text token; what it was fed after that is dropped
    lengths = [row.index(tokenizer.eos_id) + 1 if done else steps for row, done in zip(tokens, finished)]
    return ([row[:k] for row, k in zip(tokens, lengths)],
            [row[:k] for row, k in zip(token_logprobs, lengths)],
            finished)


def generate(model: PreTrainedModel, tokenizer: PolicyTokenizer, prompts: list[str], *, max_new_tokens: int = 96,
             temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False, batch_size: int = 64, seed: int = 0,
             device: str | torch.device | None = None, precision: str = "fp32", cache: str = "dynamic",
             progress: bool = False) -> Completions:
    """Sample one response per prompt from ``model``; returns :class:`Completions` in the order of ``prompts``.

    ``greedy=True`` takes the most likely token at every step (``temperature`` and
    ``top_p`` are then unused); otherwise tokens are drawn at ``temperature`` from the
    ``top_p`` nucleus. Prompts are sorted by length and decoded ``batch_size`` at a time
    (less padding); randomness comes from a generator of the call's own seeded with
    ``seed``, so a call is reproducible for a given ``seed`` and ``batch_size`` and the
    caller's global random state is untouched.

    A prompt longer than ``n_positions - max_new_tokens`` tokens is cut from the left
    (its end and the answer separator are kept), with a warning.

    ``device``: where to run (``None``: where the model is; the model is moved there
    otherwise). ``precision``: ``"fp32"``, ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU),
    as autocast. ``cache``: ``"dynamic"`` or ``"static"`` (see the module docstring).
    The model runs in eval mode and gets its training flag back afterwards.
    """
    n_positions = model.config.n_positions
    _check_arguments(prompts, max_new_tokens, temperature, top_p, batch_size, cache, n_positions)
    device = next(model.parameters()).device if device is None else resolve_device(device)
    precision = check_precision(precision, device)
    model.to(device)
    rows = _prompt_rows(tokenizer, list(prompts), n_positions - max_new_tokens)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    generator = torch.Generator(device=device).manual_seed(seed)
    token_ids, logprobs, finished = [None] * len(rows), [None] * len(rows), [False] * len(rows)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, precision):
            starts = range(0, len(order), batch_size)
            for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
                batch = order[start:start + batch_size]
                results = _decode_batch(model, [rows[i] for i in batch], tokenizer, max_new_tokens=max_new_tokens,
                                        greedy=greedy, temperature=temperature, top_p=top_p, cache=cache,
                                        generator=generator, device=device)
                for i, ids, row_logprobs, done in zip(batch, *results):
                    token_ids[i], logprobs[i], finished[i] = ids, row_logprobs, done
    finally:
        model.train(was_training)
    return Completions([tokenizer.decode(ids) for ids in token_ids], token_ids, logprobs, finished)
