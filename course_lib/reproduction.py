"""The CRM reproduction: methods x noise rates x seeds, scored on MiniRewardBench.

One *cell* of the grid trains one method on the world's pairs with a share of
labels flipped, and scores its rewards per MiniRewardBench category. Chapters 04
and 05 run a few cells; ``course sweep`` (:mod:`course_lib.tooling.sweep`) runs
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

Two-model methods are scored with the average of both models' rewards (the
course's choice for what the paper leaves open; Chapter 04 measures the
alternative of keeping one model). ``eta`` is the true noise rate unless the
config gives an estimate.

Defined in Chapter 05.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from .collaborative import CollaborativeConfig, CollaborativeHistory, train_two_models
from .evaluation import MINI_REWARD_BENCH_SECTIONS, mini_reward_bench_score
from .reward_model import RewardModel, frozen_model_with_new_head, score
from .training import BradleyTerryTrainer, TrainingConfig, TrainingHistory
from .world import WorldConfig, generate_preference_pairs

METHODS = ("single", "conservative", "unbiased", "ensemble", "self_review", "peer_review", "crm")
SECTIONS = tuple(MINI_REWARD_BENCH_SECTIONS)


@dataclass(frozen=True)
class ReproductionConfig:
    """Sizes and training settings shared by every cell of the grid.

    ``assumed_noise_rate``: the eta the methods are told (``None``: the true rate).
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

    def __post_init__(self):
        for name in ("n_pairs", "n_bench", "epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReproductionConfig: {name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": ReproductionConfig(n_pairs=300, n_bench=30, epochs=8, max_length=96),
    "standard": ReproductionConfig(),
    "full": ReproductionConfig(n_pairs=20000, n_bench=500, epochs=30, max_length=256),
}


def profile_config(profile: str, **overrides) -> ReproductionConfig:
    """The grid settings of a course profile, with optional field overrides."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    return replace(PROFILES[profile], **overrides)


def check_methods(methods) -> list[str]:
    """The method names, validated against :data:`METHODS`."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    return list(methods)


def train_method(method: str, base: RewardModel, train, config: ReproductionConfig, eta: float, seed: int,
                 device: str = "cpu", **overrides) -> tuple[list[RewardModel], TrainingHistory | CollaborativeHistory]:
    """Train ``method`` on ``train`` (heads on ``base``'s frozen features).

    Returns the models whose rewards are averaged, and the run's history (a
    :class:`~course_lib.training.TrainingHistory` for one model, a
    :class:`~course_lib.collaborative.CollaborativeHistory` with the selection
    masks for two). ``overrides`` replace fields of the
    :class:`~course_lib.collaborative.CollaborativeConfig` (e.g. ``ramp_epochs``).

    ``eta``: the noise rate the method is told (selection keep ratio ``1 - eta``,
    robust-loss flip rate). Model seeds derive from ``seed``, so the two models of
    a pair differ and every method sees the same first model initialisation.
    """
    check_methods([method])

    def trainer(model_seed: int, **loss):
        model = frozen_model_with_new_head(base, head_hidden_size=config.head_hidden_size, seed=model_seed)
        settings = TrainingConfig(lr=config.lr, epochs=config.epochs, batch_size=config.batch_size, seed=model_seed,
                                  record_grad_norms=False, progress=False, device=device, **loss)
        return model, BradleyTerryTrainer(model, train, settings)

    if method in ("single", "conservative", "unbiased"):
        loss = {} if method == "single" else {"loss": method, "assumed_flip_rate": eta}
        model, single = trainer(1000 * seed + 1, **loss)
        return [model], single.fit()
    (model_a, trainer_a), (model_b, trainer_b) = trainer(1000 * seed + 1), trainer(1000 * seed + 2)
    rule = {"crm": "peer_review"}.get(method, method)
    settings = dict(method=rule, noise_rate=eta, ramp_epochs=config.ramp_epochs, curriculum=method == "crm")
    history = train_two_models(trainer_a, trainer_b, CollaborativeConfig(**{**settings, **overrides}), progress=False)
    return [model_a, model_b], history


def cross_fitted_margins(base: RewardModel, train, config: ReproductionConfig, seed: int, epochs: int = 4,
                         folds: int = 2, device: str = "cpu") -> np.ndarray:
    """Each pair's margin under a single RM trained on the OTHER folds (no memorization of its own label).

    The input of :func:`course_lib.detection.estimate_flip_rate_from_confident_pairs`.
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


def score_models(models: list[RewardModel], bench) -> dict[str, float]:
    """MiniRewardBench score of the models' averaged rewards: ``{"average": ..., section: ...}``."""
    chosen = np.mean([score(m, bench["prompt"], bench["chosen"]) for m in models], axis=0)
    rejected = np.mean([score(m, bench["prompt"], bench["rejected"]) for m in models], axis=0)
    report = mini_reward_bench_score(chosen, rejected, bench["category"])
    return {"average": float(report.score), **{name: float(value) for name, value in report.sections.items()}}


def noisy_pairs(config: ReproductionConfig, noise_rate: float, seed: int):
    """The world's training pairs for a cell (same texts for every noise rate of a seed)."""
    return generate_preference_pairs(WorldConfig(n_pairs=config.n_pairs, seed=seed, noise_rate=noise_rate))


def run_cell(method: str, noise_rate: float, seed: int, base: RewardModel, bench, config: ReproductionConfig,
             device: str = "cpu", cache_dir=None) -> dict:
    """Train and score one grid cell; returns a flat row (method, noise_rate, seed, scores, seconds)."""
    started = time.monotonic()
    train = noisy_pairs(config, noise_rate, seed)
    for column in ("chosen", "rejected"):  # encode once (and reuse the disk cache across cells)
        base.embed(train["prompt"], train[column], cache_dir=cache_dir, progress=False)
    eta = noise_rate if config.assumed_noise_rate is None else config.assumed_noise_rate
    models, _ = train_method(method, base, train, config, eta, seed, device)
    return {"method": method, "noise_rate": noise_rate, "seed": seed, "eta": eta, **score_models(models, bench),
            "seconds": round(time.monotonic() - started, 1)}


def summarize(rows, value: str = "average") -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``value``, one row per (method, noise rate).

    Columns: ``method``, ``noise_rate``, ``mean``, ``std`` (sample std, 0 for one
    seed), ``n_seeds``, ``gain_vs_single`` (mean difference to ``single`` at the
    same noise rate, NaN without a single run). Methods keep :data:`METHODS` order.
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
    order = {m: i for i, m in enumerate(METHODS)}
    table = table.sort_values(["noise_rate", "method"], key=lambda c: c.map(order) if c.name == "method" else c)
    return table.reset_index(drop=True)
