"""Reward-model training throughput: course_lib's BradleyTerryTrainer vs TRL's RewardTrainer.

Both sides fine-tune ALL parameters of the same all-MiniLM-L6-v2 encoder with the
same scalar head, on the same synthetic pairs, batch size, maximum length, optimizer
(``torch.optim.AdamW``, lr 1e-4, linear decay, gradient clipping at 1.0),
precision (fp32) and hardware, one after the other in one process:

- TRL: ``AutoModelForSequenceClassification`` (``num_labels=1``) from the MiniLM
  folder, i.e. BERT's pooler output (``[CLS]`` -> dense -> tanh) -> linear head.
- course_lib: ``RewardModel(mode="full", pooling="pooler")``, whose encoder and head
  weights are copied from the TRL model, so both compute the same function.

Inputs are identical: TRL would join ``prompt + chosen`` as one string and append
an EOS token (MiniLM's tokenizer has none), so TRL gets course_lib's token ids as
pre-tokenized ``chosen_ids`` / ``rejected_ids`` (``[CLS] prompt [SEP] response
[SEP]``), a documented TRL input. All texts fit in ``max_length``, so TRL's
length filter and course_lib's truncation do nothing. Dropout is off on both sides
(TRL's default ``disable_dropout=True``). The first check is that both give the same
loss on the same first batch.

Throughput counts the pairs of the optimizer steps after ``--warmup`` steps, from the
end of the last warm-up step to the end of the last step (dataset preparation and
trainer construction excluded on both sides). course_lib's gains come from batching
pairs of similar length (less padding; ``TrainingConfig.group_by_length``) and from a
lighter step loop (pre-padded id tensors sliced per batch, no per-step metric syncs);
both sides run the chosen and rejected sequences in one forward pass with dynamic
padding. course_lib does strictly more bookkeeping per step (per-pair losses,
margins and head gradient norms). An extra row gives frozen-feature head training.

Usage: python benchmarks/bench_reward_training.py [--pairs 256] [--batch-size 8] [--device cpu]
Writes results/benchmarks/reward_training.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
import trl
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, TrainerCallback

from course_lib.reward.model import RewardModel, RewardModelConfig, default_backbone_path, encode_pairs
from course_lib.engine.files import write_text_atomic
from course_lib.reward.training import BradleyTerryTrainer, TrainingConfig

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
WORDS = (
    "the a report garden answer river careful simple quick model reward window summer table question "
    "friendly polite water number light travel recipe music story city paper tomorrow reason because"
).split()


def synthetic_pairs(n: int, seed: int) -> list[dict]:
    """Prompts of 8-30 words; responses of 3-60 words, so lengths vary as in real preference data."""
    rng = np.random.default_rng(seed)

    def text(low, high):
        return " ".join(rng.choice(WORDS, rng.integers(low, high + 1))).capitalize() + "."

    return [{"prompt": text(8, 30), "chosen": text(3, 60), "rejected": text(3, 60)} for _ in range(n)]


def pair_ids(tokenizer, pairs: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """``(chosen_ids, rejected_ids)`` of each pair, exactly as course_lib encodes them."""
    prompts = [p["prompt"] for p in pairs]
    responses = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    ids = encode_pairs(tokenizer, prompts * 2, responses, max_length)
    return list(zip(ids[: len(pairs)], ids[len(pairs) :]))


class StepClock(TrainerCallback):
    """End time of every TRL optimizer step."""

    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def throughput(step_times: list[float], pairs_per_step: list[int], warmup: int) -> float:
    return sum(pairs_per_step[warmup:]) / (step_times[-1] - step_times[warmup - 1])


def padding_share(masks: list[torch.Tensor], chunks: int = 1) -> float:
    """Share of the encoder's token slots that are padding (``chunks``: see ``RewardModel.pool``)."""
    real = slots = 0
    for mask in masks:
        for lengths in mask.sum(1).sort().values.chunk(chunks):
            real, slots = real + int(lengths.sum()), slots + len(lengths) * int(lengths.max())
    return 1.0 - real / slots


def run_course_lib(pairs, classifier, args) -> dict:
    model = RewardModel(RewardModelConfig(mode="full", pooling="pooler", max_length=args.max_length))
    model.encoder.load_state_dict(classifier.bert.state_dict())
    model.head.out.load_state_dict(classifier.classifier.state_dict())
    config = TrainingConfig(
        lr=1e-4,
        epochs=1,
        batch_size=args.batch_size,
        max_grad_norm=1.0,
        seed=args.seed,
        progress=False,
        device=args.device,
    )
    trainer = BradleyTerryTrainer(model, config, Dataset.from_list(pairs))
    first_batch_loss = trainer.pair_losses(trainer.make_batch(range(args.batch_size))).mean().item()
    times, sizes, masks = [], [], []
    real_step = trainer.train_step

    def timed_step(batch, pair_weights=None):
        loss = real_step(batch, pair_weights)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        sizes.append(len(batch.indices))
        masks.append(batch.inputs["attention_mask"].cpu())
        return loss

    trainer.train_step = timed_step
    trainer.fit()
    return {
        "first_batch_loss": first_batch_loss,
        "pairs_per_s": throughput(times, sizes, args.warmup),
        "padding_share": padding_share(masks, config.forward_chunks),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "final_step_loss": trainer.history.step_loss[-1],
    }


def run_trl(pairs, classifier, tokenizer, args, output_dir) -> dict:
    rows = [{"chosen_ids": c, "rejected_ids": r} for c, r in pair_ids(tokenizer, pairs, args.max_length)]
    config = trl.RewardConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=1e-4,
        optim="adamw_torch",
        max_length=args.max_length,
        bf16=False,
        use_cpu=args.device == "cpu",
        seed=args.seed,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    clock = StepClock()
    trainer = trl.RewardTrainer(
        model=classifier,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[clock],
    )
    collate, masks, sizes = trainer.data_collator, [], []

    def recording_collate(examples):
        batch = collate(examples)
        masks.append(batch["attention_mask"])
        sizes.append(len(examples))
        return batch

    trainer.model.eval()
    with torch.no_grad():
        batch = collate([trainer.train_dataset[i] for i in range(args.batch_size)])
        batch = {k: v.to(trainer.model.device) for k, v in batch.items()}
        first_batch_loss = trainer.compute_loss(trainer.model, batch).item()
    trainer.data_collator = recording_collate
    trainer.train()
    return {
        "first_batch_loss": first_batch_loss,
        "pairs_per_s": throughput(clock.times, sizes, args.warmup),
        "padding_share": padding_share(masks),
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "final_step_loss": trainer.state.log_history[-1].get("train_loss"),
    }


def run_frozen_head(pairs, args) -> float:
    """Pairs per second of frozen-feature head training (features computed beforehand, not timed)."""
    model = RewardModel(RewardModelConfig(mode="frozen", max_length=args.max_length))
    data = Dataset.from_list(pairs * 8)
    config = TrainingConfig(epochs=5, batch_size=32, seed=args.seed, progress=False, device=args.device)
    trainer = BradleyTerryTrainer(model, config, data)
    start = time.perf_counter()
    trainer.fit()
    return 5 * len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the median is reported")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pairs = synthetic_pairs(args.pairs, args.seed)
    path = default_backbone_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    longest = max(max(len(c), len(r)) for c, r in pair_ids(tokenizer, pairs, 10_000))
    assert longest <= args.max_length, f"a pair has {longest} tokens > --max-length {args.max_length}"

    runs = {"course_lib": [], "trl": []}
    with tempfile.TemporaryDirectory() as output_dir:
        for repeat in range(args.repeats):
            for side in ("course_lib", "trl") if repeat % 2 == 0 else ("trl", "course_lib"):
                torch.manual_seed(args.seed)
                classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
                if side == "course_lib":
                    runs[side].append(run_course_lib(pairs, classifier, args))
                else:
                    runs[side].append(run_trl(pairs, classifier, tokenizer, args, output_dir))
                print(side, {k: round(v, 4) if isinstance(v, float) else v for k, v in runs[side][-1].items()})
    frozen = run_frozen_head(pairs, args)

    summary = {}
    for side, results in runs.items():
        speeds = [r["pairs_per_s"] for r in results]
        summary[side] = {**results[0], "pairs_per_s": statistics.median(speeds), "pairs_per_s_runs": speeds}
    ratio = summary["course_lib"]["pairs_per_s"] / summary["trl"]["pairs_per_s"]
    if args.device == "cuda":
        device = torch.cuda.get_device_name()
    else:
        device = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    report = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "settings": {**vars(args), "training": "full fine-tuning, fp32, AdamW lr 1e-4 linear decay, clip 1.0"},
        "course_lib": summary["course_lib"],
        "trl_reward_trainer": summary["trl"],
        "ratio_course_lib_over_trl": ratio,
        "first_batch_loss_abs_difference": abs(
            summary["course_lib"]["first_batch_loss"] - summary["trl"]["first_batch_loss"]
        ),
        "frozen_head_pairs_per_s": frozen,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "reward_training.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(RESULTS / "reward_training.md", markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    def runs(side):
        return ", ".join(f"{x:.2f}" for x in side["pairs_per_s_runs"])

    ours, theirs, s = report["course_lib"], report["trl_reward_trainer"], report["settings"]
    return f"""# Reward-model training throughput: course_lib vs TRL RewardTrainer

Written by `benchmarks/bench_reward_training.py`. Device: {report["device"]}; torch {report["torch"]},
transformers {report["transformers"]}, trl {report["trl"]}.

Settings: all-MiniLM-L6-v2, {s["training"]}; {s["pairs"]} synthetic pairs, batch size {s["batch_size"]} pairs,
max length {s["max_length"]} tokens, one epoch, first {s["warmup"]} steps excluded,
median of {s["repeats"]} alternating runs per side.

| | course_lib | TRL RewardTrainer |
|---|---|---|
| loss on the same first batch | {ours["first_batch_loss"]:.6f} | {theirs["first_batch_loss"]:.6f} |
| trainable parameters | {ours["trainable_parameters"]:,} | {theirs["trainable_parameters"]:,} |
| padding share of encoder tokens | {ours["padding_share"]:.1%} | {theirs["padding_share"]:.1%} |
| throughput (pairs/s) | {ours["pairs_per_s"]:.2f} | {theirs["pairs_per_s"]:.2f} |
| runs (pairs/s) | {runs(ours)} | {runs(theirs)} |

**course_lib / TRL: {report["ratio_course_lib_over_trl"]:.2f}x.** First-batch losses differ by
{report["first_batch_loss_abs_difference"]:.1e}.

Frozen-feature head training (course_lib, linear head, features computed beforehand):
{report["frozen_head_pairs_per_s"]:,.0f} pairs/s.
"""


if __name__ == "__main__":
    main()
