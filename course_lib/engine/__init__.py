"""How any model of the course is trained, whatever it is.

    runtime       device, precision, local random state, processes (DDP), checkpoints
    files         files and folders written atomically
    config        the run configuration every trainer extends
    learner       one model in training: its optimizer, its step, what the step records
    loop          the one training loop: epoch plans, selection, checkpoints and resume
    losses        preference and policy losses as pure functions (BT, robust BT, DPO family, GRPO)
    selection     small-loss selection, peer review, Self-Review, curriculum sort
    collaborative two learners trained together: ensemble, peer review, Self-Review, curriculum
    methods       the registry of robust methods (one model or two), shared by reward models and policies
    uncertainty   standard errors, Student-t and paired bootstrap intervals
    progress      progress bars that notebooks and terminals both show cleanly

Nothing here imports another package of the course.
"""
