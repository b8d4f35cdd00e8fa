"""GRPO: the policy samples a group of answers per prompt and learns from how they rank.

Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath) is policy gradient
with the simplest possible baseline. For each prompt the policy writes ``group_size``
answers; a reward function scores them; each answer's **advantage** is its reward
minus the mean of its group (divided by the group's std for GRPO, not for Dr. GRPO:
:func:`course_lib.engine.losses.group_advantages`). The loss raises the log-probability of
every token of an answer in proportion to its advantage, with PPO's clipped
importance ratio when a batch is used for several updates, and optionally a k3 penalty
on the KL to the frozen reference (:func:`course_lib.engine.losses.grpo_loss`).

:class:`GRPOTrainer` is a learner of the course's one training loop
(:mod:`course_lib.engine.loop`): the dataset rows are *prompts*, and each step's batch is
a :class:`Rollout`, the work of online RL made explicit: sample the group
(:func:`~course_lib.policy.sampling.generate`, seeded by the step so a resumed run
samples the same answers), score it, compute the advantages and the reference's
log-probs. ``forward`` is the loss (and logs the clipped share of tokens). Every step's
statistics go to ``step_log``: mean reward, KL to the reference (the mean sampled
log-ratio per answer, the estimate Chapter 07's evaluation uses), answer length,
the share of groups whose rewards are all equal (they teach nothing), the clipped
share of tokens, any ``monitors`` (e.g. the gold reward, which the policy never sees),
and seconds spent sampling, scoring and updating. ``prompt_log`` has one row per prompt
and step (epoch, dataset row, mean reward and monitors over its group), so two epochs
over the same prompts can be compared prompt by prompt.

Defined in Chapter 08.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.losses import ADVANTAGE_SCALES, GRPO_LOSS_TYPES, group_advantages, grpo_loss
from ..engine.learner import StepOutput
from ..engine.runtime import fingerprint, world_size
from .logprobs import response_token_mask, token_logprobs
from .sampling import Completions, generate
from .sequences import SequenceBatch, Sequences
from .sft import PolicyLearner, PolicyTrainingConfig, RowBatch


@dataclass
class Rollout:
    """One step of online experience, from prompts to what the loss needs.

    ``step``: the sampling step; ``rows``: the prompts' dataset rows; ``prompts``: each
    prompt repeated once per answer; ``completions``: the sampled answers (tokens and
    the sampler's log-probs); ``rewards`` and ``monitors`` (name: values), one per answer;
    ``advantages``: group-relative (:func:`course_lib.engine.losses.group_advantages`);
    ``sequences`` and ``mask``: prompt + answer tokens and the answer positions;
    ``reference_logps`` / ``old_logps``: per-token log-probs under the reference (for the
    KL term and the logged KL) and under the sampling policy (for the clipped ratio of
    later updates), or ``None``; ``kl``: the mean sampled log-ratio per answer;
    ``seconds``: time spent sampling and scoring.

    Defined in Chapter 08.
    """

    step: int
    rows: list[int]
    prompts: list[str]
    completions: Completions
    rewards: np.ndarray
    monitors: dict[str, np.ndarray]
    advantages: torch.Tensor
    sequences: SequenceBatch
    mask: torch.Tensor
    reference_logps: torch.Tensor | None
    old_logps: torch.Tensor | None
    kl: float
    seconds: dict[str, float]

    def summary(self, group_size: int) -> dict:
        """The step's line of ``GRPOTrainer.step_log`` (before the update's own entries)."""
        grouped = torch.tensor(self.rewards, dtype=torch.float32).view(-1, group_size)
        return {
            "step": self.step, "reward": float(self.rewards.mean()), "reward_std": float(self.rewards.std()),
            "kl": self.kl, "tokens": float(np.mean(self.completions.lengths)),
            "finished": float(np.mean(self.completions.finished)),
            "zero_std_groups": float((grouped.max(1).values == grouped.min(1).values).float().mean()),
            **{name: float(values.mean()) for name, values in self.monitors.items()}, **self.seconds,
        }


@dataclass
class RolloutBatch(RowBatch):
    """A GRPO batch: the rows and tensors the loss reads, and the :class:`Rollout` they came from."""

    rollout: Rollout | None = None


@dataclass
class GRPOConfig(PolicyTrainingConfig):
    """GRPO settings (the names of TRL's ``GRPOConfig``), on top of :class:`PolicyTrainingConfig`.

    ``batch_size``: prompts per step (each gets ``group_size`` answers, so a step learns
    from ``batch_size * group_size`` answers). ``max_completion_length``: new tokens per
    answer; ``temperature`` / ``top_p`` of sampling. ``num_iterations``: updates per
    sampled batch (mu; > 1 makes the clipped ratio matter). ``beta``: coefficient of
    the k3 KL penalty (0: none, TRL's default). ``epsilon_low`` / ``epsilon_high``:
    clip range. ``scale_rewards``: ``"group"`` (GRPO), ``"batch"``, ``"none"``
    (Dr. GRPO). ``loss_type``: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"``, ``"dapo"``.
    ``sampling_batch_size``: answers decoded at once. ``compile_sampler``: passed to
    :func:`~course_lib.policy.sampling.generate` as ``compile`` (GPU). ``log_kl``: score
    every batch with the reference to log the KL even when ``beta`` is 0 (one more
    forward pass per step; with ``beta == 0`` and ``log_kl=False`` the logged KL is NaN).

    Defined in Chapter 08.
    """

    lr: float = 1e-4
    batch_size: int = 8
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    group_size: int = 8
    max_completion_length: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    num_iterations: int = 1
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    scale_rewards: str = "group"
    loss_type: str = "grpo"
    sampling_batch_size: int = 64
    compile_sampler: bool | str = False
    log_kl: bool = True

    def __post_init__(self):
        super().__post_init__()
        for key in ("group_size", "max_completion_length", "num_iterations", "sampling_batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"GRPOConfig: {key} must be a positive int, got {getattr(self, key)!r}")
        if self.group_size < 2:
            raise ValueError(f"GRPOConfig: group_size must be >= 2 (the group mean is the baseline), got {self.group_size}")
        if self.scale_rewards not in ADVANTAGE_SCALES:
            raise ValueError(f"GRPOConfig: scale_rewards must be one of {ADVANTAGE_SCALES}, got {self.scale_rewards!r}")
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"GRPOConfig: loss_type must be one of {GRPO_LOSS_TYPES}, got {self.loss_type!r}")
        if self.beta < 0:
            raise ValueError(f"GRPOConfig: beta must be >= 0, got {self.beta}")
        if not 0 <= self.epsilon_low < 1 or self.epsilon_high < 0:
            raise ValueError(f"GRPOConfig: need 0 <= epsilon_low < 1 and epsilon_high >= 0, got "
                             f"{self.epsilon_low}, {self.epsilon_high}")
        if self.max_completion_length >= self.max_length:
            raise ValueError(f"GRPOConfig: max_completion_length ({self.max_completion_length}) must be below "
                             f"max_length ({self.max_length}), which must also hold the prompt")


def _prompt_column(prompts) -> list[str]:
    texts = prompts["prompt"] if not isinstance(prompts, list) else prompts
    texts = list(texts)
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise ValueError(f"GRPOTrainer: prompt {row} must be a non-empty string, got {text!r}")
    return texts


class GRPOTrainer(PolicyLearner):
    """GRPO of ``policy`` on ``prompts`` (a list of strings, or a Dataset / dict with a ``prompt`` column).

    ``reward_fn(prompts, responses) -> array`` scores answers (higher is better): a
    verifiable reward, a reward model (:mod:`course_lib.policy.rewards`), or the gold
    judge. ``reference``: the frozen policy of the KL term and of the logged KL
    (default: a copy of ``policy`` as it is now, which is the SFT model).
    ``monitors``: ``{name: fn(prompts, responses)}`` scored on every step's answers and
    logged, never trained on. ``fit()`` trains ``config.epochs`` passes over the prompts.

    One process (the loss's token normalisation is local to the batch).

    Defined in Chapter 08.
    """

    def __init__(self, policy, config: GRPOConfig | None, prompts, *, tokenizer, reward_fn, reference=None,
                 monitors: dict | None = None):
        config = config or GRPOConfig()
        if world_size() > 1:
            raise ValueError("GRPOTrainer: runs in one process (use one GPU per run, or several runs)")
        if not callable(reward_fn):
            raise ValueError(f"GRPOTrainer: reward_fn must be callable(prompts, responses) -> rewards, got {reward_fn!r}")
        self.prompts = _prompt_column(prompts)
        if not self.prompts:
            raise ValueError("GRPOTrainer: no prompts")
        self.tokenizer, self.reward_fn, self.monitors = tokenizer, reward_fn, dict(monitors or {})
        self.prompt_ids = [tokenizer.prompt_ids(p) for p in self.prompts]
        lengths = torch.tensor([len(ids) for ids in self.prompt_ids])
        if reference is None:
            reference = copy.deepcopy(policy)
        self.reference = reference.eval()  # only run under no_grad; left trainable, as the caller may copy it
        super().__init__(policy, config, len(self.prompts), lengths, updates_per_batch=config.num_iterations)
        self.reference.to(self.device)
        self.step_log: list[dict] = []
        self.prompt_log: list[dict] = []

    def sample_seed(self) -> int:
        """The sampler's seed at this step: fixed by ``(config.seed, step)``, so a resumed run samples the same."""
        return self.config.seed * 1_000_003 + self.global_step // self.config.num_iterations

    def rollout(self, indices) -> Rollout:
        """The experience of one step: sample ``group_size`` answers per prompt, score them, and compute the
        advantages and the reference's (and, for several updates, the sampling policy's) log-probs."""
        config, rows = self.config, [int(i) for i in indices]
        group_prompts = [self.prompts[i] for i in rows for _ in range(config.group_size)]
        started = time.perf_counter()
        completions = generate(self.model, self.tokenizer, group_prompts, max_new_tokens=config.max_completion_length,
                               temperature=config.temperature, top_p=config.top_p, batch_size=config.sampling_batch_size,
                               seed=self.sample_seed(), precision=config.precision,
                               **({"compile": config.compile_sampler} if config.compile_sampler else {}))
        sampled = time.perf_counter()
        rewards = np.asarray(self.reward_fn(group_prompts, completions.texts), dtype=np.float64)
        if rewards.shape != (len(group_prompts),) or not np.isfinite(rewards).all():
            raise ValueError(f"GRPOTrainer: reward_fn must return {len(group_prompts)} finite rewards, got shape "
                             f"{rewards.shape}" + ("" if rewards.shape != (len(group_prompts),) else " with NaN/inf"))
        scored = time.perf_counter()
        monitors = {name: np.asarray(fn(group_prompts, completions.texts), dtype=np.float64)
                    for name, fn in self.monitors.items()}
        advantages = group_advantages(torch.tensor(rewards, dtype=torch.float32), config.group_size, config.scale_rewards)

        sequences = Sequences([self.prompt_ids[i] for i in rows for _ in range(config.group_size)],
                              completions.token_ids, self.tokenizer.pad_id, config.max_length,
                              8 if config.compile else 1, name="sampled answers").batch(range(len(group_prompts)))
        sequences = sequences.to(self.device)
        with torch.no_grad(), self.autocast():
            reference_logps = None
            if config.beta or config.log_kl:
                reference_logps = token_logprobs(self.reference, sequences).float()
            old_logps = None
            if config.num_iterations > 1:  # the sampling policy's log-probs, for the ratio of later updates
                self.model.eval()
                old_logps = token_logprobs(self.model, sequences).float()
        mask = response_token_mask(sequences)
        kl = float("nan")
        if reference_logps is not None:  # the mean sampled log-ratio per answer, from the sampler's log-probs
            sampler_logps = torch.zeros_like(reference_logps)
            for i, values in enumerate(completions.logprobs):
                columns = mask[i].nonzero().squeeze(-1)
                sampler_logps[i, columns] = torch.tensor(values[: len(columns)], device=self.device)
            kl = float(((sampler_logps - reference_logps) * mask).sum(1).mean())
        return Rollout(self.global_step // config.num_iterations, rows, group_prompts, completions, rewards, monitors,
                       advantages.to(self.device), sequences, mask, reference_logps, old_logps, kl,
                       {"sample_s": sampled - started, "score_s": scored - sampled})

    def make_batch(self, indices) -> RolloutBatch:
        """The batch of one step: a :meth:`rollout` of these prompts (rows repeated once per answer)."""
        rollout = self.rollout(indices)
        extra = {"advantages": rollout.advantages, "reference": rollout.reference_logps, "mask": rollout.mask}
        if rollout.old_logps is not None:
            extra["old"] = rollout.old_logps
        rows = torch.as_tensor(rollout.rows).repeat_interleave(self.config.group_size)
        return RolloutBatch(rows, rollout.sequences, extra, rollout)

    def forward(self, batch: RowBatch, module) -> StepOutput:
        config, extra = self.config, batch.extra
        logps = token_logprobs(module, batch.sequences).float()
        shares = grpo_loss(logps, extra.get("old"), extra["advantages"], extra["mask"],
                           reference_logps=extra["reference"] if config.beta else None, beta=config.beta,
                           epsilon_low=config.epsilon_low, epsilon_high=config.epsilon_high, loss_type=config.loss_type,
                           max_completion_length=config.max_completion_length, reduction="none")
        logs = {}
        if "old" in extra:
            ratio = torch.exp(logps.detach() - extra["old"])
            advantage = extra["advantages"][:, None]
            clipped = ((ratio < 1 - config.epsilon_low) & (advantage < 0)) | ((ratio > 1 + config.epsilon_high) & (advantage > 0))
            logs["clipped"] = float((clipped & extra["mask"]).sum() / extra["mask"].sum().clamp(min=1))
        return StepOutput(shares, logs=logs)

    def record(self, indices, losses, stats) -> None:
        """Rows are prompts, each with a group of answers: record each prompt's mean loss."""
        group = self.config.group_size
        super().record(indices[::group], losses.detach().view(-1, group).mean(1), stats)

    def after_step(self, batch: RolloutBatch, loss, logs: dict[str, float], seconds: float) -> None:
        """Log the step (``step_log``) and each of its prompts (``prompt_log``)."""
        rollout, group = batch.rollout, self.config.group_size
        entry = {**rollout.summary(group),
                 "update_s": seconds, "clipped": logs.get("clipped", 0.0),
                 "loss": float(loss) if loss is not None else float("nan")}
        self.step_log.append(entry)
        means = {name: values.reshape(-1, group).mean(1) for name, values in
                 {"reward": rollout.rewards, **rollout.monitors}.items()}
        for i, row in enumerate(rollout.rows):
            self.prompt_log.append({"step": entry["step"], "epoch": self.epoch, "row": row,
                                    **{name: float(values[i]) for name, values in means.items()}})

    def data_fingerprint(self) -> str:
        return fingerprint("\x00".join(self.prompts), fingerprint(*self.reference.state_dict().values()))

    def settings(self) -> dict:
        return {**super().settings(), "monitors": sorted(self.monitors)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "step_log": list(self.step_log), "prompt_log": list(self.prompt_log)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.step_log = list(state["step_log"])
        self.prompt_log = list(state["prompt_log"])

    def fit(self, resume: bool = False):
        """Train ``config.epochs`` passes over the prompts; returns the loop's history (``step_log`` has the curves)."""
        return self.run(f"GRPO ({self.config.loss_type})", resume)

