"""Table fragments for objectives that use hpo's own training loop and models (no torch here).

Re-exported by :mod:`hpo.objectives`.

:data:`TRAINING` lists what :func:`hpo.training.loop.train` reads (optimizer, schedule, batch size,
epochs, early stopping, L1); :data:`MLP` what :class:`hpo.models.MLP` reads. An objective composes
them with rows of its own and sets its own defaults::

    TABLE = (TRAINING + MLP).with_defaults(epochs=100, batch_size=32) + HyperparameterTable(...)

A new hyperparameter of the loop or the MLP is one row here plus the code that reads it.
"""

from __future__ import annotations

from hpo.objectives._table import Hyperparameter, HyperparameterTable, choice, flag, integer, number

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
SCHEDULES = ("none", "step", "cosine", "onecycle", "plateau")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh")
INITS = ("kaiming", "xavier", "default")

TRAINING = HyperparameterTable(
    Hyperparameter("optimizer", choice(*OPTIMIZERS), "adam", "the optimizer"),
    Hyperparameter("lr", number(gt=0), 1e-3, "learning rate (the peak of onecycle)"),
    Hyperparameter("momentum", number(ge=0, le=1), 0.9, "momentum of sgd and rmsprop"),
    Hyperparameter("nesterov", flag(), False, "Nesterov momentum (sgd)"),
    Hyperparameter("weight_decay", number(ge=0), 0.0, "L2 penalty (the optimizer's weight decay)"),
    Hyperparameter("l1", number(ge=0), 0.0, "L1 penalty on the weights, added to the loss"),
    Hyperparameter("batch_size", integer(ge=1), 64, "examples per optimizer step"),
    Hyperparameter("epochs", integer(ge=1), 50, "passes over the training rows (fewer if early stopping fires)"),
    Hyperparameter("lr_schedule", choice(*SCHEDULES), "none", "learning-rate schedule"),
    Hyperparameter("lr_step_size", integer(ge=1, nullable=True), None, "step schedule: epochs between decays (null: a third of the epochs)"),
    Hyperparameter("lr_gamma", number(gt=0), 0.1, "step and plateau schedules: the decay factor"),
    Hyperparameter("early_stopping_patience", integer(ge=0), 10, "epochs without improvement before stopping (0: off)"),
)

MLP = HyperparameterTable(
    Hyperparameter("hidden_layers", integer(ge=0), 2, "hidden layers of the MLP (0: a linear model)"),
    Hyperparameter("width", integer(ge=1), 64, "units per hidden layer"),
    Hyperparameter("activation", choice(*ACTIVATIONS), "relu", "activation function"),
    Hyperparameter("dropout", number(ge=0, lt=1), 0.0, "dropout rate after each hidden layer"),
    Hyperparameter("batch_norm", flag(), False, "batch normalization after each hidden layer"),
    Hyperparameter("init", choice(*INITS), "default", "weight initialization (default: PyTorch's)"),
)

__all__ = ["ACTIVATIONS", "INITS", "MLP", "OPTIMIZERS", "SCHEDULES", "TRAINING"]
