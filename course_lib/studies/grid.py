"""The sweep's rows as a grid of paired comparisons, and the report's shared pieces.

:class:`Grid` holds the rows of one encoder with their per-item benchmark outcomes and
compares two methods with a paired bootstrap over seeds and items
(:func:`course_lib.engine.uncertainty.paired_bootstrap`); :func:`interval_cell`,
:func:`verdict` and :func:`grid_header` write what every section of the report writes.
Used by :mod:`course_lib.studies.sweep` and :mod:`course_lib.studies.minds`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..engine.uncertainty import mean_estimate, paired_bootstrap
from .reproduction import SECTIONS, SWEEP_METHODS, decode_outcomes

DEFAULT_NOISES = ("clean", "flip20", "flip40", "bt", "length")
NOISE_TITLES = {"clean": "clean", "flip20": "20% flips", "flip40": "40% flips",
                "bt": "BT-sampled (T=3)", "length": "length-biased (0.5)"}


def encoder_of(row: dict) -> str:
    """A row's encoder (rows written before the LoRA variant have none: frozen)."""
    encoder = row.get("encoder")
    return encoder if isinstance(encoder, str) else "frozen"


class Grid:
    """The sweep's rows with their per-item outcomes, for paired comparisons."""

    def __init__(self, rows: list[dict], encoder: str = "frozen"):
        rows = [r for r in rows if encoder_of(r) == encoder]
        self.frame = pd.DataFrame(rows)
        config = json.loads(self.frame.iloc[0]["config"])
        self.n_bench = int(config["n_bench"])
        self.strata = np.repeat(np.array(SECTIONS), self.n_bench)
        self.outcomes = {(r["method"], r["noise"], int(r["seed"])): decode_outcomes(r["outcomes"])
                         for r in rows if isinstance(r.get("outcomes"), str)}
        self.methods = [m for m in SWEEP_METHODS if m in set(self.frame.method)]
        noises = list(dict.fromkeys(self.frame.noise))
        self.noises = [n for n in DEFAULT_NOISES if n in noises] + [n for n in noises if n not in DEFAULT_NOISES]
        self._compared: dict = {}

    def seeds(self, noise: str, *methods: str) -> list[int]:
        common = None
        for method in methods:
            seeds = {s for (m, n, s) in self.outcomes if m == method and n == noise}
            common = seeds if common is None else common & seeds
        return sorted(common or [])

    def compare(self, noise: str, method: str, baseline: str):
        """``method - baseline`` on the four-section average: a paired bootstrap over shared seeds and items."""
        key = (noise, method, baseline)
        if key not in self._compared:
            self._compared[key] = self._compare(noise, method, baseline)
        return self._compared[key]

    def _compare(self, noise: str, method: str, baseline: str):
        seeds = self.seeds(noise, method, baseline)
        if not seeds:
            return None
        a = np.stack([self.outcomes[method, noise, s] for s in seeds])
        b = np.stack([self.outcomes[baseline, noise, s] for s in seeds])
        return paired_bootstrap(a, b, strata=self.strata, n_resamples=1000, seed=0)

    def accuracy(self, noise: str, method: str, value: str = "average"):
        values = self.frame[(self.frame.method == method) & (self.frame.noise == noise)][value].to_numpy(float)
        return mean_estimate(values) if len(values) > 1 else None

    def item_standard_errors(self) -> tuple[float, float]:
        """The largest binomial SE, over runs, of one section's accuracy and of the four-section average."""
        section_se, average_se = 0.0, 0.0
        for _, row in self.frame.iterrows():
            variances = [row[s] * (1 - row[s]) / self.n_bench for s in SECTIONS]
            section_se = max(section_se, float(np.sqrt(max(variances))))
            average_se = max(average_se, float(np.sqrt(sum(variances)) / len(SECTIONS)))
        return section_se, average_se


def interval_cell(estimate) -> str:
    """``mean [low, high]`` of a paired difference, **\\*** when its interval excludes zero; empty for none."""
    if estimate is None:
        return ""
    mark = " **\\***" if estimate.excludes_zero else ""
    return f"{estimate.mean:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}]{mark}"


def verdict(estimate, what: str) -> str:
    """``what mean [low, high] (higher | lower | within noise)``: the word is claimed only when the interval excludes zero."""
    word = ("higher" if estimate.mean > 0 else "lower") if estimate.excludes_zero else "within noise"
    return f"{what} {estimate.mean:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}] ({word})"


def difference_table(grid: Grid, baseline: str) -> list[str]:
    """A table of every method minus ``baseline`` per noise, with paired intervals."""
    noises = grid.noises
    lines = ["| method | " + " | ".join(NOISE_TITLES.get(n, n) for n in noises) + " |", "|---|" + "---|" * len(noises)]
    for method in grid.methods:
        if method != baseline:
            lines.append(f"| {method} | " + " | ".join(interval_cell(grid.compare(n, method, baseline)) for n in noises) + " |")
    return lines + [""]


def accuracy_table(grid: Grid, value: str) -> list[str]:
    """A table of each method's ``value`` (a section or the average) per noise: mean ± standard error over seeds."""
    noises = grid.noises
    lines = ["| method | " + " | ".join(NOISE_TITLES.get(n, n) for n in noises) + " |", "|---|" + "---|" * len(noises)]
    for method in grid.methods:
        cells = []
        for noise in noises:
            estimate = grid.accuracy(noise, method, value)
            cells.append("" if estimate is None else f"{estimate.mean:.3f} ± {estimate.se:.3f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def selection_table(grid: Grid) -> list[str]:
    """A table of each two-model method's update-set agreement / kept-label precision per noise (mean over seeds)."""
    frame = grid.frame
    if "selection_agreement" not in frame:
        return []
    noises = grid.noises
    lines = ["| method | " + " | ".join(NOISE_TITLES.get(n, n) for n in noises) + " |", "|---|" + "---|" * len(noises)]
    for method in grid.methods:
        cells = []
        for noise in noises:
            rows = frame[(frame.method == method) & (frame.noise == noise)]
            agreement, precision = rows.selection_agreement.dropna(), rows.selection_precision.dropna()
            cells.append(f"{agreement.mean():.3f} / {precision.mean():.3f}" if len(agreement) else "")
        if any(cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def grid_header(grid: Grid, what: str) -> list[str]:
    """The lines that open a grid's section: profile, device, runs, settings, and the benchmark's standard errors."""
    frame = grid.frame
    first = frame.iloc[0]
    config = json.loads(first["config"])
    section_se, average_se = grid.item_standard_errors()
    seeds = sorted(frame["seed"].unique())
    return [
        f"Written by `course sweep` (profile `{first['profile']}`, {what}, device: "
        f"{'; '.join(sorted(frame['device'].unique()))}): {len(frame)} runs, seeds {', '.join(map(str, seeds))}. "
        "Each seed draws its own training pairs and model initialisations; the benchmark is fixed.",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in config.items() if not isinstance(v, dict)) + ".",
        "",
        f"MiniRewardBench: {grid.n_bench:,} pairs per section. From the benchmark's size alone, one run's section "
        f"accuracy has a standard error of at most {section_se:.4f}, its four-section average at most {average_se:.4f} "
        "(binomial, largest over the runs).",
        "",
    ]
