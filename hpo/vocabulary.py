"""What each objective understands: hyperparameter names, metrics and their directions.

Kept free of torch and optuna so that validating a study file stays instant and importable anywhere.
The objectives themselves live in :mod:`hpo.objectives` and must agree with these tables (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMON_HYPERPARAMETERS: frozenset[str] = frozenset(
    {
        "model",
        "hidden_layers",
        "width",
        "activation",
        "dropout",
        "batch_norm",
        "init",
        "optimizer",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "l1",
        "batch_size",
        "epochs",
        "lr_schedule",
        "lr_step_size",
        "lr_gamma",
        "early_stopping_patience",
        "label_smoothing",
    }
)

CONV_HYPERPARAMETERS: frozenset[str] = frozenset(
    {
        "conv_blocks",
        "convs_per_block",
        "filters",
        "filters_growth",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "pooling",
        "global_pool",
        "augment_flip",
        "augment_crop",
        "augment_cutout",
        "augment_jitter",
        "augment_rotation",
        "backbone_weights",
        "freeze_backbone",
    }
)

# Accepted values of the categorical-like hyperparameters, checked before any training starts.
CHOICES: dict[str, tuple[object, ...]] = {
    "activation": ("relu", "leaky_relu", "elu", "gelu", "tanh"),
    "init": ("kaiming", "xavier", "default"),
    "optimizer": ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"),
    "lr_schedule": ("none", "step", "cosine", "onecycle", "plateau"),
    "pooling": ("max", "avg", "none"),
}

BACKBONES: tuple[str, ...] = ("resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0")


@dataclass(frozen=True)
class ObjectiveSpec:
    """The vocabulary of one objective: what a study file may name for it."""

    name: str
    hyperparameters: frozenset[str]
    # metric name -> the direction in which it improves
    metrics: dict[str, str]
    default_metric: str
    models: tuple[str, ...]
    data_options: frozenset[str] = field(default_factory=frozenset)


OBJECTIVE_SPECS: dict[str, ObjectiveSpec] = {
    "boston": ObjectiveSpec(
        name="boston",
        hyperparameters=COMMON_HYPERPARAMETERS,
        metrics={
            "val_rmse": "minimize",
            "val_mse": "minimize",
            "val_mae": "minimize",
            "val_r2": "maximize",
            "val_loss": "minimize",
            "n_params": "minimize",
        },
        default_metric="val_rmse",
        models=("mlp",),
    ),
    "cifar10": ObjectiveSpec(
        name="cifar10",
        hyperparameters=COMMON_HYPERPARAMETERS | CONV_HYPERPARAMETERS,
        metrics={
            "val_acc": "maximize",
            "val_loss": "minimize",
            "n_params": "minimize",
            "train_seconds": "minimize",
        },
        default_metric="val_acc",
        models=("mlp", "cnn", "resnet", *BACKBONES),
    ),
}
