"""The end-to-end study's report: gold and proxy against KL per arm, and the arms compared at matched KL.

Reads the rows :func:`course_lib.studies.end_to_end.run_end_to_end` wrote (one per arm
and seed; each with the gold and proxy of every evaluation prompt at every checkpoint,
step 0 being the SFT policy) and writes ``end_to_end.md`` and ``end_to_end.png``.

Arms move away from the SFT policy at different speeds, so comparing them after the
same number of steps mixes "a better reward" with "a policy that moved further". The
headline compares them **at matched KL**: for each arm and seed, each prompt's gold is
interpolated linearly between the two checkpoints whose mean KL brackets a target KL
(:func:`gold_at_kl`), the target being the largest KL every reward-model arm reached in every seed.
The gold arm (the judge itself as
reward) is the ceiling at its own pace and joins the matched comparisons only where it
reaches the target. Every comparison is :func:`~course_lib.engine.uncertainty.policy_difference` over seeds
x prompts (the same prompts for every arm), Bonferroni-widened for the comparisons read
together.

Defined for Chapter 08.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.files import write_bytes_atomic, write_text_atomic
from ..engine.uncertainty import detectable_effect, mean_estimate, policy_difference
from .end_to_end import ARMS, CSV_NAME, decode_array

ARM_TITLES = {"gold": "gold judge (ceiling)", "clean": "RM, clean labels", "noisy": "RM, 40% flips, plain",
              "self_review": "RM, 40% flips, Self-Review", "crm": "RM, 40% flips, CRM",
              "ensemble": "ensemble of two RMs, 40% flips"}
HEADLINE = ("crm", "noisy")
COMPARISONS = [  # (label, arm, baseline); the first is the headline
    ("CRM - plain noisy RM (the headline)", "crm", "noisy"),
    ("CRM - ensemble of two independent RMs (the reviewers' baseline)", "crm", "ensemble"),
    ("CRM - Self-Review (the peer exchange)", "crm", "self_review"),
    ("ensemble - plain noisy RM", "ensemble", "noisy"),
    ("clean-label RM - plain noisy RM (what the noise costs)", "clean", "noisy"),
    ("gold judge - clean-label RM (what a learned reward costs)", "gold", "clean"),
]


class Study:
    """The rows as arrays: per arm, gold and proxy ``(seeds, checkpoints, prompts)`` and mean KL ``(seeds, checkpoints)``."""

    def __init__(self, rows: list[dict]):
        if not rows:
            raise ValueError("end-to-end report: no rows")
        self.frame = pd.DataFrame(rows)
        self.config = json.loads(self.frame.iloc[0]["config"])
        self.arms = [a for a in ARMS if a in set(self.frame["arm"])]
        self.seeds = sorted(set.intersection(*(set(self.frame.loc[self.frame.arm == a, "seed"].astype(int))
                                               for a in self.arms)))
        if not self.seeds:
            raise ValueError("end-to-end report: no seed has a row for every arm present")
        self.steps = json.loads(self.frame.iloc[0]["steps"])
        self.gold, self.proxy, self.kl = {}, {}, {}
        for arm in self.arms:
            part = self.frame[self.frame.arm == arm].set_index(self.frame.loc[self.frame.arm == arm, "seed"].astype(int))
            rows_ = [part.loc[s] for s in self.seeds]
            self.gold[arm] = np.stack([decode_array(r["gold_prompts"]) for r in rows_])
            self.proxy[arm] = np.stack([decode_array(r["proxy_prompts"]) for r in rows_])
            self.kl[arm] = np.array([json.loads(r["kl"]) for r in rows_])

    def row(self, arm: str, seed: int) -> pd.Series:
        return self.frame[(self.frame.arm == arm) & (self.frame.seed.astype(int) == seed)].iloc[0]

    def matched_kl(self) -> float:
        """The largest KL every reward-model arm reached at its last checkpoint in every seed.

        The gold arm is left out: its reward moves the policy at its own pace, and the
        question is how the reward models compare. It joins a comparison at matched KL
        only where it reaches that KL (:meth:`reaches`).
        """
        arms = [a for a in self.arms if a != "gold"] or self.arms
        return float(min(self.kl[arm][:, -1].min() for arm in arms))

    def targets(self) -> list[tuple[str, float]]:
        """The KLs the arms are compared at, the headline's first: where the clean-label reward model's policy
        has its highest mean gold (the point a practitioner with the best learned reward would stop at; chosen
        from the reference arm, never from the arms compared), then :meth:`matched_kl`."""
        targets = []
        if "clean" in self.arms:
            peak = int(self.gold["clean"].mean((0, 2)).argmax())
            if peak > 0:
                targets.append(("where the clean-label RM's policy peaks", float(self.kl["clean"][:, peak].mean())))
        largest = self.matched_kl()
        if not targets or largest > targets[0][1]:
            targets.append(("the largest KL every RM arm reached", largest))
        return targets

    def reaches(self, arm: str, target: float) -> bool:
        """Whether every seed of ``arm`` has a checkpoint at KL ``target`` or beyond."""
        return bool((self.kl[arm].max(axis=1) >= target).all())

    def gold_at(self, arm: str, target: float) -> np.ndarray:
        """``(seeds, prompts)``: each prompt's gold at KL ``target`` (:func:`gold_at_kl`), seed by seed."""
        return np.stack([gold_at_kl(self.gold[arm][i], self.kl[arm][i], target) for i in range(len(self.seeds))])

    def change(self, arm: str, checkpoint: int, name: str = "gold"):
        """Gold (or proxy, in SDs of its step-0 values) at ``checkpoint`` minus step 0: seeds x prompts interval."""
        values = getattr(self, name)[arm]
        scale = 1.0 if name == "gold" else max(float(values[:, 0].std()), 1e-12)
        return policy_difference(values[:, checkpoint] / scale, values[:, 0] / scale)


def gold_at_kl(gold: np.ndarray, kl: np.ndarray, target: float) -> np.ndarray:
    """Per-prompt gold ``(prompts,)`` at KL ``target``, from checkpoints ``gold (checkpoints, prompts)`` at mean KLs ``kl``.

    Linear interpolation between the first two consecutive checkpoints whose KLs bracket
    ``target`` (step 0 has KL 0); a ``ValueError`` if no checkpoint reaches it.
    """
    gold, kl = np.asarray(gold, dtype=np.float64), np.asarray(kl, dtype=np.float64)
    if gold.ndim != 2 or len(kl) != len(gold):
        raise ValueError(f"gold_at_kl: gold must be (checkpoints, prompts) with one KL per checkpoint, got "
                         f"{gold.shape} and {kl.shape}")
    for k in range(len(kl) - 1):
        low, high = kl[k], kl[k + 1]
        if min(low, high) <= target <= max(low, high):
            weight = 0.0 if high == low else (target - low) / (high - low)
            return (1 - weight) * gold[k] + weight * gold[k + 1]
    raise ValueError(f"gold_at_kl: no two checkpoints bracket KL {target:.3f} (checkpoint KLs {np.round(kl, 3).tolist()})")


def _cell(estimate) -> str:
    return f"{estimate.mean:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}]"


def _verdict(estimate, what: str) -> str:
    if estimate.low > 0:
        return f"{what} is positive"
    if estimate.high < 0:
        return f"{what} is negative"
    return "within noise"


def _seed_estimate(values) -> str:
    estimate = mean_estimate(np.asarray(values, dtype=np.float64))
    return f"{estimate.mean:.3f} ± {estimate.se:.3f}" if len(values) > 1 else f"{estimate.mean:.3f}"


def reward_model_table(study: Study) -> list[str]:
    lines = ["| arm | training labels right | held-out accuracy on the policy's answers | MiniRewardBench | "
             "update-set overlap / kept-label precision | RM training (s) |", "|---|---|---|---|---|---|"]
    for arm in study.arms:
        if arm == "gold":
            continue
        part = [study.row(arm, s) for s in study.seeds]
        overlap = [r["selection_agreement"] for r in part if pd.notna(r.get("selection_agreement"))]
        precision = [r["selection_precision"] for r in part if pd.notna(r.get("selection_precision"))]
        selection = f"{np.mean(overlap):.3f} / {np.mean(precision):.3f}" if overlap else "—"
        lines.append(f"| {ARM_TITLES[arm]} | {np.mean([r['label_precision'] for r in part]):.3f} | "
                     f"{_seed_estimate([r['heldout_accuracy'] for r in part])} | {_seed_estimate([r['bench'] for r in part])} | "
                     f"{selection} | {np.mean([r['rm_seconds'] for r in part]):.0f} |")
    return lines


def design(study: Study) -> dict:
    """The matched-KL comparisons' design, fixed before reading them: the target KLs (:meth:`Study.targets`),
    how many comparisons (``k``, over both) and so the Bonferroni ``confidence``, and the smallest difference
    detected with 80% power."""
    targets = study.targets()
    k = len([c for c in COMPARISONS if c[1] in study.arms and c[2] in study.arms]) * len(targets)
    confidence = 1 - 0.05 / max(k, 1)
    seeds, n_prompts = len(study.seeds), study.gold[study.arms[0]].shape[-1]
    sd = float(study.gold[study.arms[0]][:, 0].std(axis=1, ddof=1).mean())  # one SFT answer's gold, over prompts
    dof = seeds - 1 if seeds > 1 else n_prompts - 1  # one seed: the paired t over prompts
    detectable = detectable_effect(np.sqrt(2) * sd, seeds * n_prompts, dof=max(dof, 1), confidence=confidence)
    return {"targets": targets, "k": k, "confidence": confidence, "sd": sd, "detectable": detectable,
            "seeds": seeds, "prompts": n_prompts}


def comparisons(study: Study, target: float, confidence: float) -> list[dict]:
    """Each of :data:`COMPARISONS` present: ``matched`` at KL ``matched_kl`` (``target``, or, where an arm does not
    reach it, the largest KL both arms reached in every seed) and ``last`` (at the last step), policy differences over
    seeds x prompts."""
    out = []
    for label, arm, base in COMPARISONS:
        if arm not in study.arms or base not in study.arms:
            continue
        kl = target
        if not (study.reaches(arm, target) and study.reaches(base, target)):
            kl = float(min(study.kl[arm][:, -1].min(), study.kl[base][:, -1].min()))
        matched = policy_difference(study.gold_at(arm, kl), study.gold_at(base, kl), confidence=confidence)
        last = policy_difference(study.gold[arm][:, -1], study.gold[base][:, -1], confidence=confidence)
        out.append({"label": label, "arm": arm, "base": base, "matched": matched, "matched_kl": kl, "last": last})
    return out


def peaks(study: Study) -> dict[str, dict]:
    """Per arm: the checkpoint where mean gold peaks, its KL, and (peak strictly inside) peak minus last gold."""
    out = {}
    for arm in study.arms:
        peak, last = int(study.gold[arm].mean((0, 2)).argmax()), len(study.steps) - 1
        fall = policy_difference(study.gold[arm][:, peak], study.gold[arm][:, last]) if 0 < peak < last else None
        coherence = np.mean([json.loads(study.row(arm, seed)["coherence"]) for seed in study.seeds], axis=0)
        out[arm] = {"step": study.steps[peak], "index": peak, "kl": float(study.kl[arm][:, peak].mean()), "fall": fall,
                    "coherence_peak": float(coherence[peak]), "coherence_last": float(coherence[-1]),
                    "coherence_sft": float(coherence[0])}
    return out


def transfer(study: Study, target: float) -> dict:
    """Does reward-model accuracy predict the policy's gold? Spearman correlations over (reward-model arm, seed)
    runs of the gold gain at KL ``target`` with held-out accuracy on the policy's answers and with MiniRewardBench
    (None when undefined)."""
    points = []
    sft = study.gold[study.arms[0]][:, 0].mean(1)
    for arm in study.arms:
        if arm == "gold" or not study.reaches(arm, target):
            continue
        at = study.gold_at(arm, target).mean(1)
        for i, seed in enumerate(study.seeds):
            row = study.row(arm, seed)
            points.append((row["heldout_accuracy"], row["bench"], at[i] - sft[i]))
    points = np.array(points).reshape(-1, 3)

    def spearman(j: int):
        if len(points) < 3 or np.ptp(points[:, j]) == 0 or np.ptp(points[:, 2]) == 0:
            return None
        ranks = [pd.Series(points[:, c]).rank().to_numpy() for c in (j, 2)]
        return float(np.corrcoef(*ranks)[0, 1])

    return {"runs": len(points), "heldout": spearman(0), "bench": spearman(1)}


def markdown_report(rows: list[dict]) -> str:
    study = Study(rows)
    config, steps, seeds = study.config, study.steps, study.seeds
    plan = design(study)
    frame = study.frame
    lines = ["# The end-to-end study: GRPO policies against reward models learned from noisy labels", "",
             "Written by `course end-to-end` (`course_lib.studies.end_to_end`, report "
             "`course_lib.studies.end_to_end_report`).", "",
             f"- Seeds: {', '.join(map(str, seeds))} (policy seed = run seed; model B of two-model arms from the SFT "
             f"policy of seed + {int(frame.iloc[0]['partner_seed']) - int(frame.iloc[0]['policy_seed'])}); "
             f"arms: {', '.join(study.arms)}.",
             f"- Reward models: the SFT policy's transformer + a linear head on the last token, every weight trained "
             f"({config['rm']['epochs']} epochs, lr {config['rm']['lr']:g}), on {int(frame['n_pairs'].min())}-"
             f"{int(frame['n_pairs'].max())} pairs of the policy's own answers to {config['rm_prompts']} prompts "
             f"(pairs whose gold differs; source: {', '.join(sorted(set(frame['pair_source'])))}), "
             f"{config['noise_rate']:.0%} of labels flipped.",
             f"- GRPO: {config['steps']} steps x {config['prompts_per_step']} fresh prompts x {config['group_size']} "
             f"answers, lr {config['lr']:g}, beta {config['beta']:g}, at most {config['max_new_tokens']} new tokens.",
             f"- Evaluation: one answer to each of the same {plan['prompts']} prompts at steps {steps} (step 0: the SFT "
             "policy), gold, the arm's own reward (proxy) and the log-ratio to the SFT policy (KL, nats).",
             f"- Device: {', '.join(sorted(set(frame['device'])))}; run time summed over the runs {frame['rm_seconds'].sum() / 60:.0f} min "
             f"training reward models, {frame['grpo_seconds'].sum() / 60:.0f} min GRPO and evaluation "
             f"({(frame['rm_seconds'] + frame['grpo_seconds']).mean() / 60:.1f} min per arm and seed).", ""]

    lines += ["## The reward models", "",
              "Held-out accuracy: the share of held-out pairs of the policy's own answers (gold labels) that the "
              "reward model orders as gold does; mean ± SE over seeds. Overlap and precision: the last epoch's "
              "update sets of a two-model method (|A and B| / |A|, and the share of kept pairs whose label is right).", ""]
    lines += reward_model_table(study) + [""]

    lines += ["## Gold and proxy against KL", "",
              "Change from the SFT policy at each evaluation (gold in gold units, proxy in SDs of the arm's reward over "
              "the SFT policy's answers), with 95% t intervals over seeds x prompts; KL is the mean over seeds.", "",
              "| step | " + " | ".join(ARM_TITLES[a] + ": KL / gold / proxy" for a in study.arms) + " |",
              "|---|" + "---|" * len(study.arms)]
    for k in range(1, len(steps)):
        cells = [f"{study.kl[a][:, k].mean():.2f} / {_cell(study.change(a, k))} / {study.change(a, k, 'proxy').mean:+.2f}"
                 for a in study.arms]
        lines.append(f"| {steps[k]} | " + " | ".join(cells) + " |")
    lines += ["", "Over-optimisation (gold rising, then falling while the proxy rises):", ""]
    for arm, peak in peaks(study).items():
        if peak["fall"] is not None:
            lines.append(f"- {ARM_TITLES[arm]}: gold is highest at step {peak['step']} (KL {peak['kl']:.2f}); peak minus "
                         f"last {_cell(peak['fall'])}: {_verdict(peak['fall'], 'the fall')}. Coherence (share of known, "
                         f"non-repeated sentences): {peak['coherence_sft']:.2f} at SFT, {peak['coherence_peak']:.2f} at "
                         f"the peak, {peak['coherence_last']:.2f} at the last step.")
        else:
            lines.append(f"- {ARM_TITLES[arm]}: gold is highest at step {peak['step']}"
                         + (" (no rise over the SFT policy)." if peak["index"] == 0 else
                            ", the last evaluation: no turn down measured."))
    lines.append("")

    confidence = plan["confidence"]
    names = " and ".join(f"{kl:.2f} nats ({name})" for name, kl in plan["targets"])
    lines += ["## The arms at matched KL", "",
              f"Each prompt's gold at a KL all arms pass, interpolated between checkpoints: {names}. "
              f"{confidence:.1%} t intervals over {plan['seeds']} seeds x {plan['prompts']} prompts (Bonferroni for "
              f"{plan['k']} comparisons). Before reading: taking the SD of one SFT answer's gold over prompts "
              f"({plan['sd']:.2f}) as each policy's noise per prompt, and the few seeds' t quantile, the smallest "
              f"difference these comparisons detect with 80% power is about {plan['detectable']:.3f} (more where seeds "
              "disagree).", "",
              "| arm | " + " | ".join(f"gold at KL {kl:.2f}: level, change from SFT" for _, kl in plan["targets"]) + " |",
              "|---|" + "---|" * len(plan["targets"])]
    sft_gold = study.gold[study.arms[0]][:, 0]
    for arm in study.arms:
        cells = []
        for _, target in plan["targets"]:
            if study.reaches(arm, target):
                at = study.gold_at(arm, target)
                cells.append(f"{at.mean():.3f}, {_cell(policy_difference(at, sft_gold))}")
            else:
                cells.append(f"not reached (last step: KL {study.kl[arm][:, -1].mean():.2f}, gold "
                             f"{_cell(policy_difference(study.gold[arm][:, -1], sft_gold))})")
        lines.append(f"| {ARM_TITLES[arm]} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison | " + " | ".join(f"at KL {kl:.2f}" for _, kl in plan["targets"]) + " | at the last step |",
              "|---|" + "---|" * (len(plan["targets"]) + 1)]
    compared = [comparisons(study, target, confidence) for _, target in plan["targets"]]
    for i, c in enumerate(compared[0]):
        cells = [_cell(at[i]["matched"]) + ("" if at[i]["matched_kl"] == target else f" (at KL {at[i]['matched_kl']:.2f}, "
                                                                                      "the most both reached)")
                 for at, (_, target) in zip(compared, plan["targets"])]
        lines.append(f"| {c['label']} | " + " | ".join(cells) + f" | {_cell(c['last'])} |")
    for (name, target), at in zip(plan["targets"], compared):
        verdicts = [f"{ARM_TITLES[c['arm']]} minus {ARM_TITLES[c['base']]}"
                    + ("" if c["matched_kl"] == target else f" (at KL {c['matched_kl']:.2f})")
                    + f": {_cell(c['matched'])}, {_verdict(c['matched'], 'the difference')}." for c in at]
        if verdicts:
            lines += ["", f"**At KL {target:.2f} ({name}).** " + " ".join(verdicts)]
    target = plan["targets"][0][1]
    carried = transfer(study, target)
    said = lambda value: "undefined" if value is None else f"{value:+.2f}"  # noqa: E731
    lines += ["", "## What carries over from reward-model accuracy", "",
              f"Over the {carried['runs']} (reward model, seed) runs, the Spearman correlation of the policy's gold gain "
              f"at KL {target:.2f} with the reward model's held-out accuracy on the policy's answers is "
              f"{said(carried['heldout'])}, and with its MiniRewardBench accuracy {said(carried['bench'])}.", ""]
    return "\n".join(lines) + "\n"


def plot_figure(study: Study):
    """Gold and proxy change from the SFT policy against KL, one line per arm (95% t intervals, seeds x prompts)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for arm in study.arms:
        kl = study.kl[arm].mean(0)
        for ax, name in zip(axes, ("gold", "proxy")):
            estimates = [study.change(arm, k, name) for k in range(1, len(study.steps))]
            means = np.array([0.0] + [e.mean for e in estimates])
            errors = np.array([[0.0, 0.0]] + [[e.mean - e.low, e.high - e.mean] for e in estimates]).T
            ax.errorbar(kl, means, yerr=errors, fmt="o-", ms=3, capsize=2, label=ARM_TITLES[arm])
    axes[0].set(xlabel="KL to the SFT policy (nats)", ylabel="gold change from SFT", title="gold (what people want)")
    axes[1].set(xlabel="KL to the SFT policy (nats)", ylabel="proxy change (SDs of its SFT scores)",
                title="proxy (what each policy was trained on)")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.5)
    for _, kl in study.targets():
        axes[0].axvline(kl, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"GRPO end to end, {len(study.seeds)} seeds, 95% t intervals over seeds x prompts; dotted: the KLs the arms "
                 "are compared at",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_png(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_figure(Study(rows))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def write_report(output_dir) -> Path:
    """Write ``end_to_end.md`` and ``end_to_end.png`` from ``output_dir/end_to_end.csv``; returns the Markdown's path."""
    output_dir = Path(output_dir)
    csv_path = output_dir / CSV_NAME
    if not csv_path.exists():
        raise FileNotFoundError(f"end-to-end report: {csv_path} does not exist; run `course end-to-end` first")
    rows = pd.read_csv(csv_path).to_dict("records")
    write_text_atomic(output_dir / "end_to_end.md", markdown_report(rows))
    write_bytes_atomic(output_dir / "end_to_end.png", plot_png(rows))
    return output_dir / "end_to_end.md"
