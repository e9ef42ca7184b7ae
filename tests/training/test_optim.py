"""Optimizers and schedules: every optimizer of the vocabulary trains under every schedule."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from hpo.objectives.boston import HYPERPARAMETERS
from hpo.objectives.cifar10 import HYPERPARAMETERS as CIFAR10
from hpo.training.optim import Schedule, build_optimizer

# What a study file may name, read from the objectives' tables: a value added there without a builder
# (or a schedule) fails here, and so does one the builder drops.
TABLES = (HYPERPARAMETERS, CIFAR10)
OPTIMIZERS = sorted({name for table in TABLES for name in table["optimizer"].rule.choices})
SCHEDULES = sorted({name for table in TABLES for name in table["lr_schedule"].rule.choices})


@pytest.mark.parametrize(("optimizer", "schedule"), list(itertools.product(OPTIMIZERS, SCHEDULES)))
def test_every_optimizer_runs_under_every_schedule(optimizer: str, schedule: str) -> None:
    # Any pair a study can sample must train: OneCycleLR used to refuse AdaGrad and AdaDelta, which
    # have no momentum to cycle, and failed one trial in about 25 of boston-mlp's random search.
    hp = HYPERPARAMETERS.resolve(
        {"optimizer": optimizer, "lr_schedule": schedule, "epochs": 2, "momentum": 0.9, "lr": 0.01}
    )
    model = nn.Linear(3, 1)
    opt = build_optimizer(hp, model.parameters())
    plan = Schedule(hp, opt, steps_per_epoch=2, maximize=False)
    for _ in range(2):
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(torch.randn(4, 3)), torch.randn(4, 1)).backward()
            opt.step()
            plan.after_batch()
        plan.after_epoch(1.0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_each_optimizer_name_builds_its_own_optimizer() -> None:
    # No two names may fall back on one class (a silent default would train every trial alike).
    built = {
        name: type(build_optimizer(HYPERPARAMETERS.resolve({"optimizer": name}), nn.Linear(3, 1).parameters()))
        for name in OPTIMIZERS
    }
    assert len(set(built.values())) == len(OPTIMIZERS), built


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_onecycle_leaves_momentum_zero_alone(optimizer: str) -> None:
    # SGD or RMSProp searched with momentum 0 must stay without momentum under the one-cycle schedule
    # (OneCycleLR would otherwise cycle momentum between 0.85 and 0.95).
    hp = HYPERPARAMETERS.resolve(
        {"optimizer": optimizer, "lr_schedule": "onecycle", "epochs": 2, "momentum": 0.0, "lr": 0.01}
    )
    opt = build_optimizer(hp, nn.Linear(3, 1).parameters())
    plan = Schedule(hp, opt, steps_per_epoch=2, maximize=False)
    opt.step()
    plan.after_batch()
    assert opt.param_groups[0]["momentum"] == 0.0


def test_exponential_schedule_multiplies_the_rate_by_gamma_each_epoch() -> None:
    # lr, lr * g, lr * g^2, ...: one decay per epoch, none per batch.
    hp = HYPERPARAMETERS.resolve({"lr_schedule": "exponential", "lr_gamma": 0.9, "lr": 0.1, "epochs": 4})
    opt = build_optimizer(hp, nn.Linear(3, 1).parameters())
    plan = Schedule(hp, opt, steps_per_epoch=3, maximize=False)
    rates = []
    for _ in range(4):
        rates.append(plan.lr)
        for _ in range(3):
            opt.step()
            plan.after_batch()
        plan.after_epoch(1.0)
    assert rates == pytest.approx([0.1, 0.09, 0.081, 0.0729])


def test_warmup_rises_linearly_then_decays_linearly_to_zero() -> None:
    # 4 warmup steps of 10: 1/4, 2/4, 3/4, 1, then 6/6 ... 1/6 down to 0 at the end; without decay it stays 1.
    from hpo.training.optim import warmup_linear_factor

    factors = [warmup_linear_factor(step, warmup_steps=4, total_steps=10, decay=True) for step in range(11)]
    assert factors == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])
    assert [warmup_linear_factor(step, warmup_steps=2, total_steps=10, decay=False) for step in range(4)] == [
        0.5,
        1.0,
        1.0,
        1.0,
    ]


def test_linear_schedule_steps_per_batch_and_ends_at_zero() -> None:
    hp = HYPERPARAMETERS.resolve(
        {"optimizer": "sgd", "lr": 0.4, "epochs": 2, "lr_schedule": "linear", "lr_warmup_epochs": 0.5}
    )
    optimizer = build_optimizer(hp, [torch.nn.Parameter(torch.zeros(1))])
    schedule = Schedule(hp, optimizer, steps_per_epoch=4, maximize=False)
    rates = [schedule.lr]
    for _ in range(8):
        optimizer.step()
        schedule.after_batch()
        rates.append(schedule.lr)
    assert rates == pytest.approx([0.2, 0.4, 0.4, 0.4 * 5 / 6, 0.4 * 4 / 6, 0.4 * 3 / 6, 0.4 * 2 / 6, 0.4 / 6, 0.0])
