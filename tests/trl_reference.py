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


def trl_grpo_loss(loss_type: str, logps: torch.Tensor, old_logps: torch.Tensor | None, advantages: torch.Tensor,
                  completion_mask: torch.Tensor, *, reference_logps: torch.Tensor | None = None, beta: float = 0.0,
                  epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                  max_completion_length: int | None = None, metrics: dict | None = None) -> torch.Tensor:
    """The loss TRL's ``GRPOTrainer._compute_loss`` returns when the policy's per-token log-probs are ``logps``.

    TRL's own ``_compute_loss`` and ``_get_per_token_logps_and_entropies`` run unchanged on a
    stand-in trainer, one process, training mode, no gradient accumulation
    (``current_gradient_accumulation_steps = steps_per_generation = 1``), token-level
    importance sampling, no vLLM, no entropy mask or bonus, no off-policy mask, no
    ``delta``, no KL bias correction. The stand-in "model" returns ``logps`` (and zero
    entropies) for the completion columns, whatever it is given; the prompt is one token.
    ``old_logps=None`` leaves ``old_per_token_logps`` out of the inputs, so TRL uses
    ``per_token_logps.detach()`` (its one-update path). ``num_items_in_batch`` (the ``"dapo"``
    normaliser) is the mask's token count, as TRL computes it for one process. ``metrics``, if
    given, receives the last value of each metric TRL logged (``clip_ratio/region_mean``, ``kl``, ...).
    """
    from contextlib import nullcontext
    from functools import partial

    from trl import GRPOTrainer

    batch, length = logps.shape
    identity = lambda value, **kwargs: value  # noqa: E731 - one process: gather / reduce return the value

    def model(**kwargs):  # the forward path: TRL keeps the last ``logits_to_keep`` columns
        return SimpleNamespace(log_probs=logps, entropy=torch.zeros_like(logps))

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), num_processes=1, gather=identity, reduce=identity,
                                    gather_for_metrics=identity, autocast=nullcontext, sync_gradients=True,
                                    is_main_process=True),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type, beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
        max_completion_length=max_completion_length, importance_sampling_level="token", top_entropy_quantile=1.0,
        off_policy_mask_threshold=None, use_vllm=False, vllm_importance_sampling_correction=False,
        aux_loss_enabled=False, _entropy_bonus_enabled=False, current_gradient_accumulation_steps=1,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    trainer._get_per_token_logps_and_entropies = partial(GRPOTrainer._get_per_token_logps_and_entropies, trainer)
    mask = completion_mask.long()
    inputs = {
        "prompt_ids": torch.zeros(batch, 1, dtype=torch.long), "prompt_mask": torch.ones(batch, 1, dtype=torch.long),
        "completion_ids": torch.ones(batch, length, dtype=torch.long), "completion_mask": mask,
        "advantages": advantages, "num_items_in_batch": mask.sum(),
    }
    if old_logps is not None:
        inputs["old_per_token_logps"] = old_logps
    if reference_logps is not None:
        inputs["ref_per_token_logps"] = reference_logps
    loss = GRPOTrainer._compute_loss(trainer, model, inputs)
    if metrics is not None:
        metrics.update({name: values[-1] for name, values in trainer._metrics["train"].items()})
    return loss


_TRL_ADVANTAGE_FIRST = "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)"
_TRL_ADVANTAGE_LAST = "advantages = advantages / (std_rewards + 1e-4)"


def trl_group_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: str) -> torch.Tensor:
    """The advantages TRL's ``GRPOTrainer`` computes from ``rewards`` (one reward function, weight 1).

    TRL computes them inline in ``_generate_and_score_completions`` (the
    ``multi_objective_aggregation == "sum_then_normalize"`` branch, its default), not in a
    function of its own; running that method needs generation, tokenisation and reward
    functions. So this executes TRL's own source lines, from ``mean_grouped_rewards = ...``
    to ``advantages = advantages / (std_rewards + 1e-4)``, read from the installed trl with
    ``inspect``, on the given rewards: nothing is re-typed, and a change to those lines in
    trl either runs here too or fails loudly (the markers are not found).
    """
    import inspect
    import textwrap

    from trl import GRPOTrainer
    from trl.trainer.utils import nanstd

    source = inspect.getsource(GRPOTrainer._generate_and_score_completions).splitlines()
    starts = [i for i, line in enumerate(source) if line.strip() == _TRL_ADVANTAGE_FIRST]
    ends = [i for i, line in enumerate(source) if line.strip() == _TRL_ADVANTAGE_LAST]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise RuntimeError("trl_group_advantages: TRL's advantage lines were not found once each in "
                           "GRPOTrainer._generate_and_score_completions; this trl version computes them differently")
    block = textwrap.dedent("\n".join(source[starts[0]:ends[0] + 1]))
    namespace = {"torch": torch, "nanstd": nanstd, "rewards": rewards.clone(), "num_generations": group_size,
                 "self": SimpleNamespace(scale_rewards=scale_rewards)}
    exec(compile(block, "<trl GRPOTrainer advantages>", "exec"), namespace)  # noqa: S102 - TRL's own lines
    return namespace["advantages"]
