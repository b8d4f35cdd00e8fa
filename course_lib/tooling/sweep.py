"""``course sweep``: the CRM reproduction grid, resumable, written as CSV + Markdown + plot.

Each finished cell (method, noise rate, seed) is appended to
``<output>/crm_reproduction.csv`` at once (the file is rewritten atomically), so
an interrupted sweep loses at most the cell it was running, and a rerun skips
every cell already in the file. The CSV remembers the profile and the grid
settings; a rerun with different settings refuses to mix them into the same
file. After the grid, ``crm_reproduction.md`` (mean +- std over seeds, per
MiniRewardBench section) and ``crm_reproduction.png`` are rewritten from the
whole CSV.

The cells run through :func:`course_lib.reproduction.run_cell` directly (no
notebook), sharing one frozen encoder and a disk cache of its features.
"""

from __future__ import annotations

import io
import json
import platform
from pathlib import Path

import pandas as pd

from ..progress import tqdm
from ..reproduction import METHODS, SECTIONS, check_methods, profile_config, run_cell, summarize
from ..runtime import resolve_device
from .notebook_io import write_bytes_atomic, write_text_atomic

CSV_NAME = "crm_reproduction.csv"
KEY = ["method", "noise_rate", "seed"]


def device_description(device) -> str:
    """Where the sweep ran, in words (GPU name, or the CPU and its thread count)."""
    import torch

    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def read_rows(csv_path: Path, profile: str, config_json: str) -> list[dict]:
    """Rows already in ``csv_path``; an error if they were made with other settings."""
    if not csv_path.exists():
        return []
    frame = pd.read_csv(csv_path)
    settings = set(zip(frame["profile"], frame["config"]))
    if settings and settings != {(profile, config_json)}:
        raise ValueError(
            f"{csv_path} holds results of other settings ({sorted(s[0] for s in settings)} profile); "
            f"pass another --output folder, or delete the file to start over"
        )
    return frame.to_dict("records")


def write_csv(rows: list[dict], csv_path: Path) -> None:
    write_text_atomic(csv_path, pd.DataFrame(rows).to_csv(index=False))


def headline(table: pd.DataFrame) -> list[str]:
    """Bullet lines on the paper's claims, computed from the summary (skipped when a method is missing)."""
    means = table.set_index(["method", "noise_rate"])["mean"]
    lines = []
    if ("single", 0.0) in means and ("single", 0.4) in means:
        lines.append(f"- single RM, clean to 40% flips: {means['single', 0.0]:.3f} → {means['single', 0.4]:.3f} "
                     f"(drop {means['single', 0.0] - means['single', 0.4]:.3f})")
    for rate in (0.2, 0.4):
        if ("crm", rate) in means and ("single", rate) in means:
            gain = means["crm", rate] - means["single", rate]
            line = f"- CRM at {rate:.0%} flips: {gain:+.3f} over the single RM"
            if ("ensemble", rate) in means:
                line += f", {means['crm', rate] - means['ensemble', rate]:+.3f} over the two-RM ensemble"
            if rate == 0.4:
                line += f" (the course's goal: +0.100; the paper reports up to +9.94 points on RewardBench: {'met' if gain >= 0.1 else 'not met'})"
            lines.append(line)
    return (["## Headline", "", *lines, ""]) if lines else []


def markdown_report(rows: list[dict]) -> str:
    """The Markdown summary: the headline table (average), then one table per section."""
    frame = pd.DataFrame(rows)
    first = frame.iloc[0]
    config = json.loads(first["config"])
    seeds = sorted(frame["seed"].unique())
    lines = [
        "# CRM reproduction on MiniRewardBench",
        "",
        f"Written by `course sweep` (profile `{first['profile']}`, device: {'; '.join(sorted(frame['device'].unique()))}); "
        f"{len(frame)} runs, seeds {', '.join(map(str, seeds))}. Values are MiniRewardBench accuracy, "
        "mean ± sample std over seeds; *gain* is the difference to `single` at the same noise rate. "
        "Each seed draws its own training pairs and model initialisations; the benchmark is fixed.",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in config.items()) + ".",
        "",
    ]
    lines += headline(summarize(rows))
    for value in ("average", *SECTIONS):
        table = summarize(rows, value)
        noise_rates = sorted(table["noise_rate"].unique())
        title = "Average of the four sections" if value == "average" else f"Section `{value}`"
        lines += [f"## {title}", "", "| method | " + " | ".join(f"noise {r:g}" for r in noise_rates) + " |",
                  "|---|" + "---|" * len(noise_rates)]
        for method, group in table.groupby("method", sort=False):
            cells = []
            for rate in noise_rates:
                row = group[group.noise_rate == rate]
                if row.empty:
                    cells.append("")
                    continue
                row = row.iloc[0]
                gain = "" if method == "single" or pd.isna(row.gain_vs_single) else f" ({row.gain_vs_single:+.3f})"
                cells.append(f"{row['mean']:.3f} ± {row['std']:.3f}{gain}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_png(rows: list[dict]) -> bytes:
    """Accuracy vs noise rate per method (error bars: std over seeds), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, group in table.groupby("method", sort=False):
        ax.errorbar(group["noise_rate"], group["mean"], yerr=group["std"], marker="o", capsize=3, label=method)
    ax.set(xlabel="share of flipped labels (eta)", ylabel="MiniRewardBench accuracy",
           title="CRM reproduction (mean ± std over seeds)")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def run_sweep(output_dir, profile: str = "standard", methods=None, noise_rates=(0.0, 0.2, 0.4), seeds=(0, 1, 2),
              device: str = "cpu", backbone=None, cache_dir=None, progress: bool = True, **overrides) -> Path:
    """Run the missing cells of the grid; rewrite the CSV after each, then the report and plot.

    Returns the CSV path. ``overrides`` change fields of the profile's
    :class:`~course_lib.reproduction.ReproductionConfig` (and are recorded).
    """
    from ..reward_model import RewardModel, RewardModelConfig
    from ..world import mini_reward_bench

    methods = check_methods(methods or METHODS)
    device = str(resolve_device(device))  # "auto" becomes the device it picks; a bad name fails here
    for rate in noise_rates:
        if not 0.0 <= rate < 0.5:
            raise ValueError(f"noise rates must be in [0, 0.5), got {rate}")
    config = profile_config(profile, **overrides)
    config_json = json.dumps(config.to_dict(), sort_keys=True)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / CSV_NAME
    rows = read_rows(csv_path, profile, config_json)
    done = {(r["method"], float(r["noise_rate"]), int(r["seed"])) for r in rows}
    todo = [(m, float(r), int(s)) for s in seeds for r in noise_rates for m in methods if (m, float(r), int(s)) not in done]
    if todo:
        base = RewardModel(RewardModelConfig(backbone=backbone, mode="frozen", max_length=config.max_length))
        base.to(device)
        bench = mini_reward_bench(n_per_category=config.n_bench, seed=0)
        for column in ("chosen", "rejected"):
            base.embed(bench["prompt"], bench[column], cache_dir=cache_dir, progress=False)
        where = device_description(device)
        for method, rate, seed in tqdm(todo, desc="sweep", disable=not progress):
            row = run_cell(method, rate, seed, base, bench, config, device=device, cache_dir=cache_dir)
            rows.append({"profile": profile, **row, "device": where, "config": config_json})
            write_csv(rows, csv_path)
    if rows:
        write_text_atomic(output_dir / "crm_reproduction.md", markdown_report(rows))
        write_bytes_atomic(output_dir / "crm_reproduction.png", plot_png(rows))
    return csv_path
