"""The end-to-end study (GRPO against reward models on the policy's own noisy pairs): tiny runs and the report."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from course_lib.studies import end_to_end as e2e
from course_lib.studies.end_to_end_report import Study, gold_at_kl, markdown_report, plot_png, write_report
from course_lib.tooling import cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Seed 0, three arms (the gold judge, one plain model, CRM's two models), at tiny size."""
    folder = tmp_path_factory.mktemp("e2e")
    cache = tmp_path_factory.mktemp("cache")
    path = e2e.run_end_to_end(folder, profile="tiny", seeds=[0], arms=["gold", "noisy", "crm"],
                              settings=e2e.tiny_settings(), cache_dir=cache, progress=False)
    return folder, cache, pd.read_csv(path)


def test_the_command_offers_every_profile_and_arm():
    assert set(cli.END_TO_END_PROFILES) == set(e2e.PROFILES)
    assert tuple(cli.END_TO_END_ARMS) == e2e.ARMS


def test_arrays_survive_the_csv_cell():
    values = np.random.default_rng(0).normal(3, 2, size=(4, 37))
    back = e2e.decode_array(e2e.encode_array(values))
    assert back.shape == (4, 37)
    np.testing.assert_allclose(back, values, rtol=2e-3, atol=2e-3)  # float16


def test_gold_at_kl_interpolates_between_the_bracketing_checkpoints():
    gold = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 7.0]])
    kl = np.array([0.0, 2.0, 4.0])
    np.testing.assert_allclose(gold_at_kl(gold, kl, 2.0), [2.0, 3.0])
    np.testing.assert_allclose(gold_at_kl(gold, kl, 3.0), [3.0, 5.0])
    np.testing.assert_allclose(gold_at_kl(gold, kl, 0.5), [0.5, 1.5])
    # a KL curve that goes up and back down: the first crossing counts
    np.testing.assert_allclose(gold_at_kl(gold, np.array([0.0, 4.0, 2.0]), 2.0), [1.0, 2.0])
    with pytest.raises(ValueError, match="bracket"):
        gold_at_kl(gold, kl, 5.0)
    with pytest.raises(ValueError, match="checkpoints, prompts"):
        gold_at_kl(gold, kl[:2], 1.0)


def test_settings_reject_what_cannot_run():
    with pytest.raises(ValueError, match="multiple of eval_every"):
        replace(e2e.tiny_settings(), steps=5)
    with pytest.raises(ValueError, match="full_copy"):
        replace(e2e.tiny_settings(), rm=replace(e2e.tiny_settings().rm, encoder="frozen"))
    with pytest.raises(ValueError, match="noise_rate"):
        replace(e2e.tiny_settings(), noise_rate=0.5)
    with pytest.raises(ValueError, match="unknown arm"):
        e2e.run_end_to_end("unused", arms=["gold", "dpo"], settings=e2e.tiny_settings())


def test_a_tiny_run_writes_one_row_per_arm_with_every_checkpoint(tiny_run):
    _, _, frame = tiny_run
    settings = e2e.tiny_settings()
    assert list(frame["arm"]) == ["gold", "noisy", "crm"] and set(frame["seed"]) == {0}
    n_checkpoints = 1 + settings.steps // settings.eval_every
    gold = {row.arm: e2e.decode_array(row.gold_prompts) for row in frame.itertuples()}
    for arm, values in gold.items():
        assert values.shape == (n_checkpoints, settings.eval_prompts), arm
        assert json.loads(frame.set_index("arm").loc[arm, "steps"]) == [0, 2, 4]
    # step 0 is the SFT policy, sampled with the same seed for every arm: the same answers, the same gold, no KL
    np.testing.assert_array_equal(gold["gold"][0], gold["noisy"][0])
    np.testing.assert_array_equal(gold["gold"][0], gold["crm"][0])
    assert all(json.loads(kl)[0] == 0.0 for kl in frame["kl"])
    # the gold arm's reward is gold; the reward-model arms trained, and CRM's models selected pairs
    gold_row, crm_row = frame.set_index("arm").loc["gold"], frame.set_index("arm").loc["crm"]
    np.testing.assert_allclose(e2e.decode_array(gold_row.proxy_prompts), gold["gold"], atol=1e-2)
    assert len(json.loads(crm_row.train_reward)) == settings.steps
    assert 0 <= crm_row.heldout_accuracy <= 1 and 0 <= crm_row.bench <= 1
    assert abs(crm_row.label_precision - (1 - settings.noise_rate)) < 0.05
    assert set(frame["pair_source"]) == {"world"}  # the tiny policy writes nothing gold can tell apart


def test_a_rerun_adds_only_the_missing_rows_and_refuses_other_settings(tiny_run, tmp_path):
    folder, cache, frame = tiny_run
    copy = tmp_path / "study"
    copy.mkdir()
    (copy / e2e.CSV_NAME).write_text((folder / e2e.CSV_NAME).read_text())
    path = e2e.run_end_to_end(copy, profile="tiny", seeds=[0], arms=["gold", "noisy", "crm", "clean"],
                              settings=e2e.tiny_settings(), cache_dir=cache, progress=False)
    again = pd.read_csv(path)
    assert list(again["arm"]) == ["gold", "noisy", "crm", "clean"]
    pd.testing.assert_frame_equal(again.iloc[:3][list(frame.columns)], frame, check_dtype=False)  # kept as they were
    with pytest.raises(ValueError, match="other settings"):
        e2e.run_end_to_end(copy, profile="tiny", seeds=[0], arms=["gold"], settings=replace(e2e.tiny_settings(), beta=0.1),
                           cache_dir=cache, progress=False)


def test_a_policy_that_gives_too_few_pairs_is_an_error_without_the_fallback(tiny_run):
    _, cache, _ = tiny_run
    settings = replace(e2e.tiny_settings(), world_fallback=False)
    with pytest.raises(RuntimeError, match="too few answers gold can tell apart"):
        e2e.run_end_to_end(cache / "unused", profile="tiny", seeds=[0], arms=["noisy"], settings=settings,
                           cache_dir=cache, progress=False)


def _synthetic_rows(frame: pd.DataFrame, effects: dict[str, float], seeds=(0, 1, 2), prompts: int = 400,
                    pace: dict[str, float] | None = None) -> list[dict]:
    """Rows in the study's format whose gold is the SFT's plus ``effects[arm]`` times the KL, with noise;
    ``pace[arm]`` scales an arm's KL (default 1)."""
    rng = np.random.default_rng(0)
    template = frame.iloc[0].to_dict()
    rows = []
    for seed in seeds:
        sft = rng.normal(4.0, 1.0, size=prompts)
        for arm, effect in effects.items():
            kl = np.array([0.0, 1.0 + 0.1 * seed, 2.0 + 0.2 * seed]) * (pace or {}).get(arm, 1.0)
            gold = np.stack([sft + effect * k + (k > 0) * rng.normal(0, 0.5, size=prompts) for k in kl])
            rows.append({**template, "arm": arm, "seed": seed, "steps": json.dumps([0, 2, 4]),
                         "kl": json.dumps(kl.round(4).tolist()), "gold_prompts": e2e.encode_array(gold),
                         "proxy_prompts": e2e.encode_array(gold * 2), "heldout_accuracy": 0.6 + effect / 10,
                         "bench": 0.6, "label_precision": 0.6, "selection_agreement": np.nan,
                         "selection_precision": np.nan, "rm_seconds": 1.0, "grpo_seconds": 2.0})
    return rows


def test_the_report_finds_a_planted_difference_at_matched_kl_and_no_other(tiny_run):
    _, _, frame = tiny_run
    rows = _synthetic_rows(frame, {"gold": 0.5, "clean": 0.3, "noisy": 0.0, "crm": 0.25, "ensemble": 0.0},
                           pace={"gold": 0.5})
    study = Study(rows)
    assert study.seeds == [0, 1, 2]
    assert study.matched_kl() == pytest.approx(2.0)  # the smallest last KL over reward-model arms and seeds
    assert not study.reaches("gold", 2.0) and study.reaches("gold", 1.0)
    report = markdown_report(rows)
    headline = next(line for line in report.splitlines() if line.startswith("| CRM - plain noisy RM"))
    mean = float(headline.split("|")[2].split("[")[0])
    low, high = (float(v) for v in headline.split("[")[1].split("]")[0].split(","))
    assert low > 0 and abs(mean - 0.5) < 0.1  # CRM gains 0.25 per nat: 0.5 at the matched 2 nats
    ensemble = next(line for line in report.splitlines() if line.startswith("| ensemble - plain noisy RM"))
    low, high = (float(v) for v in ensemble.split("[")[1].split("]")[0].split(","))
    assert low < 0 < high  # no planted difference: within noise
    assert "Spearman" in report and report.count("within noise") >= 1
    assert "| gold judge (ceiling) | not reached (last step: KL" in report
    assert "(at KL 1.00, the most both reached)" in report  # gold - clean, where gold stops short
    assert plot_png(rows)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_command_reads_the_csv(tiny_run, tmp_path, capsys):
    folder, _, _ = tiny_run
    assert cli.main(["end-to-end", "--report-only", "--output", str(folder)]) == 0
    assert (folder / "end_to_end.md").read_text().startswith("# The end-to-end study")
    assert (folder / "end_to_end.png").exists()
    with pytest.raises(FileNotFoundError, match="run `course end-to-end` first"):
        write_report(tmp_path)
