"""The reproduction grid: one cell per (method, noise, seed), summaries, and the resumable sweep."""

import json

import numpy as np

import pandas as pd
import pytest

from course_lib import reproduction
from course_lib.reproduction import METHODS, ReproductionConfig, check_methods, profile_config, summarize
from course_lib.tooling import sweep
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


def test_sweep_resumes_and_refuses_to_mix_settings(tmp_path, tiny_backbone, monkeypatch):
    calls = []
    real_run_cell = reproduction.run_cell

    def counting_run_cell(*args, **kwargs):
        calls.append(args[:3])
        return real_run_cell(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_cell", counting_run_cell)
    settings = dict(profile="smoke", methods=["single", "crm"], noise_rates=[0.0, 0.4], seeds=[0], backbone=tiny_backbone,
                    progress=False, n_pairs=24, n_bench=4, epochs=2, batch_size=8, head_hidden_size=8)
    csv_path = sweep.run_sweep(tmp_path, **settings)
    frame = pd.read_csv(csv_path)
    assert sorted(zip(frame.method, frame.noise_rate)) == [("crm", 0.0), ("crm", 0.4), ("single", 0.0), ("single", 0.4)]
    assert frame["average"].between(0, 1).all() and set(reproduction.SECTIONS) <= set(frame.columns)
    assert json.loads(frame.config[0])["n_pairs"] == 24 and (frame.profile == "smoke").all()
    assert len(calls) == 4
    report = (tmp_path / "crm_reproduction.md").read_text()
    assert "| crm |" in report and "noise 0.4" in report and "`chat_hard`" in report
    assert (tmp_path / "crm_reproduction.png").stat().st_size > 1000

    sweep.run_sweep(tmp_path, **{**settings, "seeds": [0, 1], "methods": ["single"]})  # only the new cells run
    assert calls[4:] == [("single", 0.0, 1), ("single", 0.4, 1)]
    assert len(pd.read_csv(csv_path)) == 6

    with pytest.raises(ValueError, match="other settings"):
        sweep.run_sweep(tmp_path, **{**settings, "epochs": 3})
    assert len(pd.read_csv(csv_path)) == 6  # nothing lost


def test_sweep_command_rejects_unknown_methods(tmp_path, capsys):
    assert course_main(["sweep", "--methods", "magic", "--output", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert set(METHODS) >= {"single", "ensemble", "peer_review", "self_review", "crm"}


def test_every_method_trains_and_cross_fitting_scores_every_pair(tiny_backbone):
    from course_lib.collaborative import CollaborativeHistory
    from course_lib.reproduction import cross_fitted_margins, noisy_pairs, train_method
    from course_lib.reward_model import RewardModel, RewardModelConfig
    from course_lib.training import TrainingHistory

    config = ReproductionConfig(n_pairs=24, n_bench=4, epochs=2, batch_size=8, head_hidden_size=8)
    base = RewardModel(RewardModelConfig(backbone=tiny_backbone, mode="frozen"))
    train = noisy_pairs(config, 0.25, seed=0)
    assert sum(train["is_flipped"]) > 0
    for method in METHODS:
        models, history = train_method(method, base, train, config, eta=0.25, seed=0)
        two = method in ("ensemble", "self_review", "peer_review", "crm")
        assert len(models) == (2 if two else 1)
        assert isinstance(history, CollaborativeHistory if two else TrainingHistory)
        if method in ("self_review", "peer_review", "crm"):  # epoch 1 of a 2-epoch ramp forgets eta / 2: keep 7 of 8
            assert history.selected_a[-1].float().mean().item() == pytest.approx(0.875)
    margins = cross_fitted_margins(base, train, config, seed=0, epochs=1)
    assert margins.shape == (24,) and np.isfinite(margins).all()
