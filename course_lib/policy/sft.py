"""Supervised fine-tuning (SFT): teach the policy to write the world's preferred answers.

The policy starts from random weights, so SFT is where it learns the language: it
minimises the negative log-likelihood of the chosen responses given their prompts,
counting response tokens only. The SFT model is then frozen as DPO's reference
:math:`\\pi_{ref}`. SFT runs on the course's one training loop
(:mod:`course_lib.loop`): every "pair" of the loop is one (prompt, response) row, and a
row's loss is its mean per-token NLL.

Defined in Chapter 07.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..loop import EpochPlan, Learner, StepOutput, TrainingLoop, steps_per_run
from ..pairs import shuffled_order
from ..runtime import PRECISIONS, resolve_device
from .logprobs import token_logprobs
from .sequences import SequenceBatch, Sequences

# Fields that change how a run is watched or stored, not what it computes.
BOOKKEEPING = ("progress", "log_every", "checkpoint_dir", "checkpoint_every", "eval_batch_size")


@dataclass
class PolicyTrainingConfig:
    """Optimisation settings shared by SFT and DPO (TRL's ``SFTConfig`` / ``DPOConfig`` names).

    AdamW with ``lr`` and ``weight_decay``; ``lr_scheduler`` a ``transformers`` scheduler
    name with ``warmup_ratio`` of the steps warming up; ``max_grad_norm`` clips.
    ``max_length`` truncates prompt + response. ``compile``: ``torch.compile`` the
    model (for GPUs; batches are then padded to multiples of 8 to limit recompiles).
    ``device`` / ``precision`` as in :mod:`course_lib.runtime`.

    Defined in Chapter 07.
    """

    lr: float = 2e-3
    epochs: int = 1
    batch_size: int = 32
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    max_length: int = 160
    seed: int = 0
    compile: bool = False
    eval_batch_size: int = 64
    log_every: int = 10
    progress: bool = True
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self):
        name = type(self).__name__
        for key in ("epochs", "batch_size", "eval_batch_size", "log_every", "max_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"{name}: {key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"{name}: lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"{name}: precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        try:
            self.device = str(resolve_device(self.device))
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None

    def settings(self) -> dict:
        """The fields that decide what a run computes, for checkpoints."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k not in BOOKKEEPING}


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
        self.config, self.lengths = config, lengths
        total_steps = steps_per_run(n_rows, config.batch_size, config.epochs) * updates_per_batch
        super().__init__(
            model, n_pairs=n_rows, epochs=config.epochs, total_steps=total_steps,
            lr=config.lr, weight_decay=config.weight_decay, lr_scheduler=config.lr_scheduler,
            warmup_ratio=config.warmup_ratio, max_grad_norm=config.max_grad_norm, device=config.device,
            precision=config.precision, seed=config.seed,
        )
        # CPU threads: torch's setting (the caller's choice). On an idle 2-core machine two threads
        # train this policy about 1.6x faster than one; when other processes compete for the cores,
        # one thread per process is many times faster (threads spin-wait for each other).
        if config.compile:
            self.module = torch.compile(self.module, dynamic=True)

    @property
    def pad_multiple(self) -> int:
        return 8 if self.config.compile else 1

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Rows shuffled by ``(seed, epoch)``, batched with rows of similar token length."""
        return shuffled_order(self.n_pairs, self.config.seed, epoch, self.config.batch_size, self.lengths)

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
        return {**self.config.settings(), "n_rows": self.n_pairs, "model": self.model.config.to_diff_dict()}


class SFTTrainer(PolicyLearner):
    """SFT of ``model`` on the (``prompt``, ``response_column``) rows of ``dataset``.

    A row's loss is the mean NLL of its response tokens (end token included): every
    answer counts the same, long or short. ``fit()`` trains and returns the history
    (``step_loss``: the loss of every step).

    Defined in Chapter 07.
    """

    def __init__(self, model, tokenizer, dataset, config: PolicyTrainingConfig | None = None,
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
