"""The registry of robust methods and the noise specification: one definition, read by every wing."""

from __future__ import annotations

import pytest

from course_lib.engine.collaborative import CollaborativeConfig
from course_lib.engine.methods import ROBUST_METHODS, OneModel, TwoModels
from course_lib.policy.methods import DPO_LOSSES, DPO_METHODS
from course_lib.studies.reproduction import BT_LOSSES, SWEEP_METHODS, Noise, parse_noise


def test_every_method_is_one_model_or_two_and_each_wing_knows_its_losses():
    assert SWEEP_METHODS == tuple(ROBUST_METHODS)
    for name, method in ROBUST_METHODS.items():
        assert isinstance(method, (OneModel, TwoModels)), name
        if isinstance(method, OneModel):
            assert method.loss in BT_LOSSES and method.loss in DPO_LOSSES, name
    assert set(DPO_METHODS.values()) <= set(ROBUST_METHODS)
    assert ROBUST_METHODS["crm"] == TwoModels("peer_review", curriculum=True)
    assert ROBUST_METHODS[DPO_METHODS["crm_dpo"]] is ROBUST_METHODS["crm"]


def test_losses_translate_the_flip_rate_for_each_wing():
    assert BT_LOSSES["unbiased"](0.3) == {"loss": "unbiased", "assumed_flip_rate": 0.3}
    assert DPO_LOSSES["unbiased"](0.3) == {"loss_type": "robust", "label_smoothing": 0.3}
    assert BT_LOSSES["standard"](0.3) == {} == DPO_LOSSES["standard"](0.3)


def test_two_model_methods_build_their_plan():
    plan = ROBUST_METHODS["crm_self_review"].plan_config(0.4, ramp_epochs=2, split_warmup=True)
    assert plan == CollaborativeConfig("self_review", 0.4, 2, curriculum=True, split_warmup=True)
    assert ROBUST_METHODS["crm"].plan_config(0.2, ramp_epochs=1, curriculum=False).curriculum is False
    with pytest.raises(ValueError, match="exchange must be one of"):
        TwoModels("majority_vote")
    with pytest.raises(ValueError, match="loss must be one of"):
        OneModel(loss="focal")


@pytest.mark.parametrize("noise, name, rate", [
    (0.0, "clean", 0.0), (0.2, "flip20", 0.2), ("flip40", "flip40", 0.4), ("flip25", "flip25", 0.25),
    ("clean", "clean", None), ("bt", "bt", None), ("length", "length", None),
])
def test_a_noise_is_parsed_once_into_name_fields_and_rate(noise, name, rate):
    parsed = parse_noise(noise)
    assert (parsed.name, parsed.flip_rate) == (name, rate)
    assert parse_noise(parsed) is parsed
    assert isinstance(parsed, Noise) and dict(parsed.fields).get("noise_rate") == rate


@pytest.mark.parametrize("noise, message", [("gaussian", "unknown noise"), ("flipx", "unknown noise"),
                                            (0.6, "noise rates must be in")])
def test_bad_noises_are_named(noise, message):
    with pytest.raises(ValueError, match=message):
        parse_noise(noise)
