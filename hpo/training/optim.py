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


class Schedule:
    """One interface over per-batch (onecycle), per-epoch (step, exponential, cosine) and metric-driven
    (plateau) decay. `exponential` multiplies the rate by `lr_gamma` after every epoch, so it wants a
    gamma near 1 (0.9 halves the rate in about 7 epochs)."""

    def __init__(self, hp: dict[str, Any], optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, maximize: bool) -> None:
        name, epochs = hp["lr_schedule"], int(hp["epochs"])
        self.name = name
        self.optimizer = optimizer
        self.scheduler: Any = None
        if name == "step":
            step_size = int(hp["lr_step_size"] or max(1, epochs // 3))
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=float(hp["lr_gamma"]))
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
                optimizer, mode="max" if maximize else "min", factor=float(hp["lr_gamma"]) if hp["lr_gamma"] < 1 else 0.5, patience=2
            )
        elif name != "none":
            raise ValueError(f"unknown lr_schedule {name!r}")

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        if self.name == "onecycle":
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
