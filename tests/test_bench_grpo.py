"""``benchmarks/bench_grpo.py`` runs end to end: both trainers, a tiny policy, two steps each.

No timing is asserted (timings depend on the machine and on other jobs); the run must
produce both sides' results with positive throughput, the same number of completions
on both sides, and the report files.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_grpo.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))  # the benchmarks import their shared module, peers.py, as scripts do
    spec = importlib.util.spec_from_file_location("bench_grpo", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_grpo_runs_both_trainers(bench, tmp_path):
    report = bench.main(["--size", "smoke", "--prompts", "2", "--group-size", "2", "--max-completion-length", "8",
                         "--warmup", "1", "--steps", "1", "--repeats", "1", "--threads", "1",
                         "--tokenizer-pairs", "200", "--vocab-size", "600", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "grpo_training.json").read_text())
    assert (tmp_path / "grpo_training.md").read_text().startswith("# GRPO training throughput")
    assert written["ratio_course_lib_over_trl"] == pytest.approx(report["ratio_course_lib_over_trl"])
    ours, theirs = written["course_lib"], written["trl_grpo_trainer"]
    for side in (ours, theirs):
        assert side["completions_per_s"] > 0 and side["tokens_per_s"] > 0
        assert side["steps"] == 2 and side["timed_steps"] == 1
        assert 0 < side["mean_completion_tokens"] <= 8
        assert set(side["split_s"]) == {"sample_s", "score_s", "update_s", "other_s"}
        assert side["split_s"]["sample_s"] > 0
    assert ours["completions"] == theirs["completions"] == 2 * 2 * 2
    assert ours["timed_completions"] == theirs["timed_completions"] == 2 * 2
    assert theirs["generation_config"]["max_new_tokens"] == 8
    assert theirs["generation_config"]["temperature"] == 1.0 and theirs["generation_config"]["top_p"] == 1.0
    assert written["ratio_course_lib_over_trl"] > 0
