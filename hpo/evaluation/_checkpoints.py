"""Trial checkpoints read back from MLflow and rebuilt into models through the objective's protocol."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from optuna.trial import FrozenTrial
from torch import nn

from hpo.objectives import MODULES
from hpo.runner import RUN_ID_ATTR
from hpo.tracking import Tracker

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Member:
    """One checkpointed trial: its model rebuilt with the best-epoch weights, and its validation predictions."""

    trial_number: int
    run_id: str
    values: list[float]
    objective: str
    hyperparameters: dict[str, Any]
    meta: dict[str, Any]
    model: nn.Module
    val_predictions: np.ndarray
    best_epoch: int | None
    path: Path  # the downloaded model.pt
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"trial {self.trial_number}"

    @property
    def family(self) -> str:
        """'mlp' for fully connected models, else the convolutional family named by `model`."""
        return str(self.hyperparameters.get("model", "mlp"))

    def module(self) -> ModuleType:
        return MODULES[self.objective]


def has_checkpoint(tracker: Tracker, trial: FrozenTrial) -> bool:
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        return False
    return tracker.get_run(run_id).data.tags.get("hpo.checkpoint") == "kept"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The dict `hpo run` saved: objective, hyperparameters, meta and the state dict (plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rebuild(checkpoint: dict[str, Any]) -> nn.Module:
    """The objective's model with the checkpoint's weights, in evaluation mode on the CPU."""
    module = MODULES[checkpoint["objective"]]
    model = module.build_model(checkpoint["hyperparameters"], checkpoint["meta"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_member(tracker: Tracker, trial: FrozenTrial, destination: Path) -> Member:
    """Download the trial's checkpoint folder and rebuild its model."""
    run_id = str(trial.user_attrs[RUN_ID_ATTR])
    folder = tracker.download_artifacts(run_id, CHECKPOINT_DIR, destination / f"trial-{trial.number:04d}")
    checkpoint = load_checkpoint(folder / "model.pt")
    run = tracker.get_run(run_id)
    best_epoch = run.data.metrics.get("best_epoch")
    metrics_file = folder / "metrics.json"
    return Member(
        trial_number=trial.number,
        run_id=run_id,
        values=list(trial.values or []),
        objective=str(checkpoint["objective"]),
        hyperparameters=dict(checkpoint["hyperparameters"]),
        meta=dict(checkpoint["meta"]),
        model=rebuild(checkpoint),
        val_predictions=np.load(folder / "val_predictions.npy"),
        best_epoch=int(best_epoch) if best_epoch is not None else None,
        path=folder / "model.pt",
        metrics=json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
    )
