"""course_lib: the library behind the reward-modeling course.

Each module has one job and imports only from modules below it:

    results                   notebooks record their key numbers and figures
    uncertainty               standard errors of accuracies, Student-t and paired bootstrap intervals (items, seeds)
    runtime                   device, precision, local random state, processes (DDP), checkpoints
    losses                    preference losses as pure functions (BT, conservative, unbiased)
    bradley_terry             Chapter 01: BT fitting, Elo, arenas, bootstrap
    world/                    Chapter 02: the generated preference world and gold judge
    data                      Chapter 02: one validated loader for preference data
    reward_model              Chapter 02: encoder + scalar head, frozen / LoRA / full
    pairs                     Chapter 02: preference pairs encoded once, batches, epoch order
    loop                      Chapter 02: the one training loop (learners, epoch plans, statistics, resume)
    training                  Chapter 02: the Bradley-Terry trainer, a learner of the loop
    evaluation                Chapter 02: per-category accuracy, MiniRewardBench, RewardBench
    calibration               Chapter 02: reliability table, ECE, NLL and temperature scaling (also Chapter 06)
    detection                 Chapter 03: noisy-pair detectors and their scores; noise-rate estimate
    selection                 Chapters 04-05: small-loss selection, peer review, curriculum sort
    collaborative             Chapters 04-05: two reward models trained together (ensemble, CRM), an epoch plan
    reproduction              Chapter 05: the CRM grid (method x noise x seed), one cell at a time
    mixtures                  Chapter 06: mixtures of BT heads with a context router (MiCRo-style), a learner
    policy/                   Chapter 07: the course's own policy: tokenizer, GPT-2 model, KV-cache sampler,
                              sequences and log-probs, SFT and DPO learners, on-policy pairs, gold-judge
                              evaluation, DPO methods under label noise (CRM-DPO)
    tooling/                  running, checking, exercise generation, grading

Functions name the chapter that introduces them ("Defined in Chapter NN"), so a
reader can always go from code to explanation.
"""

from . import progress as _progress  # noqa: F401  first, so no library imports tqdm.auto before its warning is silenced

__version__ = "0.2.0"
