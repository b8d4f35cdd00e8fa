"""Log-probabilities of response tokens under a causal LM: the quantity DPO and GRPO work on.

For a sequence ``x y`` (prompt, response), ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)``:
one forward pass gives every position's next-token distribution, shifted by one
against the tokens it predicts. Only response tokens count (``response_mask``).

Defined in Chapter 07.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.progress import tqdm
from ..engine.runtime import autocast, check_precision
from .sequences import SequenceBatch, Sequences


def token_logprobs(module, batch: SequenceBatch) -> torch.Tensor:
    """Per-token log-probs of the batch's tokens, zero outside the response: ``(rows, columns)``.

    Column ``j`` scores token ``first + 1 + j``, where ``first + 1`` is the batch's
    earliest response token: logits are computed only from there on
    (``logits_to_keep``), since prompt tokens are never scored and the output layer
    over the vocabulary is a large share of a small model's work. ``module`` is a
    causal LM returning ``.logits`` (or its DDP / compiled wrapper). ``log pi`` is taken
    as ``logit - logsumexp(logits)`` (minus the cross-entropy) in float32, even under bf16 autocast: log-probs
    summed over a hundred tokens lose their meaning in bfloat16's 8-bit mantissa.
    """
    first = _first_logit(batch)
    keep = batch.input_ids.shape[1] - first
    logits = module(input_ids=batch.input_ids, logits_to_keep=keep).logits[:, :-1].float()
    targets = batch.input_ids[:, first + 1 :]
    # log_softmax(logits)[target], computed as minus the cross-entropy (one fused kernel, half the time on a CPU)
    picked = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return picked * batch.response_mask[:, first + 1 :]


def _first_logit(batch: SequenceBatch) -> int:
    """The position whose logits predict the batch's earliest response token."""
    columns = batch.response_mask.any(0).nonzero()
    return max(int(columns[0]) - 1, 0) if len(columns) else batch.input_ids.shape[1] - 1


def response_token_mask(batch: SequenceBatch) -> torch.Tensor:
    """1 where a column of :func:`token_logprobs` is a response token, 0 elsewhere: ``(rows, columns)``.

    Defined in Chapter 08.
    """
    return batch.response_mask[:, _first_logit(batch) + 1 :]


def sequence_logprobs(module, batch: SequenceBatch) -> torch.Tensor:
    """``log pi(y | x)`` of every row: the sum of its response tokens' log-probs.

    Defined in Chapter 07.
    """
    return token_logprobs(module, batch).sum(1)


@torch.no_grad()
def score_sequences(model, sequences: Sequences, *, batch_size: int = 64, precision: str = "fp32",
                    progress: bool = False) -> torch.Tensor:
    """``log pi(y | x)`` of every sequence under ``model`` (eval mode, no gradient), in order, on the CPU.

    Batches are formed from sequences of similar length (less padding); the result is
    returned in the original order. Used for the frozen reference's log-probs (computed
    once before DPO) and the KL to the reference. Runs where ``model`` is; ``precision``
    as :func:`course_lib.engine.runtime.autocast`.

    Defined in Chapter 07.
    """
    was_training = model.training
    model.eval()
    order = torch.argsort(sequences.lengths, descending=True)
    result = torch.empty(len(sequences), dtype=torch.float32)
    device = next(model.parameters()).device
    check_precision(precision, device)
    for rows in tqdm(order.split(batch_size), disable=not progress, desc="log-probs"):
        with autocast(device, precision):
            result[rows] = sequence_logprobs(model, sequences.batch(rows).to(device)).float().cpu()
    model.train(was_training)
    return result
