"""The shared training loop: early stopping with patience and min_delta, and the best epoch it restores."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpo.objectives.boston import HYPERPARAMETERS
from hpo.training.loop import Task, train


def _scripted_run(values: list[float], **hp: Any) -> tuple[int, list[int], bool]:
    """Train a tiny model while the validation metric follows `values` epoch by epoch (lower is better);
    return the best epoch, the epochs run, and whether early stopping fired."""
    x = torch.zeros(8, 1)
    epochs = iter(values)
    task = Task(x_train=x, y_train=x, x_val=x, y_val=x, loss_fn=nn.functional.mse_loss, score=lambda out, y: {"val_score": next(epochs)})
    seen: list[int] = []
    settings = HYPERPARAMETERS.resolve({"epochs": len(values), "batch_size": 8, **hp})
    fit = train(nn.Linear(1, 1), task, settings, monitor="val_score", maximize=False, device=torch.device("cpu"), seed=0,
                on_epoch=lambda epoch, metrics: seen.append(epoch))  # fmt: skip
    return fit.best_epoch, seen, fit.stopped_early


def test_patience_counts_epochs_without_any_improvement_by_default() -> None:
    # Tiny gains keep resetting the patience of 2 until they stop: epochs 0-5 improve, 6 and 7 do not.
    values = [1.0, 0.99, 0.985, 0.98, 0.979, 0.978, 0.978, 0.99, 0.5, 0.4]
    best, seen, stopped = _scripted_run(values, early_stopping_patience=2)
    assert (best, seen[-1], stopped) == (5, 7, True)


def test_min_delta_ignores_gains_smaller_than_it_but_keeps_the_true_best_epoch() -> None:
    # With min_delta 0.05, only epoch 0 counts as progress, so patience 2 stops after epoch 2; the
    # best epoch restored and reported is still the lowest value seen (epoch 2, 0.985).
    values = [1.0, 0.99, 0.985, 0.98, 0.979, 0.978, 0.978, 0.99, 0.5, 0.4]
    best, seen, stopped = _scripted_run(values, early_stopping_patience=2, early_stopping_min_delta=0.05)
    assert (best, seen[-1], stopped) == (2, 2, True)


def test_min_delta_counts_a_large_enough_gain_as_progress() -> None:
    # 1.0 -> 0.9 is a gain of 0.1 > 0.05: patience restarts from epoch 2.
    values = [1.0, 0.99, 0.9, 0.89, 0.88, 0.87, 0.5]
    best, seen, stopped = _scripted_run(values, early_stopping_patience=3, early_stopping_min_delta=0.05)
    assert (best, seen[-1], stopped) == (5, 5, True)
