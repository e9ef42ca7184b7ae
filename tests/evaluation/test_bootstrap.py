"""Bootstrap intervals of test metrics: known cases, and the vectorized code against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpo.evaluation import classification_metrics, regression_metrics
from hpo.evaluation._bootstrap import bootstrap_intervals, interval


def test_constant_error_has_a_point_interval() -> None:
    # Every row is off by exactly 2: every resample has RMSE = MAE = 2, so the interval is [2, 2].
    targets = np.linspace(10, 50, 30)
    found = bootstrap_intervals(targets + 2.0, targets)
    assert interval(found, "test_rmse") == pytest.approx((2.0, 2.0))
    assert interval(found, "test_mae") == pytest.approx((2.0, 2.0))


def test_accuracy_interval_matches_the_binomial() -> None:
    # Half of 400 rows right: the 95% interval of accuracy is 0.5 +- 1.96 * sqrt(0.25 / 400) = 0.5 +- 0.049.
    labels = np.zeros(400, dtype=np.int64)
    probabilities = np.tile([0.9, 0.1], (400, 1))
    probabilities[::2] = [0.1, 0.9]  # every other row predicted wrong
    low, high = interval(bootstrap_intervals(probabilities, labels, resamples=2000), "test_acc")  # type: ignore[misc]
    assert low == pytest.approx(0.5 - 0.049, abs=0.01) and high == pytest.approx(0.5 + 0.049, abs=0.01)


def test_vectorized_intervals_equal_a_loop_over_the_same_resamples() -> None:
    rng = np.random.default_rng(3)
    targets = rng.normal(20, 5, 57)
    predictions = targets + rng.normal(0, 3, 57)
    found = bootstrap_intervals(predictions, targets, resamples=300, seed=9, level=0.9)
    idx = np.random.default_rng(9).integers(0, 57, size=(300, 57))
    for name in ("rmse", "mae", "r2", "mse"):
        values = [regression_metrics(predictions[i], targets[i], prefix="t")[f"t_{name}"] for i in idx]
        assert interval(found, f"test_{name}") == pytest.approx(tuple(np.percentile(values, [5, 95])))


def test_classification_intervals_equal_a_loop() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 80)
    probabilities = rng.dirichlet([1, 1, 1], 80)
    found = bootstrap_intervals(probabilities, labels, resamples=120, seed=2)
    idx = np.random.default_rng(2).integers(0, 80, size=(120, 80))
    for name in ("acc", "loss", "macro_f1"):
        values = [classification_metrics(probabilities[i], labels[i], prefix="t")[f"t_{name}"] for i in idx]
        assert interval(found, f"test_{name}") == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    # hpo's macro-F1 is scikit-learn's over the classes present
    f1 = f1_score(
        labels[idx[0]], probabilities[idx[0]].argmax(axis=1), average="macro", labels=np.unique(labels[idx[0]])
    )
    assert classification_metrics(probabilities[idx[0]], labels[idx[0]], prefix="t")["t_macro_f1"] == pytest.approx(f1)
