"""Optimizers and learning-rate schedules named by the hyperparameter vocabulary."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build_optimizer(hp: dict[str, Any], parameters: Any) -> torch.optim.Optimizer:
    """SGD (plain, momentum, Nesterov), Adam, AdamW, RMSProp, AdaGrad or AdaDelta; L2 via weight_decay."""
    name, lr, wd = hp["optimizer"], float(hp["lr"]), float(hp["weight_decay"])
    momentum = float(hp["momentum"])
    if name == "sgd":
        nesterov = bool(hp["nesterov"]) and momentum > 0
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, momentum=momentum, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


def warmup_linear_factor(step: int, *, warmup_steps: int, total_steps: int, decay: bool) -> float:
    """The learning-rate multiplier after `step` optimizer steps: rising linearly from 0 to 1 over
    `warmup_steps` (the first step already moves), then 1, or with `decay` falling linearly to 0 at
    `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not decay:
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


class Schedule:
    """One interface over per-batch (onecycle, linear, warmup), per-epoch (step, exponential, cosine) and
    metric-driven (plateau) decay. `exponential` multiplies the rate by `lr_gamma` after every epoch, so
    it wants a gamma near 1 (0.9 halves the rate in about 7 epochs). `linear` (airbench's schedule)
    warms up over `lr_warmup_epochs` and then decays linearly to zero at the last step; `none` with
    `lr_warmup_epochs` warms up and then stays constant."""

    def __init__(
        self, hp: dict[str, Any], optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, maximize: bool
    ) -> None:
        name, epochs = hp["lr_schedule"], int(hp["epochs"])
        warmup = float(hp.get("lr_warmup_epochs") or 0.0)
        self.name = name
        self.optimizer = optimizer
        self.scheduler: Any = None
        self.per_batch = name in ("onecycle", "linear") or (name == "none" and warmup > 0)
        if name == "linear" or (name == "none" and warmup > 0):
            total = max(1, epochs * steps_per_epoch)
            warmup_steps = min(total, round(warmup * steps_per_epoch))
            decay = name == "linear"
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer,
                lambda step: warmup_linear_factor(step, warmup_steps=warmup_steps, total_steps=total, decay=decay),
            )
        elif warmup > 0:
            raise ValueError(f"lr_warmup_epochs applies to lr_schedule none or linear, not {name!r}")
        elif name == "step":
            step_size = int(hp["lr_step_size"] or max(1, epochs // 3))
            self.scheduler = torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=step_size, gamma=float(hp["lr_gamma"])
            )
        elif name == "exponential":
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=float(hp["lr_gamma"]))
        elif name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
        elif name == "onecycle":
            # The cycle also moves momentum (or Adam's beta1) against the learning rate, where there is
            # one: AdaGrad and AdaDelta have none (OneCycleLR would refuse them), and SGD or RMSProp
            # searched with momentum 0 must not be given momentum behind the user's back.
            cycle = "betas" in optimizer.defaults or float(optimizer.defaults.get("momentum", 0.0)) > 0
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=float(hp["lr"]), total_steps=max(1, epochs * steps_per_epoch), cycle_momentum=cycle
            )
        elif name == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max" if maximize else "min",
                factor=float(hp["lr_gamma"]) if hp["lr_gamma"] < 1 else 0.5,
                patience=2,
            )
        elif name != "none":
            raise ValueError(f"unknown lr_schedule {name!r}")

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self, monitored: float) -> None:
        if self.name in ("step", "exponential", "cosine"):
            self.scheduler.step()
        elif self.name == "plateau":
            self.scheduler.step(monitored)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of absolute weights of the weight matrices and kernels (biases and norms are left alone)."""
    weights = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    return torch.stack([w.abs().sum() for w in weights]).sum() if weights else torch.zeros(())
