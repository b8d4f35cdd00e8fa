"""DPO training throughput: course_lib's DPOTrainer vs TRL's DPOTrainer.

Both sides train ALL parameters of the same GPT-2 policy (the course's
``build_policy``: tied embeddings, SDPA attention, no dropout) with DPO (sigmoid loss,
beta 0.1) on the same world preference pairs, batch size (pairs per step, chosen and
rejected in one forward pass), maximum length, optimizer (``torch.optim.AdamW``, lr
1e-4, constant after a 10% linear warm-up, gradient clipping at 1.0), precision and
hardware, side by side in one process, ``--repeats`` runs per side alternating
(course, TRL, then TRL, course, ...):

- TRL 1.16: ``trl.DPOTrainer`` with ``precompute_ref_log_probs=True``, ``bf16`` set
  from ``--precision`` (TRL's default would turn bf16 on even on CPU), tokenising
  with a ``PreTrainedTokenizerFast`` around the course tokenizer's ``tokenizers``
  object, prompt ``prompt + "<|answer|>"``, TRL appending ``<|endoftext|>`` to each
  response: exactly the course's token ids (as ``tests/test_dpo_trl.py`` asserts).
  ``max_length`` is the model's context in both; TRL's collator and the course's
  ``Sequences`` both keep the start of a longer sequence.
- course_lib: ``course_lib.policy.dpo.DPOTrainer`` with ``DPOConfig`` (length-grouped
  batches, right padding, no attention mask).

Reference log-probs are precomputed on both sides and EXCLUDED from the timed part:
the reference is a second initialisation of the model (seed + 1), scored once for the
course (passed as ``reference_logps``) and by TRL in its constructor
(``ref_model=`` + ``precompute_ref_log_probs=True``). It is not the policy itself, so
that the first check, both sides' loss on the same first batch (rows 0..B-1, before
any step), is not trivially log 2. Throughput counts the pairs of the optimizer steps
after ``--warmup`` steps, from the end of the last warm-up step to the end of the last
step (tokenisation, model copies and trainer construction excluded on both sides;
TRL's per-step metric logging and the course's per-pair statistics included: each
side's normal step). ``--compile``: ``DPOConfig(compile=True)`` vs TRL's
``torch_compile=True``, both padding to multiples of 8; the reference is then the
initial policy itself on both sides (so the first-batch loss is log 2 on both), because
trl 1.16 fails with a compiled ``ref_model`` (``self.ref_model or self.model`` calls
``len()`` on the compiled module).

On CUDA the report adds model FLOP utilisation (MFU): model FLOPs per second over the
GPU's peak dense bf16 FLOP/s (``PEAK_BF16_FLOPS`` by device name, or
``--peak-flops``), with model FLOPs per training step = 6 x N x (real tokens) + 12 x
n_layer x n_embd x sum(length^2) (the attention term of Chowdhery et al. 2022, PaLM,
App. B), N = parameters minus the position embeddings (the tied embedding counts once:
it is the LM head's matrix product). With ``--precision fp32`` the GPU runs TF32 on both
sides (the course turns it on; TRL is given ``tf32=True``), still measured against the
bf16 peak.

Usage:
  python benchmarks/bench_dpo.py                        # CPU: standard model, fp32, 512 pairs, batch 32
  python benchmarks/bench_dpo.py --device cuda --precision bf16 --model gpt2-small --pairs 4096 \\
      --batch-size 32 --repeats 3 [--compile]           # GPU (a few minutes on an H100 / H200)
Other options: ``--warmup`` (steps left out, default 3), ``--threads`` (torch CPU threads),
``--peak-flops`` (MFU denominator for a GPU not in the table), ``--vocab-size``, ``--seed``.
Writes results/benchmarks/dpo_training.md and .json (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
import transformers
import trl
from transformers.trainer_callback import PrinterCallback

from course_lib.policy.dpo import DPOConfig, DPOTrainer
from course_lib.policy.model import PolicyConfig, build_policy, policy_config
from course_lib.policy.tokenizer import SEP, train_tokenizer, world_texts
from course_lib.engine.files import write_text_atomic
from course_lib.world import WorldConfig, generate_preference_pairs
from peers import StepClock, hf_tokenizer, synchronize, versions

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
MODELS = {
    "standard": policy_config("standard"),  # 2 layers x 128, 4 heads, context 160
    "gpt2-small": PolicyConfig(n_layer=12, n_embd=768, n_head=12, n_positions=256),
}
# Peak dense bf16 tensor FLOP/s (vendor datasheets, without sparsity), matched in order against the device name.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM ("H100 80GB HBM3")
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)
LR, BETA, WARMUP_RATIO = 1e-4, 0.1, 0.1
GPU_COMMAND = ("python benchmarks/bench_dpo.py --device cuda --precision bf16 --model gpt2-small --pairs 4096 "
               "--batch-size 32 --repeats 3")


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in device_name), None)


def model_flops(model, lengths: list[int]) -> float:
    """Training FLOPs (forward + backward) of sequences of the given real lengths (see the module docstring)."""
    config = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return sum(6 * n * t + 12 * config.n_layer * config.n_embd * t * t for t in lengths)


def summarise(times: list[float], batches: list[torch.Tensor], warmup: int, model) -> dict:
    """Pairs/s, tokens/s, model FLOP/s of the steps after ``warmup``; padding share of every step.

    ``batches``: each step's real sequence lengths (2 x pairs: chosen, rejected) and padded length.
    """
    timed = batches[warmup:]
    seconds = times[-1] - times[warmup - 1]
    pairs = sum(len(lengths) // 2 for lengths, _ in timed)
    tokens = sum(int(lengths.sum()) for lengths, _ in timed)
    real = sum(int(lengths.sum()) for lengths, _ in batches)
    slots = sum(len(lengths) * padded for lengths, padded in batches)
    return {
        "pairs_per_s": pairs / seconds,
        "tokens_per_s": tokens / seconds,
        "model_flops_per_s": sum(model_flops(model, lengths.tolist()) for lengths, _ in timed) / seconds,
        "padding_share": 1.0 - real / slots,
        "steps": len(batches),
        "timed_steps": len(timed),
    }


def run_course_lib(pairs, tokenizer, policy, reference_logps, args, max_length) -> dict:
    config = DPOConfig(
        lr=LR, lr_scheduler="constant_with_warmup", warmup_ratio=WARMUP_RATIO, max_grad_norm=1.0, beta=BETA,
        loss_type="sigmoid", epochs=1, batch_size=args.batch_size, max_length=max_length, seed=args.seed,
        compile=args.compile, progress=False, device=args.device, precision=args.precision,
    )
    trainer = DPOTrainer(copy.deepcopy(policy), config, pairs, tokenizer=tokenizer, reference_logps=reference_logps)
    first_batch_loss = trainer.pair_losses(trainer.make_batch(list(range(args.batch_size)))).mean().item()
    times, batches = [], []
    real_step = trainer.train_step

    def timed_step(batch, pair_weights=None, total_weight=None):
        loss = real_step(batch, pair_weights, total_weight)
        synchronize(args.device)
        times.append(time.perf_counter())
        rows = torch.as_tensor(batch.indices).cpu()
        lengths = trainer.data.lengths[torch.cat([rows, rows + trainer.n_pairs])]  # chosen, rejected
        batches.append((lengths, batch.sequences.input_ids.shape[1]))
        return loss

    trainer.train_step = timed_step
    trainer.fit()
    return {
        "first_batch_loss": first_batch_loss,
        **summarise(times, batches, args.warmup, trainer.model),
        "mean_step_loss": statistics.fmean(trainer.history.step_loss),
    }


def run_trl(pairs, tokenizer, policy, reference, args, max_length, output_dir) -> dict:
    config = trl.DPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=WARMUP_RATIO,
        optim="adamw_torch",
        max_grad_norm=1.0,
        beta=BETA,
        loss_type="sigmoid",
        max_length=max_length,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=64,
        bf16=args.precision == "bf16",
        tf32=True if args.device == "cuda" and args.precision == "fp32" else None,
        torch_compile=args.compile,
        pad_to_multiple_of=8 if args.compile else None,
        use_cpu=args.device == "cpu",
        dataloader_pin_memory=args.device == "cuda",
        seed=args.seed,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    clock = StepClock(args.device)
    trainer = trl.DPOTrainer(
        model=copy.deepcopy(policy),
        # trl 1.16 + torch_compile: `self.ref_model or self.model` calls len() on the compiled ref model and fails;
        # without a ref_model TRL scores the reference with the policy itself, which is then the reference
        ref_model=None if args.compile else copy.deepcopy(reference),
        args=config,
        train_dataset=pairs.map(lambda row: {"prompt": row["prompt"] + SEP}),
        processing_class=tokenizer,
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)  # no metrics dict on stdout after training
    collate, batches = trainer.data_collator, []

    def recording_collate(examples):
        batch = collate(examples)
        batches.append((batch["attention_mask"].sum(1), batch["attention_mask"].shape[1]))
        return batch

    batch = collate([trainer.train_dataset[i] for i in range(args.batch_size)])
    batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
    trainer.model.eval()
    with torch.no_grad(), trainer.accelerator.autocast():
        first_batch_loss = trainer.compute_loss(trainer.model, batch).item()
    trainer.data_collator = recording_collate
    trainer.train()
    return {
        "first_batch_loss": first_batch_loss,
        **summarise(clock.times, batches, args.warmup, trainer.model),
        "mean_step_loss": trainer.state.log_history[-1].get("train_loss"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--model", default="standard", choices=list(MODELS))
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per optimizer step")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side; the median is reported")
    parser.add_argument("--compile", action="store_true", help="torch.compile on both sides")
    parser.add_argument("--peak-flops", type=float, default=None, help="the GPU's peak FLOP/s for MFU (default: table)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for dpo_training.json and .md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference precompute bar
    transformers.logging.set_verbosity_error()
    if args.device == "cuda":  # the course's runtime turns TF32 on for any CUDA run; the flag is global: both sides
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    steps = -(-args.pairs // args.batch_size)
    if steps <= args.warmup + 1:
        parser.error(f"--pairs {args.pairs} / --batch-size {args.batch_size} gives {steps} steps; need > warmup + 1")

    tokenizer = train_tokenizer(world_texts(3000), vocab_size=args.vocab_size)
    pairs = generate_preference_pairs(WorldConfig(n_pairs=args.pairs, seed=args.seed))
    pairs = pairs.select_columns(["prompt", "chosen", "rejected"])
    shape = MODELS[args.model]
    policy = build_policy(shape, tokenizer, seed=args.seed)
    reference = build_policy(shape, tokenizer, seed=args.seed if args.compile else args.seed + 1)
    reference_config = DPOConfig(max_length=shape.n_positions, progress=False, device=args.device,
                                 precision=args.precision)
    scored = DPOTrainer(copy.deepcopy(reference), reference_config, pairs, tokenizer=tokenizer)
    reference_logps = scored.reference_logps
    truncated = sum(int(ids[-1]) != tokenizer.eos_id for ids in scored.data.ids) / len(scored.data)  # lost their end
    del scored
    trl_tokenizer = hf_tokenizer(tokenizer)

    runs = {"course_lib": [], "trl": []}
    with tempfile.TemporaryDirectory() as output_dir:
        for repeat in range(args.repeats):
            for side in ("course_lib", "trl") if repeat % 2 == 0 else ("trl", "course_lib"):
                if side == "course_lib":
                    result = run_course_lib(pairs, tokenizer, policy, reference_logps, args, shape.n_positions)
                else:
                    result = run_trl(pairs, trl_tokenizer, policy, reference, args, shape.n_positions, output_dir)
                result["load_average_1min_after"] = os.getloadavg()[0]  # other jobs on the machine skew timings
                runs[side].append(result)
                print(side, {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, flush=True)

    device = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    peak = args.peak_flops or (peak_flops(device) if args.device == "cuda" else None)
    summary = {}
    for side, results in runs.items():
        speeds = [r["pairs_per_s"] for r in results]
        median_run = results[speeds.index(statistics.median_low(speeds))]
        summary[side] = {**results[0], "pairs_per_s": statistics.median(speeds), "pairs_per_s_runs": speeds,
                         "tokens_per_s": median_run["tokens_per_s"],
                         "model_flops_per_s": median_run["model_flops_per_s"],
                         "load_average_1min_after": [r["load_average_1min_after"] for r in results]}
        summary[side]["mfu"] = None if peak is None else median_run["model_flops_per_s"] / peak
    ratios = [c["pairs_per_s"] / t["pairs_per_s"] for c, t in zip(runs["course_lib"], runs["trl"])]
    report = {
        **versions(device),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "model_shape": {k: getattr(shape, k) for k in ("n_layer", "n_embd", "n_head", "n_positions")},
            "parameters": sum(p.numel() for p in policy.parameters()),
            "max_length": shape.n_positions,
            "share_of_sequences_truncated": truncated,
            "training": f"DPO sigmoid beta {BETA}, full fine-tuning, AdamW lr {LR:.0e} constant after "
                        f"{WARMUP_RATIO:.0%} warm-up, clip 1.0",
            "reference_log_probs": "precomputed on both sides, excluded from the timing; the reference is "
                                   + ("the initial policy (see --compile)" if args.compile else
                                      "a second initialisation (seed + 1)"),
            "peak_flops": peak,
        },
        "course_lib": summary["course_lib"],
        "trl_dpo_trainer": summary["trl"],
        "ratio_course_lib_over_trl": statistics.median(ratios),
        "ratio_runs": ratios,
        "first_batch_loss_abs_difference": abs(
            summary["course_lib"]["first_batch_loss"] - summary["trl"]["first_batch_loss"]
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "dpo_training.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / "dpo_training.md", markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    def runs(side):
        return ", ".join(f"{x:.2f}" for x in side["pairs_per_s_runs"])

    def loads(side):
        return ", ".join(f"{x:.1f}" for x in side["load_average_1min_after"])

    ours, theirs, s = report["course_lib"], report["trl_dpo_trainer"], report["settings"]
    shape, ratios = s["model_shape"], report["ratio_runs"]
    mfu = ""
    if s["device"] == "cuda":
        peak = s["peak_flops"]
        mfu = ("| MFU | (unknown GPU: pass --peak-flops) | |\n" if peak is None else
               f"| MFU (of {peak / 1e12:.0f} TFLOP/s bf16 peak) | {ours['mfu']:.1%} | {theirs['mfu']:.1%} |\n")
    gpu_command = "" if s["device"] == "cuda" else f"""
GPU run (not run here): `{GPU_COMMAND}` (add `--compile` for torch.compile on both sides, `--peak-flops` for a
GPU not in the table).
"""
    precision = s["precision"] + (", torch.compile" if s["compile"] else "")
    return f"""# DPO training throughput: course_lib vs TRL DPOTrainer

Written by `benchmarks/bench_dpo.py`. Device: {report["device"]}; torch {report["torch"]},
transformers {report["transformers"]}, trl {report["trl"]}.

Settings: `{s["model"]}` GPT-2 policy ({shape["n_layer"]} layers x {shape["n_embd"]}, {shape["n_head"]} heads,
context {shape["n_positions"]}; {s["parameters"]:,} parameters, vocabulary {s["vocab_size"]}), {s["training"]};
{precision}; {s["pairs"]} world pairs, batch size {s["batch_size"]} pairs, max length {s["max_length"]} tokens
({s["share_of_sequences_truncated"]:.1%} of sequences truncated, the same way on both sides), one epoch, first
{s["warmup"]} steps excluded, median of {s["repeats"]} alternating runs per side.
Reference log-probs: {s["reference_log_probs"]}.

| | course_lib | TRL DPOTrainer |
|---|---|---|
| loss on the same first batch | {ours["first_batch_loss"]:.6f} | {theirs["first_batch_loss"]:.6f} |
| padding share of sequence tokens | {ours["padding_share"]:.1%} | {theirs["padding_share"]:.1%} |
| throughput (pairs/s) | {ours["pairs_per_s"]:.2f} | {theirs["pairs_per_s"]:.2f} |
| runs (pairs/s) | {runs(ours)} | {runs(theirs)} |
| real tokens/s (median run) | {ours["tokens_per_s"]:,.0f} | {theirs["tokens_per_s"]:,.0f} |
{mfu}
**course_lib / TRL: {report["ratio_course_lib_over_trl"]:.2f}x**, the median of the per-repeat ratios
{", ".join(f"{r:.2f}" for r in ratios)} (range {min(ratios):.2f}-{max(ratios):.2f}). First-batch losses differ by
{report["first_batch_loss_abs_difference"]:.1e}. Load average (1 min) after each run, a sign of other jobs on the
machine: course_lib {loads(ours)}, TRL {loads(theirs)} (runs in the order above). Other jobs slow the two
sides unevenly (on this 2-core machine, runs next to other jobs gave ratios from 1.6x to 10x): compare runs
whose load average stays near the benchmark's own thread count.
{gpu_command}"""


if __name__ == "__main__":
    main()
