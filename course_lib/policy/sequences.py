"""Prompt + response token sequences, encoded once and cut into right-padded batches.

A policy is trained and scored on sequences ``prompt <|answer|> response <|endoftext|>``;
only the response tokens (the end token included) count in a log-probability or a loss:
the prompt is given, not written. :class:`Sequences` holds every sequence's token ids
and where its response starts; :meth:`Sequences.batch` pads a batch on the RIGHT, so
every real token sits at its true position and, attention being causal, never sees a
pad: no attention mask is needed, and the fast causal attention kernel applies.

Defined in Chapter 07.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine.runtime import fingerprint


@dataclass
class SequenceBatch:
    """Right-padded ``input_ids`` (rows, length) and ``response_mask``: True where a token is a response token.

    ``response_mask[i, t]`` marks token ``t`` of row ``i`` as predicted by the policy,
    i.e. scored from the logits at position ``t - 1``.
    """

    input_ids: torch.Tensor
    response_mask: torch.Tensor

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(self.input_ids.to(device, non_blocking=True), self.response_mask.to(device, non_blocking=True))

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)


class Sequences:
    """Token ids of ``prompt + response`` pairs, truncated to ``max_length`` tokens.

    ``prompt_ids`` end with the separator token; ``response_ids`` (with the end token
    when the answer ended) are what the policy is scored on.

    A sequence longer than ``max_length`` loses the end of its response (then it has no
    end token: the policy learns nothing about stopping from it). ``pad_to_multiple``
    rounds batch lengths up (fewer distinct shapes for ``torch.compile``).

    Defined in Chapter 07.
    """

    def __init__(self, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, max_length: int,
                 pad_to_multiple: int = 1, name: str = "sequences"):
        if len(prompt_ids) != len(response_ids):
            raise ValueError(f"{name}: {len(prompt_ids)} prompts but {len(response_ids)} responses")
        self.ids: list[torch.Tensor] = []
        self.starts: list[int] = []
        for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
            if len(prompt) >= max_length:
                raise ValueError(f"{name} row {row}: the prompt has {len(prompt)} tokens, no room for a response "
                                 f"within max_length={max_length}")
            self.ids.append(torch.tensor((list(prompt) + list(response))[:max_length], dtype=torch.long))
            self.starts.append(len(prompt))
        self.pad_id, self.pad_to_multiple = pad_id, pad_to_multiple
        self.lengths = torch.tensor([len(ids) for ids in self.ids], dtype=torch.long)

    @classmethod
    def from_texts(cls, tokenizer, prompts, responses, max_length: int, pad_to_multiple: int = 1,
                   name: str = "sequences") -> Sequences:
        """Encode ``prompt <|answer|>`` and ``response <|endoftext|>`` with the policy's tokenizer.

        To score answers a policy sampled, build from the sampled token ids instead
        (``Sequences(prompt_ids, completions.token_ids, ...)``): decoding and encoding
        again can split the text into other tokens, and an unfinished answer has no end
        token to score.
        """
        for row, (prompt, response) in enumerate(zip(prompts, responses)):
            if not isinstance(prompt, str) or not isinstance(response, str):
                raise ValueError(f"{name} row {row}: prompt and response must be strings, got "
                                 f"{type(prompt).__name__} and {type(response).__name__}")
        return cls([tokenizer.prompt_ids(p) for p in prompts], [tokenizer.response_ids(r) for r in responses],
                   tokenizer.pad_id, max_length, pad_to_multiple, name)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows) -> SequenceBatch:
        """The sequences ``rows`` (a list or tensor of indices), padded on the right to the batch's longest."""
        rows = [int(r) for r in rows]
        longest = max(len(self.ids[r]) for r in rows)
        longest = -(-longest // self.pad_to_multiple) * self.pad_to_multiple
        input_ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        response_mask = torch.zeros((len(rows), longest), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids = self.ids[r]
            input_ids[i, : len(ids)] = ids
            response_mask[i, self.starts[r] : len(ids)] = True
        return SequenceBatch(input_ids, response_mask)

    def fingerprint(self) -> str:
        return fingerprint(torch.cat(self.ids), self.lengths, torch.tensor(self.starts))
