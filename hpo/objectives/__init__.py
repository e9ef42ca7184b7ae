"""Objectives are plain functions, registered in a plain dict by the name a study file uses.

Each objective module (``hpo.objectives.<name>``) offers the same functions, which evaluation reuses:

- ``objective(ctx: TrialContext) -> TrialOutcome``: train one trial on train, score on validation;
- ``preflight(config: StudyConfig) -> None``: raise UsageError before anything is written if data is missing;
- ``build_model(hp: dict, meta: dict) -> nn.Module``: rebuild a checkpointed model (``meta`` from the outcome);
- ``test_split(data: DataConfig, meta: dict) -> (inputs: Tensor, targets: ndarray)``: the test split,
  model-ready; the only reader of test data, called by ``hpo evaluate`` alone;
- ``to_predictions(outputs: Tensor, meta: dict) -> ndarray``: raw outputs to what is scored and ensembled
  (k$ for Boston, class probabilities for CIFAR-10).

Optional, used by ``hpo evaluate`` and ``hpo report`` when present:

- ``val_split(data: DataConfig, meta: dict) -> (inputs: Tensor, targets: ndarray)``: the validation split,
  model-ready (greedy ensemble selection needs its targets; the report shows a validation image);
- ``full_task(data: DataConfig, meta: dict, device) -> (Task, meta)``: a training task over train+validation
  for ``--retrain-seeds`` (validation is still scored, but it is training data then).

Checkpoints (artifact folder ``checkpoint/`` of a trial's MLflow run) hold ``model.pt`` (a dict with
``objective``, ``hyperparameters``, ``meta``, ``state_dict``), ``val_predictions.npy`` and ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable

from hpo.config import StudyConfig
from hpo.objectives import boston, cifar10
from types import ModuleType
from hpo.objectives._context import TrialContext, TrialOutcome

Objective = Callable[[TrialContext], TrialOutcome]

OBJECTIVES: dict[str, Objective] = {
    "boston": boston.objective,
    "cifar10": cifar10.objective,
}

# The module of each objective, for evaluation (build_model, test_split, to_predictions).
MODULES: dict[str, ModuleType] = {
    "boston": boston,
    "cifar10": cifar10,
}

# Checks that run before a study writes anything: the data is there and readable.
PREFLIGHT: dict[str, Callable[[StudyConfig], None]] = {
    "boston": boston.preflight,
    "cifar10": cifar10.preflight,
}

__all__ = ["MODULES", "OBJECTIVES", "PREFLIGHT", "Objective", "TrialContext", "TrialOutcome"]
