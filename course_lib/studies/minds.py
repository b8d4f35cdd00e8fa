"""Independent minds for the CRM grid: reward models made of two SFT policies of different seeds.

The paper's claim (Zhang et al. 2025, "Two Minds Better Than One") is that two reward
models that review each other's data selections learn better from noisy labels than
one that reviews itself. With two heads on one frozen encoder (the main grid) the two
"minds" update on 98.5-99% of the same pairs, so the claim cannot show there. Here every
reward model is InstructGPT's (:func:`course_lib.studies.policy_reward.policy_reward_model`):
an SFT policy's transformer with a linear head on the response's last token, every
weight fine-tuned (``ReproductionConfig(encoder="full_copy")``), and the two models of a
two-model method start from **two SFT policies of different policy seeds**.

The policies (:class:`MindSettings`) are Chapter 07's standard SFT policy, for a policy
seed ``p``: the standard shape (2 layers x 128), initialised with seed ``p``, SFT-trained
4 epochs (lr 2e-3, batch 32) on the 6,400 world pairs of stream ``p`` with training seed
``p``. The tokenizer is shared by every policy (2,000 ids trained on 3,000 world pairs of
stream 0, as Chapter 07 at seed 0), so two policies differ only by their policy seed:
initialisation, SFT data and SFT data order. ``train_sft_policy(..., cache_dir=...)``
keeps each one, so reruns and Chapters 07-08 (on CPU, same settings) share them.

Grid seed ``s`` uses policy seeds ``(2s + 1, 2s + 2)`` (:meth:`MindSettings.policy_seeds`):
mind A (one-model methods use it alone) and mind B. Why these:

- each grid seed has its own pair of backbones, so an interval over seeds also covers
  the choice of backbones, and no policy is shared between two seeds;
- no policy seed equals the grid seed, whose world stream the reward models train on:
  policy ``p`` is SFT-trained on stream ``p``'s chosen answers, so policy ``s`` would have
  learned, as SFT targets, the gold-better answer of every one of its reward models'
  training pairs (measured on 2,000 pairs of stream 0: all of them are SFT targets of
  policy 0, 0.15% of policy 1), and mind A would start knowing the clean labels. (Chapter 07's own policy, seed 0, is therefore
  not one of the minds.)

The sweep writes ``crm_reproduction_independent.csv`` (rows with ``encoder ==
"full_copy"``; the config column records :class:`MindSettings` under ``"minds"``), and
:func:`independent_section` adds its section to the report.

Defined for ``course sweep --profile independent_cpu`` (2 CPU cores) and ``independent`` (GPU).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..engine.methods import ROBUST_METHODS, OneModel
from ..policy import PolicyConfig, build_policy, policy_config, train_tokenizer, world_texts
from ..policy.sft import PolicyTrainingConfig, train_sft_policy
from ..world import WorldConfig, generate_preference_pairs
from .grid import NOISE_TITLES, Grid, grid_header, interval_cell, verdict
from .policy_reward import policy_reward_model

INDEPENDENT_CSV_NAME = "crm_reproduction_independent.csv"
ENCODER = "full_copy"
# The issue's grid: the reviewers' baseline (an ensemble of two independently trained models), the one-model
# baselines, and the two-model methods with and without the peer exchange and the curriculum.
INDEPENDENT_METHODS = ("single", "early_stop", "ensemble", "coteaching_plus", "self_review", "peer_review",
                       "crm_self_review", "crm")
INDEPENDENT_NOISES = ("flip40", "bt")
# (label, method, baseline): the comparisons that answer the paper's question.
QUESTIONS = [
    ("peer review - Self-Review (the peer exchange, no curriculum)", "peer_review", "self_review"),
    ("CRM - CRM's curriculum with Self-Review (the peer exchange, with curriculum)", "crm", "crm_self_review"),
    ("CRM - ensemble (the reviewers' baseline: two independent models, no selection)", "crm", "ensemble"),
    ("CRM - single", "crm", "single"),
    ("ensemble - single", "ensemble", "single"),
    ("CRM - early stopping", "crm", "early_stop"),
]


@dataclass(frozen=True)
class MindSettings:
    """How the backbones of the minds are made: Chapter 07's standard SFT policy of a policy seed.

    ``policy``: the policy's shape; ``vocab_size``, ``tokenizer_pairs``, ``tokenizer_seed``:
    the shared tokenizer (trained on ``world_texts(tokenizer_pairs, seed=tokenizer_seed)``);
    ``sft_pairs``, ``sft_epochs``, ``sft_lr``, ``sft_batch_size``: the SFT run of each policy.
    The defaults are Chapter 07's standard profile; tests pass tiny ones.
    """

    policy: PolicyConfig = field(default_factory=lambda: policy_config("standard"))
    vocab_size: int = 2000
    tokenizer_pairs: int = 3000
    tokenizer_seed: int = 0
    sft_pairs: int = 6400
    sft_epochs: int = 4
    sft_lr: float = 2e-3
    sft_batch_size: int = 32

    def __post_init__(self):
        if not isinstance(self.policy, PolicyConfig):
            raise ValueError(f"MindSettings: policy must be a PolicyConfig, got {type(self.policy).__name__}")
        for name in ("vocab_size", "tokenizer_pairs", "sft_pairs", "sft_epochs", "sft_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MindSettings: {name} must be >= 1, got {getattr(self, name)}")
        if self.sft_lr <= 0:
            raise ValueError(f"MindSettings: sft_lr must be > 0, got {self.sft_lr}")

    @staticmethod
    def policy_seeds(seed: int) -> tuple[int, int]:
        """The policy seeds of grid seed ``seed``'s two minds: ``(2 seed + 1, 2 seed + 2)`` (see the module)."""
        if seed < 0:
            raise ValueError(f"MindSettings.policy_seeds: grid seeds must be >= 0, got {seed}")
        return 2 * seed + 1, 2 * seed + 2

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self, max_length: int) -> None:
        """Raise a ``ValueError`` when reward models of ``max_length`` tokens do not fit the policy's context."""
        if not 3 <= max_length <= self.policy.n_positions:
            raise ValueError(f"encoder='full_copy': max_length must be in [3, {self.policy.n_positions}] (the "
                             f"policy's context), got {max_length}")


def sft_policy(settings: MindSettings, tokenizer, policy_seed: int, device: str = "cpu", cache_dir=None):
    """The SFT policy of ``policy_seed`` (see :class:`MindSettings`), from ``cache_dir`` when an earlier run left it."""
    pairs = generate_preference_pairs(WorldConfig(n_pairs=settings.sft_pairs, seed=policy_seed))
    policy = build_policy(settings.policy, tokenizer, seed=policy_seed)
    config = PolicyTrainingConfig(epochs=settings.sft_epochs, lr=settings.sft_lr, seed=policy_seed,
                                  batch_size=settings.sft_batch_size, device=device, progress=False)
    train_sft_policy(policy, config, pairs, tokenizer=tokenizer, cache_dir=cache_dir)
    return policy.eval()


class PolicyMinds:
    """The two bases of each grid seed: reward models on two SFT policies, built when first asked for.

    ``bases(seed)`` returns ``(base_a, base_b)`` for
    :func:`~course_lib.studies.reproduction.train_method`; the last seed's pair is kept,
    so a sweep that runs seed by seed builds each pair once (and its policies come from
    ``cache_dir`` after the first sweep).
    """

    def __init__(self, settings: MindSettings, max_length: int, device: str = "cpu", cache_dir=None):
        settings.check(max_length)
        self.settings, self.max_length, self.device, self.cache_dir = settings, max_length, device, cache_dir
        self.tokenizer = None
        self._seed, self._bases = None, None

    def bases(self, seed: int) -> tuple:
        if seed != self._seed:
            settings = self.settings
            if self.tokenizer is None:
                texts = world_texts(settings.tokenizer_pairs, seed=settings.tokenizer_seed)
                self.tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
            policies = [sft_policy(settings, self.tokenizer, p, self.device, self.cache_dir)
                        for p in settings.policy_seeds(seed)]
            self._bases = tuple(policy_reward_model(p, self.tokenizer, max_length=self.max_length) for p in policies)
            self._seed = seed
        return self._bases


# ----------------------------------------------------------------------------- the report's section


def selection_means(grid: Grid, method: str, noise: str) -> tuple[float, float] | None:
    frame = grid.frame
    if "selection_agreement" not in frame:
        return None
    rows = frame[(frame.method == method) & (frame.noise == noise)]
    agreement, precision = rows.selection_agreement.dropna(), rows.selection_precision.dropna()
    return (float(agreement.mean()), float(precision.mean())) if len(agreement) else None


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _seconds(grid: Grid, one: bool) -> str:
    one_model = [m for m, recipe in ROBUST_METHODS.items() if isinstance(recipe, OneModel)]
    rows = grid.frame[grid.frame.method.isin(one_model) == one]
    return f"{rows.seconds.mean():.0f} s on average" if len(rows) else "not run"


def answer_line(grid: Grid, noise: str) -> str:
    """One sentence on the paper's question at ``noise``, from the intervals."""
    parts = []
    for method, baseline, what in (("peer_review", "self_review", "peer review minus Self-Review"),
                                   ("crm", "crm_self_review", "CRM minus its Self-Review twin"),
                                   ("crm", "ensemble", "CRM minus the ensemble")):
        if method in grid.methods and baseline in grid.methods:
            estimate = grid.compare(noise, method, baseline)
            if estimate is not None:
                parts.append(verdict(estimate, what))
    return f"- **{NOISE_TITLES.get(noise, noise)}**: " + ("; ".join(parts) if parts else "no paired runs yet") + "."


def exchange_summary(grid: Grid) -> list[str]:
    """What the intervals say about the peer exchange (against Self-Review, without and with the curriculum), per noise."""
    pairs = [(m, b, when) for (_, m, b), when in zip(QUESTIONS[:2], ("without the curriculum", "with it"))
             if m in grid.methods and b in grid.methods]
    parts, counts = [], {"higher": 0, "lower": 0, "within noise": 0}
    for noise in grid.noises:
        words = []
        for method, baseline, when in pairs:
            estimate = grid.compare(noise, method, baseline)
            if estimate is not None:
                word = ("higher" if estimate.mean > 0 else "lower") if estimate.excludes_zero else "within noise"
                counts[word] += 1
                words.append(f"{word} {when}")
        if words:
            parts.append(f"{NOISE_TITLES.get(noise, noise)}: " + ", ".join(words))
    if not parts:
        return []
    total = sum(counts.values())
    if counts["higher"] and not counts["lower"]:
        overall = "where an interval excludes zero, the peer exchange helps"
    elif counts["lower"] and not counts["higher"]:
        overall = "where an interval excludes zero, the peer exchange hurts"
    elif counts["higher"]:
        overall = "the peer exchange helps in some conditions and hurts in others"
    else:
        overall = "with independent minds, the peer exchange is within noise in every condition at this size"
    return ["**The peer exchange, in sum.** Reviewing the peer's selection instead of one's own: " + "; ".join(parts)
            + f". {counts['higher']} of {total} comparisons higher, {counts['lower']} lower, {counts['within noise']} "
            f"within noise: {overall}.", ""]


def independent_section(rows: list[dict], frozen: Grid | None = None) -> list[str]:
    """The report's section for the independent-minds CSV: the paper's question answered from the intervals.

    ``frozen``: the main grid (heads on one frozen encoder), for its update-set agreement.
    """
    grid = Grid(rows, ENCODER)
    minds = json.loads(grid.frame.iloc[0]["config"]).get("minds", {})
    seeds = sorted(int(s) for s in grid.frame.seed.unique())
    lines = ["## Independent minds: reward models on two SFT policies", ""]
    lines += grid_header(grid, "reward models on the course's own transformer, every weight fine-tuned")
    policy = minds.get("policy", {})
    lines += [
        "Every reward model is the SFT policy's transformer with a linear head on the response's last token "
        "(InstructGPT's), every weight fine-tuned with the method's loss. The two models of a two-model method start "
        "from two SFT policies of different policy seeds: grid seed s uses policies 2s+1 and 2s+2 (here "
        + ", ".join(f"{2 * s + 1} and {2 * s + 2}" for s in seeds) + "), one-model methods the first. Each policy: "
        f"{policy.get('n_layer', '?')} layers x {policy.get('n_embd', '?')}, SFT {minds.get('sft_epochs', '?')} epochs "
        f"on {minds.get('sft_pairs', 0):,} world pairs of its own stream, one shared tokenizer of "
        f"{minds.get('vocab_size', 0):,} ids; no policy was trained on the stream its reward models learn from. "
        "This is the control the paper's reviewers asked for: minds that share no weight, and an ensemble of two of "
        f"them as a baseline. SFT: lr {minds.get('sft_lr', '?')}, batch {minds.get('sft_batch_size', '?')}; tokenizer "
        f"trained on {minds.get('tokenizer_pairs', 0):,} world pairs of stream {minds.get('tokenizer_seed', '?')}.", "",
        f"Wall time: {_duration(grid.frame.seconds.sum())} for the {len(grid.frame)} runs (SFT of the policies not "
        "included); per run, one-model methods " + _seconds(grid, one=True) + ", two-model methods "
        + _seconds(grid, one=False) + ".", "",
        "### The paper's question, with independent minds", "",
    ]
    lines += [answer_line(grid, noise) for noise in grid.noises] + [""]
    lines += exchange_summary(grid)
    lines += ["### Paired differences (four-section average)", "",
              "| comparison | " + " | ".join(NOISE_TITLES.get(n, n) for n in grid.noises) + " |",
              "|---|" + "---|" * len(grid.noises)]
    for label, method, baseline in QUESTIONS:
        if method in grid.methods and baseline in grid.methods:
            lines.append(f"| {label} | " + " | ".join(interval_cell(grid.compare(n, method, baseline))
                                                      for n in grid.noises) + " |")
    lines.append("")
    if "single" in grid.methods:
        lines += ["### Difference to the single RM", "", "| method | " + " | ".join(
            NOISE_TITLES.get(n, n) for n in grid.noises) + " |", "|---|" + "---|" * len(grid.noises)]
        for method in grid.methods:
            if method != "single":
                lines.append(f"| {method} | " + " | ".join(interval_cell(grid.compare(n, method, "single"))
                                                           for n in grid.noises) + " |")
        lines.append("")
    lines += ["### Accuracy and what the two models selected (last epoch)", "",
              "Agreement: the share of model A's update set that model B was also updated on; precision: the share of "
              "the pairs either model was updated on whose label agrees with gold (means over seeds; blank where a "
              "method updates on every pair)." + (" The last column is the agreement of the same method with two "
                                                  "heads on one frozen encoder (the main grid)." if frozen else ""), "",
              "| method | noise | accuracy | agreement | precision | label precision of the data |"
              + (" one frozen encoder: agreement |" if frozen else ""),
              "|---|---|---|---|---|---|" + ("---|" if frozen else "")]
    for method in grid.methods:
        for noise in grid.noises:
            estimate = grid.accuracy(noise, method)
            rows_ = grid.frame[(grid.frame.method == method) & (grid.frame.noise == noise)]
            if rows_.empty:
                continue
            accuracy = (f"{estimate.mean:.3f} ± {estimate.se:.3f}" if estimate is not None
                        else f"{rows_.average.iloc[0]:.3f} (one seed)")
            selection = selection_means(grid, method, noise)
            cells = [accuracy, *(("", "") if selection is None else (f"{selection[0]:.3f}", f"{selection[1]:.3f}")),
                     f"{1 - float(np.mean(rows_.noise_rate)):.3f}"]
            if frozen is not None:
                other = selection_means(frozen, method, noise) if noise in frozen.noises else None
                cells.append("" if other is None else f"{other[0]:.3f}")
            lines.append(f"| {method} | {NOISE_TITLES.get(noise, noise)} | " + " | ".join(cells) + " |")
    return lines + [""]
