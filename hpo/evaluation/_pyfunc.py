"""The ensemble as an MLflow pyfunc model: loads its members' checkpoints and predicts on its own.

Inputs are model-ready arrays, as the objective's `test_split` gives them (Boston: standardized feature
rows; CIFAR-10: normalized N x 3 x 32 x 32 images, or the same flattened); outputs are what the
objective's `to_predictions` gives (k$, or class probabilities), blended with the ensemble's weights.
The members' objective must be importable where the model is loaded (hpo's own are; a user's by the
resolved spec kept in each checkpoint).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PythonModel

ENSEMBLE_FILE = "ensemble"


def member_key(index: int) -> str:
    return f"member_{index:03d}"


class EnsembleModel(PythonModel):
    """Weighted mean of the members' predictions; a single member with weight 1 is a plain model."""

    def load_context(self, context: Any) -> None:
        from hpo.objectives._checkpoint import Checkpoint

        spec = json.loads(open(context.artifacts[ENSEMBLE_FILE]).read())
        self.weights = [float(w) for w in spec["weights"]]
        self.input_shape = tuple(int(d) for d in spec["input_shape"])
        self.members: list[Any] = []
        for index in range(len(self.weights)):
            path = context.artifacts[member_key(index)]
            if str(path).endswith(".joblib"):  # a scikit-learn baseline the greedy ensemble selected
                import joblib

                self.members.append(joblib.load(path))
                continue
            checkpoint = Checkpoint.load_model(path)
            self.members.append((checkpoint.models(), checkpoint.meta, checkpoint.hooks()))

    # np.ndarray is a hint MLflow accepts without building a schema from it (a DataFrame works too).
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """Blend of the members' predictions for model-ready inputs."""
        from hpo.evaluation._ensemble import blend
        from hpo.objectives._checkpoint import predictions

        array = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        inputs = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32)).reshape(-1, *self.input_shape)
        rows = inputs.reshape(len(inputs), -1).numpy()
        outputs = [
            np.asarray(member.predict(rows), np.float64)
            if hasattr(member, "predict")
            else predictions(member[2], member[0], inputs, member[1])
            for member in self.members
        ]
        return blend(outputs, self.weights).astype(np.float32)
