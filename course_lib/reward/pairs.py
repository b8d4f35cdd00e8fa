"""Preference pairs ready for a reward model: columns read and checked, texts encoded once, batches.

A dataset of ``(prompt, chosen, rejected)`` rows becomes a :class:`PairData`: in
frozen mode the encoder's pooled features of every text (computed once), otherwise
padded token ids. :func:`pair_batch` cuts a batch of rows out of it, with all chosen
sequences first, then all rejected ones, so one forward pass scores both sides;
token batches are padded only to their longest sequence.

Defined in Chapter 02.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import RewardModel
from ..engine.runtime import fingerprint

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class PairBatch:
    """One batch: dataset rows, model inputs (all chosen sequences, then all rejected) and margins.

    Defined in Chapter 02.
    """

    indices: torch.Tensor
    inputs: dict[str, torch.Tensor]
    margin: torch.Tensor | None = None


@dataclass
class PairData:
    """A dataset ready for batching: features or padded token ids for rows ``[chosen; rejected]``.

    ``lengths``: each pair's longer token length (``None`` for features).

    Defined in Chapter 02.
    """

    n_pairs: int
    tensors: dict[str, torch.Tensor]
    lengths: torch.Tensor | None
    margin: torch.Tensor | None

    def fingerprint(self) -> str:
        """A hash of what the pairs hold (features or token ids, and margins)."""
        return fingerprint(*(self.tensors[name] for name in sorted(self.tensors)), self.margin)


def read_pair_columns(dataset, name: str = "dataset", margin_column: str | None = None) -> dict[str, list]:
    """Columns ``prompt``, ``chosen``, ``rejected`` (and the margin column) of a Dataset or list of dicts.

    Raises ``ValueError`` naming the problem: an empty dataset, a missing column, a
    row whose text is not a string.

    Defined in Chapter 02.
    """
    needed = PAIR_COLUMNS + ((margin_column,) if margin_column else ())
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty: it needs at least one (prompt, chosen, rejected) pair")
    if isinstance(dataset, (list, tuple)):
        for row, record in enumerate(dataset):
            missing = [c for c in needed if c not in record]
            if missing:
                raise ValueError(f"{name} row {row}: missing column {missing[0]!r}")
        columns = {c: [record[c] for record in dataset] for c in needed}
    else:
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{name} has no column {missing[0]!r} (columns: {dataset.column_names})")
        columns = {c: list(dataset[c]) for c in needed}
    for column in PAIR_COLUMNS:
        for row, value in enumerate(columns[column]):
            if not isinstance(value, str):
                raise ValueError(
                    f"{name} row {row}: {column!r} must be a string, got {type(value).__name__} "
                    "(course_lib.world.data.load_preferences converts conversational rows)"
                )
    return columns


def prepare_pairs(model: RewardModel, dataset, name: str = "dataset", margin_column: str | None = None,
                  feature_batch_size: int = 64, feature_cache_dir=None, progress: bool = True) -> PairData:
    """Encode (frozen mode) or tokenize every pair of ``dataset`` once, on the model's device.

    Defined in Chapter 02.
    """
    columns = read_pair_columns(dataset, name, margin_column)
    n = len(columns["prompt"])
    prompts, responses = columns["prompt"] * 2, columns["chosen"] + columns["rejected"]
    device = model.device
    margin = None
    if margin_column:
        margin = torch.tensor(columns[margin_column], dtype=torch.float32, device=device)
    if model.config.mode == "frozen":
        features = model.embed(prompts, responses, feature_batch_size, feature_cache_dir, progress)
        return PairData(n, {"features": features}, None, margin)
    ids = model.tokenize(prompts, responses)
    lengths = torch.tensor([len(s) for s in ids])
    input_ids = torch.full((2 * n, int(lengths.max())), model.tokenizer.pad_token_id, dtype=torch.long)
    for row, sequence in enumerate(ids):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
    tensors = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    return PairData(n, tensors, torch.maximum(lengths[:n], lengths[n:]), margin)


def pair_batch(data: PairData, indices) -> PairBatch:
    """The batch of dataset rows ``indices``: chosen rows then rejected rows, padded to the batch's longest.

    Defined in Chapter 02.
    """
    indices = torch.as_tensor(indices, dtype=torch.long).cpu()
    device = next(iter(data.tensors.values())).device
    rows = torch.cat([indices, indices + data.n_pairs]).to(device)
    if data.lengths is None:
        inputs = {name: t[rows] for name, t in data.tensors.items()}
    else:
        longest = int(data.lengths[indices].max()) if len(indices) else 1
        inputs = {name: t[rows, :longest] for name, t in data.tensors.items()}
    margin = None if data.margin is None else data.margin[rows[: len(indices)]]
    return PairBatch(indices.to(device), inputs, margin)
