"""Reward models: from Bradley-Terry scores to robust and personalized reward models.

    bradley_terry Chapter 01: BT fitting, Elo, arenas, bootstrap
    backbone      Chapter 02: loading an encoder and its tokenizer, pairs as token ids, padding
    model         Chapter 02: encoder + scalar head (frozen / LoRA / full), scoring, saving;
                  a reward model as a reward function for the policy chapters
    pairs         Chapter 02: preference pairs encoded once, batches
    training      Chapter 02: the Bradley-Terry trainer, a learner of the loop
    benchmark     Chapter 02: per-category accuracy, MiniRewardBench, RewardBench
    calibration   Chapter 02: reliability table, ECE, NLL and temperature scaling (also Chapter 06)
    detection     Chapter 03: noisy-pair detectors and their scores; noise-rate estimate
    mixtures      Chapter 06: mixtures of BT heads with a context router (MiCRo-style)
"""
