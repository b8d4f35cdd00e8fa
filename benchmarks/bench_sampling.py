"""Sampling throughput: transformers' ``model.generate`` vs the course's KV-cache sampler, plain and compiled.

All sides sample one completion per world prompt (``course_lib.world.sample_prompts``)
from the same GPT-2 policy (the course's ``build_policy``, freshly initialised: its
answers are random tokens that almost never end early, so every side decodes about
``--max-new-tokens`` tokens per prompt and does the same work), with the same settings
(temperature, top-p, no top-k, ``--max-new-tokens``, end-of-text stops a row), the same
batches (prompts sorted by length, ``--batch-size`` at a time, left padding), precision
and hardware, side by side in one process, ``--repeats`` timed runs per side in
alternating order:

- ``transformers_generate``: ``model.generate(do_sample=True, temperature, top_p,
  top_k=0, ...)`` on each left-padded batch (its default dynamic cache);
- ``course_plain``: ``course_lib.policy.generate`` (the plain loop, dynamic cache);
- ``course_compiled`` (``--compile``): ``generate(compile=True)`` on a GPU (static cache,
  the one-token step compiled with CUDA graphs), ``compile="force"`` on a CPU.

Every side first runs once on one batch, untimed (the compiled side compiles then; its
time is reported). Throughput: completions per second and generated tokens per second
(end-of-text included) of a timed run over all prompts, the median of the runs. The
course's two sides use the same seed, so the report also gives the share of
completions that are identical between them (the compiled step computes the same
numbers up to float rounding; a single rounding difference at a sampling boundary
changes the rest of that completion).

Usage:
  python benchmarks/bench_sampling.py                       # CPU: standard policy, plain vs generate
  python benchmarks/bench_sampling.py --device cuda --size gpt2-small --prompts 1024 --batch-size 64 \\
      --max-new-tokens 96 --compile                          # GPU (the target: GPT-2 small, 12 x 768)
Other options: ``--size`` (``smoke``, ``standard``, ``full``: the course's profiles; ``gpt2-small``),
``--temperature``, ``--top-p``, ``--precision``, ``--repeats``, ``--threads`` (torch CPU threads), ``--vocab-size``,
``--seed``. Writes results/benchmarks/sampling.md and .json (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from course_lib.policy.model import PolicyConfig, build_policy, policy_config
from course_lib.policy.sampling import generate
from course_lib.policy.tokenizer import train_tokenizer, world_texts
from course_lib.engine.runtime import autocast, start_runtime
from course_lib.engine.files import write_text_atomic
from course_lib.world import sample_prompts
from peers import synchronize

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
MODELS = {
    "smoke": policy_config("smoke"),  # 1 layer x 64, 2 heads, context 160
    "standard": policy_config("standard"),  # 2 layers x 128, 4 heads, context 160
    "full": policy_config("full"),  # 8 layers x 512, 8 heads, context 256
    "gpt2-small": PolicyConfig(n_layer=12, n_embd=768, n_head=12, n_positions=256),
}
GPU_COMMAND = ("python benchmarks/bench_sampling.py --device cuda --size gpt2-small --prompts 1024 --batch-size 64 "
               "--max-new-tokens 96 --compile")


def hf_generate(model, tokenizer, prompts: list[str], args) -> list[list[int]]:
    """transformers' ``generate`` over the same length-sorted, left-padded batches as the course's sampler."""
    rows = [tokenizer.prompt_ids(p) for p in prompts]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [None] * len(rows)
    device = torch.device(args.device)
    with torch.inference_mode(), autocast(device, args.precision):
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            width = max(len(rows[i]) for i in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, i in enumerate(batch):
                ids[j, width - len(rows[i]):] = torch.tensor(rows[i])
                mask[j, width - len(rows[i]):] = 1
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                temperature=args.temperature, top_p=args.top_p, top_k=0, max_new_tokens=args.max_new_tokens,
                eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
            )[:, width:].tolist()
            for j, i in enumerate(batch):
                row = generated[j]
                out[i] = row[: row.index(tokenizer.eos_id) + 1] if tokenizer.eos_id in row else row
    return out


def course_generate(model, tokenizer, prompts: list[str], args, compile) -> list[list[int]]:
    return generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_p=args.top_p, batch_size=args.batch_size, seed=args.seed,
                    precision=args.precision, compile=compile).token_ids


def timed(run, device: str) -> tuple[float, list[list[int]]]:
    synchronize(device)
    start = time.perf_counter()
    token_ids = run()
    synchronize(device)
    return time.perf_counter() - start, token_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--size", default="standard", choices=list(MODELS))
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--compile", action="store_true",
                        help="also time the compiled sampler (compile=True on cuda, compile='force' on cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side, alternating; median reported")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for sampling.json and .md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    start_runtime(args.device, args.precision)  # TF32 on for CUDA, as the course's runs do

    tokenizer = train_tokenizer(world_texts(3000), vocab_size=args.vocab_size)
    prompts = list(sample_prompts(args.prompts, seed=args.seed)["prompt"])
    shape = MODELS[args.size]
    model = build_policy(shape, tokenizer, seed=args.seed).to(args.device).eval()

    sides = {
        "transformers_generate": lambda some: hf_generate(model, tokenizer, some, args),
        "course_plain": lambda some: course_generate(model, tokenizer, some, args, False),
    }
    if args.compile:
        compiled = True if args.device == "cuda" else "force"
        sides["course_compiled"] = lambda some: course_generate(model, tokenizer, some, args, compiled)

    warmup = {}
    for side, run in sides.items():  # one untimed batch: allocations, and the compiled side's compilation
        warmup[side], _ = timed(lambda run=run: run(prompts[: args.batch_size]), args.device)
        print(f"{side}: first batch (untimed) {warmup[side]:.1f} s", flush=True)

    runs = {side: [] for side in sides}
    outputs = {}
    names = list(sides)
    for repeat in range(args.repeats):
        for side in names if repeat % 2 == 0 else names[::-1]:
            seconds, token_ids = timed(lambda side=side: sides[side](prompts), args.device)
            outputs[side] = token_ids
            tokens = sum(len(ids) for ids in token_ids)
            runs[side].append({"seconds": seconds, "completions_per_s": len(prompts) / seconds,
                               "tokens_per_s": tokens / seconds, "mean_length": tokens / len(prompts),
                               "load_average_1min_after": os.getloadavg()[0]})
            print(side, {k: round(v, 3) for k, v in runs[side][-1].items()}, flush=True)

    device = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    summary = {}
    for side, results in runs.items():
        speeds = [r["completions_per_s"] for r in results]
        median_run = results[speeds.index(statistics.median_low(speeds))]
        summary[side] = {
            "completions_per_s": statistics.median(speeds),
            "completions_per_s_runs": speeds,
            "tokens_per_s": median_run["tokens_per_s"],
            "mean_length": median_run["mean_length"],
            "first_batch_seconds_untimed": warmup[side],
            "load_average_1min_after": [r["load_average_1min_after"] for r in results],
        }
    base = summary["transformers_generate"]["completions_per_s"]
    report = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "model_shape": {k: getattr(shape, k) for k in ("n_layer", "n_embd", "n_head", "n_positions")},
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        **summary,
        "speedup_over_transformers_generate": {side: s["completions_per_s"] / base for side, s in summary.items()},
    }
    if "course_compiled" in outputs:
        same = [a == b for a, b in zip(outputs["course_plain"], outputs["course_compiled"])]
        report["compiled_vs_plain_identical_completions"] = sum(same) / len(same)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "sampling.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / "sampling.md", markdown(report))
    print(markdown(report))


LABELS = {
    "transformers_generate": "transformers `generate`",
    "course_plain": "course sampler, plain (dynamic cache)",
    "course_compiled": "course sampler, compiled (static cache{graphs})",
}


def markdown(report: dict) -> str:
    s, shape = report["settings"], report["settings"]["model_shape"]
    sides = [side for side in LABELS if side in report]
    graphs = ", CUDA graphs" if s["device"] == "cuda" else ", `compile='force'`, no CUDA graphs"
    rows = []
    for side in sides:
        r = report[side]
        runs = ", ".join(f"{x:.1f}" for x in r["completions_per_s_runs"])
        rows.append(f"| {LABELS[side].format(graphs=graphs)} | {r['completions_per_s']:.1f} | {runs} | "
                    f"{r['tokens_per_s']:,.0f} | {r['mean_length']:.1f} | "
                    f"{report['speedup_over_transformers_generate'][side]:.2f}x | "
                    f"{r['first_batch_seconds_untimed']:.1f} |")
    loads = "; ".join(f"{side}: " + ", ".join(f"{x:.1f}" for x in report[side]["load_average_1min_after"])
                      for side in sides)
    identical = ""
    if "compiled_vs_plain_identical_completions" in report:
        share = report["compiled_vs_plain_identical_completions"]
        identical = f"\nCompiled and plain sampler, same seed: {share:.1%} of completions identical token for token.\n"
    threads = ("" if report["omp_num_threads"] is None else
               f" Run with `OMP_NUM_THREADS={report['omp_num_threads']}` (one torch thread per "
               "process, for a machine shared with other jobs: see the load averages below).")
    gpu_command = "" if s["device"] == "cuda" else f"""
GPU run (not run here): `{GPU_COMMAND}` (the compiled sampler's target: GPT-2 small on a GPU, where each decode
step's Python and kernel-launch overhead dominates and the CUDA graph removes it).
"""
    return f"""# Sampling throughput: transformers `generate` vs the course's sampler

Written by `benchmarks/bench_sampling.py`. Device: {report["device"]}; torch {report["torch"]},
transformers {report["transformers"]}.{threads}

Settings: `{s["size"]}` GPT-2 policy ({shape["n_layer"]} layers x {shape["n_embd"]}, {shape["n_head"]} heads,
context {shape["n_positions"]}; {s["parameters"]:,} parameters, vocabulary {s["vocab_size"]}), freshly initialised;
{s["precision"]}; {s["prompts"]} world prompts, batch size {s["batch_size"]}, up to {s["max_new_tokens"]} new tokens,
temperature {s["temperature"]}, top-p {s["top_p"]}, no top-k; median of {s["repeats"]} alternating timed runs per
side, after one untimed batch per side.

| side | completions/s | runs | tokens/s (median run) | mean length | vs `generate` | first batch, untimed (s) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{identical}
Load average (1 min) after each run, a sign of other jobs on the machine: {loads}.
{gpu_command}"""


if __name__ == "__main__":
    main()
