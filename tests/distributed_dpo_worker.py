"""DPO and CRM-DPO with the course's loop in one or several processes; rank 0 saves what came out.

Run by tests/test_distributed.py as ``python distributed_dpo_worker.py OUT`` and as
``torchrun --standalone --nproc-per-node 2 distributed_dpo_worker.py OUT`` on the same
pairs: the policy is a tiny GPT-2 (its own reference), trained with plain DPO and with
CRM-DPO (two policies, peer selection on gathered per-pair losses, the curriculum).
"""

from __future__ import annotations

import copy
import os
import sys

import torch

from course_lib.engine.collaborative import CollaborativeConfig, train_two_models
from course_lib.policy import PolicyConfig, build_policy, train_tokenizer, world_texts
from course_lib.policy.dpo import DPOConfig, DPOTrainer
from course_lib.engine.runtime import rank, world_size
from course_lib.world import WorldConfig, generate_preference_pairs


def main(output: str) -> None:
    tokenizer = train_tokenizer(world_texts(200), vocab_size=300)
    policy = build_policy(PolicyConfig(n_layer=1, n_embd=32, n_head=2, n_positions=160), tokenizer, seed=0)
    pairs = generate_preference_pairs(WorldConfig(n_pairs=24, seed=0, noise_rate=0.3))
    config = DPOConfig(epochs=2, batch_size=8, lr=1e-3, progress=False)
    single = DPOTrainer(copy.deepcopy(policy), config, pairs, tokenizer=tokenizer)
    single.fit()
    a, b = (DPOTrainer(copy.deepcopy(policy), DPOConfig(**{**vars(config), "seed": s}), pairs, tokenizer=tokenizer) for s in (0, 1))
    crm = train_two_models(a, b, CollaborativeConfig(noise_rate=0.3, ramp_epochs=1, curriculum=True, split_warmup=True),
                           progress=False)
    result = {
        "world_size": world_size(),
        "single_margins": torch.from_numpy(single.history.pair_margin),
        "single_step_loss": torch.tensor(single.history.step_loss),
        "single_log_ratios": torch.tensor(single.log_ratios),
        "crm_selected_a": crm.selected_a,
        "crm_selected_b": crm.selected_b,
        "crm_margins_b": torch.from_numpy(crm.history_b.pair_margin),
    }
    if rank() == 0:
        torch.save(result, output)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: a gloo group torn down at exit can abort the process (SIGABRT)


if __name__ == "__main__":
    main(sys.argv[1])
