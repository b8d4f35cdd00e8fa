"""The runtime: devices, precision, local random state, verified checkpoints (refusals and atomic writes)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.reward.model import RewardModel, RewardModelConfig
from course_lib.engine.runtime import LocalRandomState, atomic_torch_save, autocast, check_precision, resolve_device
from course_lib.reward.training import BradleyTerryTrainer, TrainingConfig

PAIRS = [{"prompt": f"Question {i}?", "chosen": f"A helpful answer, number {i}.", "rejected": f"Go away {i}."} for i in range(24)]
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def trainer(backbone, data=PAIRS, mode="frozen", **settings):
    model = RewardModel(RewardModelConfig(backbone=backbone, mode=mode, head_hidden_size=8, head_dropout=0.1))
    return BradleyTerryTrainer(model, TrainingConfig(**{"epochs": 2, "batch_size": 8, "progress": False, **settings}), data)


def test_devices_are_parsed_once_with_clear_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="GPU index must be a number"):
        resolve_device("cuda:first")
    with pytest.raises(ValueError, match="must be a string"):
        resolve_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")
        with pytest.raises(ValueError, match="TrainingConfig: .*no CUDA GPU"):
            TrainingConfig(device="cuda")


def test_precision_names_and_devices_are_checked():
    cpu = torch.device("cpu")
    assert check_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("fp8", cpu)
    with pytest.raises(ValueError, match="'fp16' needs a CUDA GPU"):
        check_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainingConfig(precision="half")
    with autocast(cpu, "bf16"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32


def test_local_random_state_leaves_the_callers_generators_alone():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    state = LocalRandomState(seed=0)
    with state:
        inside = torch.rand(3)
        np.random.rand(2), random.random()
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    torch.manual_seed(0)
    assert torch.equal(inside, torch.rand(3)), "the local stream starts from its seed"
    with state:
        second = torch.rand(3)
    assert not torch.equal(second, inside), "and continues where it stopped"


def test_training_does_not_reseed_the_caller(tiny_backbone):
    torch.manual_seed(11)
    expected = torch.rand(5)
    torch.manual_seed(11)
    trainer(tiny_backbone).fit()  # head dropout draws from the trainer's own stream
    assert torch.equal(torch.rand(5), expected)


def test_runs_are_identical_whatever_ran_before(tiny_backbone):
    first = trainer(tiny_backbone).fit()
    torch.rand(100)
    second = trainer(tiny_backbone).fit()
    np.testing.assert_array_equal(first.pair_loss, second.pair_loss)


def test_resume_refuses_other_settings_and_other_data(tiny_backbone, tmp_path):
    trainer(tiny_backbone, checkpoint_dir=tmp_path).fit()
    with pytest.raises(ValueError, match="settings differ .*batch_size: checkpoint 8, this run 4"):
        trainer(tiny_backbone, checkpoint_dir=tmp_path, batch_size=4).fit(resume=True)
    with pytest.raises(ValueError, match="lr: checkpoint 0.001, this run 0.01"):
        trainer(tiny_backbone, checkpoint_dir=tmp_path, lr=1e-2).fit(resume=True)
    other = [dict(row, chosen=row["chosen"].replace("helpful", "useful")) for row in PAIRS]  # same size, other texts
    with pytest.raises(ValueError, match="written for other training data"):
        trainer(tiny_backbone, other, checkpoint_dir=tmp_path).fit(resume=True)
    finished = trainer(tiny_backbone, checkpoint_dir=tmp_path, progress=True)  # bookkeeping may change
    assert finished.fit(resume=True).epochs_done == 2 and finished.global_step == 6


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_torch_save({"step": 1}, path)

    def crash(obj, file):
        Path(file).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"], "no temporary file is left behind"


def test_bf16_autocast_trains_on_cpu(tiny_backbone):
    fp32 = trainer(tiny_backbone, mode="full")
    bf16 = trainer(tiny_backbone, mode="full", precision="bf16")
    batch = fp32.make_batch(torch.arange(8))
    exact, low = fp32.pair_losses(batch), bf16.pair_losses(batch)
    assert not torch.equal(exact, low), "autocast ran the encoder in bf16"
    torch.testing.assert_close(low, exact, rtol=0.05, atol=0.02)
    history = bf16.fit()
    assert np.isfinite(history.step_loss).all() and bf16.global_step == 6
    assert all(p.dtype == torch.float32 for p in bf16.reward_model.parameters()), "weights stay fp32"


@requires_cuda
def test_cuda_training_matches_cpu(tiny_backbone):
    cpu = trainer(tiny_backbone)
    gpu = trainer(tiny_backbone, device="cuda")
    np.testing.assert_allclose(gpu.fit().pair_loss, cpu.fit().pair_loss, rtol=1e-3, atol=1e-4)
    assert trainer(tiny_backbone, mode="full", device="cuda", precision="bf16").fit().epochs_done == 2
