"""The shared training loop: early stopping with patience and min_delta, and the best epoch it restores."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpo.objectives.boston import HYPERPARAMETERS
from hpo.training.loop import Task, train


def _scripted_run(values: list[float], **hp: Any) -> tuple[int, list[int]]:
    """Train a tiny model while the validation metric follows `values` epoch by epoch (lower is better);
    return the best epoch and the epochs run (early stopping fired when the last is before the last value's)."""
    x = torch.zeros(8, 1)
    epochs = iter(values)
    task = Task(
        x_train=x,
        y_train=x,
        x_val=x,
        y_val=x,
        loss_fn=nn.functional.mse_loss,
        score=lambda out, y: {"val_score": next(epochs)},
    )
    seen: list[int] = []
    settings = HYPERPARAMETERS.resolve({"epochs": len(values), "batch_size": 8, **hp})
    fit = train(
        nn.Linear(1, 1),
        task,
        settings,
        monitor="val_score",
        maximize=False,
        device=torch.device("cpu"),
        seed=0,
        on_epoch=lambda epoch, metrics: seen.append(epoch),
    )
    return fit.best_epoch, seen


def test_patience_counts_epochs_without_any_improvement_by_default() -> None:
    # Tiny gains keep resetting the patience of 2 until they stop: epochs 0-5 improve, 6 and 7 do not.
    values = [1.0, 0.99, 0.985, 0.98, 0.979, 0.978, 0.978, 0.99, 0.5, 0.4]
    best, seen = _scripted_run(values, early_stopping_patience=2)
    assert (best, seen[-1]) == (5, 7)


def test_min_delta_ignores_gains_smaller_than_it_but_keeps_the_true_best_epoch() -> None:
    # With min_delta 0.05, only epoch 0 counts as progress, so patience 2 stops after epoch 2; the
    # best epoch restored and reported is still the lowest value seen (epoch 2, 0.985).
    values = [1.0, 0.99, 0.985, 0.98, 0.979, 0.978, 0.978, 0.99, 0.5, 0.4]
    best, seen = _scripted_run(values, early_stopping_patience=2, early_stopping_min_delta=0.05)
    assert (best, seen[-1]) == (2, 2)


def test_min_delta_counts_a_large_enough_gain_as_progress() -> None:
    # 1.0 -> 0.9 is a gain of 0.1 > 0.05: patience restarts from epoch 2.
    values = [1.0, 0.99, 0.9, 0.89, 0.88, 0.87, 0.5]
    best, seen = _scripted_run(values, early_stopping_patience=3, early_stopping_min_delta=0.05)
    assert (best, seen[-1]) == (5, 5)


def _regression_task(n: int = 12) -> Task:
    torch.manual_seed(0)
    x = torch.randn(n, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    return Task(
        x_train=x,
        y_train=y,
        x_val=x,
        y_val=y,
        loss_fn=nn.functional.mse_loss,
        score=lambda out, y: {"val_mse": float(nn.functional.mse_loss(out, y))},
    )


def test_ema_keeps_the_exponential_average_of_the_weights_after_every_step(monkeypatch: Any) -> None:
    # With ema_decay d the kept model is e_1 = w_1, e_t = d e_{t-1} + (1 - d) w_t over the weights after
    # each optimizer step: recorded here from the optimizer itself and averaged by hand.
    import hpo.training.loop as loop

    steps: list[list[torch.Tensor]] = []
    build = loop.build_optimizer

    def recording(hp: Any, parameters: Any) -> torch.optim.Optimizer:
        optimizer = build(hp, parameters)
        optimizer.register_step_post_hook(
            lambda opt, args, kwargs: steps.append([p.detach().clone() for g in opt.param_groups for p in g["params"]])
        )
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", recording)
    decay = 0.8
    settings = HYPERPARAMETERS.resolve(
        {"epochs": 1, "batch_size": 4, "optimizer": "sgd", "lr": 0.1, "ema_decay": decay, "early_stopping_patience": 0}
    )
    fit = train(
        nn.Linear(3, 1),
        _regression_task(),
        settings,
        monitor="val_mse",
        maximize=False,
        device=torch.device("cpu"),
        seed=0,
    )
    assert len(steps) == 3
    expected = [w.clone() for w in steps[0]]
    for weights in steps[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    for kept, want in zip(fit.model.parameters(), expected):
        torch.testing.assert_close(kept.detach(), want)
    assert not torch.equal(fit.model.weight.detach(), steps[-1][0])  # not simply the last weights


def test_compile_trains_through_the_compiled_module_and_returns_the_plain_one(monkeypatch: Any) -> None:
    # execution.compile: the loop hands the model to torch.compile and runs its steps through what comes
    # back; the model returned (whose state dict is saved) is the uncompiled module. torch.compile
    # itself is exercised by test_compile_for_real (slow on a CPU).
    compiled: list[nn.Module] = []
    calls = {"n": 0}

    class Counting(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return self.inner(x)

    def fake_compile(model: nn.Module) -> nn.Module:
        compiled.append(model)
        return Counting(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = nn.Linear(3, 1)
    settings = HYPERPARAMETERS.resolve({"epochs": 1, "batch_size": 4, "early_stopping_patience": 0})
    fit = train(
        model,
        _regression_task(),
        settings,
        monitor="val_mse",
        maximize=False,
        device=torch.device("cpu"),
        seed=0,
        compile=True,
    )
    assert compiled == [model] and fit.model is model and calls["n"] >= 3
    assert set(fit.model.state_dict()) == {"weight", "bias"}


def test_compile_for_real() -> None:
    import os

    import pytest

    if os.environ.get("HPO_TEST_COMPILE") != "1":
        pytest.skip(
            "torch.compile builds C++ kernels: minutes on a 2-core CPU (over 5 on the shared machine); set "
            "HPO_TEST_COMPILE=1 to run it"
        )
    settings = HYPERPARAMETERS.resolve(
        {"epochs": 2, "batch_size": 4, "optimizer": "sgd", "lr": 0.05, "early_stopping_patience": 0}
    )
    fit = train(
        nn.Linear(3, 1),
        _regression_task(),
        settings,
        monitor="val_mse",
        maximize=False,
        device=torch.device("cpu"),
        seed=0,
        compile=True,
    )
    assert fit.history[-1]["val_mse"] < fit.history[0]["train_loss"] and set(fit.model.state_dict()) == {
        "weight",
        "bias",
    }
