"""DPO and its noise-robust variants as a learner of the course's training loop.

:class:`DPOTrainer` trains a policy on ``(prompt, chosen, rejected)`` pairs with a loss
of :func:`course_lib.engine.losses.dpo_loss` (DPO, cDPO, rDPO, IPO) plus RPO's NLL term. The
reference :math:`\\pi_{ref}` is the policy as it is when the trainer is built (the SFT
model): its log-probs of every training response are computed once, up front, so no
second model runs during training. Chosen and rejected sequences go through the model
in one forward pass.

Because it is a :class:`~course_lib.engine.learner.Learner` like the reward-model trainer
(``pair_margins`` are its implied-reward margins), two DPO trainers plug into
:func:`course_lib.engine.collaborative.train_two_models` unchanged: **CRM-DPO** (each policy
is updated on the pairs its peer finds easiest, i.e. with the smallest DPO loss),
Self-Review-DPO and the curriculum are the reward-model chapters' plans.

Defined in Chapter 07.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine.losses import DPO_LOSS_TYPES, dpo_implied_rewards, dpo_loss, rpo_nll_loss
from ..engine.learner import StepOutput
from ..engine.runtime import fingerprint
from .logprobs import score_sequences, sequence_logprobs
from .sequences import Sequences
from .sft import PolicyLearner, PolicyTrainingConfig, RowBatch

# The unbiased (rDPO) loss has no lower bound; a batch whose estimate is below 0 does not step (Chapter 04).
BATCH_FLOORS = {"robust": 0.0}


@dataclass
class DPOConfig(PolicyTrainingConfig):
    """DPO settings (the names of TRL's ``DPOConfig``; ``rpo_alpha`` as TRL had it before 1.0), on top of
    :class:`PolicyTrainingConfig`.

    ``beta``: strength of the KL regularisation (smaller: the policy may move further);
    ``loss_type``: ``"sigmoid"`` (DPO; cDPO with ``label_smoothing`` > 0), ``"robust"``
    (rDPO, ``label_smoothing`` is the assumed flip rate), ``"ipo"`` (log-probs averaged
    over tokens, as TRL does); ``rpo_alpha``: weight of RPO's NLL term on the chosen
    response (``None``: off).

    Defined in Chapter 07.
    """

    lr: float = 1e-4
    lr_scheduler: str = "constant_with_warmup"
    warmup_ratio: float = 0.1
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type not in DPO_LOSS_TYPES:
            self.fail(f"loss_type must be one of {DPO_LOSS_TYPES}, got {self.loss_type!r}")
        if self.beta <= 0:
            self.fail(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            self.fail(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


class DPOTrainer(PolicyLearner):
    """DPO of ``policy`` on the pairs of ``dataset`` (columns ``prompt``, ``chosen``, ``rejected``).

    ``reference_logps``: ``(n_pairs, 2)`` log-probs of chosen and rejected under the
    reference; by default computed here from ``policy`` before any update. Per step,
    ``forward`` logs the batch's mean ``log pi/pi_ref`` of chosen and rejected responses
    (``log_ratio_chosen``, ``log_ratio_rejected`` in ``history.step_logs``; as
    ``(step, chosen, rejected)`` tuples in :attr:`log_ratios`: the likelihood-displacement
    plot); the loop's history records every pair's loss and implied-reward margin.

    Defined in Chapter 07.
    """

    def __init__(self, policy, config: DPOConfig | None, dataset, *, tokenizer, reference_logps=None):
        config = config or DPOConfig()
        for column in ("prompt", "chosen", "rejected"):
            if column not in dataset.column_names:
                raise ValueError(f"DPOTrainer: the dataset has no column {column!r} (columns: {dataset.column_names})")
        prompts = list(dataset["prompt"])
        self.data = Sequences.from_texts(tokenizer, prompts * 2, list(dataset["chosen"]) + list(dataset["rejected"]),
                              config.max_length, 8 if config.compile else 1, name="DPO dataset")
        n_pairs = len(prompts)
        lengths = torch.maximum(self.data.lengths[:n_pairs], self.data.lengths[n_pairs:])
        super().__init__(policy, config, n_pairs, lengths)
        if reference_logps is None:
            reference_logps = score_sequences(self.model, self.data, batch_size=config.eval_batch_size,
                                              precision=config.precision, progress=config.progress).view(2, n_pairs).T
        self.reference_logps = torch.as_tensor(reference_logps, dtype=torch.float32)
        if self.reference_logps.shape != (n_pairs, 2):
            raise ValueError(f"DPOTrainer: reference_logps must have shape ({n_pairs}, 2), got "
                             f"{tuple(self.reference_logps.shape)}")
        response_tokens = torch.tensor([len(ids) - start for ids, start in zip(self.data.ids, self.data.starts)])
        self.response_tokens = response_tokens.view(2, n_pairs).T.float()

    def make_batch(self, indices) -> RowBatch:
        rows = torch.as_tensor(indices)
        sequences = self.data.batch(torch.cat([rows, rows + self.n_rows])).to(self.device)
        extra = {"reference": self.reference_logps[rows].to(self.device), "tokens": self.response_tokens[rows].to(self.device)}
        return RowBatch(rows, sequences, extra)

    def forward(self, batch: RowBatch, module) -> StepOutput:
        config = self.config
        logps = sequence_logprobs(module, batch.sequences).float()
        chosen, rejected = logps.chunk(2)
        reference, tokens = batch.extra["reference"], batch.extra["tokens"]
        scale = tokens if config.loss_type == "ipo" else torch.ones_like(tokens)  # IPO: per-token means (TRL)
        losses = dpo_loss(chosen / scale[:, 0], rejected / scale[:, 1], reference[:, 0] / scale[:, 0],
                          reference[:, 1] / scale[:, 1], config.beta, config.loss_type, config.label_smoothing, "none")
        if config.rpo_alpha:
            losses = losses + config.rpo_alpha * rpo_nll_loss(chosen, tokens[:, 0], "none")
        implied = dpo_implied_rewards(torch.stack([chosen, rejected], 1).detach(), reference, config.beta)
        ratios = {"log_ratio_chosen": implied[:, 0] / config.beta, "log_ratio_rejected": implied[:, 1] / config.beta}
        return StepOutput(losses, None, {"margin": implied[:, 0] - implied[:, 1]}, BATCH_FLOORS.get(config.loss_type),
                          logs=ratios)

    @property
    def log_ratios(self) -> list[tuple[int, float, float]]:
        """``(step, mean log pi/pi_ref of chosen, of rejected)`` of every training step's global batch."""
        return [(log["step"], log["log_ratio_chosen"], log["log_ratio_rejected"]) for log in self.history.step_logs]

    def data_fingerprint(self) -> str:
        return fingerprint(self.data.fingerprint(), self.reference_logps)

    def fit(self, resume: bool = False):
        """Train for ``config.epochs`` epochs; returns the loop's history."""
        return self.run(f"DPO ({self.config.loss_type})", resume)
