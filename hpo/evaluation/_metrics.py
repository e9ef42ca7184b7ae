"""Scores of predictions against targets, for any objective: the kind follows the predictions' shape.

`to_predictions` of an objective gives 1-D values for regression (Boston: k$) and an N x C matrix of
class probabilities for classification (CIFAR-10), so test metrics, ensemble selection and plots need
no per-objective code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hpo.objectives._scores import as_float64, regression_metrics

ScoreFn = Callable[[np.ndarray, np.ndarray], float]


def is_classification(predictions: np.ndarray) -> bool:
    return predictions.ndim == 2 and predictions.shape[1] > 1


def confusion_matrix(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    n = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), predicted), 1)
    return matrix


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, *, prefix: str, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy, macro-F1, log loss and the accuracy of each class (named by `classes` when given)."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    matrix = confusion_matrix(probabilities, labels)
    true_per_class = matrix.sum(axis=1)
    predicted_per_class = matrix.sum(axis=0)
    hits = np.diag(matrix).astype(np.float64)
    recall = np.divide(hits, true_per_class, out=np.zeros_like(hits), where=true_per_class > 0)
    precision = np.divide(hits, predicted_per_class, out=np.zeros_like(hits), where=predicted_per_class > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(hits), where=denominator > 0)
    present = true_per_class > 0
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    metrics = {
        f"{prefix}_acc": float(hits.sum() / max(len(labels), 1)),
        f"{prefix}_macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        f"{prefix}_loss": float(-np.log(picked).mean()),
    }
    names = (
        list(classes)
        if classes is not None and len(classes) == matrix.shape[0]
        else [str(i) for i in range(matrix.shape[0])]
    )
    for name, value, seen in zip(names, recall, present):
        if seen:
            metrics[f"{prefix}_acc_{name}"] = float(value)
    return metrics


def score(
    predictions: np.ndarray, targets: np.ndarray, *, prefix: str, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """Every metric of the predictions' kind, named `<prefix>_<metric>`."""
    if is_classification(predictions):
        return classification_metrics(predictions, targets, prefix=prefix, classes=classes)
    return regression_metrics(as_float64(predictions), as_float64(targets), prefix=prefix)


def _rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted.reshape(-1) - actual.reshape(-1)) ** 2)))


def _mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted.reshape(-1) - actual.reshape(-1))))


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def _log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels.astype(np.int64)], 1e-12, 1.0)).mean())


def selection_score(metric: str, *, classification: bool) -> tuple[str, ScoreFn, bool]:
    """The validation score greedy ensemble selection climbs: the study's metric when it can be computed
    from predictions, else the kind's natural loss. Returns (name, function, higher_is_better)."""
    if classification:
        if metric == "val_acc":
            return "val_acc", _accuracy, True
        return "val_loss", _log_loss, False
    if metric == "val_mae":
        return "val_mae", _mae, False
    if metric == "val_r2":
        return "val_r2", lambda p, a: regression_metrics(as_float64(p), as_float64(a), prefix="v")["v_r2"], True
    return "val_rmse", _rmse, False  # val_rmse, val_mse and val_loss (standardized MSE) rank alike
