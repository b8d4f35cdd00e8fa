"""Data-parallel training (DDP, gloo backend, 2 CPU processes) gives what one process gives.

Both runs see the same global batches; each of the two processes trains on its half
and DDP averages the gradients. Per-pair margins, selections and accuracy must match
a one-process run up to float rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")


def run(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tiny_backbone, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ddp")
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    run([sys.executable, str(WORKER), tiny_backbone, str(one)], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run([*torchrun, str(WORKER), tiny_backbone, str(two)], tmp_path)
    return torch.load(one, weights_only=False), torch.load(two, weights_only=False)


def test_two_processes_train_like_one(runs):
    one, two = runs
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for name in ("single_margins", "single_final_margins", "single_step_loss", "crm_margins_a", "crm_final_margins_b"):
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    assert two["single_eval_accuracy"] == one["single_eval_accuracy"]
    assert two["crm_eval_accuracy"] == one["crm_eval_accuracy"]


def test_selections_are_made_on_the_gathered_global_batch(runs):
    one, two = runs
    assert torch.equal(two["crm_selected_a"], one["crm_selected_a"])
    assert torch.equal(two["crm_selected_b"], one["crm_selected_b"])
    kept = one["crm_selected_a"].sum(dim=1).tolist()
    assert kept[0] == 40 and kept[1] < 40, "epoch 0 keeps every pair, later epochs drop the hardest"


def test_dpo_and_crm_dpo_train_alike_in_two_processes(tmp_path):
    """Chapter 07's learners on the same DDP path: DPO's per-pair margins and losses, and CRM-DPO's selections."""
    worker = Path(__file__).with_name("distributed_dpo_worker.py")
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    run([sys.executable, str(worker), str(one)], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(worker), str(two)], tmp_path)
    one, two = torch.load(one, weights_only=False), torch.load(two, weights_only=False)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for name in ("single_margins", "single_step_loss", "single_log_ratios", "crm_margins_b"):
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-4, msg=name)
    assert torch.equal(two["crm_selected_a"], one["crm_selected_a"])
    assert torch.equal(two["crm_selected_b"], one["crm_selected_b"])
    assert one["crm_selected_a"][1].sum() < 24, "after the ramp each policy is updated on a selection"
