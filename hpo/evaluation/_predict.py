"""`hpo predict`: a trained model on the user's own files (images of any size, CSV rows), through the
objective's hooks, so hpo itself knows nothing of images or tables.

What predicts (MODEL):

- ``models:/<name>/<version>`` (or ``@alias``, ``/latest``): a model `hpo evaluate` registered —
  ``<study>-best`` (the best model on validation, mlflow.pytorch flavor, with ``model_meta/hpo_meta.json``
  beside it) or ``<study>-ensemble`` (hpo's pyfunc ensemble, whose members are checkpoints);
- a study name or study file: the study's best trial (on validation) that kept a checkpoint, with its
  best-epoch weights. It needs no `hpo evaluate`, and is the model `hpo evaluate` registers as
  ``<study>-best`` unless it retrains (``--retrain-seeds``).

The objective's ``read_inputs(paths, meta)`` hook turns the files into model-ready inputs (one label per
input: a file, or a file's row); ``to_predictions`` turns outputs into values or class probabilities;
an ensemble's members are blended with its weights. Class names come from ``meta["classes"]``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import study_name_problem
from hpo.config.settings import resolve_settings
from hpo.errors import UsageError
from hpo.evaluation._checkpoints import has_checkpoint, load_member
from hpo.evaluation._ensemble import blend
from hpo.evaluation._metrics import is_classification
from hpo.objectives import EvaluationHooks, FieldError
from hpo.objectives._checkpoint import Checkpoint, predictions
from hpo.running.meta import stored_config
from hpo.running.results import best_trials, load
from hpo.running.study_ref import resolve_study_ref
from hpo.running.tracking import Tracker, load_registered_model, read_run_json

REGISTRY_PREFIX = "models:/"
MODEL_FORMS = (
    "models:/<name>/<version> as `hpo evaluate` registers them (<study>-best, <study>-ensemble), "
    "or a study name or study file"
)
META_FILE = "model_meta/hpo_meta.json"  # beside the registered <study>-best model (hpo.evaluation._evaluate)
HOOK = "read_inputs"


@dataclass
class Part:
    """One member of what predicts: its model(s) (one per fold, averaged), their meta, the objective's hooks,
    a weight."""

    models: list[Any]
    meta: dict[str, Any]
    hooks: EvaluationHooks
    weight: float = 1.0


@dataclass
class Prediction:
    """What the model says about one input: a value, or the classes with their probabilities, most probable first."""

    input: str
    value: float | None = None
    classes: list[tuple[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        if self.value is not None:
            return {"input": self.input, "value": self.value}
        return {
            "input": self.input,
            "predicted": self.classes[0][0],
            "top": [{"class": c, "probability": p} for c, p in self.classes],
        }

    def text(self) -> str:
        if self.value is not None:
            return f"{self.input}: {self.value:.4g}"
        return f"{self.input}: " + ", ".join(f"{c} {p:.3f}" for c, p in self.classes)


@dataclass
class Predictor:
    """A loaded model ready for the user's files; `description` says which model it is."""

    description: str
    parts: list[Part]

    def predict(self, paths: Sequence[Path], *, top_k: int = 3) -> list[Prediction]:
        """Read the files through each part's hooks, predict, blend the parts by weight."""
        if not paths:
            raise UsageError("input: give at least one file to predict for")
        outputs: list[np.ndarray] = []
        labels: list[str] = []
        read: dict[tuple[int, str], tuple[Any, list[str]]] = {}  # members that read alike read the files once
        for part in self.parts:
            key = (id(part.hooks), json.dumps(part.meta, sort_keys=True, default=str))
            if key not in read:
                read[key] = _read_inputs(part.hooks, paths, part.meta)
            inputs, labels = read[key]
            outputs.append(predictions(part.hooks, part.models, inputs, part.meta))
        blended = blend(outputs, [p.weight for p in self.parts])
        if len(labels) != len(blended):
            raise UsageError(f"input: the objective's {HOOK} gave {len(labels)} label(s) for {len(blended)} input(s)")
        if not is_classification(blended):  # values: N, or N x 1
            return [Prediction(label, value=float(v)) for label, v in zip(labels, blended.reshape(len(blended)))]
        names = [str(c) for c in self.parts[0].meta.get("classes") or range(blended.shape[1])]
        results = []
        for label, row in zip(labels, blended):
            order = np.argsort(-row, kind="stable")[: max(1, top_k)]
            results.append(Prediction(label, classes=[(names[i], float(row[i])) for i in order]))
        return results


def _read_inputs(hooks: EvaluationHooks, paths: Sequence[Path], meta: dict[str, Any]) -> tuple[Any, list[str]]:
    reader = getattr(hooks, HOOK)  # checked when the predictor was loaded
    try:
        inputs, labels = reader(list(paths), meta)
    except FieldError as exc:
        raise UsageError(f"input {exc}") from None
    return inputs, [str(label) for label in labels]


def _check_hook(hooks: EvaluationHooks, objective: str) -> None:
    if not callable(getattr(hooks, HOOK, None)):
        raise UsageError(
            f"model: objective {objective} has no {HOOK} hook, so `hpo predict` cannot turn files into its inputs; "
            f"add {HOOK}(paths, meta) -> (inputs, labels) to its evaluation hooks (README: Your own model)"
        )


def load_predictor(model: str, *, storage: str | None = None, tracking_uri: str | None = None) -> Predictor:
    """The model MODEL names (see the module docstring), loaded on the CPU."""
    if model.startswith(REGISTRY_PREFIX):
        settings = resolve_settings(storage_flag=storage, tracking_flag=tracking_uri)
        return _registered(model, settings.tracking_uri)
    is_file = model.endswith((".yaml", ".yml")) or Path(model).is_file()
    if "://" in model or model.startswith(("runs:", "models:")) or (not is_file and study_name_problem(model)):
        raise UsageError(f"model: {model!r} is not a form hpo predict reads; accepted: {MODEL_FORMS}")
    return _study_best(model, storage=storage, tracking_uri=tracking_uri)


def _registered(uri: str, tracking_uri: str) -> Predictor:
    from hpo.evaluation._pyfunc import EnsembleModel

    loaded = load_registered_model(tracking_uri, uri)
    if loaded.flavor == "pytorch":
        stored = read_run_json(tracking_uri, loaded.run_id, META_FILE) if loaded.run_id else None
        if stored is None:
            raise UsageError(f"model: {uri} is a PyTorch model without hpo's {META_FILE}; accepted: {MODEL_FORMS}")
        described = Checkpoint.from_description(stored)
        hooks = described.hooks()
        _check_hook(hooks, described.objective)
        return Predictor(
            f"{uri} (best model, objective {described.objective})", [Part([loaded.model], described.meta, hooks)]
        )
    ensemble = loaded.model
    if not isinstance(ensemble, EnsembleModel):
        raise UsageError(
            f"model: {uri} is not a model hpo registered ({type(ensemble).__name__}); accepted: {MODEL_FORMS}"
        )
    parts = [
        Part(models, dict(meta), hooks, weight)
        for (models, meta, hooks), weight in zip(ensemble.members, ensemble.weights)
    ]
    for part in parts:
        _check_hook(part.hooks, getattr(part.hooks, "__name__", type(part.hooks).__name__))
    return Predictor(f"{uri} (ensemble of {len(parts)} model file(s))", parts)


def _study_best(name: str, *, storage: str | None, tracking_uri: str | None) -> Predictor:
    ref = resolve_study_ref(name, storage=storage, tracking_uri=tracking_uri)
    study = load(ref)
    config = stored_config(study)
    objective = config.load_objective()
    if objective.objective.hooks is None:
        raise UsageError(
            f"model: study {study.study_name} ran the minimal objective {config.objective}, "
            "which keeps no model to predict with "
            "(a full objective's evaluation hooks do: README, Your own model)"
        )
    _check_hook(objective.objective.hooks, objective.resolved)
    tracker = Tracker(ref.settings.tracking_uri, study.study_name)
    best = next((t for t in best_trials(study, len(study.trials)) if has_checkpoint(tracker, t)), None)
    if best is None:
        raise UsageError(
            f"model: study {study.study_name} has no complete trial with a checkpoint "
            f"(evaluation.checkpoints: {config.evaluation.checkpoints}); accepted: {MODEL_FORMS}"
        )
    with tempfile.TemporaryDirectory(prefix="hpo-predict-") as tmp:
        member = load_member(tracker, best, Path(tmp))
    return Predictor(
        f"study {study.study_name}, trial {best.number} (best on validation, best-epoch checkpoint)",
        [Part(member.models, member.meta, member.hooks())],
    )


__all__ = ["MODEL_FORMS", "Part", "Prediction", "Predictor", "load_predictor"]
