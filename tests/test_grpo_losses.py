"""Chapter 08's GRPO family against TRL's ``GRPOTrainer`` (trl 1.16), as pure functions of tensors.

1. :func:`course_lib.engine.losses.grpo_loss` equals the loss TRL's own ``GRPOTrainer._compute_loss``
   returns on the same per-token log-probs (``tests/trl_reference.py``), and so do the
   gradients with respect to the log-probs: for ``loss_type`` grpo, bnpo, dr_grpo and dapo,
   with and without the k3 KL term (``beta=0.04``), on-policy (one update: TRL is given no
   ``old_per_token_logps`` and uses ``per_token_logps.detach()``) and off-policy (old log-probs
   0.5 nats away on average, so that many ratios leave the clip range: asserted with TRL's own
   ``clip_ratio/region_mean`` metric). The completion mask is ragged, with one empty
   completion (TRL's ``clamp(min=1)``). Inputs are float64; the tolerance is 1e-6. Measured:
   the losses and gradients are bit-identical in all 16 cases (max difference 0.0); the
   off-policy batches clip 23-39% of tokens (TRL's metric).
2. :func:`course_lib.engine.losses.group_advantages` equals TRL's advantages, computed by TRL's own
   source lines (``trl_group_advantages``), for ``scale_rewards`` group / batch / none,
   including a group whose rewards are all equal and groups of one. Both use the unbiased
   std with ``eps`` added outside the square root. float32: max difference 2.4e-7; float64:
   3.1e-8, because TRL's ``nanstd`` computes Bessel's factor in float32 (see the test).
3. :func:`course_lib.engine.losses.k3_kl` is non-negative, zero on equal log-probs, and unbiased for
   the KL of two categorical distributions (Monte Carlo).
4. Bad inputs raise ``ValueError`` naming the problem.
"""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.engine.losses import group_advantages, grpo_loss, k3_kl
from trl_reference import trl_group_advantages, trl_grpo_loss

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
LENGTHS = (7, 3, 1, 5, 0, 6, 2, 7)  # ragged completions, right-padded to T = 7; one is empty
MAX_COMPLETION_LENGTH = 10  # dr_grpo's constant; larger than T as in training (T is the batch's longest)
TOLERANCE = 1e-6


def _batch(seed: int, off_policy: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    batch, length = len(LENGTHS), max(LENGTHS)
    mask = (torch.arange(length)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    logps = -torch.rand(batch, length, generator=generator, dtype=torch.float64) * 3
    old = logps + 0.6 * torch.randn(batch, length, generator=generator, dtype=torch.float64) if off_policy else None
    reference = logps + 0.3 * torch.randn(batch, length, generator=generator, dtype=torch.float64)
    rewards = torch.randn(batch, generator=generator, dtype=torch.float64)
    return {"logps": logps, "old_logps": old, "reference_logps": reference, "completion_mask": mask,
            "advantages": group_advantages(rewards, group_size=4)}


def _loss_and_grad(function, batch: dict[str, torch.Tensor], **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    logps = batch["logps"].clone().requires_grad_(True)
    loss = function(logps=logps, old_logps=batch["old_logps"], advantages=batch["advantages"],
                    completion_mask=batch["completion_mask"], reference_logps=batch["reference_logps"], **kwargs)
    (grad,) = torch.autograd.grad(loss, logps)
    return loss.detach(), grad


@pytest.mark.parametrize("off_policy", [False, True], ids=["one-update", "clipped"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_grpo_loss_equals_trl(loss_type, beta, off_policy):
    batch = _batch(seed=LOSS_TYPES.index(loss_type), off_policy=off_policy)
    epsilon_high = 0.28 if loss_type == "dapo" else 0.2  # DAPO's clip-higher
    options = {"beta": beta, "epsilon_low": 0.2, "epsilon_high": epsilon_high,
               "max_completion_length": MAX_COMPLETION_LENGTH}
    metrics: dict[str, float] = {}
    ours, our_grad = _loss_and_grad(lambda **kw: grpo_loss(**kw, loss_type=loss_type, **options), batch)
    theirs, their_grad = _loss_and_grad(lambda **kw: trl_grpo_loss(loss_type, **kw, **options, metrics=metrics), batch)

    assert abs(ours.item() - theirs.item()) < TOLERANCE, (ours.item(), theirs.item())
    assert (our_grad - their_grad).abs().max().item() < TOLERANCE
    assert our_grad[batch["completion_mask"] == 0].abs().max().item() == 0.0  # padding gets no gradient
    assert ours.item() != 0.0 and our_grad.abs().max().item() > 0.0
    if beta:
        assert metrics["kl"] > 0.0  # TRL did add a KL term
        without_kl, _ = _loss_and_grad(lambda **kw: grpo_loss(**kw, loss_type=loss_type, **{**options, "beta": 0.0}),
                                       batch)
        assert abs(ours.item() - without_kl.item()) > 1e-4
    if off_policy:
        assert metrics["clip_ratio/region_mean"] > 0.05  # TRL's own count: the clip was active
        unclipped, _ = _loss_and_grad(
            lambda **kw: grpo_loss(**kw, loss_type=loss_type, **{**options, "epsilon_low": 0.999,
                                                                 "epsilon_high": 1e9}), batch)
        assert abs(ours.item() - unclipped.item()) > 1e-4
    else:
        assert metrics["clip_ratio/region_mean"] == 0.0
        on_policy = dict(batch, old_logps=batch["logps"].clone())  # explicit old log-probs equal to logps
        explicit, explicit_grad = _loss_and_grad(lambda **kw: grpo_loss(**kw, loss_type=loss_type, **options),
                                                 on_policy)
        assert abs(explicit.item() - ours.item()) < 1e-12 and torch.allclose(explicit_grad, our_grad)


def test_grpo_reductions_differ_as_documented():
    batch = _batch(seed=7, off_policy=True)
    mask = batch["completion_mask"].double()
    losses = {t: grpo_loss(batch["logps"], batch["old_logps"], batch["advantages"], batch["completion_mask"],
                           loss_type=t, max_completion_length=MAX_COMPLETION_LENGTH) for t in LOSS_TYPES}
    assert losses["dapo"].item() == losses["bnpo"].item()  # one process, one micro-batch
    # bnpo and dr_grpo sum the same per-token losses, divided by the token count and by B * L_max
    assert losses["dr_grpo"].item() * len(LENGTHS) * MAX_COMPLETION_LENGTH == pytest.approx(
        losses["bnpo"].item() * mask.sum().item(), rel=1e-12)
    assert abs(losses["grpo"].item() - losses["bnpo"].item()) > 1e-3  # ragged: sequence mean != token mean


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-7)])
def test_group_advantages_equal_trl(dtype, tolerance):
    # float32 is what TRL's rewards are: equal to a few float32 ulps (measured 2.4e-7, "batch").
    # In float64 TRL's std is only float32-accurate: its ``nanstd`` computes Bessel's factor
    # count / (count - 1) from integer tensors, which torch divides in float32 (4/3 -> 1.33333337),
    # so its std is off by ~1.5e-8 relative (measured 3.1e-8 on the advantages); hence 1e-7.
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0,   0.3, 0.3, 0.3, 0.3,   2.0, -1.0, 0.5, 4.0], dtype=dtype)
    for scale in ("group", "batch", "none"):
        ours = group_advantages(rewards, group_size=4, scale=scale)
        theirs = trl_group_advantages(rewards, group_size=4, scale_rewards=scale)
        assert ours.dtype == theirs.dtype == dtype
        assert (ours - theirs).abs().max().item() < tolerance, scale
        assert ours[4:8].abs().max().item() < 1e-9  # the all-equal group teaches nothing
    # TRL's std is the unbiased one, with eps outside the square root: the group [1, 0, 0, 1]
    # has unbiased std sqrt(1/3), so its advantages are +-0.5 / (sqrt(1/3) + 1e-4), not +-0.5 / 0.5
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert group_advantages(rewards, 4)[0].item() == pytest.approx(expected, rel=10 * torch.finfo(dtype).eps)
    assert abs(group_advantages(rewards, 4)[0].item() - 0.5 / (0.5 + 1e-4)) > 0.1  # not the biased std
    assert torch.equal(group_advantages(rewards, 4, scale="none"), rewards - rewards.view(3, 4).mean(1).repeat_interleave(4))
    # groups of one: TRL takes the std as 0 (no NaN), so every advantage is 0
    ones = group_advantages(rewards, group_size=1)
    assert torch.equal(ones, trl_group_advantages(rewards, group_size=1, scale_rewards="group"))
    assert ones.abs().max().item() == 0.0


def test_k3_is_nonnegative_zero_on_equal_and_unbiased():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=generator) * 3, torch.randn(1000, generator=generator) * 3
    assert k3_kl(a, b).min().item() >= 0.0
    assert k3_kl(a, b).max().item() > 0.1
    assert torch.equal(k3_kl(a, a), torch.zeros_like(a))

    # Two categorical distributions on 6 outcomes, a policy and a reference near it (as in
    # training, where beta keeps them close); tokens sampled from pi
    logits = torch.randn(6, generator=generator, dtype=torch.float64)
    pi = torch.softmax(logits, 0)
    ref = torch.softmax(logits + 0.5 * torch.randn(6, generator=generator, dtype=torch.float64), 0)
    exact = (pi * (pi.log() - ref.log())).sum().item()
    samples = torch.multinomial(pi, 200_000, replacement=True, generator=generator)
    k3 = k3_kl(pi.log()[samples], ref.log()[samples])
    k1 = pi.log()[samples] - ref.log()[samples]
    standard_error = k3.std().item() / math.sqrt(len(samples))
    # 4 standard errors: a correct estimator fails this with probability ~6e-5 (and the seed is fixed)
    assert abs(k3.mean().item() - exact) < 4 * standard_error, (k3.mean().item(), exact, standard_error)
    assert 4 * standard_error < 0.05 * exact  # the tolerance is tight enough to mean something
    assert k3.std().item() < k1.std().item()  # Schulman's point: k3 has lower variance than k1 (close pi, ref)
    assert (k1 < 0).any() and (k3 >= 0).all()


def _valid():
    batch = _batch(seed=0, off_policy=True)
    return batch["logps"], batch["old_logps"], batch["advantages"], batch["completion_mask"]


@pytest.mark.parametrize("call, message", [
    (lambda: group_advantages(torch.zeros(10), group_size=4), "divisible by group_size"),
    (lambda: group_advantages(torch.zeros(8), group_size=4, scale="std"), "scale must be one of"),
    (lambda: group_advantages(torch.zeros(8), group_size=0), "group_size must be a positive int"),
    (lambda: group_advantages(torch.zeros(2, 4), group_size=4), "must be 1-D"),
    (lambda: k3_kl(torch.zeros(3), torch.zeros(4)), "must have one shape"),
    (lambda: grpo_loss(*_valid(), loss_type="ppo"), "loss_type must be one of"),
    (lambda: grpo_loss(*_valid(), loss_type="dr_grpo"), "needs max_completion_length"),
    (lambda: grpo_loss(*_valid(), beta=0.04), "needs reference_logps"),
    (lambda: grpo_loss(*_valid(), beta=-1.0, reference_logps=_valid()[0]), "beta must be >= 0"),
    (lambda: grpo_loss(*_valid(), epsilon_low=1.5), "epsilon_low"),
    (lambda: grpo_loss(_valid()[0], _valid()[1][:, :3], *_valid()[2:]), "old_logps has shape"),
    (lambda: grpo_loss(*_valid()[:2], _valid()[2][:3], _valid()[3]), "advantages must be"),
    (lambda: grpo_loss(*_valid()[:3], _valid()[3][:, :2]), "completion_mask has shape"),
    (lambda: grpo_loss(_valid()[0][0], None, _valid()[2], _valid()[3][0]), r"logps must be \(B, T\)"),
])
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
