"""The reproduction's gain claims (Chapters 03-05), checked over 3 seeds with a standard-error bound.

Chapters 04 and 05 show that peer review and CRM beat the single RM at 40% flipped
labels. A smoke run (one seed, 300 pairs, 8 epochs) cannot show it: over seeds 0-5 at
smoke size the gain of peer review is -0.006 +- 0.027 (mean +- sample std) and CRM's
+0.000 +- 0.027. More epochs alone do not help (300 pairs, 30 epochs: -0.014 and
+0.010); the effect needs pairs: 600 pairs and 40 epochs give +0.043 +- 0.050 and
+0.046 +- 0.057, 1000 pairs and 30 epochs +0.040 +- 0.071 and +0.056 +- 0.062 (seeds
0-2 fail the bound below). This test trains at the smallest size measured where seeds
0-2 pass it: 1500 pairs, 30 epochs, scored on one fixed
MiniRewardBench of 100 pairs per section (enough to see the sign at this size). Per seed 0-5 there,
the gain over the single RM at 40% flips:

    peer_review  +0.050 +0.028 +0.117 +0.165 -0.017 +0.103   mean +0.074, sd 0.066
    crm          +0.042 +0.037 +0.075 +0.145 -0.042 +0.125   mean +0.064, sd 0.068

The bound asserted: over seeds 0, 1, 2 the mean gain minus one standard error of the
per-seed gains (sample std / sqrt(3)) is above zero. Seeds 0-2 give +0.065 - 0.027 =
+0.038 for peer review and +0.051 - 0.012 = +0.040 for CRM (+0.033 and +0.034 when the
features were encoded with another thread count: float rounding moves a benchmark pair
or two, gains +0.040 +0.027 +0.108 and +0.035 +0.032 +0.070). One standard error is a
one-sided bound at about 80% with 2 degrees of freedom; the 95% t bound (2.92 SE) would
need more seeds than the test can afford, so the claim checked is "positive by more than
one standard error", no stronger.

Cost: the frozen MiniLM encodes 2 x 1500 texts per seed plus the benchmark (about 10k
texts); measured on one CPU thread of a shared 2-core machine: 3.6 minutes from a cold
cache and 1.2 minutes with the features cached (6 and 2.2 minutes when the machine was
busier). The features are cached in ``build/cache/`` (the folder ``course sweep`` uses;
entries are keyed by text), so a rerun only trains; CI can keep that folder between runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from course_lib.studies.reproduction import profile_config, run_cell
from course_lib.reward.model import RewardModel, RewardModelConfig
from course_lib.world import mini_reward_bench

ROOT = Path(__file__).resolve().parents[1]
FEATURE_CACHE = ROOT / "build" / "cache"
SEEDS = (0, 1, 2)
CONFIG = profile_config("smoke", n_pairs=1500, epochs=30, n_bench=100)
CELLS = [("single", 0.0), ("single", 0.4), ("peer_review", 0.4), ("crm", 0.4)]


def mean_minus_standard_error(values) -> float:
    """Mean of the per-seed values minus their standard error (sample std / sqrt(n))."""
    values = np.asarray(values, dtype=float)
    return float(values.mean() - values.std(ddof=1) / np.sqrt(len(values)))


def test_reproduction_gains_hold_over_three_seeds():
    """One test, so that a parallel run (pytest -n) encodes the features once.

    Claims, each as mean - SE over seeds 0-2 of the per-seed differences:
    peer review and CRM minus the single RM at 40% flips > 0 (measured +0.033 to +0.040);
    the single RM's drop from clean labels to 40% flips > 0.05, the threshold of the
    chapter 03 smoke claim it replaces (measured 0.225, 0.162, 0.260: mean - SE = +0.187).
    """
    base = RewardModel(RewardModelConfig(mode="frozen", max_length=CONFIG.max_length))
    bench = mini_reward_bench(n_per_category=CONFIG.n_bench, seed=0)
    for column in ("chosen", "rejected"):
        base.embed(bench["prompt"], bench[column], cache_dir=FEATURE_CACHE, progress=False)
    average = {
        (method, rate, seed): run_cell(method, rate, seed, base, bench, CONFIG, cache_dir=FEATURE_CACHE)["average"]
        for seed in SEEDS
        for method, rate in CELLS
    }
    claims = {
        "peer_review minus single RM at 40% flips": ([("peer_review", 0.4), ("single", 0.4)], 0.0),
        "crm minus single RM at 40% flips": ([("crm", 0.4), ("single", 0.4)], 0.0),
        "single RM, clean minus 40% flips": ([("single", 0.0), ("single", 0.4)], 0.05),
    }
    failures = []
    for claim, ((better, worse), threshold) in claims.items():
        differences = [average[(*better, seed)] - average[(*worse, seed)] for seed in SEEDS]
        bound = mean_minus_standard_error(differences)
        if not bound > threshold:
            failures.append(f"{claim}, seeds {SEEDS}: {np.round(differences, 3).tolist()}; "
                            f"mean - SE = {bound:.3f}, not above {threshold}")
    assert not failures, "\n".join(failures)
