"""Table fragments for objectives that use hpo's own training loop and models (no torch here).

Re-exported by :mod:`hpo.objectives`.

:data:`TRAINING` lists what :func:`hpo.training.loop.train` reads (optimizer, schedule, batch size,
epochs, early stopping, L1); :data:`MLP` what :class:`hpo.models.MLP` reads. An objective composes
them with rows of its own and sets its own defaults::

    TABLE = (TRAINING + MLP).with_defaults(epochs=100, batch_size=32) + HyperparameterTable(...)

A new hyperparameter of the loop or the MLP is one row here plus the code that reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo.objectives._table import FieldError, Hyperparameter, HyperparameterTable, choice, flag, integer, number

if TYPE_CHECKING:
    from hpo.config import StudyConfig

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
SCHEDULES = ("none", "step", "exponential", "cosine", "onecycle", "plateau", "linear")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid")
INITS = ("kaiming", "xavier", "default")
# Image classifiers' vocabulary (hpo.training.losses and hpo.training.pixels implement it).
CLASSIFICATION_LOSSES = ("cross_entropy", "hinge")
PIXEL_SCALINGS = ("standardize", "unit", "center")
# Test-time augmentation (hpo.models.tta): the views whose logits are averaged at evaluation.
TTA_MODES = ("none", "flip", "flip_translate")

# Upper bounds keep values that pass validation from failing only inside a trial (an overflowing
# layer, a learning rate that turns every loss into inf): generous for real use, named in the error.
TRAINING = HyperparameterTable(
    Hyperparameter("optimizer", choice(*OPTIMIZERS), "adam", "the optimizer"),
    Hyperparameter("lr", number(gt=0, le=1e6), 1e-3, "learning rate (the peak of onecycle)"),
    Hyperparameter("momentum", number(ge=0, le=1), 0.9, "momentum of sgd and rmsprop"),
    Hyperparameter("nesterov", flag(), False, "Nesterov momentum (sgd)"),
    Hyperparameter("weight_decay", number(ge=0, le=100), 0.0, "L2 penalty (the optimizer's weight decay)"),
    Hyperparameter("l1", number(ge=0, le=100), 0.0, "L1 penalty on the weights, added to the loss"),
    Hyperparameter("batch_size", integer(ge=1), 64, "examples per optimizer step"),
    Hyperparameter("epochs", integer(ge=1), 50, "passes over the training rows (fewer if early stopping fires)"),
    Hyperparameter("lr_schedule", choice(*SCHEDULES), "none", "learning-rate schedule"),
    Hyperparameter(
        "lr_warmup_epochs",
        number(ge=0, le=1e6),
        0.0,
        "epochs (fractions too) of linear warmup from 0 to lr, per batch; with lr_schedule none or linear (0: off)",
    ),
    Hyperparameter(
        "lr_step_size",
        integer(ge=1, le=1_000_000, nullable=True),
        None,
        "step schedule: epochs between decays (null: a third of the epochs)",
    ),
    Hyperparameter(
        "lr_gamma",
        number(gt=0, le=10),
        0.1,
        "step and plateau schedules: the decay factor; exponential: the factor per epoch (near 1, e.g. 0.95)",
    ),
    Hyperparameter(
        "ema_decay",
        number(ge=0, lt=1),
        0.0,
        "exponential moving average of the weights, updated every step with this decay, "
        "is what is validated and kept (0: off; e.g. 0.99)",
    ),
    Hyperparameter(
        "early_stopping_patience",
        integer(ge=0, le=1_000_000),
        10,
        "epochs without improvement before stopping (0: off)",
    ),
    Hyperparameter(
        "early_stopping_min_delta",
        number(ge=0, le=1e6),
        0.0,
        "smallest change of the study metric that counts as an improvement for early stopping (0: any)",
    ),
)

MLP = HyperparameterTable(
    Hyperparameter("hidden_layers", integer(ge=0, le=1000), 2, "hidden layers of the MLP (0: a linear model)"),
    Hyperparameter("width", integer(ge=1, le=65536), 64, "units per hidden layer"),
    Hyperparameter("activation", choice(*ACTIVATIONS), "relu", "activation function"),
    Hyperparameter("dropout", number(ge=0, lt=1), 0.0, "dropout rate after each hidden layer"),
    Hyperparameter("batch_norm", flag(), False, "batch normalization after each hidden layer"),
    Hyperparameter("init", choice(*INITS), "default", "weight initialization (default: PyTorch's)"),
)


def check_schedule(config: StudyConfig) -> None:
    """Refuse exponential decay with the default lr_gamma: 0.1 is a step schedule's factor, and every
    epoch it would divide the learning rate by ten; and warmup with a schedule that sets the rate itself."""
    if _may_warm_up(config):
        others = [s for s in SCHEDULES if s not in ("none", "linear") and config.may_take("lr_schedule", s)]
        if others:
            where = "fixed.lr_schedule" if "lr_schedule" in config.fixed else "params.lr_schedule"
            raise FieldError(
                where,
                "lr_warmup_epochs applies to lr_schedule none or linear (which warm up per batch), "
                f"not {', '.join(others)}; "
                "keep lr_warmup_epochs 0 with those, or make it conditional with when: {lr_schedule: [none, linear]}",
            )
    if (
        config.may_take("lr_schedule", "exponential")
        and "lr_gamma" not in config.fixed
        and "lr_gamma" not in config.params
    ):
        where = "fixed.lr_schedule" if "lr_schedule" in config.fixed else "params.lr_schedule"
        raise FieldError(
            where,
            "lr_schedule exponential multiplies the learning rate by lr_gamma after every epoch; set lr_gamma "
            "(a factor near 1, e.g. 0.95): its default 0.1 is the step schedule's",
        )


def _may_warm_up(config: StudyConfig) -> bool:
    """Whether a trial may warm up with a schedule other than none/linear (a conditional warmup is fine)."""
    if "lr_warmup_epochs" in config.fixed:
        return bool(config.fixed["lr_warmup_epochs"])
    param = config.params.get("lr_warmup_epochs")
    if param is None:
        return False
    when = (param.when or {}).get("lr_schedule")
    return when is None or any(s not in ("none", "linear") for s in when)


def check_batch_statistics(config: StudyConfig, *, normalized_models: tuple[str, ...] = ()) -> None:
    """Refuse a study that may train batch norm on batches of one example.

    Batch norm computes statistics over the batch and a batch of one has none: PyTorch refuses it in
    training. `normalized_models` are values of `model` that always hold batch norm (a backbone).
    """
    one = config.may_take("batch_size", 1)
    normed = config.may_take("batch_norm", True) or any(config.may_take("model", name) for name in normalized_models)
    if one and normed:
        where = "fixed.batch_size" if "batch_size" in config.fixed else "params.batch_size"
        raise FieldError(
            where,
            "batch_size 1 cannot train with batch norm "
            "(batch_norm: true, or a model built with it such as a torchvision backbone): "
            "a batch of one has no batch statistics; use batch_size >= 2, or batch_norm: false",
        )


__all__ = [
    "ACTIVATIONS",
    "CLASSIFICATION_LOSSES",
    "INITS",
    "MLP",
    "OPTIMIZERS",
    "PIXEL_SCALINGS",
    "SCHEDULES",
    "TRAINING",
    "TTA_MODES",
    "check_batch_statistics",
    "check_schedule",
]
