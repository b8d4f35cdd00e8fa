"""Experiments made of many training runs, with their committed results.

    reproduction  Chapter 05: one cell of the CRM grid (method x noise x seed), scored on MiniRewardBench
    sweep         ``course sweep``: the whole grid, resumable, with its report
    grid          the sweep's rows as paired comparisons, and the report's shared tables
    minds         independent minds for the grid: reward models on two SFT policies of different seeds
    policy_reward Chapter 04: reward models made of the SFT policy's transformer (InstructGPT), saving them
"""
