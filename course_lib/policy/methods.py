"""Chapter 07's DPO methods under label noise, one function to train any of them.

``method`` (with ``eta`` the flip rate the method is told):

================== ==========================================================================
``dpo``            plain DPO on the labels as given
``cdpo``           conservative DPO: label smoothing ``eta`` (Mitchell 2023)
``rdpo``           robust DPO: the loss unbiased for flips at rate ``eta`` (Chowdhury et al. 2024)
``self_review_dpo`` two policies, each updated on the pairs IT finds easiest (the ablation)
``crm_dpo``        CRM-DPO (arXiv 2505.10597): two policies, each updated on the pairs its
                   PEER finds easiest (smallest DPO loss), keeping ``1 - eta`` of a batch
                   after a ramp, with the easy-to-hard curriculum
``rm_relabel``     DPO on pairs relabelled by a reward model (``scorer``), e.g. one
                   trained with CRM on the same noisy pairs (Chapters 04-05)
================== ==========================================================================

The two policies of a peer method start as copies of one SFT model; in the first epoch
(before any pair is dropped) each trains on its own half of every batch so that the two
disagree, which peer review needs (``CollaborativeConfig.split_warmup``).

Every method starts from a copy of the same reference policy, and reference log-probs
are looked up in one table (:class:`ReferenceScores`) computed once for all answers, so
methods differ only in what the table says they differ in.

Defined in Chapter 07.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch

from ..engine.collaborative import CollaborativeHistory, train_two_models
from ..engine.methods import ROBUST_METHODS, OneModel
from .dpo import DPOConfig, DPOTrainer
from .logprobs import score_sequences
from .onpolicy import relabel_pairs
from .sequences import Sequences

# Chapter 07's names for the course's robust methods (:data:`course_lib.engine.methods.ROBUST_METHODS`);
# rm_relabel is plain DPO on relabelled pairs.
DPO_METHODS = {"dpo": "single", "cdpo": "conservative", "rdpo": "unbiased", "self_review_dpo": "self_review",
               "crm_dpo": "crm", "rm_relabel": "single"}
# A one-model method's loss as DPOConfig fields, for the flip rate eta it is told.
DPO_LOSSES = {"standard": lambda eta: {}, "conservative": lambda eta: {"label_smoothing": eta},
              "unbiased": lambda eta: {"loss_type": "robust", "label_smoothing": eta}}


class ReferenceScores:
    """``log pi_ref(y | x)`` of every (prompt, answer) in ``pairs``, computed once and looked up by text."""

    def __init__(self, reference, tokenizer, pairs, config: DPOConfig):
        texts = sorted({(p, r) for p, c, rj in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]) for r in (c, rj)})
        sequences = Sequences.from_texts(tokenizer, [p for p, _ in texts], [r for _, r in texts], config.max_length)
        scores = score_sequences(reference, sequences, batch_size=config.eval_batch_size,
                                 precision=config.precision)
        self.table = dict(zip(texts, scores.tolist()))

    def lookup(self, pairs) -> torch.Tensor:
        """``(n_pairs, 2)`` reference log-probs of (chosen, rejected), for any labelling of the same answers."""
        try:
            return torch.tensor([[self.table[(p, c)], self.table[(p, r)]]
                                 for p, c, r in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"])])
        except KeyError as missing:
            raise ValueError(f"ReferenceScores: no reference log-prob for {missing}; build the table on these pairs") from None


@dataclass
class MethodRun:
    """What :func:`train_dpo_method` trained: the trainers (``trainers[i].model`` is policy ``i``), the
    pairs they trained on (relabelled for ``rm_relabel``), and a peer method's selections."""

    trainers: list[DPOTrainer]
    pairs: object
    selections: CollaborativeHistory | None = None

    @property
    def policy(self):
        """The (first) trained policy."""
        return self.trainers[0].model


def train_dpo_method(method: str, reference, tokenizer, pairs, config: DPOConfig, eta: float,
                     reference_scores: ReferenceScores | None = None, scorer=None, ramp_epochs: int = 1,
                     progress: bool = False):
    """Train ``method`` from a copy of ``reference`` on ``pairs``; returns a :class:`MethodRun` (two policies for the peer methods).

    ``config.seed`` seeds the run (the second policy of a peer method uses
    ``seed + 1``); ``eta`` is the flip rate the method is told; ``scorer`` is the
    reward function of ``rm_relabel``; ``ramp_epochs``: epochs over which the peer
    methods ramp the dropped share from 0 to ``eta``.

    Defined in Chapter 07.
    """
    if method not in DPO_METHODS:
        raise ValueError(f"train_dpo_method: method must be one of {tuple(DPO_METHODS)}, got {method!r}")
    recipe = ROBUST_METHODS[DPO_METHODS[method]]
    if method == "rm_relabel":
        if scorer is None:
            raise ValueError("train_dpo_method: rm_relabel needs a scorer(prompts, responses) -> rewards")
        pairs = relabel_pairs(pairs, scorer)
    loss = DPO_LOSSES[recipe.loss](eta) if isinstance(recipe, OneModel) else {}
    config = replace(config, progress=progress, **loss)
    reference_logps = None if reference_scores is None else reference_scores.lookup(pairs)

    def trainer(seed: int) -> DPOTrainer:
        return DPOTrainer(copy.deepcopy(reference), replace(config, seed=seed), pairs, tokenizer=tokenizer,
                          reference_logps=reference_logps)

    if isinstance(recipe, OneModel):
        single = trainer(config.seed)
        single.fit()
        return MethodRun([single], pairs)
    first, second = trainer(config.seed), trainer(config.seed + 1)
    selections = train_two_models(first, second, recipe.plan_config(eta, ramp_epochs=ramp_epochs, split_warmup=True),
                                  progress=progress)
    return MethodRun([first, second], pairs, selections)
