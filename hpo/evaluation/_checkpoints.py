"""Trial checkpoints read back from MLflow and rebuilt into models through the objective's evaluation hooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial
from torch import nn

from hpo.objectives import EvaluationHooks
from hpo.objectives._checkpoint import MODEL_FILE, Checkpoint
from hpo.running.meta import CHECKPOINT_TAG, RUN_ID_ATTR
from hpo.running.tracking import Tracker

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Member:
    """One checkpointed trial: its model(s) rebuilt with the best-epoch weights, and its validation predictions."""

    trial_number: int
    run_id: str
    values: list[float]
    checkpoint: Checkpoint
    models: list[nn.Module]  # one, or one per fold: their predictions are averaged
    best_epoch: int | None
    path: Path  # the downloaded model file
    # validation predictions recomputed at evaluation (e.g. with test-time augmentation); None: the checkpoint's
    recomputed_val_predictions: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"trial {self.trial_number}"

    @property
    def objective(self) -> str:
        return self.checkpoint.objective

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.checkpoint.hyperparameters

    @property
    def meta(self) -> dict[str, Any]:
        return self.checkpoint.meta

    @property
    def val_predictions(self) -> np.ndarray:
        if self.recomputed_val_predictions is not None:
            return self.recomputed_val_predictions
        return self.checkpoint.val_predictions

    @property
    def metrics(self) -> dict[str, float]:
        return self.checkpoint.metrics

    @property
    def family(self) -> str:
        """Its model family, as the objective's optional `model_family` hook names it; "model" without one."""
        family = getattr(self.hooks(), "model_family", None)
        return str(family(self.hyperparameters)) if family is not None else "model"

    def hooks(self) -> EvaluationHooks:
        return self.checkpoint.hooks()


def has_checkpoint(tracker: Tracker, trial: FrozenTrial) -> bool:
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        return False
    return tracker.get_run(run_id).data.tags.get(CHECKPOINT_TAG) == "kept"


def load_member(tracker: Tracker, trial: FrozenTrial, destination: Path) -> Member:
    """Download the trial's checkpoint folder and rebuild its model(s)."""
    run_id = str(trial.user_attrs[RUN_ID_ATTR])
    folder = tracker.download_artifacts(run_id, CHECKPOINT_DIR, destination / f"trial-{trial.number:04d}")
    checkpoint = Checkpoint.load(folder)
    best_epoch = tracker.get_run(run_id).data.metrics.get("best_epoch")
    return Member(
        trial_number=trial.number,
        run_id=run_id,
        values=list(trial.values or []),
        checkpoint=checkpoint,
        models=checkpoint.models(),
        best_epoch=int(best_epoch) if best_epoch is not None else None,
        path=folder / MODEL_FILE,
    )


__all__ = ["CHECKPOINT_DIR", "Member", "has_checkpoint", "load_member"]
