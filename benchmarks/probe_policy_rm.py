"""Probe: a reward model made of the standard SFT policy, trained on noisy world pairs (issue 22, item 1).

The reward model is InstructGPT's (Ouyang et al. 2022): the SFT policy's transformer with a
linear head on the ``<|endoftext|>`` that closes the response, every weight fine-tuned with
the Bradley-Terry loss (:func:`course_lib.studies.policy_reward.policy_reward_model`).

Setting (the standard profile of Chapters 07-08): tokenizer of 2,000 ids trained on 3,000
world pairs, the standard policy (2 layers x 128) SFT-trained 4 epochs on 6,400 world pairs
(``train_sft_policy(..., cache_dir="build/cache")``, so a later run loads it). Then one reward
model per ``--seeds`` value is trained on 3,000 world pairs with 40% of labels flipped
(``WorldConfig(seed=1000, noise_rate=0.4)``, a stream the SFT policy never saw), 3 epochs, lr 1e-4 (AdamW, linear decay), batch 32, at most
128 tokens. Reported per reward model: MiniRewardBench accuracy (400 pairs, 100 per section,
the mean of the section accuracies as Chapters 04 and 08 report it), the training time, and
the precision of the labels it would keep under small-loss selection (the 60% of the training
pairs with the smallest loss after training: the share whose label agrees with gold; the data
has 60%). The frozen-MiniLM single reward model's accuracy at 40% flips is read from the
committed sweep (``results/crm_reproduction.csv``) for comparison.

Usage: python benchmarks/probe_policy_rm.py [--seeds 0] [--epochs 3] [--pairs 3000]
Writes results/benchmarks/policy_rm.md (atomically).
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
from course_lib.policy import build_policy, policy_config, train_tokenizer, world_texts
from course_lib.policy.sft import PolicyTrainingConfig, train_sft_policy
from course_lib.reward.training import BradleyTerryTrainer, TrainingConfig
from course_lib.studies.policy_reward import policy_reward_model
from course_lib.studies.reproduction import score_models
from course_lib.world import WorldConfig, generate_preference_pairs, mini_reward_bench

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "benchmarks"


def kept_precision(trainer: BradleyTerryTrainer, is_flipped: np.ndarray, keep: float) -> float:
    """Share of correct labels among the ``keep`` fraction of training pairs with the smallest loss."""
    losses = torch.cat([trainer.pair_losses(trainer.make_batch(rows))
                        for rows in torch.arange(trainer.n_rows).split(trainer.config.eval_batch_size)]).cpu().numpy()
    kept = np.argsort(losses, kind="stable")[: int(round(keep * len(losses)))]
    return float((~is_flipped[kept]).mean())


def markdown_table(frame: pd.DataFrame) -> list[str]:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    return ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns),
            *("| " + " | ".join(row) + " |" for row in cells)]


def minilm_reference() -> str:
    path = ROOT / "results" / "crm_reproduction.csv"
    if not path.exists():
        return "no committed sweep to compare with"
    frame = pd.read_csv(path)
    rows = frame[(frame.method == "single") & (frame.noise == "flip40")]
    if "encoder" in rows:
        rows = rows[rows.encoder.fillna("frozen") == "frozen"]
    return (f"{rows.average.mean():.3f} (mean of {len(rows)} seeds, sd {rows.average.std(ddof=1):.3f}; frozen MiniLM, "
            "MLP head of 256, 20 epochs, 2,500 benchmark pairs per section; results/crm_reproduction.csv)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="reward-model seeds (head and data order)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--output", type=Path, default=RESULTS / "policy_rm.md")
    args = parser.parse_args()

    started = time.monotonic()
    tokenizer = train_tokenizer(world_texts(3000, seed=0), vocab_size=2000)
    sft_pairs = generate_preference_pairs(WorldConfig(n_pairs=6400, seed=0))
    policy = build_policy(policy_config("standard"), tokenizer, seed=0)
    sft = train_sft_policy(policy, PolicyTrainingConfig(epochs=4, lr=2e-3, seed=0, batch_size=32, progress=False),
                           sft_pairs, tokenizer=tokenizer, cache_dir=ROOT / "build" / "cache")
    policy.eval()
    sft_seconds = time.monotonic() - started
    print(f"SFT policy {'loaded from the cache' if sft.from_cache else 'trained'} in {sft_seconds:.0f} s", flush=True)

    # World stream 1000: the SFT policy was trained on stream 0's chosen answers, which would hand the
    # reward model the clean labels of the first 6,400 pairs of stream 0.
    train = generate_preference_pairs(WorldConfig(n_pairs=args.pairs, seed=1000, noise_rate=0.4))
    is_flipped = np.asarray(train["is_flipped"], dtype=bool)
    bench = mini_reward_bench(n_per_category=100, seed=0)
    rows = []
    for seed in args.seeds:
        model = policy_reward_model(policy, tokenizer, max_length=128, seed=seed)
        config = TrainingConfig(lr=args.lr, epochs=args.epochs, batch_size=32, seed=seed, progress=False,
                                record_grad_norms=False)
        trainer = BradleyTerryTrainer(model, config, train)
        before = score_models([model], bench)["average"]
        started = time.monotonic()
        history = trainer.fit()
        seconds = time.monotonic() - started
        scores = score_models([model], bench)
        rows.append({"seed": seed, "bench_before": before, **{k: scores[k] for k in scores}, "train_s": seconds,
                     "s_per_epoch": seconds / args.epochs, "kept60_precision": kept_precision(trainer, is_flipped, 0.6),
                     "last_epoch_loss": float(np.mean(history.step_loss[-len(history.step_loss) // args.epochs:]))})
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)

    frame = pd.DataFrame(rows)
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        "# Reward models on the course's own transformer (probe, issue 22 item 1)", "",
        "Written by `benchmarks/probe_policy_rm.py`. The SFT policy's transformer (standard profile: 2 layers x 128, "
        f"vocabulary 2,000; {n_params / 1e6:.2f}M parameters with the head) plus a linear head on the response's "
        f"`<|endoftext|>`, every weight fine-tuned with the BT loss on {args.pairs:,} world pairs with 40% flipped "
        f"labels, {args.epochs} epochs, lr {args.lr:g}, batch 32, at most 128 tokens. MiniRewardBench: 400 pairs "
        "(100 per section; the score is the mean of the section accuracies, standard error about 0.024).", "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; SFT {'loaded from build/cache' if sft.from_cache else f'trained in {sft_seconds:.0f} s'}; "
        f"1-minute load average when it finished: {os.getloadavg()[0]:.2f} (above the core count: other jobs shared "
        "the cores and the times are upper bounds).",
        "", *markdown_table(frame), "",
        f"Mean MiniRewardBench accuracy: {frame.average.mean():.3f} over {len(frame)} seed(s); before training "
        f"{frame.bench_before.mean():.3f}. Small-loss selection keeping 60% of the pairs keeps labels of precision "
        f"{frame.kept60_precision.mean():.3f} (the data: {1 - is_flipped.mean():.3f}).", "",
        f"Frozen-MiniLM single reward model at 40% flips, for comparison: {minilm_reference()}.", "",
    ]
    write_text_atomic(args.output, "\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
