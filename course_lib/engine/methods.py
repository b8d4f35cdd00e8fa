"""Robust training methods as composed objects: one registry for reward models and policies.

A *method* says how a model is trained on noisy preference labels, whatever the model is:

- :class:`OneModel`: one model, with the plain loss or a noise-robust one
  (``"conservative"``: label smoothing; ``"unbiased"``: the loss unbiased for flips at
  rate eta), or with early stopping on a noisy validation split;
- :class:`TwoModels`: two models trained together (:mod:`course_lib.engine.collaborative`):
  an ensemble, Co-teaching / CRM peer review, Self-Review or Co-teaching+, with or
  without CRM's easy-to-hard Curriculum Sort.

:data:`ROBUST_METHODS` names every method the course compares. The reward-model grid
(:mod:`course_lib.studies.reproduction`), Chapters 04-05 and Chapter 07's DPO methods
(:mod:`course_lib.policy.methods`) all read it; each turns ``loss`` into its own loss
settings (a BT loss for reward models, a DPO ``loss_type`` for policies).

Defined in Chapter 04 (curriculum: Chapter 05; DPO: Chapter 07).
"""

from __future__ import annotations

from dataclasses import dataclass

from .collaborative import EXCHANGES, CollaborativeConfig

ROBUST_LOSSES = ("standard", "conservative", "unbiased")


@dataclass(frozen=True)
class OneModel:
    """One model: ``loss`` (``"standard"``, ``"conservative"``, ``"unbiased"``), optionally ``early_stopping``."""

    loss: str = "standard"
    early_stopping: bool = False

    def __post_init__(self):
        if self.loss not in ROBUST_LOSSES:
            raise ValueError(f"OneModel: loss must be one of {ROBUST_LOSSES}, got {self.loss!r}")


@dataclass(frozen=True)
class TwoModels:
    """Two models that share their data by ``exchange`` (:data:`course_lib.engine.collaborative.EXCHANGES`),
    visiting pairs easy to hard with ``curriculum``."""

    exchange: str
    curriculum: bool = False

    def __post_init__(self):
        if self.exchange not in EXCHANGES:
            raise ValueError(f"TwoModels: exchange must be one of {EXCHANGES}, got {self.exchange!r}")

    def plan_config(self, eta: float, **fields) -> CollaborativeConfig:
        """The :class:`CollaborativeConfig` of this method for flip rate ``eta``; ``fields`` set its other fields
        (``ramp_epochs``, ``split_warmup``) and may replace these."""
        return CollaborativeConfig(**{"method": self.exchange, "noise_rate": eta, "curriculum": self.curriculum, **fields})


ROBUST_METHODS: dict[str, OneModel | TwoModels] = {
    "single": OneModel(),
    "conservative": OneModel(loss="conservative"),
    "unbiased": OneModel(loss="unbiased"),
    "early_stop": OneModel(early_stopping=True),
    "ensemble": TwoModels("ensemble"),
    "coteaching_plus": TwoModels("coteaching_plus"),
    "self_review": TwoModels("self_review"),
    "peer_review": TwoModels("peer_review"),
    "crm_self_review": TwoModels("self_review", curriculum=True),
    "crm": TwoModels("peer_review", curriculum=True),
}

