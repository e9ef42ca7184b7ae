"""Scores of regression predictions: the one definition a trial's validation metrics and `hpo evaluate`'s
test metrics share, so that val_rmse and test_rmse mean the same thing.

numpy only (no torch): it sits below both the objectives that train and the evaluation that tests them.
"""

from __future__ import annotations

import numpy as np


def regression_metrics(predicted: np.ndarray, actual: np.ndarray, *, prefix: str) -> dict[str, float]:
    """MSE, RMSE, MAE and R² in the target's own unit, computed in float64 (R² is 0 for constant targets)."""
    predicted = np.asarray(predicted, np.float64).reshape(-1)
    actual = np.asarray(actual, np.float64).reshape(-1)
    error = predicted - actual
    mse = float(np.mean(error**2))
    total = float(np.sum((actual - actual.mean()) ** 2))
    return {
        f"{prefix}_mse": mse,
        f"{prefix}_rmse": mse**0.5,
        f"{prefix}_mae": float(np.mean(np.abs(error))),
        f"{prefix}_r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else 0.0,
    }
