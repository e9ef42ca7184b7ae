"""A trial's checkpoint: what `hpo run` keeps of a full objective's trial and `hpo evaluate`, the report
and the ensemble's pyfunc model rebuild it from.

On disk (artifact folder ``checkpoint/`` of the trial's MLflow run): ``model.pt``, a dict of plain data
``{"objective", "hyperparameters", "meta", "state_dict"}`` (``"state_dicts"``, a list, when a trial
trains several models, e.g. one per cross-validation fold); ``val_predictions.npy`` (with ``data.cv_folds``
the out-of-fold predictions of every non-test row); ``metrics.json``.
``objective`` is the resolved spec, so the code is found again from any folder. torch is imported only
when a checkpoint is written or read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpo.objectives._protocol import EvaluationHooks

MODEL_FILE = "model.pt"
PREDICTIONS_FILE = "val_predictions.npy"
METRICS_FILE = "metrics.json"


@dataclass
class Checkpoint:
    objective: str  # the resolved spec: a name, package.module:name or /abs/path.py:name
    hyperparameters: dict[str, Any]
    meta: dict[str, Any]
    state_dicts: list[dict[str, Any]]  # one per model
    val_predictions: np.ndarray = field(default_factory=lambda: np.empty(0))
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        models: Sequence[Any],
        *,
        objective: str,
        hyperparameters: Mapping[str, Any],
        meta: Mapping[str, Any],
        val_predictions: np.ndarray | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> Checkpoint:
        """A checkpoint of trained torch models (their weights, moved to the CPU)."""
        states = [{k: v.detach().cpu() for k, v in model.state_dict().items()} for model in models]
        predictions = np.asarray(val_predictions) if val_predictions is not None else np.empty(0)
        return cls(objective, dict(hyperparameters), dict(meta), states, predictions, dict(metrics or {}))

    # -- files ------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the three files into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        self.save_model(folder / MODEL_FILE)
        np.save(folder / PREDICTIONS_FILE, self.val_predictions)
        (folder / METRICS_FILE).write_text(json.dumps(self.metrics))

    def save_model(self, path: Path) -> None:
        """The model file alone (what the ensemble's pyfunc model carries per member)."""
        import torch

        data = self.description()
        if len(self.state_dicts) == 1:
            data["state_dict"] = self.state_dicts[0]
        else:
            data["state_dicts"] = self.state_dicts
        torch.save(data, path)

    @classmethod
    def load(cls, folder: Path) -> Checkpoint:
        """A checkpoint folder as `save` wrote it (the metrics file may be missing in old ones)."""
        checkpoint = cls.load_model(folder / MODEL_FILE)
        checkpoint.val_predictions = np.load(folder / PREDICTIONS_FILE)
        metrics = folder / METRICS_FILE
        checkpoint.metrics = json.loads(metrics.read_text()) if metrics.exists() else {}
        return checkpoint

    @classmethod
    def load_model(cls, path: str | Path) -> Checkpoint:
        """A model file (plain data only: torch's safe loader, no pickled code)."""
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint = cls.from_description(data)
        checkpoint.state_dicts = list(data["state_dicts"] if "state_dicts" in data else [data["state_dict"]])
        return checkpoint

    def description(self) -> dict[str, Any]:
        """What rebuilds the models besides their weights: the model file's keys other than the weights, and
        the `hpo_meta.json` kept beside a registered model (one shape, so either is read back the same way)."""
        return {"objective": self.objective, "hyperparameters": self.hyperparameters, "meta": self.meta}

    @classmethod
    def from_description(cls, data: Mapping[str, Any]) -> Checkpoint:
        """A checkpoint without weights from :meth:`description`'s data (enough for its hooks)."""
        return cls(str(data["objective"]), dict(data["hyperparameters"]), dict(data["meta"]), [])

    # -- models -----------------------------------------------------------------------------------
    def hooks(self) -> EvaluationHooks:
        """The evaluation hooks of the objective that wrote this checkpoint."""
        from hpo.objectives._loader import load_objective

        loaded = load_objective(self.objective)
        if loaded.objective.hooks is None:
            raise TypeError(
                f"objective {self.objective} declares no evaluation hooks; its checkpoints cannot be rebuilt"
            )
        return loaded.objective.hooks

    def models(self) -> list[Any]:
        """The models with the checkpoint's weights, in evaluation mode on the CPU."""
        hooks = self.hooks()
        rebuilt = []
        for state in self.state_dicts:
            model = hooks.build_model(self.hyperparameters, self.meta)
            model.load_state_dict(state)
            rebuilt.append(model.eval())
        return rebuilt


def predictions(hooks: EvaluationHooks, models: Sequence[Any], inputs: Any, meta: Mapping[str, Any]) -> np.ndarray:
    """What the objective scores for `inputs`: its predictions, averaged over the models (one per fold)."""
    from hpo.training.loop import predict

    outputs = [
        np.asarray(hooks.to_predictions(predict(model, inputs.to(_device_of(model))), meta), np.float64)
        for model in models
    ]
    return outputs[0] if len(outputs) == 1 else np.mean(outputs, axis=0)


def _device_of(model: Any) -> Any:
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else "cpu"


__all__ = ["METRICS_FILE", "MODEL_FILE", "PREDICTIONS_FILE", "Checkpoint", "predictions"]
