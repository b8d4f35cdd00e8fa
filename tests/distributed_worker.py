"""Train with the course's loop in one or several processes and save what came out (rank 0).

Run by tests/test_distributed.py twice on the same data, as ``python distributed_worker.py
BACKBONE OUT`` and as ``torchrun --standalone --nproc-per-node 2 distributed_worker.py
BACKBONE OUT``: a single reward model, and two models with CRM peer review and the
curriculum (selection on gathered per-pair losses and margins).

The heads are linear: every parameter that moves a margin gets a real gradient. (An
MLP head has parameters whose true gradient is about zero, such as hidden units that
are rarely active; Adam divides their rounding noise by its own tiny scale, and two
summation orders then drift apart by about 1e-3 in a few steps, which is not a DDP
error.)
"""

from __future__ import annotations

import sys

import torch

from course_lib.engine.collaborative import CollaborativeConfig, all_pair_margins, train_two_models
from course_lib.reward.model import RewardModel, RewardModelConfig, frozen_model_with_new_head
from course_lib.engine.runtime import rank, world_size
from course_lib.reward.training import BradleyTerryTrainer, TrainingConfig

TOPICS = ["tea", "maps", "bikes", "rain", "chess", "bread", "knots", "stars", "lamps", "boats"]
PAIRS = [
    {"prompt": f"Question {i} about {topic}?", "chosen": f"A careful answer about {topic}, number {i}.",
     "rejected": f"No idea, {i}." if i % 5 else f"A careful answer about {topic}."}
    for i, topic in enumerate(TOPICS * 4)
]
EVAL = PAIRS[::3]


def main(backbone: str, output: str) -> None:
    base = RewardModel(RewardModelConfig(backbone=backbone, mode="frozen"))

    def trainer(seed: int) -> BradleyTerryTrainer:
        config = TrainingConfig(lr=1e-2, epochs=3, batch_size=10, seed=seed, progress=False)
        return BradleyTerryTrainer(frozen_model_with_new_head(base, seed=seed), config, PAIRS, eval_dataset=EVAL)

    single = trainer(1)
    single.fit()
    a, b = trainer(1), trainer(2)
    crm = train_two_models(a, b, CollaborativeConfig(noise_rate=0.3, ramp_epochs=1, curriculum=True), progress=False)
    result = {
        "world_size": world_size(),
        "single_margins": torch.from_numpy(single.history.pair_margin),
        "single_final_margins": all_pair_margins(single),
        "single_eval_accuracy": single.history.eval_metrics[-1]["accuracy"],
        "single_step_loss": torch.tensor(single.history.step_loss),
        "crm_selected_a": crm.selected_a,
        "crm_selected_b": crm.selected_b,
        "crm_margins_a": torch.from_numpy(crm.history_a.pair_margin),
        "crm_final_margins_b": all_pair_margins(b),
        "crm_eval_accuracy": [a.evaluate()["accuracy"], b.evaluate()["accuracy"]],
    }
    if rank() == 0:
        torch.save(result, output)


if __name__ == "__main__":
    main(*sys.argv[1:3])
