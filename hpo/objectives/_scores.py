"""Scores of regression predictions: the one definition a trial's validation metrics and `hpo evaluate`'s
test metrics share, so that val_rmse and test_rmse mean the same thing.

numpy only (no torch): it sits below both the objectives that train and the evaluation that tests them.
"""

from __future__ import annotations

import numpy as np


def regression_metrics(predicted: np.ndarray, actual: np.ndarray, *, prefix: str) -> dict[str, float]:
    """MSE, RMSE, MAE and R² in the target's own unit (R² is 0 for constant targets).

    Computed in the arrays' own precision: a trial scores its float32 predictions as it always has (the
    values a study ranks on stay bit-for-bit the same), `hpo evaluate` passes float64 (see :func:`as_float64`).
    """
    predicted = np.asarray(predicted).reshape(-1)
    actual = np.asarray(actual).reshape(-1)
    error = predicted - actual
    mse = float(np.mean(error**2))
    total = float(np.sum((actual - actual.mean()) ** 2))
    return {
        f"{prefix}_mse": mse,
        f"{prefix}_rmse": mse**0.5,
        f"{prefix}_mae": float(np.mean(np.abs(error))),
        f"{prefix}_r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else 0.0,
    }


def as_float64(values: np.ndarray) -> np.ndarray:
    """`values` in float64: test scores are summed in double precision."""
    return np.asarray(values, np.float64)
