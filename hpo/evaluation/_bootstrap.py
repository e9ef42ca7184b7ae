"""Error bars of test metrics: a percentile bootstrap over the test rows.

A test split of 102 Boston houses scores a model with a few percent of noise; a gap between two models
smaller than that is not evidence. Every model of one evaluation is resampled with the *same* seeded
resamples of the test rows, so their intervals (and differences) are comparable. Vectorized: one
index matrix per chunk of resamples, no Python loop per resample.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0
LOW_SUFFIX, HIGH_SUFFIX = "_ci_low", "_ci_high"  # test_rmse_ci_low, test_rmse_ci_high
_CHUNK = 100  # resamples per index matrix: bounds memory on 10,000 test images


def _regression(p: np.ndarray, y: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    error = (p - y)[idx]
    actual = y[idx]
    mse = np.mean(error**2, axis=1)
    total = np.sum((actual - actual.mean(axis=1, keepdims=True)) ** 2, axis=1)
    r2 = np.where(total > 0, 1.0 - np.sum(error**2, axis=1) / np.where(total > 0, total, 1.0), 0.0)
    return {"mse": mse, "rmse": np.sqrt(mse), "mae": np.mean(np.abs(error), axis=1), "r2": r2}


def _classification(p: np.ndarray, y: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    labels = y.astype(np.int64)
    n_classes = p.shape[1]
    predicted = p.argmax(axis=1)
    log_picked = np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1.0))
    # one confusion matrix per resample, from a single bincount
    cells = labels[idx] * n_classes + predicted[idx] + (np.arange(len(idx)) * n_classes * n_classes)[:, None]
    matrix = np.bincount(cells.ravel(), minlength=len(idx) * n_classes * n_classes).reshape(
        len(idx), n_classes, n_classes
    )
    hits = np.diagonal(matrix, axis1=1, axis2=2).astype(np.float64)
    true, pred = matrix.sum(axis=2), matrix.sum(axis=1)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    precision = np.divide(hits, pred, out=np.zeros_like(hits), where=pred > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=(precision + recall) > 0)
    present = true > 0
    macro_f1 = np.where(present.any(axis=1), (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1), 0.0)
    return {"acc": hits.sum(axis=1) / idx.shape[1], "macro_f1": macro_f1, "loss": -log_picked[idx].mean(axis=1)}


def bootstrap_intervals(
    predictions: np.ndarray,
    targets: np.ndarray,
    *,
    prefix: str = "test",
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, float]:
    """``<prefix>_<metric>_ci_low`` / ``_ci_high`` of each headline metric: the percentile interval of
    the metric over `resamples` seeded resamples (with replacement) of the rows."""
    p = np.asarray(predictions, np.float64)
    y = np.asarray(targets, np.float64).reshape(-1)
    classification = p.ndim == 2 and p.shape[1] > 1
    if not classification:
        p = p.reshape(-1)
    rng = np.random.default_rng(seed)
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, len(y), size=(min(_CHUNK, resamples - start), len(y)))
        for name, values in (_classification(p, y, idx) if classification else _regression(p, y, idx)).items():
            collected.setdefault(name, []).append(values)
    tail = (1.0 - level) / 2 * 100
    out: dict[str, float] = {}
    for name, chunks in collected.items():
        low, high = np.percentile(np.concatenate(chunks), [tail, 100 - tail])
        out[f"{prefix}_{name}{LOW_SUFFIX}"], out[f"{prefix}_{name}{HIGH_SUFFIX}"] = float(low), float(high)
    return out


def interval(metrics: dict[str, float], name: str) -> tuple[float, float] | None:
    """The (low, high) interval logged beside metric `name`, if there is one."""
    low, high = metrics.get(f"{name}{LOW_SUFFIX}"), metrics.get(f"{name}{HIGH_SUFFIX}")
    return (low, high) if low is not None and high is not None else None


def with_interval(metrics: dict[str, float], name: str) -> str:
    """'3.12 [2.81, 3.5]': a metric and its interval as tables show them (the value alone without one)."""
    value = metrics.get(name)
    if value is None:
        return ""
    bounds = interval(metrics, name)
    return f"{value:.4g}" + (f" [{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds is not None else "")


__all__ = [
    "HIGH_SUFFIX",
    "LEVEL",
    "LOW_SUFFIX",
    "RESAMPLES",
    "SEED",
    "bootstrap_intervals",
    "interval",
    "with_interval",
]
