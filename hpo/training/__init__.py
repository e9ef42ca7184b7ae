"""Training a network: the loop (early stopping, pruning reports, EMA), optimizers and schedules, losses,
pixel scaling, device and precision.

May import config and the torch-free names of :mod:`hpo.objectives` (vocabulary, ``NonFiniteLoss``); used by
the objectives' training code, evaluation (retraining) and the runner (device).
"""
