"""Registering the evaluated models in MLflow's model registry: the best single model (mlflow.pytorch) and
the ensemble (a pyfunc model that carries its members' checkpoints)."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hpo
from hpo.evaluation._checkpoints import Member
from hpo.running.tracking import Tracker

MODEL_DEPENDENCIES = ("torch", "numpy", "mlflow", "optuna", "pandas", "pydantic", "pyyaml")


def _requirements() -> list[str]:
    found = []
    for name in MODEL_DEPENDENCIES:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(name)
    return found


def _code_paths() -> list[str]:
    return [str(Path(hpo.__file__).parent)]


def register_best(
    tracker: Tracker,
    run_id: str,
    member: Member,
    trained: tuple[list[torch.nn.Module], dict[str, Any]],
    inputs: torch.Tensor,
    study_name: str,
) -> str:
    """The best single model (best on validation) with the mlflow.pytorch flavor, registered as <study>-best.

    It outputs raw model outputs; `hpo_meta.json` beside it holds what the objective's `to_predictions` needs.
    A trial of several models (one per fold) registers its first; the ensemble's pyfunc model holds them all.
    """
    models, meta = trained
    model = models[0].cpu().eval()
    sample = inputs[:5].float()
    with torch.no_grad():
        outputs = model(sample).numpy()
    tracker.log_dict(run_id, replace(member.checkpoint, meta=meta).description(), "model_meta/hpo_meta.json")
    info = tracker.log_torch_model(
        run_id,
        model,
        name="model",
        registered_model_name=f"{study_name}-best",
        example=(sample.numpy(), outputs),
        code_paths=_code_paths(),
        pip_requirements=_requirements(),
    )
    return _registry_uri(info, f"{study_name}-best")


def _registry_uri(info: Any, name: str) -> str:
    """`models:/<name>/<version>`, the URI `hpo predict` and `mlflow.pyfunc.load_model` take (MLflow's own
    model_uri names the logged model, `models:/m-<id>`, which says nothing to a person)."""
    version = getattr(info, "registered_model_version", None)
    return f"models:/{name}/{version}" if version is not None else str(getattr(info, "model_uri", ""))


def log_pyfunc(
    tracker: Tracker,
    run_id: str,
    files: list[tuple[Path, float]],
    inputs: torch.Tensor,
    predictions: np.ndarray,
    name: str,
    folder: Path,
) -> str:
    from hpo.evaluation._pyfunc import ENSEMBLE_FILE, EnsembleModel, member_key

    spec_path = folder / "ensemble-spec.json"
    spec_path.write_text(json.dumps({"weights": [w for _, w in files], "input_shape": list(inputs.shape[1:])}))
    artifacts = {ENSEMBLE_FILE: str(spec_path), **{member_key(i): str(path) for i, (path, _) in enumerate(files)}}
    example_inputs = inputs[:5].numpy()
    info = tracker.log_model(
        run_id,
        EnsembleModel(),
        name="model",
        artifacts=artifacts,
        registered_model_name=name,
        example=(example_inputs, predictions[:5].astype(np.float32)),
        code_paths=_code_paths(),
        pip_requirements=_requirements(),
    )
    return _registry_uri(info, name)


__all__ = ["log_pyfunc", "register_best"]
