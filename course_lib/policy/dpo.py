"""DPO and its noise-robust variants as a learner of the course's training loop.

:class:`DPOTrainer` trains a policy on ``(prompt, chosen, rejected)`` pairs with a loss
of :func:`course_lib.losses.dpo_loss` (DPO, cDPO, rDPO, IPO) plus RPO's NLL term. The
reference :math:`\\pi_{ref}` is the policy as it is when the trainer is built (the SFT
model): its log-probs of every training response are computed once, up front, so no
second model runs during training. Chosen and rejected sequences go through the model
in one forward pass.

Because it is a :class:`~course_lib.loop.Learner` with ``config``, ``epoch_order`` and
``pair_margins`` like the reward-model trainer, two DPO trainers plug into
:func:`course_lib.collaborative.train_two_models` unchanged: **CRM-DPO** (each policy
is updated on the pairs its peer finds easiest, i.e. with the smallest DPO loss),
Self-Review-DPO and the curriculum are the reward-model chapters' plans.

Defined in Chapter 07.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import DPO_LOSS_TYPES, dpo_implied_rewards, dpo_loss, rpo_nll_loss
from ..loop import StepOutput
from ..runtime import all_reduce_sum, fingerprint, single_threaded
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
            raise ValueError(f"DPOConfig: loss_type must be one of {DPO_LOSS_TYPES}, got {self.loss_type!r}")
        if self.beta <= 0:
            raise ValueError(f"DPOConfig: beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"DPOConfig: label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


class DPOTrainer(PolicyLearner):
    """DPO of ``policy`` on the pairs of ``dataset`` (columns ``prompt``, ``chosen``, ``rejected``).

    ``reference_logps``: ``(n_pairs, 2)`` log-probs of chosen and rejected under the
    reference; by default computed here from ``policy`` before any update. Per step,
    ``log_ratios`` records the batch's mean ``log pi/pi_ref`` of chosen and rejected
    responses (the likelihood-displacement plot); the loop's history records every
    pair's loss and implied-reward margin.

    Defined in Chapter 07.
    """

    def __init__(self, policy, tokenizer, dataset, config: DPOConfig | None = None, reference_logps=None):
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
                                              device=self.device, precision=config.precision,
                                              progress=config.progress).view(2, n_pairs).T
        self.reference_logps = torch.as_tensor(reference_logps, dtype=torch.float32)
        if self.reference_logps.shape != (n_pairs, 2):
            raise ValueError(f"DPOTrainer: reference_logps must have shape ({n_pairs}, 2), got "
                             f"{tuple(self.reference_logps.shape)}")
        response_tokens = torch.tensor([len(ids) - start for ids, start in zip(self.data.ids, self.data.starts)])
        self.response_tokens = response_tokens.view(2, n_pairs).T.float()
        self.log_ratios: list[tuple[int, float, float]] = []
        self._last_ratios: torch.Tensor | None = None  # sums of the batch's log-ratios (chosen, rejected) and its size

    def make_batch(self, indices) -> RowBatch:
        rows = torch.as_tensor(indices)
        sequences = self.data.batch(torch.cat([rows, rows + self.n_pairs])).to(self.device)
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
        self._last_ratios = torch.cat([(implied / config.beta).sum(0), implied.new_tensor([len(implied)])])
        return StepOutput(losses, None, {"margin": implied[:, 0] - implied[:, 1]}, BATCH_FLOORS.get(config.loss_type))

    def train_step(self, batch, pair_weights=None, total_weight=None):
        loss = super().train_step(batch, pair_weights, total_weight)
        chosen, rejected, n = all_reduce_sum(self._last_ratios).tolist()  # the global batch's means, every process
        self.log_ratios.append((self.global_step, chosen / n, rejected / n))
        return loss

    @torch.no_grad()
    def pair_margins(self, batch: RowBatch) -> torch.Tensor:
        """Implied-reward margins ``r_hat(chosen) - r_hat(rejected)`` of a batch, without gradient (eval mode)."""
        with single_threaded(self.single_threaded), self.autocast():
            self.model.eval()
            return self.forward(batch, self.model).stats["margin"]

    def data_fingerprint(self) -> str:
        return fingerprint(self.data.fingerprint(), self.reference_logps)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "log_ratios": list(self.log_ratios)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.log_ratios = list(state["log_ratios"])

    def fit(self, resume: bool = False):
        """Train for ``config.epochs`` epochs; returns the loop's history."""
        return self.run(f"DPO ({self.config.loss_type})", resume)
