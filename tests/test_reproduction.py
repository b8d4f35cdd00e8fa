"""The reproduction grid: one cell per (method, noise, seed), summaries, and the resumable sweep."""

import json

import numpy as np

import pandas as pd
import pytest

from course_lib.studies import reproduction
from course_lib.studies.reproduction import (METHODS, SWEEP_METHODS, ReproductionConfig, check_methods, check_noises,
                                     decode_outcomes, encode_outcomes, profile_config, summarize)
from course_lib.studies import sweep
from course_lib.tooling.cli import main as course_main

ROWS = [
    {"method": "single", "noise_rate": 0.4, "seed": 0, "average": 0.60},
    {"method": "single", "noise_rate": 0.4, "seed": 1, "average": 0.64},
    {"method": "crm", "noise_rate": 0.4, "seed": 0, "average": 0.70},
    {"method": "crm", "noise_rate": 0.4, "seed": 1, "average": 0.76},
    {"method": "crm", "noise_rate": 0.0, "seed": 0, "average": 0.80},
]


def test_summarize_means_stds_and_gains():
    table = summarize(ROWS).set_index(["method", "noise_rate"])
    assert table.loc[("single", 0.4), "mean"] == pytest.approx(0.62)
    assert table.loc[("crm", 0.4), "std"] == pytest.approx(pd.Series([0.70, 0.76]).std())
    assert table.loc[("crm", 0.4), "gain_vs_single"] == pytest.approx(0.11)
    assert table.loc[("crm", 0.0), "std"] == 0.0 and table.loc[("crm", 0.0), "n_seeds"] == 1
    assert pd.isna(table.loc[("crm", 0.0), "gain_vs_single"])  # no single run at noise 0
    # methods in the course's order within each noise rate
    assert list(summarize(ROWS).method) == ["crm", "single", "crm"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown method"):
        check_methods(["single", "co_teaching"])
    with pytest.raises(ValueError, match="profile"):
        profile_config("huge")
    with pytest.raises(ValueError, match="epochs"):
        ReproductionConfig(epochs=0)
    with pytest.raises(ValueError, match="lack"):
        summarize([{"method": "single", "seed": 0}])
    with pytest.raises(ValueError, match="unknown noise"):
        check_noises(["flip40", "gaussian"])
    with pytest.raises(ValueError, match="noise rates"):
        check_noises([0.6])
    with pytest.raises(ValueError, match="encoder"):
        ReproductionConfig(encoder="full")


def test_outcomes_round_trip_compactly():
    outcomes = np.random.default_rng(0).choice([0.0, 0.5, 1.0], size=10000, p=[0.3, 0.01, 0.69])
    text = encode_outcomes(outcomes)
    assert np.array_equal(decode_outcomes(text), outcomes)
    assert len(text) < 4000  # about 3 KB for 10,000 items, so the CSV can keep every run's outcomes


def test_sweep_resumes_and_refuses_to_mix_settings(tmp_path, tiny_backbone, monkeypatch):
    calls = []
    real_run_cell = reproduction.run_cell

    def counting_run_cell(*args, **kwargs):
        method, noise, seed = args[:3]
        calls.append((method, noise.name, seed))
        return real_run_cell(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_cell", counting_run_cell)
    settings = dict(profile="smoke", methods=["single", "crm"], noises=[0.0, "bt"], seeds=[0], backbone=tiny_backbone,
                    progress=False, n_pairs=24, n_bench=4, epochs=2, batch_size=8, head_hidden_size=8)
    csv_path = sweep.run_sweep(tmp_path, **settings)
    frame = pd.read_csv(csv_path)
    assert sorted(zip(frame.method, frame.noise)) == [("crm", "bt"), ("crm", "clean"), ("single", "bt"), ("single", "clean")]
    assert frame["average"].between(0, 1).all() and set(reproduction.SECTIONS) <= set(frame.columns)
    assert json.loads(frame.config[0])["n_pairs"] == 24 and (frame.profile == "smoke").all()
    assert all(decode_outcomes(text).shape == (16,) for text in frame.outcomes)  # 4 items x 4 sections
    bt_rate = frame[frame.noise == "bt"].noise_rate.iloc[0]
    assert 0 < bt_rate < 0.5  # methods are told the share of labels that disagree with gold
    assert len(calls) == 4
    report = (tmp_path / "crm_reproduction.md").read_text()
    assert "| crm |" in report and "BT-sampled" in report and "`chat_hard`" in report and "## Headline" in report
    assert "4 pairs per section" in report
    assert (tmp_path / "crm_reproduction.png").stat().st_size > 1000

    sweep.run_sweep(tmp_path, **{**settings, "seeds": [0, 1], "methods": ["single"]})  # only the new cells run
    assert calls[4:] == [("single", "clean", 1), ("single", "bt", 1)]
    assert len(pd.read_csv(csv_path)) == 6

    with pytest.raises(ValueError, match="other settings"):
        sweep.run_sweep(tmp_path, **{**settings, "epochs": 3})
    assert len(pd.read_csv(csv_path)) == 6  # nothing lost


def test_sweep_command_rejects_unknown_methods(tmp_path, capsys):
    assert course_main(["sweep", "--methods", "magic", "--output", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert set(METHODS) >= {"single", "ensemble", "peer_review", "self_review", "crm"}


def test_every_method_trains_and_cross_fitting_scores_every_pair(tiny_backbone):
    from course_lib.engine.collaborative import CollaborativeHistory
    from course_lib.studies.reproduction import cross_fitted_margins, noisy_pairs, train_method
    from course_lib.reward.model import RewardModel, RewardModelConfig
    from course_lib.reward.training import TrainingHistory

    config = ReproductionConfig(n_pairs=24, n_bench=4, epochs=2, batch_size=8, head_hidden_size=8)
    base = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="frozen"))
    train = noisy_pairs(config, 0.25, seed=0)
    assert sum(train["is_flipped"]) > 0
    for method in SWEEP_METHODS:
        models, history = train_method(method, base, train, config, eta=0.25, seed=0)
        two = method in ("ensemble", "self_review", "peer_review", "crm", "crm_self_review", "coteaching_plus")
        assert len(models) == (2 if two else 1)
        assert isinstance(history, CollaborativeHistory if two else TrainingHistory)
        if method == "early_stop":
            assert history.best_epoch in (0, 1) and len(history.eval_metrics) == 2
        if method in ("self_review", "peer_review", "crm", "crm_self_review"):  # epoch 1 of a 2-epoch ramp forgets eta / 2: keep 7 of 8
            assert history.selected_a[-1].float().mean().item() == pytest.approx(0.875)
    margins = cross_fitted_margins(base, train, config, seed=0, epochs=1)
    assert margins.shape == (24,) and np.isfinite(margins).all()


def test_bench_outcomes_score_the_averaged_rewards_per_pair(tiny_backbone):
    from course_lib.reward.model import RewardModel, RewardModelConfig, frozen_model_with_new_head
    from course_lib.world import mini_reward_bench

    bench = mini_reward_bench(n_per_category=3, seed=0)
    base = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="frozen"))
    models = [frozen_model_with_new_head(base, head_hidden_size=8, seed=s) for s in (0, 1)]
    chosen, rejected = reproduction.bench_rewards(models, bench)
    outcomes = reproduction.bench_outcomes(models, bench)
    assert outcomes.shape == (len(bench),) and set(np.unique(outcomes)) <= {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(outcomes, np.where(chosen > rejected, 1.0, np.where(chosen < rejected, 0.0, 0.5)))
    single = reproduction.bench_outcomes(models[:1], bench)
    assert reproduction.score_models(models[:1], bench)["average"] == pytest.approx(
        np.mean([single[np.array(bench["category"]) == c].mean() for c in dict.fromkeys(bench["category"])]))


def test_paired_report_marks_only_differences_whose_interval_excludes_zero():
    rng = np.random.default_rng(0)
    config = json.dumps(ReproductionConfig(n_bench=200).to_dict(), sort_keys=True)
    rows = []
    for seed in range(3):
        truth = rng.random(800) < 0.6
        better = truth | (rng.random(800) < 0.5)  # clearly better on the same items
        same = truth ^ (rng.random(800) < 0.02)  # nearly the same
        for method, outcomes in (("single", truth), ("crm", better), ("self_review", same)):
            scores = {s: float(outcomes[i * 200:(i + 1) * 200].mean()) for i, s in enumerate(reproduction.SECTIONS)}
            rows.append({"profile": "standard", "method": method, "noise": "flip40", "noise_rate": 0.4, "seed": seed,
                         "average": float(np.mean(list(scores.values()))), **scores, "config": config, "device": "cpu",
                         "outcomes": encode_outcomes(outcomes.astype(float))})
    grid = sweep.Grid(rows)
    assert grid.compare("flip40", "crm", "single").excludes_zero
    assert not grid.compare("flip40", "self_review", "single").excludes_zero
    report = sweep.markdown_report(rows)
    assert "CRM minus the single RM +0." in report and "(higher)" in report
    assert "| self_review | " in report and "200 pairs per section" in report


def test_lora_sweep_gives_each_model_its_own_encoder_and_runs_a_frozen_twin(tmp_path, tiny_backbone):
    from course_lib.studies.reproduction import new_model
    from course_lib.reward.model import RewardModel, RewardModelConfig

    base = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="frozen"))
    config = profile_config("lora_cpu", lora_layers=(1,))
    first, second = new_model(base, config, seed=1), new_model(base, config, seed=2)
    assert first.encoder is not second.encoder and first.config.mode == "lora"
    assert not any(p.requires_grad or "lora_" in n for n, p in base.encoder.named_parameters())  # base untouched

    settings = dict(profile="lora_cpu", methods=["self_review", "peer_review"], noises=["flip40"], seeds=[0],
                    backbone=tiny_backbone, progress=False, n_pairs=24, n_bench=4, epochs=2, batch_size=8,
                    lora_layers=(1,))
    csv_path = sweep.run_sweep(tmp_path, **settings)
    assert csv_path.name == "crm_reproduction_lora.csv"
    frame = pd.read_csv(csv_path)
    assert sorted(zip(frame.method, frame.encoder)) == [("peer_review", "frozen"), ("peer_review", "lora"),
                                                        ("self_review", "frozen"), ("self_review", "lora")]
    report = (tmp_path / "crm_reproduction.md").read_text()
    assert "## Separate encoders" in report and "twin" in report
