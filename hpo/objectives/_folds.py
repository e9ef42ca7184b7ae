"""K-fold cross-validation of a trial (`data.cv_folds: K`): the folds, and one result from K.

On small data a single validation split of a few dozen rows ranks trials by the noise of those rows.
With ``cv_folds: K`` hpo trains a trial K times, once per fold, and scores it by the mean over folds.
The folds partition the objective's *non-test rows* (in the order its ``cv_rows`` hook gives them):
the test rows are never in any fold. They are seeded by ``data.split_seed`` (the same folds for every
study on that split) and stratified when ``cv_rows`` gives class labels. No torch here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpo.objectives._context import TrialResult
from hpo.objectives._data import DataConfig

FOLD_PREFIX = "fold_"  # per-fold metrics in MLflow: fold_<metric>, step = fold index
STD_SUFFIX = "_fold_std"  # spread over folds: <metric>_fold_std
CV_FOLDS_METRIC = "cv_folds"  # a cross-validated trial's run records K


@dataclass(frozen=True)
class Fold:
    """One fold: positions (into the objective's non-test rows) to train on and to validate on."""

    index: int  # 0 .. count-1
    count: int  # K
    train: np.ndarray  # int64 positions
    val: np.ndarray  # int64 positions; over all folds, every non-test row exactly once


def make_folds(data: DataConfig, rows: int | np.ndarray) -> list[Fold]:
    """The ``data.cv_folds`` folds of `rows`: a row count, or one class label per row (stratified folds)."""
    k = data.cv_folds
    labels = None if isinstance(rows, (int, np.integer)) else np.asarray(rows)
    n = int(rows) if labels is None else len(labels)
    if n < k:
        raise ValueError(f"data.cv_folds: {k} folds need at least {k} rows to validate on; there are {n}")
    if labels is not None:
        from sklearn.model_selection import StratifiedKFold  # about a second to import: only for class labels

        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=data.split_seed).split(np.zeros(n), labels)
    else:
        splits = _kfold(n, k, seed=data.split_seed)
    return [Fold(i, k, np.asarray(train, np.int64), np.asarray(val, np.int64)) for i, (train, val) in enumerate(splits)]


def _kfold(n: int, k: int, *, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's ``KFold(k, shuffle=True, random_state=seed)`` folds, exactly (a test compares them),
    without importing scikit-learn, which costs a Boston trial about a second before its first epoch."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    folds, start = [], 0
    for size in sizes:
        in_val = np.zeros(n, dtype=bool)
        in_val[order[start : start + size]] = True
        folds.append((np.flatnonzero(~in_val), np.flatnonzero(in_val)))
        start += size
    return folds


def fold_step(fold: Fold, epoch: int, *, span: int | None, offset: int) -> int:
    """The pruning (and MLflow) step of `epoch` of `fold`: the cumulative epoch.

    With a fixed epoch budget `span` (the trial's ``epochs``) fold i's epoch e is step ``i * span + e``
    in every trial, so a pruner compares trials at the same fold and epoch even when early stopping
    ends folds at different epochs; without one, epochs simply continue from the previous fold (`offset`).
    """
    return fold.index * span + epoch if span else offset + epoch


def combine(
    results: Sequence[Mapping[str, float] | TrialResult],
    folds: Sequence[Fold],
    *,
    n_rows: int,
    spread: Collection[str] = (),
) -> tuple[dict[str, float], TrialResult | None, dict[str, list[float]]]:
    """One trial's result from its folds' results.

    Metrics: the mean over folds (``train_seconds`` the sum), plus ``<metric>_fold_std`` for each metric
    of `spread` every fold returned. A full result keeps every fold's models (predictions average them) and the
    out-of-fold validation predictions, one per non-test row in `cv_rows` order. Returns
    (metrics, result or None, per-fold values of each metric).
    """
    metrics_per_fold = [dict(r.metrics if isinstance(r, TrialResult) else r) for r in results]
    shared = [name for name in metrics_per_fold[0] if all(name in m for m in metrics_per_fold)]
    per_fold = {name: [float(m[name]) for m in metrics_per_fold] for name in shared}
    metrics: dict[str, float] = {}
    for name, values in per_fold.items():
        metrics[name] = float(sum(values)) if name == "train_seconds" else float(statistics.fmean(values))
        if name in spread and len(values) > 1 and all(math.isfinite(v) for v in values):
            metrics[f"{name}{STD_SUFFIX}"] = float(statistics.stdev(values))
    full = [r for r in results if isinstance(r, TrialResult)]
    if len(full) != len(results):
        return metrics, None, per_fold
    oof = _out_of_fold([r.val_predictions for r in full], folds, n_rows=n_rows)
    epochs = [r.best_epoch for r in full if r.best_epoch is not None]
    result = TrialResult(
        metrics,
        models=[model for r in full for model in r.models],
        meta=dict(full[0].meta),
        val_predictions=oof,
        best_epoch=int(statistics.median_low(epochs)) if epochs else None,
    )
    return metrics, result, per_fold


def _out_of_fold(predictions: Sequence[Any], folds: Sequence[Fold], *, n_rows: int) -> np.ndarray | None:
    """Each fold's validation predictions put back at its rows' positions (None if a fold gave none)."""
    arrays = [np.asarray(p, np.float64) if p is not None else None for p in predictions]
    if any(a is None or len(a) != len(f.val) for a, f in zip(arrays, folds)):
        return None
    first = arrays[0]
    assert first is not None
    oof = np.full((n_rows, *first.shape[1:]), np.nan)
    for array, fold in zip(arrays, folds):
        oof[fold.val] = array
    return oof


__all__ = ["CV_FOLDS_METRIC", "FOLD_PREFIX", "STD_SUFFIX", "Fold", "combine", "fold_step", "make_folds"]
