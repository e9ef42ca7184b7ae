"""Every hyperparameter's default, in one visible place (no torch, no optuna).

A trial's hyperparameters are these defaults, overridden by the objective's own defaults, then by the
study file's `fixed` values, then by what the sampler drew. Only the last two are MLflow params; the
full resolved set travels with the checkpoint so a model can be rebuilt exactly.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # model
    "model": "mlp",
    "hidden_layers": 2,
    "width": 64,
    "activation": "relu",
    "dropout": 0.0,
    "batch_norm": False,
    "init": "default",
    # optimisation
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,  # L2
    "l1": 0.0,
    "batch_size": 64,
    "epochs": 50,
    "lr_schedule": "none",
    "lr_step_size": None,  # step schedule: epochs between decays; None = a third of the epochs
    "lr_gamma": 0.1,
    "early_stopping_patience": 10,  # 0 turns early stopping off
    "label_smoothing": 0.0,
    # convolutional models
    "conv_blocks": 3,
    "convs_per_block": 1,
    "filters": 32,
    "filters_growth": 2.0,
    "kernel_size": 3,
    "stride": 1,
    "padding": "same",  # an int, or "same" to keep the spatial size at stride 1
    "dilation": 1,
    "pooling": "max",
    "global_pool": True,  # True: global average pooling; False: flatten
    "augment_flip": False,
    "augment_crop": 0,  # pixels of padding for random crops; 0 = off
    "augment_cutout": 0,  # side of the erased square in pixels; 0 = off
    "augment_jitter": 0.0,  # colour jitter strength (brightness/contrast/saturation); 0 = off
    "augment_rotation": 0.0,  # degrees; 0 = off
    "backbone_weights": None,
    "freeze_backbone": False,
}

OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "boston": {"model": "mlp", "batch_size": 32, "epochs": 100, "early_stopping_patience": 15},
    "cifar10": {"model": "cnn", "batch_size": 128, "epochs": 10, "early_stopping_patience": 5},
}


def resolve(objective: str, chosen: dict[str, Any]) -> dict[str, Any]:
    """The full set a trial trains with: built-in defaults < objective defaults < fixed and sampled."""
    return {**DEFAULTS, **OBJECTIVE_DEFAULTS.get(objective, {}), **chosen}
