"""What the benchmarks share: the course tokenizer as TRL reads it, a step clock for TRL trainers, GPU sync.

Imported by the benchmark scripts of this folder (run them as ``python benchmarks/<name>.py``,
which puts this folder on the import path).
"""

from __future__ import annotations

import time

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, TrainerCallback

from course_lib.policy import EOS, PAD


def hf_tokenizer(tokenizer) -> PreTrainedTokenizerFast:
    """The course tokenizer as TRL uses it: special tokens in the text are read as special tokens."""
    backend = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    backend.encode_special_tokens = False
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD)
    assert (wrapped.eos_token_id, wrapped.pad_token_id) == (tokenizer.eos_id, tokenizer.pad_id)
    return wrapped


def versions(device: str) -> dict:
    """Where a benchmark ran: the device and the versions of torch, transformers and TRL."""
    import transformers
    import trl

    return {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__}


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work, so that a clock read after it measures it."""
    if device == "cuda":
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    """End time of every TRL optimizer step."""

    def __init__(self, device: str):
        self.times, self.device = [], device

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.times.append(time.perf_counter())
