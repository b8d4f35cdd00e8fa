"""Supervised fine-tuning (SFT): teach the policy to write the world's preferred answers.

The policy starts from random weights, so SFT is where it learns the language: it
minimises the negative log-likelihood of the chosen responses given their prompts,
counting response tokens only. The SFT model is then frozen as DPO's reference
:math:`\\pi_{ref}`. SFT runs on the course's one training loop
(:mod:`course_lib.engine.loop`): every "pair" of the loop is one (prompt, response) row, and a
row's loss is its mean per-token NLL. :func:`train_sft_policy` keeps a finished SFT run in
a cache folder, so that Chapters 07-09, which start from the same SFT policy, train it once.

Defined in Chapter 07.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch

from ..engine.config import RunConfig
from ..engine.learner import Learner, StepOutput
from ..engine.loop import CHECKPOINT_FILE, EpochPlan, TrainingLoop
from ..engine.runtime import fingerprint
from .logprobs import token_logprobs
from .sequences import SequenceBatch, Sequences

@dataclass
class PolicyTrainingConfig(RunConfig):
    """Settings shared by SFT, DPO and GRPO, on top of :class:`~course_lib.engine.config.RunConfig`
    (TRL's ``SFTConfig`` / ``DPOConfig`` names).

    ``max_length`` truncates prompt + response. ``compile``: ``torch.compile`` the
    model (for GPUs; batches are then padded to multiples of 8 to limit recompiles).

    Defined in Chapter 07.
    """

    lr: float = 2e-3
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    max_length: int = 160
    compile: bool = False

    POSITIVE: ClassVar[tuple[str, ...]] = RunConfig.POSITIVE + ("max_length",)


@dataclass
class RowBatch:
    """A batch of dataset rows: their ``indices`` and right-padded sequences (several, for pairs)."""

    indices: torch.Tensor
    sequences: SequenceBatch
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class PolicyLearner(Learner):
    """A causal-LM policy on the training loop: sequences, length-grouped order, optional compile.

    Subclasses (:class:`SFTTrainer`, :class:`course_lib.policy.dpo.DPOTrainer`,
    :class:`course_lib.policy.grpo.GRPOTrainer`) write ``make_batch`` and ``forward``;
    ``lengths`` (one per row) groups rows of similar length into batches;
    ``updates_per_batch``: optimizer steps per batch (GRPO's ``num_iterations``), for
    the scheduler's length.

    Defined in Chapter 07.
    """

    def __init__(self, model, config: PolicyTrainingConfig, n_rows: int, lengths: torch.Tensor,
                 updates_per_batch: int = 1):
        self.lengths = lengths
        super().__init__(model, config, n_rows, updates_per_batch=updates_per_batch)
        # CPU threads: torch's setting (the caller's choice). On an idle 2-core machine two threads
        # train this policy about 1.6x faster than one; when other processes compete for the cores,
        # one thread per process is many times faster (threads spin-wait for each other).
        if config.compile:
            self.module = torch.compile(self.module, dynamic=True)

    @property
    def pad_multiple(self) -> int:
        return 8 if self.config.compile else 1

    def run(self, description: str, resume: bool = False, plan: EpochPlan | None = None):
        """Train for ``config.epochs`` epochs on the loop (resuming from ``config.checkpoint_dir`` if asked)."""
        config = self.config
        if resume and config.checkpoint_dir is None:
            raise ValueError(f"{type(self).__name__}: resume=True needs config.checkpoint_dir")
        loop = TrainingLoop([self], plan or EpochPlan(self.epoch_order), config.epochs, config.batch_size,
                            checkpoint_dir=config.checkpoint_dir, checkpoint_every=config.checkpoint_every,
                            progress=config.progress, description=description, log_every=config.log_every)
        loop.run(resume)
        return self.history

    def settings(self) -> dict:
        return {**self.config.settings(), "n_rows": self.n_rows, "model": self.model.config.to_diff_dict()}


class SFTTrainer(PolicyLearner):
    """SFT of ``model`` on the (``prompt``, ``response_column``) rows of ``dataset``, tokenized by ``tokenizer``.

    A row's loss is the mean NLL of its response tokens (end token included): every
    answer counts the same, long or short. ``fit()`` trains and returns the history
    (``step_loss``: the loss of every step).

    Defined in Chapter 07.
    """

    def __init__(self, model, config: PolicyTrainingConfig | None, dataset, *, tokenizer,
                 response_column: str = "chosen"):
        config = config or PolicyTrainingConfig()
        for column in ("prompt", response_column):
            if column not in dataset.column_names:
                raise ValueError(f"SFTTrainer: the dataset has no column {column!r} (columns: {dataset.column_names})")
        self.data = Sequences.from_texts(tokenizer, dataset["prompt"], dataset[response_column], config.max_length,
                              8 if config.compile else 1, name="SFT dataset")
        super().__init__(model, config, len(self.data), self.data.lengths)

    def make_batch(self, indices) -> RowBatch:
        return RowBatch(indices, self.data.batch(indices).to(self.device))

    def forward(self, batch: RowBatch, module) -> StepOutput:
        token_nll = -token_logprobs(module, batch.sequences)
        losses = token_nll.sum(1) / batch.sequences.response_lengths.clamp_min(1)
        return StepOutput(losses)

    def data_fingerprint(self) -> str:
        return self.data.fingerprint()

    def fit(self, resume: bool = False):
        return self.run("SFT", resume)


# The modules whose code decides what SFT computes: a cached run made by other code is not reused.
_TRAINING_CODE = ("policy/sft.py", "policy/logprobs.py", "policy/sequences.py", "engine/learner.py", "engine/loop.py")


def train_sft_policy(model, config: PolicyTrainingConfig, dataset, *, tokenizer, cache_dir=None,
                     response_column: str = "chosen") -> SFTTrainer:
    """SFT of ``model`` (in place), or, with ``cache_dir``, the same SFT loaded from an earlier run.

    Returns the :class:`SFTTrainer` (its ``model`` and ``history`` as after ``fit()``;
    ``from_cache``: whether it started from a cached checkpoint).
    The run is named by everything that decides its result: the trainer's settings
    (config, rows, model shape), the tokenized data, the model's initial weights and the
    source of the training code. The first run writes its final checkpoint (weights,
    optimizer, random streams, history) to ``cache_dir/sft-<fingerprint>/``, atomically;
    a later run with the same name resumes from it, which for a finished run means
    loading it, and ends where training would have. Nothing else is shared, so a changed
    setting, seed, tokenizer or library trains anew.

    Defined in Chapter 07; Chapters 07-09 share their SFT policy through it.
    """
    trainer = SFTTrainer(model, config, dataset, tokenizer=tokenizer, response_column=response_column)
    trainer.from_cache = False
    if cache_dir is None:
        trainer.fit()
        return trainer
    package = Path(__file__).resolve().parent.parent
    code = [(package / name).read_bytes().decode() for name in _TRAINING_CODE]
    weights = [tensor for _, tensor in sorted(model.state_dict().items())]
    name = fingerprint(trainer.settings(), trainer.data_fingerprint(), *code, *weights)
    trainer.config = replace(trainer.config, checkpoint_dir=Path(cache_dir) / f"sft-{name}")
    trainer.from_cache = (trainer.config.checkpoint_dir / CHECKPOINT_FILE).exists()
    trainer.fit(resume=True)
    return trainer
