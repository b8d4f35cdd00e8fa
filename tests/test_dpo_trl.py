"""Chapter 07's DPO against TRL's ``DPOTrainer`` (trl 1.16): the losses, end to end, and bf16 / compile on CPU.

1. The pure :func:`course_lib.engine.losses.dpo_loss` equals the loss TRL's own
   ``DPOTrainer._compute_loss`` returns on the same log-ratios (``tests/trl_reference.py``):
   DPO (beta 0.1 and 0.5), rDPO (robust, label_smoothing 0.2), IPO (beta 0.1 and 0.5) and
   cDPO (sigmoid, label_smoothing 0.2). trl 1.x ignores ``label_smoothing`` in its
   "sigmoid" loss (it has no cDPO any more), so cDPO is checked as TRL's sigmoid loss on
   the label and on the flipped label, mixed 0.8 : 0.2. TRL's IPO divides each log-ratio
   by the sequence's completion-token count, which it reads from ``completion_mask``
   (not from the log-prob columns); the stand-in marks one completion token per
   sequence, so the count is 1. The test reads the count from the mask TRL was given,
   so it holds for any stand-in.
2. End to end on a tiny GPT-2 and 8 world pairs, the course's ``DPOTrainer`` and TRL's
   real ``trl.DPOTrainer`` give the same loss on the same batch, for sigmoid, robust
   (label_smoothing 0.2) and IPO. What makes them agree:

   - TRL tokenises with a ``PreTrainedTokenizerFast`` around the course tokenizer's own
     ``tokenizers.Tokenizer`` (a copy with ``encode_special_tokens=False``, so that the
     ``<|answer|>`` and ``<|endoftext|>`` strings are read as the special tokens), eos
     ``<|endoftext|>``, pad ``<|pad|>``; its prompt is ``prompt + "<|answer|>"`` and it
     appends ``<|endoftext|>`` to each response itself. Then TRL's ``prompt_ids +
     chosen_ids`` are exactly the course's sequences (asserted), and its completion
     mask marks exactly the course's response tokens.
   - ``bf16=False``: TRL's ``DPOConfig`` turns bf16 autocast on by default, even on CPU
     (here it moves TRL's loss by 9e-5 to 5e-4; ~3e-3 on larger models);
     ``use_cpu=True``; ``max_length=None`` (nothing is truncated; the course's
     ``max_length=512`` keeps every token: asserted).
   - The reference is a second model (another seed), so the loss is not trivially
     log 2: TRL gets it as ``ref_model`` with ``precompute_ref_log_probs=True``, the
     course as ``reference_logps`` from a trainer built on the same model.
   - TRL's loss is read with its ``compute_loss`` on one collated batch of all 8 pairs,
     model in eval mode, no gradient (no optimizer step, so nothing else can move).

   Measured (fp32, 1 layer x 32): reference log-probs differ by <= 6e-5 nats (sums over
   70-200 tokens; TRL scores with its chunked LM head and an attention mask, the course
   with logits from the batch's first response token on and no mask), losses by <= 3e-6
   (sigmoid 3.03, robust 2.70, IPO 25.51); the tolerance is 3e-5. (TRL's loss logged by
   one ``learning_rate=0`` training step is the same to the last bit.)
3. RPO: trl 1.16 has no ``rpo_alpha`` any more; its equivalent is ``loss_type=["sigmoid",
   "sft"]`` with ``loss_weights=[1, alpha]``, whose NLL term is a token mean over all
   the batch's chosen tokens, where the course's :func:`course_lib.engine.losses.rpo_nll_loss`
   averages per sequence first (``-log pi(y_c|x) / |y_c|``, as Pang et al. 2024 write
   it), then over pairs. They agree on a one-pair batch to 8e-6; on 8 pairs they differ
   by exactly ``alpha * (token mean - sequence mean)`` (asserted; 1e-2 here).
4. ``precision="bf16"`` trains a step on CPU, and ``DPOConfig(compile=True)``
   (inductor) trains a step on CPU with the eager model's loss and gradients. With a cold
   inductor cache that test takes 20-40 s on two busy cores (gcc compiles ~11 kernels);
   inductor's on-disk cache makes later runs take ~10 s.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import trl  # a pinned dev dependency: an import error must fail, not skip
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from course_lib.engine.losses import dpo_loss
from course_lib.policy.dpo import DPOConfig, DPOTrainer
from course_lib.policy.logprobs import sequence_logprobs
from course_lib.policy.model import PolicyConfig, build_policy
from course_lib.policy.tokenizer import EOS, PAD, SEP, train_tokenizer, world_texts
from course_lib.world import WorldConfig, generate_preference_pairs
from trl_reference import trl_dpo_loss

N_PAIRS = 8
TINY = PolicyConfig(n_layer=1, n_embd=32, n_head=2, n_positions=512)
LOSS_ATOL = 3e-5  # ~4x the largest difference measured (8e-6), 3x below what bf16 autocast moves TRL by


# ---------------------------------------------------------------- 1. the pure loss
@pytest.mark.parametrize(
    "loss_type, beta, label_smoothing",
    [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("sigmoid", 0.1, 0.2), ("robust", 0.1, 0.2), ("ipo", 0.1, 0.0),
     ("ipo", 0.5, 0.0)],
)
def test_dpo_loss_equals_trl_compute_loss(loss_type, beta, label_smoothing, monkeypatch):
    """TRL's IPO divides each log-ratio by the sequence's completion-token count, read here from the
    completion mask the stand-in hands TRL (the other losses ignore it)."""
    seen = {}
    compute_loss = trl.DPOTrainer._compute_loss

    def recording(self, model, inputs, return_outputs):
        seen["completion_mask"] = inputs["completion_mask"]
        return compute_loss(self, model, inputs, return_outputs)

    monkeypatch.setattr(trl.DPOTrainer, "_compute_loss", recording)
    generator = torch.Generator().manual_seed(0)
    policy = -50 + 10 * torch.randn(2, 64, generator=generator, dtype=torch.float64)
    reference = -50 + 10 * torch.randn(2, 64, generator=generator, dtype=torch.float64)
    ratios = policy - reference
    if loss_type == "sigmoid":
        # trl 1.x ignores label_smoothing in "sigmoid" (no cDPO): cDPO is its loss on the label and on the
        # flipped label, mixed (1 - eps) : eps (linear, so the batch means mix the same way)
        expected = ((1 - label_smoothing) * trl_dpo_loss("sigmoid", ratios[0], ratios[1], beta=beta)
                    + label_smoothing * trl_dpo_loss("sigmoid", ratios[1], ratios[0], beta=beta))
    else:
        expected = trl_dpo_loss(loss_type, ratios[0], ratios[1], beta=beta, label_smoothing=label_smoothing)

    tokens = torch.ones(2, 64, dtype=torch.float64)
    if loss_type == "ipo":  # per-token means, as DPOTrainer.forward passes them
        tokens = torch.stack(seen["completion_mask"].sum(1).double().chunk(2))
    scaled_policy, scaled_reference = (policy / tokens).float(), (reference / tokens).float()
    ours = dpo_loss(scaled_policy[0], scaled_policy[1], scaled_reference[0], scaled_reference[1], beta, loss_type,
                    label_smoothing)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert abs(float(expected) - math.log(2)) > 0.05  # a loss away from the trivial point


# ---------------------------------------------------------------- 2. end to end, the same model and pairs
@pytest.fixture(scope="module")
def world():
    """Tokenizer, 8 world pairs, TRL's view of the tokenizer, and two tiny GPT-2s (policy and reference)."""
    tokenizer = train_tokenizer(world_texts(300), vocab_size=400)
    pairs = generate_preference_pairs(WorldConfig(n_pairs=N_PAIRS, seed=0))
    pairs = pairs.select_columns(["prompt", "chosen", "rejected"])
    backend = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    backend.encode_special_tokens = False  # TRL's text holds "<|answer|>" and "<|endoftext|>" as special tokens
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD)
    assert (hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id) == (tokenizer.eos_id, tokenizer.pad_id)
    policy = build_policy(TINY, tokenizer, seed=1)
    with torch.no_grad():  # larger (tied) embeddings: per-token log-probs that vary, unlike a fresh model's ~log(1/V)
        policy.transformer.wte.weight.mul_(10)
    return {
        "tokenizer": tokenizer,
        "pairs": pairs,
        "hf_tokenizer": hf_tokenizer,
        "policy": policy,
        "reference": build_policy(TINY, tokenizer, seed=0),
    }


def course_trainer(world, **config) -> DPOTrainer:
    """The course's trainer on copies of the world's models: reference log-probs from the reference model."""
    config = {"precision": "fp32", "max_length": TINY.n_positions, "batch_size": N_PAIRS, "progress": False, **config}
    reference = DPOTrainer(copy.deepcopy(world["reference"]), DPOConfig(**config), world["pairs"], tokenizer=world["tokenizer"])
    return DPOTrainer(copy.deepcopy(world["policy"]), DPOConfig(**config), world["pairs"], tokenizer=world["tokenizer"],
                      reference_logps=reference.reference_logps)


def course_loss(trainer: DPOTrainer, rows) -> torch.Tensor:
    trainer.model.eval()
    with torch.no_grad():
        return trainer.forward(trainer.make_batch(rows), trainer.model).losses.mean()


def trl_trainer(world, tmp_path, **config) -> trl.DPOTrainer:
    """TRL's trainer on copies of the same models, tokenising the course's way (see the module docstring)."""
    args = trl.DPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, max_length=None,
                         precompute_ref_log_probs=True, per_device_train_batch_size=N_PAIRS, report_to="none",
                         disable_tqdm=True, **config)
    return trl.DPOTrainer(model=copy.deepcopy(world["policy"]), ref_model=copy.deepcopy(world["reference"]), args=args,
                          train_dataset=world["pairs"].map(lambda row: {"prompt": row["prompt"] + SEP}),
                          processing_class=world["hf_tokenizer"])


def trl_loss(trainer: trl.DPOTrainer, rows) -> torch.Tensor:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch)


@pytest.mark.parametrize("loss_type, label_smoothing", [("sigmoid", 0.0), ("robust", 0.2), ("ipo", 0.0)])
def test_dpo_trainer_loss_equals_trl_dpo_trainer(world, tmp_path, loss_type, label_smoothing):
    ours = course_trainer(world, loss_type=loss_type, label_smoothing=label_smoothing, beta=0.1)
    theirs = trl_trainer(world, tmp_path, loss_type=loss_type, label_smoothing=label_smoothing, beta=0.1)

    # the same token ids, nothing truncated, the same response tokens
    data = theirs.train_dataset
    eos = world["tokenizer"].eos_id
    for i in range(N_PAIRS):
        for j, column in enumerate(("chosen_ids", "rejected_ids")):
            ids = ours.data.ids[i + j * N_PAIRS].tolist()
            assert data[i]["prompt_ids"] + data[i][column] == ids and ids[-1] == eos
            assert ours.data.starts[i + j * N_PAIRS] == len(data[i]["prompt_ids"])
    # the same reference log-probs (a sum over ~100 tokens: float32 rounding of the two code paths)
    trl_reference = torch.tensor([[row["ref_chosen_logps"], row["ref_rejected_logps"]] for row in data])
    torch.testing.assert_close(trl_reference.float(), ours.reference_logps, rtol=0, atol=5e-4)

    rows = list(range(N_PAIRS))
    expected = trl_loss(theirs, rows)
    torch.testing.assert_close(course_loss(ours, rows), expected.float(), rtol=0, atol=LOSS_ATOL)
    assert abs(float(expected) - (25.0 if loss_type == "ipo" else math.log(2))) > 0.01  # the models differ


def test_rpo_term_is_a_per_sequence_mean_where_trl_takes_a_token_mean(world, tmp_path):
    """TRL 1.16's RPO (``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, alpha]``) vs ``rpo_alpha``."""
    alpha = 0.5
    ours = course_trainer(world, rpo_alpha=alpha)
    plain = course_trainer(world)
    theirs = trl_trainer(world, tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0, alpha])

    # one pair per batch: a token mean is the sequence mean, so the two agree
    for row in (0, 5):
        torch.testing.assert_close(course_loss(ours, [row]), trl_loss(theirs, [row]).float(), rtol=0, atol=LOSS_ATOL)

    # a batch of 8: they differ by exactly alpha * (token mean - mean of per-sequence means) of the chosen NLL
    rows = list(range(N_PAIRS))
    batch = ours.make_batch(rows)
    ours.model.eval()
    with torch.no_grad():
        chosen_logps = sequence_logprobs(ours.model, batch.sequences)[:N_PAIRS]
    lengths = batch.extra["tokens"][:, 0]
    token_mean, sequence_mean = -chosen_logps.sum() / lengths.sum(), (-chosen_logps / lengths).mean()
    trl_total, ours_total = trl_loss(theirs, rows).float(), course_loss(ours, rows)
    torch.testing.assert_close(ours_total - course_loss(plain, rows), alpha * sequence_mean, rtol=0, atol=LOSS_ATOL)
    torch.testing.assert_close(trl_total - ours_total, alpha * (token_mean - sequence_mean), rtol=0, atol=LOSS_ATOL)
    assert abs(float(token_mean - sequence_mean)) > 1e-3  # the batch's chosen lengths differ, so the two do


# ---------------------------------------------------------------- 3. bf16 and compile on CPU
def one_step(trainer: DPOTrainer) -> tuple[float, float]:
    """The loss of one training step over all pairs, and the largest parameter change it made."""
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.fit()
    assert len(history.step_loss) == 1
    change = max(float((p.detach() - b).abs().max()) for p, b in zip(trainer.model.parameters(), before))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    return history.step_loss[0], change


def test_bf16_trains_a_step_on_cpu(world):
    fp32 = course_trainer(world, lr=1e-3)
    bf16 = course_trainer(world, lr=1e-3, precision="bf16")
    # autocast really ran: bf16 reference log-probs are not the fp32 ones, yet close (sums over ~100 tokens)
    difference = (bf16.reference_logps - fp32.reference_logps).abs().max()
    assert 0 < difference < 2.0
    loss_fp32, _ = one_step(fp32)
    loss_bf16, change = one_step(bf16)
    assert math.isfinite(loss_bf16) and abs(loss_bf16 - loss_fp32) < 0.01  # measured 9e-5
    assert change > 1e-4  # AdamW's first step moves weights by about lr


def test_compile_trains_a_step_on_cpu_like_eager(world):
    """Inductor's C++ backend, in-process and scalar: its worker pool and vector-ISA probing cost a third of
    a cold compile on two cores, and what is tested is the course's compiled step, not inductor's codegen."""
    import torch._inductor.config

    with torch._inductor.config.patch({"compile_threads": 1, "cpp.vec_isa_ok": False}):
        compiled_step_matches_eager(world)


def compiled_step_matches_eager(world):
    eager = course_trainer(world, lr=1e-3)
    compiled = course_trainer(world, lr=1e-3, compile=True)
    assert isinstance(compiled.module, torch._dynamo.eval_frame.OptimizedModule)
    rows = list(range(N_PAIRS))

    def loss_and_gradients(trainer, module):
        trainer.model.train()
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.forward(trainer.make_batch(rows), module).losses.mean()
        loss.backward()
        gradients = [p.grad.clone() for p in trainer.model.parameters()]
        trainer.model.zero_grad(set_to_none=True)
        return loss.detach(), gradients

    eager_loss, eager_gradients = loss_and_gradients(eager, eager.model)
    compiled_loss, compiled_gradients = loss_and_gradients(compiled, compiled.module)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=0, atol=1e-5)
    for compiled_gradient, eager_gradient in zip(compiled_gradients, eager_gradients):
        torch.testing.assert_close(compiled_gradient, eager_gradient, rtol=1e-3, atol=1e-6)
    loss, change = one_step(compiled)
    assert abs(loss - float(eager_loss)) < 1e-5 and change > 1e-4
