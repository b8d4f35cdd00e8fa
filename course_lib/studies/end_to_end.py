"""The end-to-end study: policies trained by GRPO against reward models learned from noisy labels.

The course's arc ends here: noisy labels -> a reward model -> a *trained* policy, judged
by gold. For each run seed ``s``:

1. **The policy.** Chapter 07's standard SFT policy of policy seed ``s``
   (:func:`course_lib.studies.minds.sft_policy`); it is also the reference of the KL.
2. **Its own pairs.** Two answers per prompt sampled from it on ``rm_prompts`` fresh
   prompts, ordered by gold (:func:`~course_lib.policy.onpolicy.on_policy_pairs`), and
   ``noise_rate`` of the labels flipped (:func:`~course_lib.policy.onpolicy.flip_labels`,
   seed ``s``). A reward model trained on world text relabels this policy's answers at
   chance (``results/benchmarks/two_minds.md``), so every reward model here learns from
   the policy's own answers, as Gao et al. (2023) and InstructGPT do.
3. **The reward models** (InstructGPT's: an SFT transformer with a linear head on the
   last token, every weight fine-tuned, :func:`~course_lib.studies.policy_reward.policy_reward_model`),
   one per arm, trained by :func:`~course_lib.studies.reproduction.train_method`:

   - ``clean``: one model on the clean labels (the reference a noisy arm would like to reach);
   - ``noisy``: one model on the flipped labels, trained plainly;
   - ``self_review``: one model on the flipped labels keeping its own small-loss pairs;
   - ``crm``: two models that peer-review each other's selections, with the
     easy-to-hard curriculum (the paper's method), their rewards averaged;
   - ``ensemble``: two models trained plainly and independently, rewards averaged (the
     reviewers' baseline).

   Model A starts from the policy itself; model B of a two-model arm from the SFT
   policy of seed ``s + PARTNER_OFFSET``: two minds that share no weight.
   ``gold``: the gold judge itself as the reward (the ceiling).
4. **The policies.** GRPO with a KL penalty (``beta``) from the SFT policy against each
   arm's reward, on fresh prompts (``prompts_per_step`` per step, never repeated).
5. **Evaluation.** After every ``eval_every`` steps, one answer to each of the
   ``eval_prompts`` prompts (the same prompts for every arm and seed, sampled with the
   same seed, so comparisons are paired), judged by gold, scored by the arm's reward
   (the *proxy*), with its log-ratio to the SFT policy (KL). The ``sft`` row is the
   starting point (step 0) of every arm of its seed.

:func:`run_end_to_end` writes one CSV row per (arm, seed) as soon as it is done (the
file is rewritten atomically), so an interrupted study resumes at the arm it was
running; :mod:`course_lib.studies.end_to_end_report` reads the rows back and writes
``end_to_end.md`` and ``end_to_end.png``. ``course end-to-end`` runs both.

Defined for Chapter 08.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..engine.progress import tqdm
from ..engine.runtime import resolve_device
from ..policy import policy_config, train_tokenizer, world_texts
from ..policy.evaluation import evaluate_policy
from ..policy.grpo import GRPOConfig, GRPOTrainer
from ..policy.onpolicy import flip_labels, on_policy_pairs
from ..reward.model import reward_model_reward
from ..world import WorldConfig, generate_preference_pairs, gold_attributes, gold_rewards, mini_reward_bench, sample_prompts
from .minds import MindSettings, sft_policy
from .policy_reward import policy_reward_model
from .reproduction import ReproductionConfig, score_models, selection_summary, train_method
from .sweep import device_description, read_rows, write_csv

CSV_NAME = "end_to_end.csv"
ARMS = ("gold", "clean", "noisy", "self_review", "crm", "ensemble")
REWARD_MODEL_ARMS = {"clean": "single", "noisy": "single", "self_review": "self_review", "crm": "crm",
                     "ensemble": "ensemble"}
PARTNER_OFFSET = 5  # model B of seed s starts from SFT policy s + 5 (seeds 0-4: policies 5-9, which the grid also uses)
# Prompt streams: disjoint from the world streams the policies were SFT-trained on (seeds 0-10) and from each other.
PAIR_STREAM, HELDOUT_STREAM, GRPO_STREAM, EVAL_STREAM = 3_000_000, 4_000_000, 5_000_000, 6_000_000


@dataclass(frozen=True)
class EndToEndSettings:
    """The study's sizes. ``minds``: how the SFT policies are made; ``rm``: reward-model training
    (``encoder="full_copy"``; its ``n_pairs`` is replaced by the number of pairs); ``rm_prompts`` / ``heldout_prompts``: prompts whose two sampled
    answers make the training pairs / the held-out pairs that measure a reward model on the
    policy's answers; GRPO: ``steps`` of ``prompts_per_step`` x ``group_size`` answers, ``lr``,
    ``beta``; evaluation every ``eval_every`` steps on ``eval_prompts`` prompts. ``min_pairs``: fewer
    training or held-out pairs than this is an error, or, with ``world_fallback`` (tests), the
    world's pairs stand in."""

    minds: MindSettings = field(default_factory=MindSettings)
    rm: ReproductionConfig = field(default_factory=lambda: ReproductionConfig(
        n_pairs=1, epochs=3, ramp_epochs=1, lr=1e-4, batch_size=32, max_length=128, head_hidden_size=None,
        encoder="full_copy"))
    noise_rate: float = 0.4
    rm_prompts: int = 2500
    heldout_prompts: int = 500
    bench_per_category: int = 100
    steps: int = 60
    eval_every: int = 10
    prompts_per_step: int = 8
    group_size: int = 8
    lr: float = 1e-4
    beta: float = 0.05
    max_new_tokens: int = 64
    eval_prompts: int = 1024
    sampling_batch_size: int = 128
    min_pairs: int = 100
    world_fallback: bool = False

    def __post_init__(self):
        if self.rm.encoder != "full_copy":
            raise ValueError(f"EndToEndSettings: rm.encoder must be 'full_copy' (reward models on the SFT policy), "
                             f"got {self.rm.encoder!r}")
        if not 0 <= self.noise_rate < 0.5:
            raise ValueError(f"EndToEndSettings: noise_rate must be in [0, 0.5), got {self.noise_rate}")
        for name in ("rm_prompts", "heldout_prompts", "bench_per_category", "steps", "eval_every", "prompts_per_step",
                     "max_new_tokens", "eval_prompts", "sampling_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EndToEndSettings: {name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2 or self.lr <= 0 or self.beta < 0:
            raise ValueError("EndToEndSettings: need group_size >= 2, lr > 0 and beta >= 0")
        if self.steps % self.eval_every:
            raise ValueError(f"EndToEndSettings: steps ({self.steps}) must be a multiple of eval_every "
                             f"({self.eval_every})")
        self.minds.check(self.rm.max_length)

    @property
    def eval_steps(self) -> list[int]:
        return list(range(self.eval_every, self.steps + 1, self.eval_every))

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    # 2 CPU cores (measured for results/end_to_end.csv, one torch thread per process, two processes taking seeds
    # 0, 2, 4 and 1, 3): 3-4.5 min per arm (reward models 45-135 s, GRPO with seven evaluations 105-150 s), about
    # 22 min per seed with its pairs, 1 h 15 min for five seeds; an SFT policy not in the cache adds about 2 min.
    "cpu": EndToEndSettings(),
    # One GPU: four times the pairs and prompts, longer GRPO.
    "gpu": EndToEndSettings(rm_prompts=10000, heldout_prompts=2000, steps=120, eval_every=10, prompts_per_step=16,
                            group_size=16, eval_prompts=2048, sampling_batch_size=512),
}


def tiny_settings() -> EndToEndSettings:
    """Every code path in seconds (tests): a one-layer policy, a few pairs and steps."""
    minds = MindSettings(policy=policy_config("smoke"), vocab_size=300, tokenizer_pairs=200, sft_pairs=64, sft_epochs=1)
    rm = ReproductionConfig(n_pairs=1, epochs=1, ramp_epochs=1, lr=1e-4, batch_size=8, max_length=64,
                            head_hidden_size=None, encoder="full_copy")
    return EndToEndSettings(minds=minds, rm=rm, rm_prompts=48, heldout_prompts=16, bench_per_category=4, steps=4,
                            eval_every=2, prompts_per_step=2, group_size=2, max_new_tokens=16, eval_prompts=16,
                            sampling_batch_size=32, min_pairs=8, world_fallback=True)


# ----------------------------------------------------------------------------- per-prompt arrays in a CSV cell


def encode_array(values) -> str:
    """A float array (any shape, stored as float16: gold and proxy to about 3 digits) as zlib + base64 text."""
    values = np.asarray(values, dtype=np.float16)
    header = json.dumps(list(values.shape)).encode() + b"\n"
    return base64.b64encode(zlib.compress(header + values.tobytes(), 9)).decode("ascii")


def decode_array(text: str) -> np.ndarray:
    """The inverse of :func:`encode_array` (as float64)."""
    raw = zlib.decompress(base64.b64decode(text))
    header, data = raw.split(b"\n", 1)
    return np.frombuffer(data, dtype=np.float16).reshape(json.loads(header)).astype(np.float64)


# ----------------------------------------------------------------------------- one arm


class _CheckpointedGRPO(GRPOTrainer):
    """GRPO that calls ``on_checkpoint(step)`` after the steps listed in ``checkpoints``."""

    def __init__(self, *args, checkpoints=(), on_checkpoint=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoints, self.on_checkpoint = set(checkpoints), on_checkpoint

    def after_step(self, batch, loss, logs, seconds) -> None:
        super().after_step(batch, loss, logs, seconds)
        if self.global_step in self.checkpoints:
            self.on_checkpoint(self.global_step)


def evaluate(policy, reference, tokenizer, prompts, reward, settings: EndToEndSettings, seed: int) -> dict[str, np.ndarray]:
    """One answer per prompt: its gold, the arm's reward of it (``proxy``), its log-ratio to the reference and coherence."""
    was_training = policy.training
    policy.eval()
    result = evaluate_policy(policy, tokenizer, prompts, reference=reference, max_new_tokens=settings.max_new_tokens,
                             batch_size=settings.sampling_batch_size, seed=seed)
    policy.train(was_training)
    frame = result.frame
    texts, answers = list(frame["prompt"]), list(frame["response"])
    return {"gold": frame["gold"].to_numpy(), "proxy": np.asarray(reward(texts, answers), dtype=np.float64),
            "kl": frame["log_ratio"].to_numpy(),
            "coherence": np.array([gold_attributes(p, r)["coherence"] for p, r in zip(texts, answers)])}


def _summaries(evaluations: list[dict]) -> dict:
    """Checkpoint means (JSON lists) and the per-prompt gold and proxy ((checkpoints, prompts), encoded)."""
    row = {name: json.dumps([round(float(np.mean(e[name])), 4) for e in evaluations])
           for name in ("gold", "proxy", "kl", "coherence")}
    row["gold_prompts"] = encode_array(np.stack([e["gold"] for e in evaluations]))
    row["proxy_prompts"] = encode_array(np.stack([e["proxy"] for e in evaluations]))
    return row


def pair_accuracy(reward, pairs) -> float:
    """Share of ``pairs`` (gold-labelled) whose chosen answer ``reward`` scores higher (ties count 1/2)."""
    chosen, rejected = reward(pairs["prompt"], pairs["chosen"]), reward(pairs["prompt"], pairs["rejected"])
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def run_arm(arm: str, seed: int, *, policy, tokenizer, bases, pairs, heldout, bench, eval_prompts,
            settings: EndToEndSettings, device: str = "cpu") -> dict:
    """Train ``arm``'s reward model (none for ``gold``), then GRPO from ``policy`` against it; returns the arm's row.

    ``pairs``: ``{"clean": ..., "noisy": ...}`` training pairs; ``heldout``: gold-labelled
    pairs of the policy's answers; ``bases``: the two reward-model bases (model A, model B).
    Step 0 of the evaluation is the SFT policy itself, sampled with the seed every
    checkpoint uses: every arm of a seed starts from the same answers.
    """
    started = time.monotonic()
    row = {"arm": arm, "seed": seed}
    if arm == "gold":
        reward = gold_rewards
    else:
        labels = pairs["clean"] if arm == "clean" else pairs["noisy"]
        eta = 0.0 if arm == "clean" else settings.noise_rate
        models, history = train_method(REWARD_MODEL_ARMS[arm], bases, labels, replace(settings.rm, n_pairs=len(labels)),
                                       eta, seed, device)
        for model in models:
            model.eval().requires_grad_(False)
        reward = reward_model_reward(models, batch_size=settings.sampling_batch_size)
        row.update(method=REWARD_MODEL_ARMS[arm], label_precision=round(1 - float(np.mean(labels["is_flipped"])), 4),
                   heldout_accuracy=pair_accuracy(reward, heldout), bench=score_models(models, bench)["average"],
                   **selection_summary(history, np.asarray(labels["is_flipped"], dtype=bool)))
    row["rm_seconds"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    sample_seed = EVAL_STREAM + seed
    evaluations = [evaluate(policy, policy, tokenizer, eval_prompts, reward, settings, sample_seed)]
    trained = copy.deepcopy(policy).requires_grad_(True).train()
    config = GRPOConfig(epochs=1, batch_size=settings.prompts_per_step, group_size=settings.group_size, lr=settings.lr,
                        beta=settings.beta, max_completion_length=settings.max_new_tokens,
                        max_length=settings.minds.policy.n_positions, sampling_batch_size=settings.sampling_batch_size,
                        seed=seed, device=device, progress=False)
    prompts = sample_prompts(settings.steps * settings.prompts_per_step, seed=GRPO_STREAM + seed)
    trainer = _CheckpointedGRPO(
        trained, config, prompts, tokenizer=tokenizer, reward_fn=reward, reference=policy,
        monitors={} if arm == "gold" else {"gold": gold_rewards}, checkpoints=settings.eval_steps,
        on_checkpoint=lambda step: evaluations.append(
            evaluate(trained, policy, tokenizer, eval_prompts, reward, settings, sample_seed)))
    trainer.fit()
    log = trainer.step_log
    row.update(steps=json.dumps([0, *settings.eval_steps]), **_summaries(evaluations),
               train_reward=json.dumps([round(e["reward"], 4) for e in log]),
               train_gold=json.dumps([round(e.get("gold", e["reward"]), 4) for e in log]),
               train_kl=json.dumps([round(e["kl"], 4) for e in log]),
               grpo_seconds=round(time.monotonic() - started, 1))
    return row


# ----------------------------------------------------------------------------- the study


def policy_pairs(policy, tokenizer, settings: EndToEndSettings, seed: int) -> tuple[dict, object, str]:
    """The seed's training pairs (``{"clean", "noisy"}``, the policy's own answers), its held-out pairs, and their source.

    A policy whose answers gold cannot tell apart (a tiny test policy writes no sentence
    the judge knows) gives fewer than ``min_pairs`` pairs; with ``world_fallback`` the
    world's pairs of the same prompt stream stand in, and the source says ``"world"``.
    """
    common = dict(max_new_tokens=settings.max_new_tokens, batch_size=settings.sampling_batch_size)
    clean = on_policy_pairs(policy, tokenizer, sample_prompts(settings.rm_prompts, seed=PAIR_STREAM + seed),
                            seed=PAIR_STREAM + seed, **common)
    heldout = on_policy_pairs(policy, tokenizer, sample_prompts(settings.heldout_prompts, seed=HELDOUT_STREAM + seed),
                              seed=HELDOUT_STREAM + seed, **common)
    source = "policy"
    if min(len(clean), len(heldout)) < settings.min_pairs:
        if not settings.world_fallback:
            raise RuntimeError(f"end-to-end seed {seed}: the policy's answers gave {len(clean)} training and "
                               f"{len(heldout)} held-out pairs whose gold differs (need {settings.min_pairs}); the "
                               "policy writes too few answers gold can tell apart")
        columns = ["prompt", "category", "chosen", "rejected", "gold_chosen", "gold_rejected", "is_flipped"]
        clean, heldout = (generate_preference_pairs(WorldConfig(n_pairs=n, seed=stream + seed)).select_columns(columns)
                          for n, stream in ((settings.rm_prompts, PAIR_STREAM), (settings.heldout_prompts, HELDOUT_STREAM)))
        source = "world"
    return {"clean": clean, "noisy": flip_labels(clean, settings.noise_rate, seed=seed)}, heldout, source


def run_end_to_end(output_dir, profile: str = "cpu", seeds=(0, 1, 2, 3, 4), arms=ARMS, device: str = "cpu",
                   cache_dir=None, settings: EndToEndSettings | None = None, progress: bool = True) -> Path:
    """Run the missing (arm, seed) rows of the study into ``output_dir/end_to_end.csv``; returns its path.

    ``settings`` (tests) replaces the profile's. A rerun skips every row already in the
    file and refuses to mix other settings into it. The SFT policies come from
    ``cache_dir`` when an earlier run (or the independent-minds grid) left them.
    """
    if settings is None:
        if profile not in PROFILES:
            raise ValueError(f"run_end_to_end: profile must be one of {list(PROFILES)}, got {profile!r}")
        settings = PROFILES[profile]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"run_end_to_end: unknown arm(s) {unknown}; the arms are {list(ARMS)}")
    device = str(resolve_device(device))
    config_json = json.dumps(settings.to_dict(), sort_keys=True)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path = output_dir / CSV_NAME
    rows = read_rows(csv_path, profile, config_json)
    done = {(r["arm"], int(r["seed"])) for r in rows}
    todo = [(int(s), a) for s in seeds for a in ARMS if a in arms and (a, int(s)) not in done]
    if not todo:
        return csv_path
    minds = settings.minds
    tokenizer = train_tokenizer(world_texts(minds.tokenizer_pairs, seed=minds.tokenizer_seed), vocab_size=minds.vocab_size)
    eval_prompts = sample_prompts(settings.eval_prompts, seed=EVAL_STREAM)
    bench = mini_reward_bench(n_per_category=settings.bench_per_category, seed=0)
    where = device_description(device)
    prepared: dict = {}
    for seed, arm in tqdm(todo, desc="end-to-end", disable=not progress):
        if prepared.get("seed") != seed:
            started = time.monotonic()
            policy = sft_policy(minds, tokenizer, seed, device, cache_dir).requires_grad_(False)
            partner = sft_policy(minds, tokenizer, seed + PARTNER_OFFSET, device, cache_dir)
            bases = tuple(policy_reward_model(p, tokenizer, max_length=settings.rm.max_length) for p in (policy, partner))
            pairs, heldout, source = policy_pairs(policy, tokenizer, settings, seed)
            prepared = dict(seed=seed, policy=policy, bases=bases, pairs=pairs, heldout=heldout, source=source,
                            seconds=round(time.monotonic() - started, 1))
        row = run_arm(arm, seed, policy=prepared["policy"], tokenizer=tokenizer, bases=prepared["bases"],
                      pairs=prepared["pairs"], heldout=prepared["heldout"], bench=bench, eval_prompts=eval_prompts,
                      settings=settings, device=device)
        rows.append({"profile": profile, **row, "policy_seed": seed, "partner_seed": seed + PARTNER_OFFSET,
                     "n_pairs": len(prepared["pairs"]["clean"]), "pair_source": prepared["source"], "prepare_seconds": prepared["seconds"],
                     "device": where, "config": config_json})
        write_csv(rows, csv_path)
    return csv_path
