"""``course sweep`` with independent minds: reward models made of two SFT policies of different seeds.

Everything runs on tiny SFT policies (1 layer x 32, a 400-id tokenizer, one epoch on 32 pairs), a few dozen
training pairs and 4 benchmark pairs per section.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib.policy import policy_config
from course_lib.studies import minds as minds_module
from course_lib.studies import reproduction, sweep
from course_lib.studies.minds import INDEPENDENT_CSV_NAME, MindSettings
from course_lib.studies.reproduction import SECTIONS, ReproductionConfig, encode_outcomes, profile_config
from course_lib.tooling.cli import SWEEP_PROFILES
from course_lib.tooling.cli import main as course_main

from policy_helpers import TINY, one_thread  # noqa: F401  (one_thread: a module fixture)

TINY_MINDS = MindSettings(policy=TINY, vocab_size=400, tokenizer_pairs=300, sft_pairs=32, sft_epochs=1,
                          sft_batch_size=16)
SIZES = dict(n_pairs=24, n_bench=4, epochs=2, batch_size=8, max_length=96)


def test_profiles_and_default_minds_are_the_courses_standard_ones():
    for name in ("independent_cpu", "independent"):
        config = profile_config(name)
        assert config.encoder == "full_copy" and config.head_hidden_size is None and config.max_length <= 160
    assert set(SWEEP_PROFILES) == set(reproduction.PROFILES)  # the command offers every profile
    standard = MindSettings()  # Chapter 07's standard SFT policy, its tokenizer and SFT run
    assert standard.policy == policy_config("standard")
    assert (standard.vocab_size, standard.tokenizer_pairs, standard.sft_pairs, standard.sft_epochs) == (2000, 3000, 6400, 4)
    for seed in range(20):  # two minds per seed, never the stream the reward models train on, never shared
        a, b = MindSettings.policy_seeds(seed)
        assert a != b and seed not in (a, b)
    every = [p for seed in range(20) for p in MindSettings.policy_seeds(seed)]
    assert len(every) == len(set(every))


def test_sweep_with_independent_minds_writes_its_rows_resumes_and_starts_two_minds_apart(tmp_path, monkeypatch):
    calls, built = [], []
    real_run_cell, real_new_model = reproduction.run_cell, reproduction.new_model

    def counting_run_cell(method, noise, seed, *args, **kwargs):
        calls.append((method, noise.name, seed))
        return real_run_cell(method, noise, seed, *args, **kwargs)

    def recording_new_model(base, config, seed):
        model = real_new_model(base, config, seed)
        built.append({name: p.detach().clone() for name, p in model.encoder.named_parameters()})
        return model

    monkeypatch.setattr(sweep, "run_cell", counting_run_cell)
    monkeypatch.setattr(reproduction, "new_model", recording_new_model)
    settings = dict(profile="independent_cpu", methods=["self_review", "peer_review"], noises=["flip40"], seeds=[0],
                    minds=TINY_MINDS, cache_dir=tmp_path / "cache", progress=False, **SIZES)
    csv_path = sweep.run_sweep(tmp_path, **settings)
    assert csv_path.name == INDEPENDENT_CSV_NAME
    frame = pd.read_csv(csv_path)
    assert sorted(frame.method) == ["peer_review", "self_review"] and (frame.encoder == "full_copy").all()
    assert (frame.profile == "independent_cpu").all() and frame.device.str.startswith("CPU").all()
    config = json.loads(frame.config[0])
    assert config["n_pairs"] == 24 and config["encoder"] == "full_copy"
    assert config["minds"]["policy"]["n_embd"] == 32 and config["minds"]["sft_pairs"] == 32
    assert frame.selection_agreement.between(0, 1).all() and frame.selection_precision.between(0, 1).all()
    assert len(list((tmp_path / "cache").glob("sft-*"))) == 2, "two policies per seed, each SFT run cached"

    # The two models of a two-model run start from two backbones: their encoders differ at step 0.
    assert len(built) == 4
    for first, second in (built[0:2], built[2:4]):
        assert first.keys() == second.keys()
        assert not any(torch.equal(first[name], second[name]) for name in first)
    assert all(torch.equal(built[0][name], built[2][name]) for name in built[0])  # mind A is one policy per seed

    report = (tmp_path / "crm_reproduction.md").read_text()
    assert "## Independent minds" in report and "peer review minus Self-Review" in report
    assert "(here 1 and 2)" in report

    # A rerun skips the finished cells; a one-model method starts from mind A.
    sweep.run_sweep(tmp_path, **{**settings, "methods": ["single", "self_review", "peer_review"]})
    assert calls == [("self_review", "flip40", 0), ("peer_review", "flip40", 0), ("single", "flip40", 0)]
    assert len(built) == 5 and all(torch.equal(built[4][name], built[0][name]) for name in built[0])
    assert len(pd.read_csv(csv_path)) == 3

    with pytest.raises(ValueError, match="other settings"):  # other policies: not mixed into the same file
        sweep.run_sweep(tmp_path, **{**settings, "minds": MindSettings(**{**TINY_MINDS.to_dict(), "policy": TINY,
                                                                          "sft_epochs": 2})})
    assert len(pd.read_csv(csv_path)) == 3


def test_bad_settings_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="backbone"):
        sweep.run_sweep(tmp_path, profile="independent_cpu", backbone="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="minds"):
        sweep.run_sweep(tmp_path, profile="smoke", minds=TINY_MINDS)
    with pytest.raises(ValueError, match=r"max_length must be in \[3, 160\]"):
        sweep.run_sweep(tmp_path, profile="independent_cpu", minds=TINY_MINDS, max_length=200)
    with pytest.raises(ValueError, match="sft_pairs"):
        MindSettings(sft_pairs=0)
    with pytest.raises(ValueError, match="PolicyConfig"):
        MindSettings(policy="standard")
    with pytest.raises(ValueError, match="grid seeds"):
        MindSettings.policy_seeds(-1)
    assert course_main(["sweep", "--profile", "independent_cpu", "--methods", "magic", "--output", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was trained or written


def synthetic_rows(encoder: str, methods, config: str, better: dict, agreement: float) -> list[dict]:
    """Rows of 3 seeds at 40% flips and BT labels; ``better[noise]``: the methods clearly above the rest there."""
    rng = np.random.default_rng(0)
    rows = []
    for noise in ("flip40", "bt"):
        for seed in range(3):
            truth = rng.random(400) < 0.6
            for method in methods:
                outcomes = truth | (rng.random(400) < 0.5) if method in better[noise] else truth ^ (rng.random(400) < 0.02)
                scores = {s: float(outcomes[i * 100:(i + 1) * 100].mean()) for i, s in enumerate(SECTIONS)}
                two = method not in ("single", "early_stop")
                selects = two and method != "ensemble"
                rows.append({"profile": "independent_cpu", "method": method, "noise": noise, "noise_rate": 0.4,
                             "seed": seed, "eta": 0.4, "average": float(np.mean(list(scores.values()))), **scores,
                             "selection_agreement": agreement if selects else np.nan,
                             "selection_precision": 0.8 if selects else np.nan, "outcomes": encode_outcomes(outcomes),
                             "seconds": 1.0, "encoder": encoder, "device": "CPU (x86_64, 2 threads)", "config": config})
    return rows


def test_report_section_answers_the_papers_question_from_the_intervals(tmp_path):
    methods = ["single", "early_stop", "ensemble", "self_review", "peer_review", "crm_self_review", "crm"]
    config = json.dumps({**ReproductionConfig(n_bench=100, encoder="full_copy").to_dict(),
                         "minds": MindSettings(policy=TINY).to_dict()}, sort_keys=True)
    # peer review and CRM clearly better at 40% flips; nothing differs on BT labels
    rows = synthetic_rows("full_copy", methods, config, {"flip40": {"peer_review", "crm"}, "bt": set()}, 0.7)
    frozen_config = json.dumps(ReproductionConfig(n_bench=100).to_dict(), sort_keys=True)
    frozen = [{**r, "profile": "standard"} for r in
              synthetic_rows("frozen", ["single", "self_review"], frozen_config, {"flip40": set(), "bt": set()}, 0.99)]
    pd.DataFrame(rows).to_csv(tmp_path / INDEPENDENT_CSV_NAME, index=False)
    pd.DataFrame(frozen).to_csv(tmp_path / sweep.CSV_NAME, index=False)
    sweep.write_report(tmp_path)
    report = (tmp_path / "crm_reproduction.md").read_text()
    section = report[report.index("## Independent minds"):]
    flip40, bt = (line for line in section.splitlines() if line.startswith(("- **40% flips**", "- **BT-sampled")))
    assert "peer review minus Self-Review +0." in flip40 and "(higher)" in flip40
    assert "CRM minus the ensemble +0." in flip40
    assert "(higher)" not in bt and bt.count("(within noise)") == 3
    assert "40% flips: higher without the curriculum, higher with it" in section
    assert "2 of 4 comparisons higher, 0 lower, 2 within noise" in section
    assert "Wall time: 0.7 min for the 42 runs" in section  # 1 s each
    assert "| CRM - ensemble (the reviewers' baseline" in section
    assert "| peer_review | 40% flips |" in section and "| 0.700 | 0.800 |" in section
    assert "| 0.990 |" in section  # the same method's agreement on one frozen encoder, for comparison
    assert "(here 1 and 2, 3 and 4, 5 and 6)" in section
    assert "100 pairs per section" in section
    assert "## Headline" in report  # the main grid's report is still there, above the section

    pd.DataFrame(rows).to_csv(tmp_path / INDEPENDENT_CSV_NAME, index=False)
    (tmp_path / sweep.CSV_NAME).unlink()
    sweep.write_report(tmp_path)  # the section alone, without a main grid
    alone = (tmp_path / "crm_reproduction.md").read_text()
    assert "## Independent minds" in alone and "one frozen encoder: agreement" not in alone


def test_minds_are_built_once_per_seed(monkeypatch):
    made = []
    monkeypatch.setattr(minds_module, "sft_policy", lambda settings, tokenizer, seed, device, cache_dir:
                        made.append(seed) or minds_module.build_policy(settings.policy, tokenizer, seed=seed))
    builder = minds_module.PolicyMinds(TINY_MINDS, max_length=64)
    first = builder.bases(0)
    assert builder.bases(0) is first and made == [1, 2]
    builder.bases(1)
    assert made == [1, 2, 3, 4]
    assert all(base.config.max_length == 64 and base.config.mode == "full" for base in first)


@pytest.mark.parametrize("better, says", [
    ({"flip40": set(), "bt": set()}, "the peer exchange is within noise in every condition"),
    ({"flip40": {"self_review", "crm_self_review"}, "bt": set()}, "where an interval excludes zero, the peer exchange hurts"),
    ({"flip40": {"self_review", "crm_self_review"}, "bt": {"peer_review", "crm"}}, "helps in some conditions and hurts"),
])
def test_report_section_says_what_the_intervals_show_whatever_they_are(better, says):
    methods = ["self_review", "peer_review", "crm_self_review", "crm"]
    config = json.dumps({**ReproductionConfig(n_bench=100, encoder="full_copy").to_dict(),
                         "minds": MindSettings(policy=TINY).to_dict()}, sort_keys=True)
    section = "\n".join(minds_module.independent_section(synthetic_rows("full_copy", methods, config, better, 0.7)))
    assert says in section


def test_the_command_runs_the_independent_grid(tmp_path, monkeypatch, capsys):
    """``course sweep --profile independent_cpu`` (here with the profile's sizes and the policies made tiny)."""
    monkeypatch.setitem(reproduction.PROFILES, "independent_cpu", profile_config("independent_cpu", **SIZES))
    monkeypatch.setattr(sweep, "MindSettings", lambda: TINY_MINDS)
    argv = ["sweep", "--profile", "independent_cpu", "--methods", "single", "--noise", "flip40", "--seeds", "0",
            "--output", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert course_main(argv) == 0
    assert INDEPENDENT_CSV_NAME in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / INDEPENDENT_CSV_NAME)
    assert list(frame.method) == ["single"] and list(frame.encoder) == ["full_copy"]
    assert "## Independent minds" in (tmp_path / "crm_reproduction.md").read_text()
