"""``course sweep``: the CRM reproduction grid, resumable, written as CSV + Markdown + plot.

Each finished cell (method, noise, seed) is appended to the CSV at once (the file
is rewritten atomically), so an interrupted sweep loses at most the cell it was
running, and a rerun skips every cell already in the file. The CSV remembers the
profile and the grid settings; a rerun with different settings refuses to mix them
into the same file. Each row also keeps the run's per-item benchmark outcomes, so
the report compares methods with paired intervals over seeds and items.

Heads on one frozen encoder go to ``crm_reproduction.csv``; the LoRA profiles
(``lora_cpu``, ``lora``: each model with its own adapters) go to
``crm_reproduction_lora.csv``, together with a twin of every cell with heads on one
frozen encoder at the same sizes, so the report can tell the encoders' effect from
the smaller size's. The independent-minds profiles (``independent_cpu``,
``independent``: reward models on the course's own transformer, every weight
fine-tuned, the two models of a two-model method made from two SFT policies of
different seeds, :mod:`course_lib.studies.minds`) go to
``crm_reproduction_independent.csv``. After the grid, ``crm_reproduction.md`` and
``crm_reproduction.png`` are rewritten from every CSV there is.

The cells run through :func:`course_lib.studies.reproduction.run_cell` directly (no
notebook), sharing one frozen encoder and a disk cache of its features (or, for
independent minds, the SFT policies of each seed, cached in the same folder).
"""

from __future__ import annotations

import io
import json
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.progress import tqdm
from ..engine.files import write_bytes_atomic, write_text_atomic
from ..engine.runtime import resolve_device
from .grid import (DEFAULT_NOISES, NOISE_TITLES, Grid, accuracy_table, difference_table, encoder_of,  # noqa: F401
                   grid_header, interval_cell, selection_table, verdict)
from .minds import (INDEPENDENT_CSV_NAME, INDEPENDENT_METHODS, INDEPENDENT_NOISES, MindSettings, PolicyMinds,
                    independent_section)
from .reproduction import SECTIONS, SWEEP_METHODS, check_methods, check_noises, profile_config, run_cell

CSV_NAME = "crm_reproduction.csv"
LORA_CSV_NAME = "crm_reproduction_lora.csv"
KEY = ["method", "noise", "seed", "encoder"]
ABLATIONS = [  # (label, method, baseline)
    ("peer exchange, no curriculum (peer_review - self_review)", "peer_review", "self_review"),
    ("peer exchange, with curriculum (crm - crm_self_review)", "crm", "crm_self_review"),
    ("curriculum, with peer exchange (crm - peer_review)", "crm", "peer_review"),
    ("curriculum, with Self-Review (crm_self_review - self_review)", "crm_self_review", "self_review"),
]


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


# ----------------------------------------------------------------------------- paired comparisons


def headline(grid: Grid) -> list[str]:
    """Bullet lines per noise: CRM against the single RM and Self-Review, and which methods tie for the best."""
    lines = []
    for noise in grid.noises:
        parts = []
        for baseline, title in (("single", "the single RM"), ("self_review", "Self-Review"), ("early_stop", "early stopping")):
            if "crm" in grid.methods and baseline in grid.methods:
                estimate = grid.compare(noise, "crm", baseline)
                if estimate is not None:
                    parts.append(verdict(estimate, f"CRM minus {title}"))
        means = {m: grid.accuracy(noise, m) for m in grid.methods}
        means = {m: e.mean for m, e in means.items() if e is not None}
        if means:
            best = max(means, key=means.get)
            tied = [m for m in grid.methods if m != best and m in means and not (
                (e := grid.compare(noise, best, m)) is not None and e.excludes_zero)]
            parts.append(f"highest mean: `{best}` ({means[best]:.3f}); not separated from it: "
                         + (", ".join(f"`{m}`" for m in tied) if tied else "none"))
        if parts:
            lines.append(f"- **{NOISE_TITLES.get(noise, noise)}**: " + "; ".join(parts) + ".")
    return ["## Headline", "", *lines, ""] if lines else []


def markdown_report(rows: list[dict], lora_rows: list[dict] | None = None, grid: Grid | None = None,
                    independent_rows: list[dict] | None = None) -> str:
    """The Markdown report: headline, paired differences, ablation, accuracies, selections, the LoRA variant,
    and independent minds (:func:`course_lib.studies.minds.independent_section`).

    ``grid``: the :class:`Grid` of ``rows`` when the caller already has it (its intervals are cached).
    """
    lines = ["# CRM reproduction on MiniRewardBench", ""]
    if rows:
        grid = grid or Grid(rows)
        lines += grid_header(grid, "reward heads on one frozen encoder")
        lines += [
            "**How to read it.** A difference is paired: both methods ran on the same seeds (same training pairs) and "
            "are scored on the same benchmark items. Its 95% interval comes from a bootstrap that resamples seeds and "
            "items together, sections weighted equally; **\\*** marks an interval that excludes zero, and only those "
            "are claimed. Methods are told the true share of labels that disagree with gold (for flips, the flip "
            "rate). Noises: symmetric flips; labels sampled from the gold Bradley-Terry model at temperature 3 "
            "(errors concentrate on pairs of small gold margin); an annotator who picks the longer answer half "
            "the time.",
            "",
        ]
        if "clean" in grid.noises and set(grid.frame[grid.frame.noise == "clean"].method) < set(grid.methods):
            lines += ["On clean labels the methods are told eta = 0: nothing is dropped and the robust losses equal BT, "
                      "so `conservative` and `unbiased` are `single`; `self_review`, `peer_review` and `coteaching_plus` "
                      "are `ensemble`; `crm_self_review` is `crm`. Only the methods that differ there were run.", ""]
        lines += headline(grid)
        lines += ["## Difference to the single RM (four-section average)", ""] + difference_table(grid, "single")
        if "self_review" in grid.methods:
            lines += ["## Difference to Self-Review (four-section average)", ""] + difference_table(grid, "self_review")
        ablation = [(label, m, b) for label, m, b in ABLATIONS if m in grid.methods and b in grid.methods]
        if ablation:
            lines += ["## Ablation: the peer exchange and the curriculum", "",
                      "| component | " + " | ".join(NOISE_TITLES.get(n, n) for n in grid.noises) + " |",
                      "|---|" + "---|" * len(grid.noises)]
            for label, method, baseline in ablation:
                lines.append(f"| {label} | " + " | ".join(interval_cell(grid.compare(n, method, baseline)) for n in grid.noises) + " |")
            lines.append("")
        lines += ["## Accuracy (mean ± standard error over seeds)", "", "### Average of the four sections", ""]
        lines += accuracy_table(grid, "average")
        for section in SECTIONS:
            lines += [f"### Section `{section}`", ""] + accuracy_table(grid, section)
        selection = selection_table(grid)
        if selection:
            lines += ["## What the two models selected (last epoch)", "",
                      "Agreement / precision: the share of model A's update set that model B was also updated on, and "
                      "the share of selected pairs whose label agrees with gold (mean over seeds). With two heads on one "
                      "frozen encoder the two models make nearly the same choices, so peer review and Self-Review "
                      "update on almost the same pairs.", ""] + selection
    if lora_rows:
        lora, twin = Grid(lora_rows, "lora"), Grid(lora_rows, "frozen")
        lines += ["## Separate encoders: each reward model with its own LoRA adapters", ""]
        lines += grid_header(lora, "LoRA adapters on the top encoder layers of each model's own encoder copy")
        lines += ["Does peer review separate from Self-Review when the two models do not share an encoder? Every cell "
                  "also ran with two heads on one frozen encoder at the same sizes (the *twin*), so a difference "
                  "between the two columns is the encoders', not the size's.", ""]
        for baseline, title in (("self_review", "Self-Review"), ("single", "the single RM")):
            lines += [f"### Difference to {title}", "", "| method | noise | LoRA encoders | twin: one frozen encoder |",
                      "|---|---|---|---|"]
            for method in lora.methods:
                if method != baseline:
                    for noise in lora.noises:
                        lines.append(f"| {method} | {NOISE_TITLES.get(noise, noise)} | "
                                     f"{interval_cell(lora.compare(noise, method, baseline))} | {interval_cell(twin.compare(noise, method, baseline))} |")
            lines.append("")
        lines += ["### Accuracy and selections", "", "| method | noise | LoRA: accuracy | LoRA: agreement / precision "
                  "| twin: accuracy | twin: agreement / precision |", "|---|---|---|---|---|---|"]
        for method in lora.methods:
            for noise in lora.noises:
                cells = []
                for grid in (lora, twin):
                    estimate = grid.accuracy(noise, method)
                    rows_ = grid.frame[(grid.frame.method == method) & (grid.frame.noise == noise)]
                    agreement = rows_.selection_agreement.dropna() if "selection_agreement" in rows_ else []
                    precision = rows_.selection_precision.dropna() if "selection_precision" in rows_ else []
                    cells.append("" if estimate is None else f"{estimate.mean:.3f} ± {estimate.se:.3f}")
                    cells.append(f"{np.mean(agreement):.3f} / {np.mean(precision):.3f}" if len(agreement) else "")
                lines.append(f"| {method} | {NOISE_TITLES.get(noise, noise)} | " + " | ".join(cells) + " |")
        lines.append("")
    if independent_rows:
        lines += independent_section(independent_rows, frozen=(grid or Grid(rows)) if rows else None)
    return "\n".join(lines)


def plot_png(grid: Grid) -> bytes:
    """Each method's difference to the single RM per noise, with 95% paired intervals, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in grid.methods if m != "single"]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        xs, means, errors = [], [], []
        for j, noise in enumerate(grid.noises):
            estimate = grid.compare(noise, method, "single")
            if estimate is not None:
                xs.append(j - 0.4 + (i + 0.5) * width)
                means.append(estimate.mean)
                errors.append([estimate.mean - estimate.low, estimate.high - estimate.mean])
        if xs:
            ax.errorbar(xs, means, yerr=np.array(errors).T, fmt="o", ms=4, capsize=2, label=method)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(grid.noises)), [NOISE_TITLES.get(n, n) for n in grid.noises])
    ax.set(ylabel="MiniRewardBench accuracy minus single RM",
           title="CRM reproduction: paired differences (95% intervals over seeds and items)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def write_report(output_dir) -> None:
    """Rewrite ``crm_reproduction.md`` (and the plot) from the CSVs in ``output_dir``."""
    output_dir = Path(output_dir)
    tables = [output_dir / name for name in (CSV_NAME, LORA_CSV_NAME, INDEPENDENT_CSV_NAME)]
    rows, lora_rows, independent_rows = ([] if not p.exists() else pd.read_csv(p).to_dict("records") for p in tables)
    grid = Grid(rows) if rows else None  # one set of bootstrap intervals for the report and the plot
    if rows or lora_rows or independent_rows:
        write_text_atomic(output_dir / "crm_reproduction.md", markdown_report(rows, lora_rows, grid, independent_rows))
    if grid is not None:
        write_bytes_atomic(output_dir / "crm_reproduction.png", plot_png(grid))


def run_sweep(output_dir, profile: str = "standard", methods=None, noises=None, seeds=(0, 1, 2, 3, 4),
              device: str = "cpu", backbone=None, cache_dir=None, progress: bool = True,
              minds: MindSettings | None = None, **overrides) -> Path:
    """Run the missing cells of the grid; rewrite the CSV after each, then the report and plot.

    Returns the CSV path. ``noises``: names of :data:`~course_lib.studies.reproduction.NOISE_MODELS`
    or symmetric flip rates. ``overrides`` change fields of the profile's
    :class:`~course_lib.studies.reproduction.ReproductionConfig` (and are recorded).
    ``methods`` and ``noises`` default to every method and five noises, or, for
    independent minds, to :data:`~course_lib.studies.minds.INDEPENDENT_METHODS` at
    40% flips and BT-sampled labels. ``backbone``: the frozen or LoRA encoder (a
    sentence encoder); ``minds``: for ``encoder="full_copy"``, how the SFT policies
    are made (default: Chapter 07's standard ones; tests pass tiny ones).
    """
    from ..reward.model import RewardModel, RewardModelConfig
    from ..world import mini_reward_bench

    config = profile_config(profile, **overrides)
    independent = config.encoder == "full_copy"
    methods = check_methods(methods or (INDEPENDENT_METHODS if independent else SWEEP_METHODS))
    noises = check_noises(noises or (INDEPENDENT_NOISES if independent else DEFAULT_NOISES))
    device = str(resolve_device(device))  # "auto" becomes the device it picks; a bad name fails here
    if independent and backbone is not None:
        raise ValueError("run_sweep: backbone names a sentence encoder; with encoder='full_copy' the reward models are "
                         "made of SFT policies: pass minds=MindSettings(...) instead")
    if minds is not None and not independent:
        raise ValueError(f"run_sweep: minds (SFT policy settings) apply only to encoder='full_copy', not "
                         f"{config.encoder!r}; use profile 'independent_cpu' or 'independent'")
    settings = config.to_dict()
    if independent:
        minds = minds or MindSettings()
        builder = PolicyMinds(minds, config.max_length, device, cache_dir)  # checks max_length against the policy
        settings["minds"] = minds.to_dict()
    config_json = json.dumps(settings, sort_keys=True)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    name = {"lora": LORA_CSV_NAME, "full_copy": INDEPENDENT_CSV_NAME}.get(config.encoder, CSV_NAME)
    csv_path = output_dir / name
    rows = read_rows(csv_path, profile, config_json)
    encoders = {"lora": ["lora", "frozen"], "full_copy": ["full_copy"]}.get(config.encoder, ["frozen"])
    done = {(r["method"], r["noise"], int(r["seed"]), encoder_of(r)) for r in rows}
    todo = [(m, n, int(s), e) for s in seeds for n in noises for m in methods for e in encoders
            if (m, n.name, int(s), e) not in done]
    if todo:
        bench = mini_reward_bench(n_per_category=config.n_bench, seed=0)
        if list(bench["category"]) != list(np.repeat(np.array(SECTIONS), config.n_bench)):
            raise RuntimeError("MiniRewardBench is no longer in section blocks; the sweep's report assumes it is")
        if not independent:
            base = RewardModel(RewardModelConfig(backbone=backbone, mode="frozen", max_length=config.max_length))
            base.to(device)
            for column in ("chosen", "rejected"):
                base.embed(bench["prompt"], bench[column], cache_dir=cache_dir, progress=progress)
        where = device_description(device)
        for method, noise, seed, encoder in tqdm(todo, desc="sweep", disable=not progress):
            row = run_cell(method, noise, seed, builder.bases(seed) if independent else base, bench,
                           replace(config, encoder=encoder), device=device, cache_dir=cache_dir, keep_outcomes=True)
            rows.append({"profile": profile, **row, "encoder": encoder, "device": where,
                         "config": config_json})
            write_csv(rows, csv_path)
    write_report(output_dir)
    return csv_path
