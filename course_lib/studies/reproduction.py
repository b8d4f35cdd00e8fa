"""The CRM reproduction: methods x noise rates x seeds, scored on MiniRewardBench.

One *cell* of the grid trains one method on the world's pairs with a share of
labels flipped, and scores its rewards per MiniRewardBench category. Chapters 04
and 05 run a few cells; ``course sweep`` (:mod:`course_lib.studies.sweep`) runs
the whole grid and writes the committed table.

Every method starts from the same frozen encoder (its features are computed once)
and trains scalar heads with the same budget of epochs per model:

==================  ==============================================================
``single``          one RM, BT loss on all pairs (the baseline)
``conservative``    one RM, label-smoothed BT with eps = eta (Chapter 04)
``unbiased``        one RM, the rDPO-style BT loss unbiased for flip rate eta
``ensemble``        two RMs trained independently on all pairs, rewards averaged
``self_review``     two RMs, each updated on the small-loss pairs IT kept
``peer_review``     two RMs, each updated on the small-loss pairs its PEER kept
                    (Co-teaching, Han et al. 2018)
``crm``             peer review + Curriculum Sort: Collaborative Reward Modeling
                    (Zhang et al. 2025, "Two Minds Better Than One", arXiv 2505.10597)
==================  ==============================================================

``course sweep`` adds the baselines and the ablation an expert asks for
(:data:`SWEEP_METHODS`):

===================  =============================================================
``early_stop``       one RM; a tenth of the (noisy) pairs is held out and the
                     epoch with the best accuracy on it is kept
``coteaching_plus``  Co-teaching+ (Yu et al. 2019): peer review on the pairs the
                     two RMs disagree on
``crm_self_review``  Self-Review + Curriculum Sort: CRM without the peer exchange
===================  =============================================================

and noise beyond symmetric flips (:data:`NOISE_MODELS`): Bradley-Terry-sampled
labels, whose errors fall on the pairs of small gold margin, and an annotator who
picks the longer answer half the time. Each trains on the world's pairs labelled
that way; the methods are told the true share of labels that disagree with gold.

Heads share one frozen encoder unless ``ReproductionConfig.encoder == "lora"``:
then every reward model has its own LoRA adapters on the top encoder layers, so two
models can make different mistakes in their representations as well as in their
heads (``course sweep --profile lora_cpu``, or ``lora`` on a GPU). With
``encoder == "full_copy"`` every reward model fine-tunes all of its own copy of its base's encoder
(the course policy's transformer, :mod:`course_lib.studies.policy_reward`); two-model
methods can then start from two bases, e.g. two SFT policies of different seeds
(``course sweep --profile independent_cpu``, :mod:`course_lib.studies.minds`).

Two-model methods are scored with the average of both models' rewards (the
course's choice for what the paper leaves open; Chapter 04 measures the
alternative of keeping one model). ``eta`` is the true noise rate unless the
config gives an estimate.

Defined in Chapter 05.
"""

from __future__ import annotations

import base64
import copy
import time
import zlib
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch

from ..engine.collaborative import CollaborativeHistory, train_two_models
from ..engine.methods import ROBUST_METHODS, OneModel
from ..reward.benchmark import MINI_REWARD_BENCH_SECTIONS, mini_reward_bench_score, pair_outcomes
from ..reward.model import RewardModel, frozen_model_with_new_head, score
from ..engine.runtime import single_threaded
from ..reward.training import BradleyTerryTrainer, TrainingConfig, TrainingHistory
from ..world import WorldConfig, generate_preference_pairs

# The methods of the lessons (Chapters 04-05), and of the grid: every robust method of the course.
METHODS = ("single", "conservative", "unbiased", "ensemble", "self_review", "peer_review", "crm")
SWEEP_METHODS = tuple(ROBUST_METHODS)
SECTIONS = tuple(MINI_REWARD_BENCH_SECTIONS)
ENCODERS = ("frozen", "lora", "full_copy")
# A one-model method's loss as TrainingConfig fields, for the flip rate eta it is told.
BT_LOSSES = {"standard": lambda eta: {}, "conservative": lambda eta: {"loss": "conservative", "assumed_flip_rate": eta},
             "unbiased": lambda eta: {"loss": "unbiased", "assumed_flip_rate": eta}}

# Named labelling processes of the sweep: WorldConfig fields. Symmetric flips are also
# accepted as a plain float rate wherever a noise is asked for.
NOISE_MODELS: dict[str, dict] = {
    "clean": {},
    "flip20": {"noise_rate": 0.2},
    "flip40": {"noise_rate": 0.4},
    "bt": {"label_mode": "bt", "temperature": 3.0},  # about 27% of labels disagree with gold
    "length": {"length_bias": 0.5},  # the longer answer wins half the time: about 25% disagree
}


@dataclass(frozen=True)
class ReproductionConfig:
    """Sizes and training settings shared by every cell of the grid.

    ``assumed_noise_rate``: the eta the methods are told (``None``: the true rate).
    ``val_fraction``: share of the pairs ``early_stop`` holds out for validation.
    ``encoder``: ``"frozen"`` (heads on one shared encoder), ``"lora"`` (each model
    has adapters on ``lora_layers`` of its own copy of the encoder) or ``"full_copy"``
    (each model fine-tunes every weight of its own copy).
    """

    n_pairs: int = 3000
    n_bench: int = 100
    epochs: int = 30
    head_hidden_size: int = 256
    lr: float = 1e-3
    batch_size: int = 32
    ramp_epochs: int = 2
    max_length: int = 128
    assumed_noise_rate: float | None = None
    val_fraction: float = 0.1
    encoder: str = "frozen"
    lora_layers: tuple[int, ...] = (4, 5)
    lora_rank: int = 8

    def __post_init__(self):
        for name in ("n_pairs", "n_bench", "epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReproductionConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"ReproductionConfig: encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"ReproductionConfig: val_fraction must be in (0, 0.5), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


# The lessons (Chapters 04-05) train 20 epochs on 3,000 pairs; the sweep uses the same
# settings, with a benchmark of 2,500 pairs per section (standard error <= 0.01 each).
PROFILES = {
    "smoke": ReproductionConfig(n_pairs=300, n_bench=30, epochs=8, max_length=96),
    "standard": ReproductionConfig(epochs=20, n_bench=2500),
    "full": ReproductionConfig(n_pairs=20000, n_bench=2500, epochs=20, max_length=256),
    # Separate LoRA encoders. lora_cpu: a size that runs on two CPU cores in minutes per model (300 pairs,
    # 48 tokens, three epochs with the full forget rate from the second); lora: the GPU version at the
    # standard profile's data and benchmark size.
    "lora_cpu": ReproductionConfig(n_pairs=300, n_bench=100, epochs=3, ramp_epochs=1, lr=5e-4, batch_size=16,
                                   max_length=48, head_hidden_size=None, encoder="lora"),
    "lora": ReproductionConfig(n_pairs=3000, n_bench=2500, epochs=5, lr=5e-4, batch_size=16, max_length=128,
                               head_hidden_size=None, encoder="lora"),
    # Independent minds (studies/minds.py): every weight of reward models made of two SFT policies fine-tuned, a
    # linear head on the last token, lr 1e-4, three epochs with the full forget rate from the second.
    # independent_cpu: the standard grid's 3,000 pairs (the same pairs and labels per seed as crm_reproduction.csv;
    # a two-model run took 61-69 s at 2,000 pairs on 2 cores, so about 1.5-2 min here), 500 benchmark pairs per
    # section (a four-section standard error of about 0.011 per run); independent: the GPU version, 10,000 pairs
    # and the standard benchmark.
    "independent_cpu": ReproductionConfig(n_pairs=3000, n_bench=500, epochs=3, ramp_epochs=1, lr=1e-4, batch_size=32,
                                          max_length=128, head_hidden_size=None, encoder="full_copy"),
    "independent": ReproductionConfig(n_pairs=10000, n_bench=2500, epochs=3, ramp_epochs=1, lr=1e-4, batch_size=32,
                                      max_length=128, head_hidden_size=None, encoder="full_copy"),
}


def profile_config(profile: str, **overrides) -> ReproductionConfig:
    """The grid settings of a course profile, with optional field overrides."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    return replace(PROFILES[profile], **overrides)


def check_methods(methods) -> list[str]:
    """The method names, validated against :data:`SWEEP_METHODS`."""
    unknown = [m for m in methods if m not in SWEEP_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(SWEEP_METHODS)}")
    return list(methods)


@dataclass(frozen=True)
class Noise:
    """How a cell's training labels are made, parsed once (:func:`parse_noise`).

    ``name``: the grid's name (a :data:`NOISE_MODELS` name, ``flipNN`` for symmetric flips
    at NN%, ``clean`` for none); ``fields``: the :class:`~course_lib.world.WorldConfig`
    fields that make it; ``flip_rate``: the rate of symmetric flips, or ``None`` for a
    labelling process whose share of wrong labels is measured on the data.
    """

    name: str
    fields: tuple[tuple[str, object], ...]
    flip_rate: float | None


def parse_noise(noise) -> Noise:
    """A :class:`Noise` from a name of :data:`NOISE_MODELS`, ``flipNN``, or a symmetric flip rate in [0, 0.5)."""
    if isinstance(noise, Noise):
        return noise
    if isinstance(noise, str) and noise not in NOISE_MODELS:
        digits = noise.removeprefix("flip")
        if not (noise.startswith("flip") and digits.isdigit()):
            raise ValueError(f"unknown noise {noise!r}; choose from {list(NOISE_MODELS)} or give a flip rate")
        noise = int(digits) / 100
    if isinstance(noise, str):
        fields = NOISE_MODELS[noise]
        return Noise(noise, tuple(fields.items()), fields.get("noise_rate"))
    rate = float(noise)
    if not 0.0 <= rate < 0.5:
        raise ValueError(f"noise rates must be in [0, 0.5), got {noise}")
    return Noise("clean" if rate == 0 else f"flip{round(100 * rate)}", (("noise_rate", rate),), rate)


def check_noises(noises) -> list[Noise]:
    """Every noise parsed (:func:`parse_noise`); the first bad one raises a ``ValueError``."""
    return [parse_noise(noise) for noise in noises]


def new_model(base: RewardModel, config: ReproductionConfig, seed: int) -> RewardModel:
    """A reward model with a new head on ``base``: a shared frozen encoder, its own LoRA copy, or its own full copy."""
    if config.encoder == "frozen":
        return frozen_model_with_new_head(base, head_hidden_size=config.head_hidden_size, seed=seed)
    if config.encoder == "full_copy":
        model_config = replace(base.config, mode="full", head_hidden_size=config.head_hidden_size, seed=seed,
                               max_length=config.max_length)
        return RewardModel(model_config, encoder=copy.deepcopy(base.encoder), tokenizer=base.tokenizer).to(base.device)
    model_config = replace(base.config, mode="lora", head_hidden_size=config.head_hidden_size, seed=seed,
                           max_length=config.max_length, lora_layers=list(config.lora_layers), lora_rank=config.lora_rank)
    return RewardModel(model_config, encoder=copy.deepcopy(base.encoder), tokenizer=base.tokenizer).to(base.device)


def validation_split(n_pairs: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, validation)``: a seeded random ``fraction`` held out."""
    order = np.random.default_rng(seed).permutation(n_pairs)
    n_val = max(1, int(round(fraction * n_pairs)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_method(method: str, base, train, config: ReproductionConfig, eta: float, seed: int,
                 device: str = "cpu", **overrides) -> tuple[list[RewardModel], TrainingHistory | CollaborativeHistory]:
    """Train ``method`` on ``train`` (heads on ``base``'s frozen features, or LoRA or full copies of its encoder).

    ``base``: one :class:`~course_lib.reward.model.RewardModel`, or two ``(base_a,
    base_b)``: the first and second model of a two-model method start from their own
    (a one-model method uses ``base_a``), e.g. two SFT policies of different seeds.

    Returns the models whose rewards are averaged, and the run's history (a
    :class:`~course_lib.reward.training.TrainingHistory` for one model, a
    :class:`~course_lib.engine.collaborative.CollaborativeHistory` with the selection
    masks for two). ``overrides`` replace fields of the
    :class:`~course_lib.engine.collaborative.CollaborativeConfig` (e.g. ``ramp_epochs``).

    ``eta``: the noise rate the method is told (selection keep ratio ``1 - eta``,
    robust-loss flip rate). Model seeds derive from ``seed``, so the two models of
    a pair differ and every method sees the same first model initialisation.
    """
    check_methods([method])
    bases = list(base) if isinstance(base, (list, tuple)) else [base, base]
    if len(bases) != 2:
        raise ValueError(f"train_method: base must be one reward model or two, got {len(bases)}")

    def trainer(model_seed: int, pairs=train, eval_pairs=None, which: int = 0, **loss):
        model = new_model(bases[which], config, model_seed)
        settings = TrainingConfig(lr=config.lr, epochs=config.epochs, batch_size=config.batch_size, seed=model_seed,
                                  record_grad_norms=False, progress=False, device=device, **loss)
        return model, BradleyTerryTrainer(model, settings, pairs, eval_dataset=eval_pairs)

    recipe = ROBUST_METHODS[method]
    if isinstance(recipe, OneModel):
        loss = BT_LOSSES[recipe.loss](eta)
        if recipe.early_stopping:
            fit_rows, val_rows = validation_split(len(train), config.val_fraction, seed)
            model, single = trainer(1000 * seed + 1, train.select(fit_rows), train.select(val_rows), keep_best=True, **loss)
        else:
            model, single = trainer(1000 * seed + 1, **loss)
        return [model], single.fit()
    (model_a, trainer_a), (model_b, trainer_b) = trainer(1000 * seed + 1), trainer(1000 * seed + 2, which=1)
    plan = recipe.plan_config(eta, **{"ramp_epochs": config.ramp_epochs, **overrides})
    history = train_two_models(trainer_a, trainer_b, plan, progress=False)
    return [model_a, model_b], history


def cross_fitted_margins(base: RewardModel, train, config: ReproductionConfig, seed: int, epochs: int = 4,
                         folds: int = 2, device: str = "cpu") -> np.ndarray:
    """Each pair's margin under a single RM trained on the OTHER folds (no memorization of its own label).

    The input of :func:`course_lib.reward.detection.estimate_flip_rate_from_confident_pairs`.
    """
    if folds < 2:
        raise ValueError(f"cross_fitted_margins needs folds >= 2, got {folds}")
    n_pairs = len(train)
    fold_of = np.random.default_rng(seed).permutation(n_pairs) % folds
    short = replace(config, epochs=epochs)
    margins = np.full(n_pairs, np.nan)
    for fold in range(folds):
        held_out = np.flatnonzero(fold_of == fold)
        (model,), _ = train_method("single", base, train.select(np.flatnonzero(fold_of != fold)), short, 0.0, seed, device)
        pairs = train.select(held_out)
        margins[held_out] = score(model, pairs["prompt"], pairs["chosen"]) - score(model, pairs["prompt"], pairs["rejected"])
    return margins


def bench_rewards(models: list[RewardModel], bench) -> tuple[np.ndarray, np.ndarray]:
    """The models' averaged rewards of every benchmark pair's chosen and rejected answer."""
    chosen = np.mean([score(m, bench["prompt"], bench["chosen"]) for m in models], axis=0)
    rejected = np.mean([score(m, bench["prompt"], bench["rejected"]) for m in models], axis=0)
    return chosen, rejected


def bench_outcomes(models: list[RewardModel], bench) -> np.ndarray:
    """Per-pair benchmark outcomes of the models' averaged rewards: 1 right, 0 wrong, 0.5 tie.

    The input of every paired interval (:func:`course_lib.engine.uncertainty.paired_bootstrap`).
    """
    return pair_outcomes(*bench_rewards(models, bench))


def score_models(models: list[RewardModel], bench) -> dict[str, float]:
    """MiniRewardBench score of the models' averaged rewards: ``{"average": ..., section: ...}``."""
    report = mini_reward_bench_score(*bench_rewards(models, bench), bench["category"])
    return {"average": float(report.score), **{name: float(value) for name, value in report.sections.items()}}


def encode_outcomes(outcomes) -> str:
    """Per-item outcomes (0, 0.5, 1) as a short text: zlib-compressed bytes 0/1/2, base64."""
    codes = np.rint(np.asarray(outcomes, dtype=np.float64) * 2).astype(np.uint8)
    return base64.b64encode(zlib.compress(codes.tobytes(), 9)).decode("ascii")


def decode_outcomes(text: str) -> np.ndarray:
    """The inverse of :func:`encode_outcomes`."""
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8) / 2.0


def selection_summary(history, is_flipped: np.ndarray) -> dict[str, float]:
    """For two models, the last epoch's update sets: ``selection_agreement`` = |A and B| / |A|
    (1: both models were updated on the same pairs) and ``selection_precision`` = share of
    the selected pairs whose label agrees with gold. NaN for one model or no selection."""
    if not isinstance(history, CollaborativeHistory) or history.selected_a is None:
        return {"selection_agreement": float("nan"), "selection_precision": float("nan")}
    a, b = history.selected_a[-1].numpy(), history.selected_b[-1].numpy()
    if a.all() and b.all():
        return {"selection_agreement": float("nan"), "selection_precision": float("nan")}
    agreement = float((a & b).sum() / max(a.sum(), 1))
    chosen = a | b
    return {"selection_agreement": agreement, "selection_precision": float((~is_flipped[chosen]).mean()) if chosen.any() else float("nan")}


def noisy_pairs(config: ReproductionConfig, noise, seed: int):
    """The world's training pairs for a cell (same texts for every noise of a seed).

    ``noise``: anything :func:`parse_noise` reads.
    """
    return generate_preference_pairs(WorldConfig(n_pairs=config.n_pairs, seed=seed, **dict(parse_noise(noise).fields)))


def run_cell(method: str, noise, seed: int, base: RewardModel, bench, config: ReproductionConfig,
             device: str = "cpu", cache_dir=None, keep_outcomes: bool = False) -> dict:
    """Train and score one grid cell; returns a flat row (method, noise, noise_rate, seed, scores, seconds).

    ``noise``: anything :func:`parse_noise` reads; ``noise_rate``
    in the row is the eta the methods were told (for a named noise, the share of
    training labels that disagree with gold). ``keep_outcomes`` adds ``outcomes``, the
    per-item benchmark outcomes (:func:`encode_outcomes`), for paired intervals.
    """
    started = time.monotonic()
    noise = parse_noise(noise)
    train = noisy_pairs(config, noise, seed)
    if config.encoder == "frozen":
        for column in ("chosen", "rejected"):  # encode once (and reuse the disk cache across cells)
            base.embed(train["prompt"], train[column], cache_dir=cache_dir, progress=False)
    true_rate = noise.flip_rate if noise.flip_rate is not None else float(np.mean(train["is_flipped"]))
    eta = true_rate if config.assumed_noise_rate is None else config.assumed_noise_rate
    # Heads on cached features are many tiny steps: one thread for the whole run (no per-step switching).
    with single_threaded(config.encoder == "frozen" and torch.device(device).type == "cpu"):
        models, history = train_method(method, base, train, config, eta, seed, device)
        chosen, rejected = bench_rewards(models, bench)
    report = mini_reward_bench_score(chosen, rejected, bench["category"])
    row = {"method": method, "noise": noise.name,
           "noise_rate": round(true_rate, 4), "seed": seed, "eta": round(eta, 4), "average": float(report.score),
           **{name: float(value) for name, value in report.sections.items()}}
    row.update(selection_summary(history, np.asarray(train["is_flipped"], dtype=bool)))
    if keep_outcomes:
        row["outcomes"] = encode_outcomes(pair_outcomes(chosen, rejected))
    return {**row, "seconds": round(time.monotonic() - started, 1)}


def summarize(rows, value: str = "average") -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``value``, one row per (method, noise rate).

    Columns: ``method``, ``noise_rate``, ``mean``, ``std`` (sample std, 0 for one
    seed), ``n_seeds``, ``gain_vs_single`` (mean difference to ``single`` at the
    same noise rate, NaN without a single run). Methods keep :data:`SWEEP_METHODS` order.
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("summarize: no rows")
    missing = {"method", "noise_rate", "seed", value} - set(frame.columns)
    if missing:
        raise ValueError(f"summarize: rows lack column(s) {sorted(missing)}")
    table = (frame.groupby(["method", "noise_rate"])[value]
             .agg(mean="mean", std=lambda s: float(s.std(ddof=1)) if len(s) > 1 else 0.0, n_seeds="count")
             .reset_index())
    baseline = table[table.method == "single"].set_index("noise_rate")["mean"]
    table["gain_vs_single"] = table["mean"] - table["noise_rate"].map(baseline)
    order = {m: i for i, m in enumerate(SWEEP_METHODS)}
    table = table.sort_values(["noise_rate", "method"], key=lambda c: c.map(order) if c.name == "method" else c)
    return table.reset_index(drop=True)
