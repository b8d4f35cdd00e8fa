"""GRPO training throughput: course_lib's GRPOTrainer vs TRL's GRPOTrainer.

Both sides train ALL parameters of the same GPT-2 policy (the course's ``build_policy``
after ``train_tokenizer(world_texts(...))``: tied embeddings, SDPA attention, no
dropout; freshly initialised, so answers are random text that almost never ends before
the token limit) with GRPO on the same world prompts (``course_lib.world.sample_prompts``),
side by side in one process, ``--repeats`` runs per side alternating (course, TRL, then
TRL, course, ...). Every step samples ``--group-size`` answers for each of ``--prompts``
prompts, scores them, and makes ONE optimizer update on them:

- the same sampling: ``max_completion_length`` new tokens at most, temperature 1, top_p 1
  (TRL: ``top_k=0``; no vLLM, no paged generation, a dynamic key-value cache on both sides),
  all ``prompts x group`` answers decoded in one batch (course: ``sampling_batch_size``);
- the same reward: :func:`course_lib.policy.rewards.verifiable_reward` (cheap, deterministic;
  TRL's reward function strips the answer separator from its prompts and calls it);
- the same loss and update: ``loss_type="grpo"``, ``scale_rewards="group"``, epsilon 0.2,
  ``beta=0`` (no KL term), ``num_iterations=1``; TRL with ``steps_per_generation=1``,
  ``gradient_accumulation_steps=1``, ``per_device_train_batch_size = prompts x group``,
  ``gradient_checkpointing=False`` (TRL's GRPO default is True; the course has none);
  ``torch.optim.AdamW`` (TRL ``optim="adamw_torch"``), lr 1e-5 constant (small, so both
  policies stay near the shared initial one and write answers of similar length), no
  weight decay, gradient clipping at 1.0; fp32 (``--precision``; TRL ``bf16`` set from it,
  since TRL would otherwise turn bf16 on), ``use_cpu=True`` on CPU, no logging
  (``report_to="none"``, ``logging_strategy="no"``), no saving.

TRL tokenises with a ``PreTrainedTokenizerFast`` around the course tokenizer's
``tokenizers`` object (as in ``benchmarks/bench_dpo.py`` and ``tests/test_dpo_trl.py``)
and its prompts are ``prompt + "<|answer|>"``: exactly the course's ``prompt_ids``
(asserted), so both policies answer after the same tokens. TRL generates with
``transformers``' ``model.generate``; its per-step overhead is part of what is measured.

Measured per side: completions per second (and completion tokens per second) over the
``--steps`` optimizer steps after ``--warmup`` steps, from the end of the last warm-up
step to the end of the last step, and the time split of the timed steps:

- course_lib: ``GRPOTrainer.step_log`` (``sample_s``, ``score_s``, ``update_s``); the rest
  of a step ("other") is mostly the reference model's forward pass, which the course runs
  on every step for the logged KL even when ``beta=0``, and building the batch;
- TRL: ``trainer._generate`` (tokenise, ``model.generate``, decode) is "sample", the reward
  function is "score", ``_generate_and_score_completions`` minus those two is "other"
  (padding, advantages, metrics), and the rest of the step is "update" (TRL's
  ``compute_loss``, backward, clipping, optimizer and scheduler step, callbacks).

Both sides must have made the same number of completions (checked); a policy that stops
earlier is cheaper, so mean completion lengths are reported too, with tokens/s.

On CUDA the course side passes ``compile_sampler=True`` (the compiled decode step with
CUDA graphs, :func:`course_lib.policy.sampling.generate`'s ``compile``) when that
``generate`` accepts ``compile`` (``--no-compile-sampler`` turns it off); it compiles in
the warm-up steps.

Usage:
  python benchmarks/bench_grpo.py                        # CPU: standard policy, 8 prompts x 8, 64 tokens, 10 steps
  python benchmarks/bench_grpo.py --device cuda --precision bf16 --size gpt2-small --prompts 16 \\
      --max-completion-length 128 --repeats 3             # GPU (a few minutes on an H100 / H200)
Other options: ``--group-size`` (answers per prompt), ``--steps`` (timed steps), ``--warmup``
(steps left out, default 2), ``--threads`` (torch CPU threads, default 2; use 1 when other jobs
share a 2-core machine), ``--vocab-size``, ``--seed``.
Writes results/benchmarks/grpo_training.md and .json (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
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

from course_lib.policy import sampling
from course_lib.policy.grpo import GRPOConfig, GRPOTrainer
from course_lib.policy.model import PolicyConfig, build_policy, policy_config
from course_lib.policy.rewards import verifiable_reward
from course_lib.policy.tokenizer import SEP, train_tokenizer, world_texts
from course_lib.engine.files import write_text_atomic
from course_lib.world import sample_prompts
from peers import StepClock, hf_tokenizer, synchronize, versions

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
SIZES = {
    "smoke": policy_config("smoke"),  # 1 layer x 64, 2 heads, context 160
    "standard": policy_config("standard"),  # 2 layers x 128, 4 heads, context 160
    "full": policy_config("full"),  # 8 layers x 512, 8 heads, context 256
    "gpt2-small": PolicyConfig(n_layer=12, n_embd=768, n_head=12, n_positions=256),  # the GPU target
}
LR, EPSILON = 1e-5, 0.2
NAME = "grpo_training"
SPLIT_ROWS = (("sample_s", "sampling"), ("score_s", "scoring (reward)"), ("update_s", "update"), ("other_s", "other"))
GPU_COMMAND = ("python benchmarks/bench_grpo.py --device cuda --precision bf16 --size gpt2-small --prompts 16 "
               "--max-completion-length 128 --repeats 3")


def trl_reward(prompts, completions, **kwargs) -> list[float]:
    """TRL's reward function: the course's verifiable reward, on the prompts without the answer separator."""
    return verifiable_reward([p.removesuffix(SEP) for p in prompts], completions).tolist()


def sampler_accepts_compile() -> bool:
    """Whether this course_lib's sampler has the compiled decode path (``generate(..., compile=...)``)."""
    return ("compile" in inspect.signature(sampling.generate).parameters
            and "compile_sampler" in {f.name for f in dataclasses.fields(GRPOConfig)})


class CpuMeter:
    """Cores kept busy by OTHER processes while it runs: machine busy time (``/proc/stat``) minus this process's."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as file:
                fields = [int(x) for x in file.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest time is inside user)
        return busy / os.sysconf("SC_CLK_TCK"), time.process_time(), time.perf_counter()

    def other_cores(self) -> float | None:
        end = self._read()
        if self.start is None or end is None:
            return None
        (busy0, ours0, t0), (busy1, ours1, t1) = self.start, end
        return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / max(t1 - t0, 1e-9))


def other_jobs_before(seconds: float = 2.0) -> float | None:
    meter = CpuMeter()
    time.sleep(seconds)
    return meter.other_cores()


def summarise(step_ends: list[float], steps: list[dict], warmup: int) -> dict:
    """Completions/s, tokens/s and the time split of the steps after ``warmup``.

    ``steps``: one dict per step with ``completions``, ``tokens`` (sum of answer lengths),
    ``sample_s``, ``score_s``, ``other_s`` (the rest of preparing the batch); the update is
    the rest of the step's wall time.
    """
    if len(step_ends) != len(steps):
        raise RuntimeError(f"bench_grpo: {len(step_ends)} step ends but {len(steps)} sampled batches")
    timed, seconds = steps[warmup:], step_ends[-1] - step_ends[warmup - 1]
    completions, tokens = sum(s["completions"] for s in timed), sum(s["tokens"] for s in timed)
    split = {key: sum(s[key] for s in timed) for key in ("sample_s", "score_s", "other_s")}
    split["update_s"] = seconds - sum(split.values())
    return {
        "completions_per_s": completions / seconds,
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "timed_completions": completions,
        "completions": sum(s["completions"] for s in steps),
        "steps": len(steps),
        "timed_steps": len(timed),
        "mean_completion_tokens": tokens / completions,
        "finished_share": sum(s["finished"] for s in timed) / completions,
        "split_s": split,
        "split_share": {key: value / seconds for key, value in split.items()},
        "step_s": seconds / len(timed),
    }


def course_config(args, shape) -> GRPOConfig:
    compile_sampler = args.device == "cuda" and args.compile_sampler and sampler_accepts_compile()
    return GRPOConfig(
        lr=LR, batch_size=args.prompts, lr_scheduler="constant", warmup_ratio=0.0, max_grad_norm=1.0,
        weight_decay=0.0, group_size=args.group_size, max_completion_length=args.max_completion_length,
        temperature=1.0, top_p=1.0, num_iterations=1, beta=0.0, epsilon_low=EPSILON, epsilon_high=EPSILON,
        scale_rewards="group", loss_type="grpo", sampling_batch_size=args.prompts * args.group_size,
        max_length=shape.n_positions, epochs=1, seed=args.seed, progress=False, device=args.device,
        log_kl=False,  # TRL at beta=0 runs no reference model either: the same work on both sides
        precision=args.precision, **({"compile_sampler": True} if compile_sampler else {}),
    )


def run_course_lib(prompts, tokenizer, policy, args, shape) -> dict:
    trainer = GRPOTrainer(copy.deepcopy(policy), course_config(args, shape), prompts, tokenizer=tokenizer, reward_fn=verifiable_reward)
    step_ends, real_step = [], trainer.train_step

    def timed_step(batch, pair_weights=None, total_weight=None):
        loss = real_step(batch, pair_weights, total_weight)
        synchronize(args.device)
        step_ends.append(time.perf_counter())
        return loss

    trainer.train_step = timed_step
    meter = CpuMeter()
    trainer.fit()
    other_cores = meter.other_cores()
    steps, ends = [], [None, *step_ends]
    for i, entry in enumerate(trainer.step_log):
        n = args.prompts * args.group_size
        steps.append({"completions": n, "tokens": entry["tokens"] * n, "finished": entry["finished"] * n,
                      "sample_s": entry["sample_s"], "score_s": entry["score_s"],
                      # the step's wall time not spent sampling, scoring or updating (reference forward, batch);
                      # the first step (always a warm-up step) has no start time
                      "other_s": (0.0 if ends[i] is None else
                                  ends[i + 1] - ends[i] - entry["sample_s"] - entry["score_s"] - entry["update_s"])})
    result = summarise(step_ends, steps, args.warmup)  # its update_s is the sum of the log's (other_s is the rest)
    result["compile_sampler"] = bool(getattr(trainer.config, "compile_sampler", False))
    result["other_jobs_cores"] = other_cores
    result["mean_reward"] = statistics.fmean(e["reward"] for e in trainer.step_log)
    return result


def trl_config(args, output_dir, total_steps) -> trl.GRPOConfig:
    return trl.GRPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.prompts * args.group_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=args.group_size,
        num_iterations=1,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        epsilon=EPSILON,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=total_steps,
        gradient_checkpointing=False,
        use_vllm=False,
        bf16=args.precision == "bf16",
        tf32=True if args.device == "cuda" and args.precision == "fp32" else None,
        use_cpu=args.device == "cpu",
        dataloader_pin_memory=args.device == "cuda",
        seed=args.seed,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        log_completions=False,
    )


def run_trl(prompts, tokenizer, policy, args, output_dir, total_steps) -> dict:
    def reward(prompts, completions, **kwargs):
        started = time.perf_counter()
        values = trl_reward(prompts, completions, **kwargs)
        steps[-1]["score_s"] += time.perf_counter() - started
        return values

    reward.__name__ = "verifiable_reward"
    clock, steps = StepClock(args.device), []
    trainer = trl.GRPOTrainer(
        model=copy.deepcopy(policy),
        reward_funcs=reward,
        args=trl_config(args, output_dir, total_steps),
        train_dataset=datasets.Dataset.from_dict({"prompt": [p + SEP for p in prompts]}),
        processing_class=tokenizer,
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)
    real_generate, real_prepare = trainer._generate, trainer._generate_and_score_completions

    def timed_generate(prompts):
        started = time.perf_counter()
        output = real_generate(prompts)
        synchronize(args.device)
        completion_ids = output[1]
        steps[-1].update(sample_s=time.perf_counter() - started, completions=len(completion_ids),
                         tokens=sum(len(ids) for ids in completion_ids),
                         finished=sum(bool(ids) and ids[-1] in trainer.eos_token_ids for ids in completion_ids))
        return output

    def timed_prepare(inputs):
        steps.append({"sample_s": 0.0, "score_s": 0.0})
        started = time.perf_counter()
        output = real_prepare(inputs)
        synchronize(args.device)
        steps[-1]["other_s"] = time.perf_counter() - started - steps[-1]["sample_s"] - steps[-1]["score_s"]
        return output

    trainer._generate, trainer._generate_and_score_completions = timed_generate, timed_prepare
    generation = trainer.generation_config
    settings = {key: getattr(generation, key) for key in ("max_new_tokens", "do_sample", "temperature", "top_p",
                                                          "top_k", "cache_implementation")}
    meter = CpuMeter()
    trainer.train()
    other_cores = meter.other_cores()
    result = summarise(clock.times, steps, args.warmup)
    result.update(generation_config=settings, other_jobs_cores=other_cores)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--size", default="standard", choices=list(SIZES))
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--group-size", type=int, default=8, help="answers per prompt (TRL's num_generations)")
    parser.add_argument("--max-completion-length", type=int, default=64, help="new tokens per answer at most")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side; the median is reported")
    parser.add_argument("--no-compile-sampler", dest="compile_sampler", action="store_false",
                        help="CUDA: the course's plain decode loop instead of the compiled one")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--tokenizer-pairs", type=int, default=3000, help="world pairs the tokenizer is trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"folder for {NAME}.json and .md")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    if args.group_size < 2:
        parser.error("--group-size must be >= 2")
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    os.environ.setdefault("TQDM_DISABLE", "1")
    transformers.logging.set_verbosity_error()
    if args.device == "cuda":  # the course's runtime turns TF32 on for any CUDA run; the flag is global: both sides
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    other_before = other_jobs_before() if args.device == "cpu" else None

    tokenizer = train_tokenizer(world_texts(args.tokenizer_pairs), vocab_size=args.vocab_size)
    total_steps = args.warmup + args.steps
    prompts = list(sample_prompts(total_steps * args.prompts, seed=args.seed)["prompt"])
    shape = SIZES[args.size]
    policy = build_policy(shape, tokenizer, seed=args.seed)
    trl_tokenizer = hf_tokenizer(tokenizer)
    theirs = trl_tokenizer([p + SEP for p in prompts])["input_ids"]
    if theirs != [tokenizer.prompt_ids(p) for p in prompts]:
        raise RuntimeError("bench_grpo: TRL's prompt tokens differ from the course's prompt_ids")
    prompt_tokens = statistics.fmean(len(ids) for ids in theirs)
    if max(len(ids) for ids in theirs) + args.max_completion_length > shape.n_positions:
        parser.error(f"prompts of up to {max(len(ids) for ids in theirs)} tokens + --max-completion-length "
                     f"{args.max_completion_length} exceed the context of {shape.n_positions}")

    runs = {"course_lib": [], "trl": []}
    with tempfile.TemporaryDirectory() as output_dir:
        for repeat in range(args.repeats):
            for side in ("course_lib", "trl") if repeat % 2 == 0 else ("trl", "course_lib"):
                if side == "course_lib":
                    result = run_course_lib(prompts, tokenizer, policy, args, shape)
                else:
                    result = run_trl(prompts, trl_tokenizer, policy, args, output_dir, total_steps)
                result["load_average_1min_after"] = os.getloadavg()[0]
                runs[side].append(result)
                print(side, json.dumps({k: v for k, v in result.items() if k != "split_share"}, default=str),
                      flush=True)

    for ours, theirs_run in zip(runs["course_lib"], runs["trl"]):
        if (ours["completions"], ours["timed_completions"]) != (theirs_run["completions"],
                                                                theirs_run["timed_completions"]):
            raise RuntimeError(f"bench_grpo: course_lib made {ours['completions']} completions, TRL "
                               f"{theirs_run['completions']}")
    device = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch "
        f"thread{'s' if torch.get_num_threads() != 1 else ''}")
    summary = {}
    for side, results in runs.items():
        speeds = [r["completions_per_s"] for r in results]
        median_run = results[speeds.index(statistics.median_low(speeds))]
        summary[side] = {**median_run, "completions_per_s": statistics.median(speeds),
                         "completions_per_s_runs": speeds,
                         "tokens_per_s_runs": [r["tokens_per_s"] for r in results],
                         "mean_completion_tokens_runs": [r["mean_completion_tokens"] for r in results],
                         "other_jobs_cores_runs": [r["other_jobs_cores"] for r in results],
                         "load_average_1min_after": [r["load_average_1min_after"] for r in results]}
        summary[side].pop("other_jobs_cores")
    ratios = [c["completions_per_s"] / t["completions_per_s"] for c, t in zip(runs["course_lib"], runs["trl"])]
    token_ratios = [c["tokens_per_s"] / t["tokens_per_s"] for c, t in zip(runs["course_lib"], runs["trl"])]
    split_ratios = {key: statistics.median(t["split_s"][key] / c["split_s"][key] if c["split_s"][key] > 0
                                           else float("nan") for c, t in zip(runs["course_lib"], runs["trl"]))
                    for key in ("sample_s", "score_s", "other_s", "update_s")}
    lengths = (summary["course_lib"]["mean_completion_tokens"], summary["trl"]["mean_completion_tokens"])
    report = {
        **versions(device),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "model_shape": {k: getattr(shape, k) for k in ("n_layer", "n_embd", "n_head", "n_positions")},
            "parameters": sum(p.numel() for p in policy.parameters()),
            "completions_per_step": args.prompts * args.group_size,
            "total_steps": total_steps,
            "mean_prompt_tokens": prompt_tokens,
            "reward": "course_lib.policy.rewards.verifiable_reward",
            "training": f"GRPO loss_type grpo, scale_rewards group, beta 0, epsilon {EPSILON}, one update per "
                        f"sampled batch, full fine-tuning, AdamW lr {LR:.0e} constant, clip 1.0",
            "sampler_accepts_compile": sampler_accepts_compile(),
            "other_jobs_cores_before": other_before,
        },
        "course_lib": summary["course_lib"],
        "trl_grpo_trainer": summary["trl"],
        "ratio_course_lib_over_trl": statistics.median(ratios),
        "ratio_runs": ratios,
        "tokens_per_s_ratio": statistics.median(token_ratios),
        "trl_over_course_lib_seconds_by_part": split_ratios,
        "mean_completion_tokens_relative_difference": abs(lengths[0] - lengths[1]) / max(lengths),
        "same_completion_count": True,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / f"{NAME}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / f"{NAME}.md", markdown(report))
    print(markdown(report))
    return report


def _cores(values) -> str:
    return ", ".join("n/a" if v is None else f"{v:.2f}" for v in values)


def markdown(report: dict) -> str:
    ours, theirs, s = report["course_lib"], report["trl_grpo_trainer"], report["settings"]
    shape, ratios = s["model_shape"], report["ratio_runs"]

    def runs(side, key):
        return ", ".join(f"{x:.1f}" for x in side[key])

    def counts(side):
        return f"{side['completions']} / {side['timed_completions']}"

    def split_row(key, label):
        return (f"| {label} | {ours['split_s'][key]:.2f} s ({ours['split_share'][key]:.0%}) | "
                f"{theirs['split_s'][key]:.2f} s ({theirs['split_share'][key]:.0%}) | "
                f"{report['trl_over_course_lib_seconds_by_part'][key]:.2f}x |\n")

    before = s["other_jobs_cores_before"]
    others = [*ours["other_jobs_cores_runs"], *theirs["other_jobs_cores_runs"]]
    busy = before is not None and (before > 0.3 or any(v is not None and v > 0.3 for v in others))
    contention = ("n/a (not measured on this device)" if before is None else
                  f"{before:.2f} cores busy with other processes just before the benchmark; during the runs "
                  f"{_cores(ours['other_jobs_cores_runs'])} (course_lib) and {_cores(theirs['other_jobs_cores_runs'])} "
                  f"(TRL) cores on average (machine busy time minus the benchmark's own CPU time, /proc/stat). "
                  + ("**Other jobs were running**: the figures are measured under contention and the two sides may "
                     "be slowed unevenly." if busy else "No other jobs of note were running."))
    threads_note = (" (one thread, because other jobs shared the machine's cores)"
                    if busy and s["threads"] == 1 and s["device"] == "cpu" else "")
    gpu_command = "" if s["device"] == "cuda" else f"\nGPU run (not run here): `{GPU_COMMAND}`.\n"
    sampler = "compiled decode step (compile_sampler=True)" if ours["compile_sampler"] else "plain loop"
    compile_note = f" Course sampler: {sampler}." if s["device"] == "cuda" else ""
    return f"""# GRPO training throughput: course_lib vs TRL GRPOTrainer

Written by `benchmarks/bench_grpo.py`. Device: {report["device"]}; torch {report["torch"]},
transformers {report["transformers"]}, trl {report["trl"]}.

Settings: `{s["size"]}` GPT-2 policy ({shape["n_layer"]} layers x {shape["n_embd"]}, {shape["n_head"]} heads,
context {shape["n_positions"]}; {s["parameters"]:,} parameters, vocabulary {s["vocab_size"]}), freshly initialised;
{s["training"]}; {s["precision"]}; {s["prompts"]} world prompts x group {s["group_size"]} =
{s["completions_per_step"]} completions per step, at most {s["max_completion_length"]} new tokens (temperature 1,
top_p 1), prompts of {s["mean_prompt_tokens"]:.1f} tokens on average (the same token ids on both sides), reward
`{s["reward"]}`; {s["total_steps"]} steps per run, the first {s["warmup"]} excluded, median of {s["repeats"]}
alternating runs per side.{compile_note}

| | course_lib | TRL GRPOTrainer | TRL / course time |
|---|---|---|---|
| throughput (completions/s) | {ours["completions_per_s"]:.1f} | {theirs["completions_per_s"]:.1f} | |
| runs (completions/s) | {runs(ours, "completions_per_s_runs")} | {runs(theirs, "completions_per_s_runs")} | |
| completion tokens/s (median run) | {ours["tokens_per_s"]:,.0f} | {theirs["tokens_per_s"]:,.0f} | |
| mean completion length (tokens) | {ours["mean_completion_tokens"]:.1f} | {theirs["mean_completion_tokens"]:.1f} | |
| completions that ended (EOS) | {ours["finished_share"]:.1%} | {theirs["finished_share"]:.1%} | |
| completions (all steps / timed) | {counts(ours)} | {counts(theirs)} | |
| seconds per step (median run) | {ours["step_s"]:.3f} | {theirs["step_s"]:.3f} | |
{"".join(split_row(key, label) for key, label in SPLIT_ROWS)}
Time split: the timed steps of each side's median run (share of its wall time); the last column is the median
over repeats of TRL's seconds over the course's for that part. Sampling: the course's `sample_s` /
TRL's `_generate` (tokenise, `model.generate`, decode). Update: the course's `update_s` (forward, backward,
clip, AdamW) / the rest of TRL's step (`compute_loss`, backward, clip, AdamW, scheduler, callbacks). Other: the
course's batch building (advantages, padding; no reference model at beta 0, `log_kl=False`, as TRL) / TRL's
padding, advantages and metrics in `_generate_and_score_completions`.

**course_lib / TRL: {report["ratio_course_lib_over_trl"]:.2f}x** completions/s, the median of the per-repeat
ratios {", ".join(f"{r:.2f}" for r in ratios)} (range {min(ratios):.2f}-{max(ratios):.2f}); completion tokens/s
ratio {report["tokens_per_s_ratio"]:.2f}x. Both sides made the same number of completions (checked); mean
completion lengths differ by {report["mean_completion_tokens_relative_difference"]:.1%}.

Other jobs: {contention} Load average (1 min) after each run: course_lib
{", ".join(f"{x:.1f}" for x in ours["load_average_1min_after"])}, TRL
{", ".join(f"{x:.1f}" for x in theirs["load_average_1min_after"])}. Torch threads: {s["threads"]}{threads_note}.
{gpu_command}"""


if __name__ == "__main__":
    main()
