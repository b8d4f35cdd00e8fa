"""course_lib: the library behind the reward-modeling course.

Packages, from the bottom up; each imports only from the packages above it in this
list (``tests/test_architecture.py`` checks it), and ``ARCHITECTURE.md`` says where
to change what:

    engine/     how any model is trained: runtime (device, precision, processes, random
                state, checkpoints), files written atomically, the one training loop and
                its run configuration, losses as pure functions, selection rules and the
                two-learner plans (peer review, curriculum), uncertainty
    world/      the generated preference world and its gold judge (Chapter 02), and the
                one validated loader of preference data (hub name, local file, or world)
    reward/     reward models (Chapters 01-06): Bradley-Terry fitting, the encoder + head
                model, pairs, the BT trainer, MiniRewardBench, calibration, noisy-pair
                detection, mixtures of BT heads
    policy/     the course's own policy (Chapters 07-08): tokenizer, GPT-2 model, sampler,
                SFT, DPO and GRPO trainers, rewards, evaluation by the gold judge; it sees
                reward models only as functions ``reward(prompts, responses)``
    studies/    experiments over many runs: the CRM reproduction grid and its sweep
    tooling/    running, checking, generating exercises, recording results, the site
    grading/    grading submitted exercise notebooks (never imported by a notebook)

Functions name the chapter that introduces them ("Defined in Chapter NN"), so a
reader can always go from code to explanation.
"""

from .engine import progress as _progress  # noqa: F401  first, so no library imports tqdm.auto before its warning is silenced

__version__ = "0.2.0"
