"""What the runner hands an objective for one trial, and what the objective hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hpo.config import DataConfig
from hpo.training.loop import EpochCallback, FitResult


@dataclass
class TrialContext:
    hyperparameters: dict[str, Any]  # resolved: defaults < objective defaults < fixed < sampled
    data: DataConfig
    metrics: list[str]
    directions: list[str]
    seed: int
    device: torch.device
    on_epoch: EpochCallback

    @property
    def monitor(self) -> tuple[str, bool]:
        """The per-epoch metric that early stopping and pruning follow, and whether higher is better."""
        for metric, direction in zip(self.metrics, self.directions):
            if metric.startswith("val_"):
                return metric, direction == "maximize"
        return "val_loss", False


@dataclass
class TrialOutcome:
    """The best epoch's metrics plus what a checkpoint needs to rebuild and re-score the model."""

    metrics: dict[str, float]  # every metric of the best epoch, plus n_params and train_seconds
    fit: FitResult
    n_params: int
    model: nn.Module
    val_predictions: np.ndarray
    model_meta: dict[str, Any] = field(default_factory=dict)  # shapes/statistics needed to rebuild
