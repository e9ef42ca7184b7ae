"""Logging one evaluated model: its MLflow run (a child of the study's parent run) with its test metrics,
predictions and plots; the files retrained models and baselines are kept as."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo.evaluation import _plots as plots
from hpo.evaluation._bootstrap import bootstrap_intervals
from hpo.evaluation._checkpoints import Member
from hpo.evaluation._metrics import confusion_matrix, is_classification, score
from hpo.objectives import Baseline
from hpo.objectives._checkpoint import Checkpoint
from hpo.running.meta import KIND_TAG, LABEL_TAG
from hpo.running.tracking import Tracker


@dataclass
class ModelRun:
    """One model's evaluation run: what it is, and what it predicted and scored on the test split."""

    label: str
    kind: str  # trial | ensemble | baseline
    run_name: str
    tags: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]
    predictions: np.ndarray
    classes: Any = None
    role: str = "evaluation"
    conv_model: torch.nn.Module | None = None  # with `image`: pictures of its first convolutions
    image: torch.Tensor | None = None
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # JSON files beside the run's artifacts


@dataclass
class RunLog:
    """Where an evaluation's runs go: the parent run, the test targets, a scratch folder, and the runs
    created so far (closed FAILED together if the evaluation fails later)."""

    tracker: Tracker
    parent: str
    targets: np.ndarray
    folder: Path
    created: list[str] = field(default_factory=list)

    def log(self, run: ModelRun) -> str:
        """Create the run (so a failure later marks it FAILED), then log its metrics, predictions and plots."""
        tracker, targets = self.tracker, self.targets
        label, metrics, predictions, classes = run.label, run.metrics, run.predictions, run.classes
        run_id = tracker.create_run(
            role=run.role,
            run_name=run.run_name,
            parent_run_id=self.parent,
            tags={**run.tags, KIND_TAG: run.kind, LABEL_TAG: run.label},
        )
        self.created.append(run_id)
        tracker.log_params(run_id, run.params)
        tracker.log_metrics(run_id, run.metrics)
        out = self.folder / "artifacts" / run.run_name
        (out / "plots").mkdir(parents=True, exist_ok=True)
        (out / "predictions").mkdir(parents=True, exist_ok=True)
        np.save(out / "predictions" / "test_predictions.npy", predictions)
        _write_predictions_csv(out / "predictions" / "test_predictions.csv", predictions, targets)
        if is_classification(predictions):
            names = list(classes) if classes is not None else [str(i) for i in range(predictions.shape[1])]
            plots.save(
                plots.confusion_matrix_figure(
                    confusion_matrix(predictions, targets),
                    names,
                    title=f"{label}: test accuracy {metrics['test_acc']:.3f}",
                ),
                out / "plots" / "confusion_matrix.png",
            )
            per_class = {name: metrics[f"test_acc_{name}"] for name in names if f"test_acc_{name}" in metrics}
            plots.save(
                plots.per_class_accuracy(per_class, title=f"{label}: accuracy per class"),
                out / "plots" / "per_class_accuracy.png",
            )
        else:
            title = f"{label}: test RMSE {metrics['test_rmse']:.3f}, R² {metrics['test_r2']:.3f}"
            plots.save(
                plots.predicted_vs_actual(predictions, targets, title=title), out / "plots" / "predicted_vs_actual.png"
            )
            plots.save(plots.residuals(predictions, targets, title=label), out / "plots" / "residuals.png")
        if run.conv_model is not None and run.image is not None:
            plots.save_conv_pictures(
                plots.conv_pictures(run.conv_model.cpu(), run.image, label=label, image_name="test image 0"),
                out / "plots" / "conv",
            )
        for name, data in run.extra.items():
            (out / name).write_text(json.dumps(data, indent=2))
        tracker.log_artifacts(run_id, out)
        return run_id

    def finish(self, status: str = "FINISHED") -> None:
        """Close every run created (FAILED after an error, without letting a second error hide the first)."""
        for run_id in self.created:
            if status == "FINISHED":
                self.tracker.finish_run(run_id)
                continue
            try:
                self.tracker.finish_run(run_id, status)
            except Exception:
                pass


def _write_predictions_csv(path: Path, predictions: np.ndarray, targets: np.ndarray) -> None:
    import pandas as pd

    if is_classification(predictions):
        frame = pd.DataFrame(predictions, columns=[f"p{i}" for i in range(predictions.shape[1])])
        frame.insert(0, "predicted", predictions.argmax(axis=1))
    else:
        frame = pd.DataFrame({"predicted": predictions})
    frame.insert(0, "actual", targets)
    frame.index.name = "test_index"
    frame.to_csv(path)


def test_metrics(prediction: np.ndarray, targets: np.ndarray, classes: Any) -> dict[str, float]:
    """Every test metric, and the bootstrap interval of each headline one (the same resamples for every model)."""
    metrics = score(prediction, targets, prefix="test", classes=classes)
    return {**metrics, **bootstrap_intervals(prediction, targets, prefix="test")}


def save_estimator(baseline: Baseline, folder: Path) -> Path:
    """A baseline ensemble member as a file the pyfunc model loads (scikit-learn's own persistence, joblib)."""
    import joblib

    path = folder / f"baseline-{baseline.name}.joblib"
    joblib.dump(baseline.estimator, path)
    return path


def save_models(
    member: Member, variants: list[tuple[list[torch.nn.Module], dict[str, Any]]], folder: Path
) -> list[Path]:
    """Retrained models as model files in the format `hpo run` writes (the pyfunc model loads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (models, meta) in enumerate(variants):
        path = folder / f"seed-{i}.pt"
        Checkpoint.of(models, objective=member.objective, hyperparameters=member.hyperparameters, meta=meta).save_model(
            path
        )
        paths.append(path)
    return paths


__all__ = ["ModelRun", "RunLog", "save_estimator", "save_models", "test_metrics"]
