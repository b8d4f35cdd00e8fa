"""Shared fixtures: the course root and the kernel notebooks run in."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# tests/browser drive a real Chromium and need system packages; 'make test-browser' runs them
# (it sets COURSE_BROWSER_TESTS=1), 'make test' never collects them.
collect_ignore = [] if os.environ.get("COURSE_BROWSER_TESTS") else ["browser"]

# Tests never reach a model or data hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
# Two test workers (and the notebook kernels they start) share two cores: one torch thread each.
# Two threads per process would oversubscribe the cores, and torch's threads spin-wait for each
# other, which slows the small models of Chapter 07 many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    """torch.compile's C++ cache, one per checkout and test worker (unless the caller chose one).

    Two processes compiling into one cache race on its shared files (seen in a fresh clone's
    run as g++ failing with "'at::vec' has not been declared").
    """
    ours = os.path.join(tempfile.gettempdir(), f"torchinductor_course_{hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]}_")
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is not None and not chosen.startswith(ours):  # the caller's choice (a worker inherits ours)
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = ours + getattr(config, "workerinput", {}).get("workerid", "main")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def kernel_name() -> str:
    from course_lib.tooling.execute import available_kernel

    return available_kernel()


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """A randomly initialized 2-layer BERT saved like any checkpoint (MiniLM's tokenizer)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from course_lib.reward.model import default_backbone_path

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_backbone_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
