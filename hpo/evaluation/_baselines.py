"""Classical baselines beside the networks, fitted on exactly the rows and features the networks saw.

A network that cannot beat a linear model or a forest on the same split has not earned its
complexity. Baselines are objective-specific by nature, so they are registered by objective name;
CIFAR-10's baseline (the study's best MLP against its best CNN) is drawn from the study itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpo.config import DataConfig


@dataclass
class Baseline:
    name: str  # e.g. "linear_regression"
    label: str  # e.g. "linear regression"
    estimator: Any  # fitted, with .predict on model-ready test rows
    val_predictions: np.ndarray | None  # None when validation rows were part of the training rows


def boston_baselines(data: DataConfig, *, with_validation: bool) -> list[Baseline]:
    """Linear regression, a random forest and gradient boosting on the standardized training rows
    (train+validation when the networks were retrained on both)."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import LinearRegression

    from hpo.data import boston as boston_data

    loaded = boston_data.load(data)
    x, y = loaded.train.x, loaded.train.y
    if with_validation:
        x, y = np.concatenate([x, loaded.val.x]), np.concatenate([y, loaded.val.y])
    candidates = [
        ("linear_regression", "linear regression", LinearRegression()),
        ("random_forest", "random forest", RandomForestRegressor(n_estimators=100, random_state=0)),
        ("gradient_boosting", "gradient boosting", GradientBoostingRegressor(random_state=0)),
    ]
    fitted = []
    for name, label, estimator in candidates:
        estimator.fit(x, y)
        val = None if with_validation else estimator.predict(loaded.val.x).astype(np.float64)
        fitted.append(Baseline(name, label, estimator, val))
    return fitted


# objective -> baselines fitted before the test split is read
BASELINES: dict[str, Callable[..., list[Baseline]]] = {
    "boston": boston_baselines,
}
