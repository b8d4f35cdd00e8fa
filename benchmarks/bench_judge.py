"""The gold judge: how fast it reads, and whether text that is not an answer fools it.

Two measurements, on a stream of world pairs that no test or notebook uses
(``WorldConfig(seed=20261207)``, clean labels, all four categories):

- **speed**: responses scored per second by ``gold_rewards`` on one thread (every
  chosen and rejected answer of ``--pairs`` pairs; prompts are parsed once and cached,
  as in training), best and median of ``--repeats`` runs;
- **families** (``course_lib.world.probes.FAMILIES``): each chosen answer turned into
  text that is not an answer; per family, the share of prompts on which it scores
  below the answer it was made from, and both mean golds.

``--label`` names the run (e.g. ``before`` / ``after`` a change to the judge); runs with
other labels already in ``--out`` are kept, so one file shows both side by side.

    python benchmarks/bench_judge.py --label after
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from course_lib.engine.files import write_text_atomic
from course_lib.world import WorldConfig, generate_preference_pairs, gold_rewards
from course_lib.world.probes import FAMILIES, family_examples

STREAM_SEED = 20261207


def speed(pairs, repeats: int) -> dict:
    """Responses per second of ``gold_rewards`` on one thread, best and median of ``repeats`` runs."""
    torch.set_num_threads(1)
    prompts = list(pairs["prompt"]) * 2
    responses = list(pairs["chosen"]) + list(pairs["rejected"])
    gold_rewards(prompts, responses)  # parse every prompt once (cached), as training does
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        gold_rewards(prompts, responses)
        rates.append(len(responses) / (time.perf_counter() - start))
    return {"responses": len(responses), "responses_per_s_best": max(rates),
            "responses_per_s_median": statistics.median(rates)}


def families(pairs) -> dict:
    """Per family of text that is not an answer: how often it scores below its answer, and mean golds."""
    out = {}
    for family, triples in family_examples(pairs).items():
        p, a, t = zip(*triples)
        gold_answer, gold_text = gold_rewards(p, a), gold_rewards(p, t)
        out[family] = {"n": len(triples), "share_below_answer": float(np.mean(gold_text < gold_answer)),
                       "mean_gold_text": float(gold_text.mean()), "mean_gold_answer": float(gold_answer.mean()),
                       "example": t[0][:160]}
    return out


def report(runs: dict) -> str:
    lines = ["# Gold judge: speed and text that is not an answer", "",
             f"Stream: `WorldConfig(seed={STREAM_SEED})`, clean labels, chosen answers. One thread. `before`: "
             "the judge that counted keywords and phrases anywhere in the text; `after`: the judge that reads "
             "sentences (its gold includes `coherence`, weight 1.0 for every group, so each world answer "
             "scores 1.0 more).", "",
             "| run | responses/s (best) | responses/s (median) |", "|---|---|---|"]
    for label, run in runs.items():
        lines.append(f"| {label} | {run['responses_per_s_best']:,.0f} | {run['responses_per_s_median']:,.0f} |")
    lines += ["", "| family | run | n | share below its answer | mean gold (text) | mean gold (answer) |",
              "|---|---|---|---|---|---|"]
    for family in FAMILIES:
        for label, run in runs.items():
            row = run["families"].get(family)
            if row:
                lines.append(f"| {family} | {label} | {row['n']} | {row['share_below_answer']:.3f} | "
                             f"{row['mean_gold_text']:.2f} | {row['mean_gold_answer']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run, e.g. 'before' or 'after'")
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/judge.json"))
    parser.add_argument("--families-only", action="store_true",
                        help="re-measure the families only and keep this label's stored speed (timings need a quiet CPU)")
    args = parser.parse_args(argv)
    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    pairs = generate_preference_pairs(WorldConfig(n_pairs=args.pairs, seed=STREAM_SEED))
    timing = ({key: runs[args.label][key] for key in ("responses", "responses_per_s_best", "responses_per_s_median")}
              if args.families_only else speed(pairs, args.repeats))
    runs[args.label] = {**timing, "families": families(pairs)}
    write_text_atomic(args.out, json.dumps(runs, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), report(runs))
    print(report(runs))


if __name__ == "__main__":
    main()
