"""Probe: how different are two reward models on the course's own transformer? (issue 22, item 1)

Two "minds" are two reward models built by
:func:`course_lib.studies.policy_reward.policy_reward_model` from the standard SFT
policies of two policy seeds (each SFT-trained on its own world stream from its own
initialisation; one shared tokenizer), every weight fine-tuned with the BT loss. They
are trained together on the same world pairs with 40% flipped labels, as the course's
two-model methods train them (:func:`course_lib.studies.reproduction.train_method`):

- ``self_review``: each model updates on the 60% of every batch it finds easiest itself;
- ``peer_review``: each model updates on the 60% its peer finds easiest (CRM's exchange).

Reported per arm, over several run seeds: the overlap of the two models' update sets in the
last epoch (``|A and B| / |A|``), the precision of the labels they update on (the data:
0.60), the MiniRewardBench accuracy of their averaged reward, and the accuracy on the SFT
policy's own answers (gold-labelled on-policy pairs, Chapter 07's). The arms: independent
minds (Self-Review, peer review), two models from one backbone (peer review), and Chapters
04-05's frozen-MiniLM reward models (two heads on one encoder with Self-Review and peer
review, and the single model, which Chapter 07 found at chance on the policy's answers).

Usage: python benchmarks/probe_two_minds.py [--pairs 3000] [--epochs 3] [--seeds 0 1 2] [--policy-seeds 0 1]
Writes results/benchmarks/two_minds.md and two_minds.csv (one row per arm and seed), atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from course_lib.engine.files import write_text_atomic
from course_lib.engine.uncertainty import policy_difference
from course_lib.policy import build_policy, policy_config, train_tokenizer, world_texts
from course_lib.policy.onpolicy import on_policy_pairs
from course_lib.policy.sft import PolicyTrainingConfig, train_sft_policy
from course_lib.reward.model import RewardModel, RewardModelConfig, score
from course_lib.studies.policy_reward import policy_reward_model
from course_lib.studies.reproduction import ReproductionConfig, score_models, selection_summary, train_method
from course_lib.world import WorldConfig, generate_preference_pairs, mini_reward_bench, sample_prompts

ROOT = Path(__file__).resolve().parents[1]
DATA_STREAM = 1000  # reward-model training pairs come from world streams 1000 + seed
RESULTS = ROOT / "results" / "benchmarks"


def sft_policy(tokenizer, seed: int):
    """The standard SFT policy of Chapters 07-08 for policy seed ``seed`` (seed 0 is theirs), cached."""
    pairs = generate_preference_pairs(WorldConfig(n_pairs=6400, seed=seed))
    policy = build_policy(policy_config("standard"), tokenizer, seed=seed)
    config = PolicyTrainingConfig(epochs=4, lr=2e-3, seed=seed, batch_size=32, progress=False)
    trainer = train_sft_policy(policy, config, pairs, tokenizer=tokenizer, cache_dir=ROOT / "build" / "cache")
    return policy.eval(), trainer.from_cache


def pair_outcomes(models, pairs) -> np.ndarray:
    """Per pair: 1 if the models' mean reward ranks the gold-better answer higher, 1/2 on a tie, else 0."""
    chosen = np.mean([score(m, pairs["prompt"], pairs["chosen"]) for m in models], axis=0)
    rejected = np.mean([score(m, pairs["prompt"], pairs["rejected"]) for m in models], axis=0)
    return (chosen > rejected) + 0.5 * (chosen == rejected)


ARMS = {  # name: (which bases, method)
    "independent minds, Self-Review": ("independent", "self_review"),
    "independent minds, peer review": ("independent", "peer_review"),
    "one backbone, peer review": ("same", "peer_review"),
    "frozen MiniLM, two heads, Self-Review": ("minilm", "self_review"),
    "frozen MiniLM, two heads, peer review": ("minilm", "peer_review"),
    "frozen MiniLM, single": ("minilm", "single"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="run seeds: which labels are flipped, the heads' initialisation and the data order")
    parser.add_argument("--policy-seeds", type=int, nargs=2, default=[0, 1])
    parser.add_argument("--onpolicy-prompts", type=int, default=600)
    parser.add_argument("--output", type=Path, default=RESULTS / "two_minds.md")
    args = parser.parse_args()

    tokenizer = train_tokenizer(world_texts(3000, seed=0), vocab_size=2000)
    started = time.monotonic()
    (policy_a, cached_a), (policy_b, cached_b) = (sft_policy(tokenizer, s) for s in args.policy_seeds)
    print(f"SFT policies ready in {time.monotonic() - started:.0f} s (from cache: {cached_a}, {cached_b})", flush=True)
    bench = mini_reward_bench(n_per_category=100, seed=0)
    onpolicy = on_policy_pairs(policy_a, tokenizer, sample_prompts(args.onpolicy_prompts, seed=40_000),
                               max_new_tokens=96, seed=1)
    print(f"{len(onpolicy)} gold-labelled pairs of the seed-{args.policy_seeds[0]} SFT policy's answers", flush=True)

    gpt = ReproductionConfig(n_pairs=args.pairs, epochs=args.epochs, lr=1e-4, head_hidden_size=None, max_length=128,
                             ramp_epochs=1, encoder="full_copy")
    frozen = ReproductionConfig(n_pairs=args.pairs, epochs=20, max_length=128)  # Chapters 04-05's settings
    minilm = RewardModel(RewardModelConfig(mode="frozen", max_length=128, seed=0))
    bases = {"independent": tuple(policy_reward_model(p, tokenizer, max_length=128) for p in (policy_a, policy_b)),
             "same": tuple(policy_reward_model(policy_a, tokenizer, max_length=128) for _ in range(2)),
             "minilm": minilm}
    rows, outcomes = [], {arm: [] for arm in ARMS}
    for seed in args.seeds:
        # A world stream no policy was SFT-trained on (policy p saw stream p's chosen answers: training on them
        # would hand mind A the clean labels).
        train = generate_preference_pairs(WorldConfig(n_pairs=args.pairs, seed=DATA_STREAM + seed, noise_rate=0.4))
        is_flipped = np.asarray(train["is_flipped"], dtype=bool)
        for arm, (base, method) in ARMS.items():
            started = time.monotonic()
            config = frozen if base == "minilm" else gpt
            models, history = train_method(method, bases[base], train, config, 0.4, seed=seed)
            seconds = time.monotonic() - started
            outcomes[arm].append(pair_outcomes(models, onpolicy))
            rows.append({"arm": arm, "seed": seed, **selection_summary(history, is_flipped),
                         "bench": score_models(models, bench)["average"], "onpolicy": outcomes[arm][-1].mean(),
                         "seconds": seconds})
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)

    frame = pd.DataFrame(rows)
    table = frame.groupby("arm", sort=False).agg(
        overlap=("selection_agreement", "mean"), kept_precision=("selection_precision", "mean"),
        bench=("bench", "mean"), bench_sd=("bench", "std"), onpolicy=("onpolicy", "mean"), seconds=("seconds", "mean"))
    n_on, n_seeds = len(onpolicy), len(args.seeds)
    gpt_vs_minilm = policy_difference(np.array(outcomes["independent minds, peer review"]),
                                      np.array(outcomes["frozen MiniLM, single"]))
    pr_vs_sr = policy_difference(np.array(outcomes["independent minds, peer review"]),
                                 np.array(outcomes["independent minds, Self-Review"]))
    lines = [
        "# Two minds on the course's own transformer (probe, issue 22 item 1)", "",
        "Written by `benchmarks/probe_two_minds.py`. *Independent minds* are two reward models made of the standard SFT "
        f"policies of policy seeds {args.policy_seeds[0]} and {args.policy_seeds[1]} (each SFT-trained 4 epochs on its "
        "own 6,400-pair world stream from its own initialisation; one shared tokenizer), a linear head on the "
        "response's end-of-text token, every weight fine-tuned with the BT loss; *one backbone* builds both from the "
        f"seed-{args.policy_seeds[0]} policy (they differ by head initialisation and data order only). Training: "
        f"{args.pairs:,} world pairs with 40% flipped labels, {args.epochs} epochs, lr 1e-4, batch 32, one ramp epoch, "
        "then each model keeps 60% of every batch (Self-Review: the pairs it finds easiest itself; peer review: those "
        "its peer finds easiest). The frozen-MiniLM arms are Chapters 04-05's (two MLP heads on one frozen encoder, "
        f"20 epochs). Seeds {args.seeds} (each draws its pairs from world stream {DATA_STREAM} + seed, which no policy was "
        "SFT-trained on, flips its own labels and initialises its own heads); means over seeds.", "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}; 1-minute load average at the end {os.getloadavg()[0]:.2f} (above 2 means the cores "
        "were shared and the times are upper bounds).", "",
        "| arm | update-set overlap | precision of updated labels | MiniRewardBench (400 pairs) | sd over seeds | "
        f"accuracy on the policy's answers ({n_on} gold-labelled pairs) | seconds per run |",
        "|---|---|---|---|---|---|---|",
        *(f"| {arm} | {r.overlap:.3f} | {r.kept_precision:.3f} | {r.bench:.3f} | {r.bench_sd:.3f} | {r.onpolicy:.3f} | "
          f"{r.seconds:.0f} |" for arm, r in table.iterrows()), "",
        "Overlap is `|A and B| / |A|` of the two models' last-epoch update sets (1: both updated on the same pairs); "
        "for the single model there is none. The data's label precision is 0.60.", "",
        f"- Accuracy on the policy's own answers, independent minds with peer review minus the frozen-MiniLM single "
        f"model: {gpt_vs_minilm} -> {gpt_vs_minilm.verdict('difference')} (t interval over {n_seeds} seeds x {n_on} pairs).",
        f"- Peer review minus Self-Review, independent minds, same measure: {pr_vs_sr} -> "
        f"{pr_vs_sr.verdict('difference')}.", "",
    ]
    write_text_atomic(args.output, "\n".join(lines))
    write_text_atomic(args.output.with_suffix(".csv"), frame.to_csv(index=False))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
