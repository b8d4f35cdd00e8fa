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

**A compiled decode step for the GPU** (``compile=True``). At the course's model sizes
a GPU finishes the arithmetic of one decode step in a fraction of the time it takes
Python to *ask* for it: every step runs the model's forward in Python, one module and
one small kernel launch at a time (hundreds per step for a 12-layer model), and each
launch costs microseconds of CPU work while the GPU mostly waits. Two things remove
that overhead:

- ``torch.compile`` turns the whole step (the model's forward for one token, and the
  choice of the next token) into a few fused kernels, with the Python removed;
- a **CUDA graph** records those kernel launches once and afterwards replays the whole
  recording with a single call, so a step costs one launch instead of hundreds.

A recording replays the *same* kernels on the *same* memory addresses with the *same*
shapes, so the step must never change shape: the cache is a static one of the model's
full context (``n_positions`` columns, kept and reused across batches and calls), the
attention mask always has that full length, positions are a tensor (not a Python
number, which would be baked into the recording), and every batch has exactly
``batch_size`` rows (the last batch of prompts is padded with dummy rows, which are
dropped from the result). Then one recording serves every step of every batch. The
prefill (step 2) stays uncompiled: it runs once per batch, and its width changes from
batch to batch.

Asking whether every row has finished copies a value from the GPU to Python and waits
for the GPU to get there, which stalls the queue of work; the compiled path asks only
every ``CHECK_EVERY`` steps. The few extra steps change nothing: a row's tokens after
its first end-of-text are dropped anyway, and the random generator is put back to
where the plain loop stops drawing, so the next batch draws the same numbers.

The compiled step is the same computation as the plain loop's, and the random draw
stays outside it (with the call's generator), so it gives the same tokens as long as
the two compute the same logits. In fp32 on a CPU they agree to within float rounding
(about 1e-6), and the tests check that greedy and sampled tokens are identical. A GPU's fused
kernels may round differently in the last bits, so a near-tie between two tokens can,
rarely, go the other way, after which that completion continues differently.

On a CPU there is no launch overhead to remove, so ``compile=True`` there simply runs
the plain loop; ``compile="force"`` runs the compiled path on any device (without CUDA
graphs off the GPU), which is how the tests check the GPU's code path on a CPU.

Defined in Chapter 07.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, StaticCache

from ..engine.progress import tqdm
from ..engine.runtime import autocast, check_precision
from .tokenizer import PolicyTokenizer

CACHES = ("dynamic", "static")
COMPILE_MODES = (False, True, "force")
CHECK_EVERY = 8  # the compiled path asks whether every row has finished once per this many steps


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


def _check_arguments(prompts, max_new_tokens, temperature, top_p, batch_size, cache, n_positions,
                     compile=False) -> None:
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
    if not (compile is False or compile is True or (isinstance(compile, str) and compile == "force")):
        raise ValueError(f"generate: compile must be one of {COMPILE_MODES}: True compiles on a CUDA GPU (the plain "
                         f"loop elsewhere), 'force' compiles on any device; got {compile!r}")


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


def _sampling_probs(logits: torch.Tensor, temperature, top_p, nucleus: bool) -> torch.Tensor:
    """The distribution tokens are drawn from: ``logits`` at ``temperature``, cut to the ``top_p`` nucleus if asked.

    ``temperature`` and ``top_p`` are numbers, or 0-d tensors in the compiled step (a
    tensor is an input of the compiled code; a number would be baked into it).
    """
    scaled = logits / temperature
    if nucleus:
        scaled = _top_p_filter(scaled, top_p)
    return scaled.softmax(dim=-1)


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs``, drawn by inverse-CDF sampling: the same distribution as ``torch.multinomial``.

    One uniform number per row is located in the running sum of the row's probabilities
    (``searchsorted``), so a token is drawn with its probability and a token of
    probability 0 (outside the top-p nucleus) never. ``torch.multinomial`` draws one
    random number per vocabulary entry on the CPU and took a third of a decode step here.
    """
    cdf = probs.cumsum(dim=-1)
    uniform = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    return torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def _choose(logits: torch.Tensor, greedy: bool, temperature: float, top_p: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of every row and its log-probability under the model (before temperature and top-p)."""
    logits = logits.float()
    logprobs = logits.log_softmax(dim=-1)
    if greedy:
        tokens = logits.argmax(dim=-1)
    else:
        probs = _sampling_probs(logits, temperature, top_p, top_p < 1)
        tokens = _draw(probs, generator)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def _decode_step(model, token: torch.Tensor, mask: torch.Tensor, position: torch.Tensor, past: StaticCache,
                 greedy: bool, temperature, top_p, nucleus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step, the function that is compiled: the forward pass for one token per row, then the choice.

    Greedy: returns the chosen tokens and their log-probabilities. Sampling: returns
    the distribution to draw from and all log-probabilities; the draw itself happens
    outside (:meth:`_FastDecoder.step`), with the call's random generator.
    """
    logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, past_key_values=past,
                   use_cache=True).logits[:, -1].float()
    logprobs = logits.log_softmax(dim=-1)
    if greedy:
        tokens = logits.argmax(dim=-1)
        return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)
    return _sampling_probs(logits, temperature, top_p, nucleus), logprobs


_COMPILED_STEPS: dict[str, object] = {}  # torch.compile mode -> the compiled _decode_step, shared by every model
_FAST_STATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its reusable static cache


def _compiled_step(device: torch.device):
    """The compiled :func:`_decode_step`: with CUDA graphs on a GPU ("reduce-overhead"), plain inductor elsewhere.

    Compiled once per process and mode. The model is an argument, not a constant: its
    weights are inputs of the compiled code, so every model of the same architecture
    uses the same compiled code (and the cache holds no reference to any model).
    """
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    if mode not in _COMPILED_STEPS:
        _COMPILED_STEPS[mode] = torch.compile(_decode_step, mode=mode, fullgraph=True, dynamic=False)
    return _COMPILED_STEPS[mode]


class _FastDecoder:
    """The compiled path's fixed-shape state for one call: batch size, cache, compiled step, settings tensors.

    The static cache (``batch_size`` rows x the model's ``n_positions`` columns) is kept
    per model and reused, reset, for every batch and every later call with the same
    batch size, device and precision: a CUDA graph replays on fixed memory addresses,
    and a new cache would mean a new recording.
    """

    def __init__(self, model, batch_size: int, device: torch.device, precision: str, greedy: bool,
                 temperature: float, top_p: float):
        self.batch_size, self.length = batch_size, model.config.n_positions
        key = (batch_size, self.length, str(device), precision)
        state = _FAST_STATE.get(model)
        if state is None or state[0] != key:  # only the latest cache is kept: it can be large on a GPU
            state = (key, StaticCache(config=model.config, max_cache_len=self.length))
            _FAST_STATE[model] = state
        self.cache = state[1]
        self.step_fn = _compiled_step(device)
        self.greedy, self.nucleus = greedy, top_p < 1
        self.temperature = torch.tensor(temperature, dtype=torch.float32, device=device)
        self.top_p = torch.tensor(top_p, dtype=torch.float32, device=device)
        self.token = torch.zeros(batch_size, dtype=torch.long, device=device)  # the step's input token per row
        self.drawn = torch.zeros(batch_size, dtype=torch.long, device=device)  # sampled tokens; dummy rows keep 0

    def step(self, model, chosen, mask, position, generator, n_real: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``chosen`` (the tokens just chosen); the next tokens and their log-probabilities, as :func:`_choose`.

        Tokens are drawn for the first ``n_real`` rows only (the others are dummy rows),
        so the generator is used exactly as by the plain loop, which has no dummy rows.
        """
        self.token.copy_(chosen)  # ``chosen`` may live in the previous replay's output memory, reused below
        torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed: reuse their memory
        first, second = self.step_fn(model, self.token, mask, position, self.cache, self.greedy, self.temperature,
                                     self.top_p, self.nucleus)
        if self.greedy:
            return first, second
        self.drawn[:n_real] = _draw(first[:n_real], generator)
        return self.drawn, second.gather(-1, self.drawn[:, None]).squeeze(-1)


def _decode_batch(model, rows: list[list[int]], tokenizer: PolicyTokenizer, *, max_new_tokens: int, greedy: bool,
                  temperature: float, top_p: float, cache: str, generator: torch.Generator, device: torch.device,
                  fast: _FastDecoder | None = None) -> tuple[list[list[int]], list[list[float]], list[bool]]:
    """Prefill and decode one batch of prompt rows (steps 1-5 of the module docstring).

    ``fast``: decode with the compiled step instead; the batch is then padded to
    ``fast.batch_size`` rows and the cache has the model's full context (fixed shapes).
    """
    n_real = len(rows)
    if fast is not None:  # dummy rows (copies of the first) up to the fixed batch size, finished from the start
        rows = rows + [rows[0]] * (fast.batch_size - n_real)
    n, width = len(rows), max(len(row) for row in rows)
    total = fast.length if fast is not None else width + max_new_tokens
    input_ids = torch.full((n, width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((n, total), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1  # the prompt, and every column a new token will fill
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
    next_position = positions[:, -1:] + 1

    static = cache == "static" or fast is not None
    if fast is not None:
        past = fast.cache
        past.reset()  # zeroed in place: the same memory for every batch
    else:
        past = StaticCache(config=model.config, max_cache_len=total) if static else DynamicCache(config=model.config)
    check_every = CHECK_EVERY if fast is not None else 1
    rewind = fast is not None and not greedy  # see the end of the function
    states = {}  # token step -> the generator's state right after that token was drawn (the last few steps)

    def drawn(step: int) -> None:
        if rewind:
            states[step] = generator.get_state()
            states.pop(step - check_every - 1, None)

    def mask_for(seen: int) -> torch.Tensor:
        """A static cache's mask keeps its full, fixed length; a dynamic one covers the columns cached so far."""
        return mask if static else mask[:, :seen]

    tokens = torch.full((n, max_new_tokens), tokenizer.pad_id, dtype=torch.long, device=device)
    token_logprobs = torch.zeros((n, max_new_tokens), device=device)
    finished = torch.arange(n, device=device) >= n_real  # only dummy rows are finished before the first step
    logits = model(input_ids=input_ids, attention_mask=mask_for(width), position_ids=positions,
                   past_key_values=past, use_cache=True, logits_to_keep=1).logits[:, -1]
    chosen, chosen_logprobs = _choose(logits[:n_real], greedy, temperature, top_p, generator)
    if n > n_real:  # the dummy rows get the end-of-text token (they are finished already)
        chosen = torch.cat([chosen, chosen.new_full((n - n_real,), tokenizer.eos_id)])
        chosen_logprobs = torch.cat([chosen_logprobs, chosen_logprobs.new_zeros(n - n_real)])
    drawn(0)
    steps = 0
    for step in range(max_new_tokens):
        tokens[:, step], token_logprobs[:, step] = chosen, chosen_logprobs
        finished |= chosen == tokenizer.eos_id
        steps = step + 1
        if steps == max_new_tokens or (steps % check_every == 0 and bool(finished.all())):
            break
        if fast is not None:
            chosen, chosen_logprobs = fast.step(model, chosen, mask, next_position, generator, n_real)
            drawn(step + 1)
        else:
            logits = model(input_ids=chosen[:, None], attention_mask=mask_for(width + steps),
                           position_ids=next_position, past_key_values=past, use_cache=True).logits[:, -1]
            chosen, chosen_logprobs = _choose(logits, greedy, temperature, top_p, generator)
        next_position = next_position + 1

    tokens, token_logprobs = tokens[:n_real, :steps].tolist(), token_logprobs[:n_real, :steps].tolist()
    finished = finished[:n_real].tolist()
    # a row ends at its first end-of-text token; what it was fed after that is dropped
    lengths = [row.index(tokenizer.eos_id) + 1 if done else steps for row, done in zip(tokens, finished)]
    if rewind and all(finished):
        # The plain loop stops drawing at the step its last row ends; the compiled path drew on until its next check.
        # Putting the generator back where the plain loop leaves it keeps the next batches' draws the same.
        generator.set_state(states[max(lengths) - 1])
    return ([row[:k] for row, k in zip(tokens, lengths)],
            [row[:k] for row, k in zip(token_logprobs, lengths)],
            finished)


def generate(model: PreTrainedModel, tokenizer: PolicyTokenizer, prompts: list[str], *, max_new_tokens: int = 96,
             temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False, batch_size: int = 64, seed: int = 0,
             precision: str = "fp32", cache: str = "dynamic",
             progress: bool = False, compile: bool | str = False) -> Completions:
    """Sample one response per prompt from ``model``; returns :class:`Completions` in the order of ``prompts``.

    ``greedy=True`` takes the most likely token at every step (``temperature`` and
    ``top_p`` are then unused); otherwise tokens are drawn at ``temperature`` from the
    ``top_p`` nucleus. Prompts are sorted by length and decoded ``batch_size`` at a time
    (less padding); randomness comes from a generator of the call's own seeded with
    ``seed``, so a call is reproducible for a given ``seed`` and ``batch_size`` and the
    caller's global random state is untouched.

    A prompt longer than ``n_positions - max_new_tokens`` tokens is cut from the left
    (its end and the answer separator are kept), with a warning.

    The model runs where it is (move it first: ``model.to(device)``).
    ``precision``: ``"fp32"``, ``"bf16"`` (CPU or GPU) or ``"fp16"`` (GPU),
    as autocast. ``cache``: ``"dynamic"`` or ``"static"`` (see the module docstring).
    The model runs in eval mode and gets its training flag back afterwards.

    ``compile``: decode with a compiled, fixed-shape step (see the module docstring).
    ``False`` (the default): the plain loop. ``True``: the compiled step with CUDA graphs
    when the model runs on a CUDA GPU; on any other device (CPU, MPS) this falls back
    to the plain loop with ``cache`` as given, because there is no launch overhead to
    remove there. ``"force"``: the compiled step on any device (CUDA graphs only on a
    GPU), to check the GPU's code path on a CPU. The compiled step always uses a static
    cache of the model's full context (``cache`` is then unused) and decodes exactly
    ``batch_size`` rows per batch, padding the last batch with dummy rows, so one
    compiled step serves every batch; pick ``batch_size`` near the number of prompts
    when there are few. The first call compiles (tens of seconds), later calls with the
    same shapes reuse it. Tokens are the same as the plain loop's (see the module docstring).
    """
    n_positions = model.config.n_positions
    _check_arguments(prompts, max_new_tokens, temperature, top_p, batch_size, cache, n_positions, compile)
    device = next(model.parameters()).device
    precision = check_precision(precision, device)
    rows = _prompt_rows(tokenizer, list(prompts), n_positions - max_new_tokens)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    generator = torch.Generator(device=device).manual_seed(seed)
    compiled = compile == "force" or (compile is True and device.type == "cuda")
    token_ids, logprobs, finished = [None] * len(rows), [None] * len(rows), [False] * len(rows)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, precision):
            fast = (_FastDecoder(model, batch_size, device, precision, greedy, temperature, top_p)
                    if compiled and rows else None)
            starts = range(0, len(order), batch_size)
            for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
                batch = order[start:start + batch_size]
                results = _decode_batch(model, [rows[i] for i in batch], tokenizer, max_new_tokens=max_new_tokens,
                                        greedy=greedy, temperature=temperature, top_p=top_p, cache=cache,
                                        generator=generator, device=device, fast=fast)
                for i, ids, row_logprobs, done in zip(batch, *results):
                    token_ids[i], logprobs[i], finished[i] = ids, row_logprobs, done
    finally:
        model.train(was_training)
    return Completions([tokenizer.decode(ids) for ids in token_ids], token_ids, logprobs, finished)
