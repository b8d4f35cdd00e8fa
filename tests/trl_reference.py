"""TRL's own DPO loss code, called on given scores (no model, no dataset).

``DPOTrainer._compute_loss`` computes every DPO-family loss from the policy's and the
reference's sequence log-probs. Here it runs unchanged on a stand-in trainer whose
"model" returns the given per-sequence log-probs, with reference log-probs of zero,
so that ``delta_score = chosen_scores - rejected_scores``. The course's hand-written
losses are checked against what TRL's code returns on the same inputs.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch


def trl_dpo_loss(loss_type: str, chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, *, beta: float = 1.0,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """The mean loss TRL's ``DPOTrainer`` computes for ``loss_type`` when the log-ratios are the given scores."""
    from trl import DPOTrainer

    n = len(chosen_scores)
    log_probs = torch.cat([chosen_scores, rejected_scores]).double()[:, None]
    outputs = SimpleNamespace(log_probs=log_probs, entropy=torch.zeros(2 * n, 1), mean_logits=torch.zeros(2 * n, 1),
                              is_top1=torch.zeros(2 * n, 1, dtype=torch.bool))
    inputs = {
        "input_ids": torch.zeros(2 * n, 2, dtype=torch.long),
        "attention_mask": torch.ones(2 * n, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]]).repeat(2 * n, 1),  # one completion token per sequence
        "ref_chosen_logps": torch.zeros(n, dtype=torch.float64),
        "ref_rejected_logps": torch.zeros(n, dtype=torch.float64),
    }
    identity = lambda value: value  # noqa: E731 - one process: gathering returns the value
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(device=torch.device("cpu"), gather=identity,
                                                                          gather_for_metrics=identity),
        aux_loss_enabled=False, precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing, use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
    )
    return DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, return_outputs=False).float()
