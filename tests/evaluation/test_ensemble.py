"""Ensemble selection and the metrics it climbs: pure functions, checked on random predictions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error, r2_score

from hpo.evaluation import (
    blend,
    classification_metrics,
    greedy_ensemble,
    mean_ensemble,
    regression_metrics,
    selection_score,
)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_models=st.integers(1, 6),
    n_rows=st.integers(2, 40),
    metric=st.sampled_from(["val_rmse", "val_mae", "val_r2"]),
)
def test_greedy_regression_never_worse_than_best_member(seed: int, n_models: int, n_rows: int, metric: str) -> None:
    # Whatever the candidates, the selected blend scores at least as well on validation as the best one alone.
    rng = np.random.default_rng(seed)
    targets = rng.normal(20, 8, n_rows)
    predictions = [targets + rng.normal(rng.normal(0, 3), rng.uniform(0.1, 10), n_rows) for _ in range(n_models)]
    _name, score, maximize = selection_score(metric, classification=False)
    ensemble = greedy_ensemble(predictions, targets, score, maximize=maximize)
    chosen = score(blend(predictions, ensemble.weights), targets)
    singles = [score(blend([p], [1.0]), targets) for p in predictions]
    best = max(singles) if maximize else min(singles)
    assert (chosen >= best) if maximize else (chosen <= best)
    assert ensemble.val_score == chosen
    assert sum(ensemble.weights) == pytest.approx(1.0)
    assert all(w >= 0 for w in ensemble.weights)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_models=st.integers(1, 5), metric=st.sampled_from(["val_acc", "val_loss"]))
def test_greedy_classification_never_worse_than_best_member(seed: int, n_models: int, metric: str) -> None:
    # Same guarantee on class probabilities, for accuracy (ties everywhere) and log loss.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 30)
    predictions = []
    for _ in range(n_models):
        logits = rng.normal(0, 1, (30, 4)) + rng.uniform(0, 3) * np.eye(4)[labels]
        predictions.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    _, score, maximize = selection_score(metric, classification=True)
    ensemble = greedy_ensemble(predictions, labels, score, maximize=maximize)
    chosen = score(blend(predictions, ensemble.weights), labels)
    singles = [score(blend([p], [1.0]), labels) for p in predictions]
    assert (chosen >= max(singles)) if maximize else (chosen <= min(singles))


def test_greedy_combines_complementary_members() -> None:
    # Two models biased in opposite directions: the blend cancels the bias and beats both.
    targets = np.linspace(10, 40, 50)
    low, high, noisy = targets - 3, targets + 3, targets + np.random.default_rng(0).normal(0, 6, 50)
    _, score, maximize = selection_score("val_rmse", classification=False)
    ensemble = greedy_ensemble([low, high, noisy], targets, score, maximize=maximize)
    assert ensemble.weights[0] == pytest.approx(0.5) and ensemble.weights[1] == pytest.approx(0.5)
    assert ensemble.members == [0, 1]
    assert ensemble.val_score == pytest.approx(0.0, abs=1e-9)


def test_mean_ensemble_weighs_members_equally() -> None:
    predictions = [np.array([1.0, 2.0]), np.array([3.0, 6.0])]
    ensemble = mean_ensemble(predictions)
    assert ensemble.weights == [0.5, 0.5]
    np.testing.assert_allclose(blend(predictions, ensemble.weights), [2.0, 4.0])


def test_blend_refuses_an_empty_ensemble() -> None:
    with pytest.raises(ValueError):
        blend([np.zeros(3)], [0.0])


def test_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    actual, predicted = rng.normal(size=50), rng.normal(size=50)
    reg = regression_metrics(predicted, actual, prefix="test")
    assert reg["test_r2"] == pytest.approx(r2_score(actual, predicted))
    assert reg["test_mae"] == pytest.approx(mean_absolute_error(actual, predicted))
    assert reg["test_rmse"] == pytest.approx(np.sqrt(np.mean((actual - predicted) ** 2)))
    labels = rng.integers(0, 3, 60)
    probabilities = rng.dirichlet(np.ones(3), 60)
    cls = classification_metrics(probabilities, labels, prefix="test", classes=["a", "b", "c"])
    assert cls["test_acc"] == pytest.approx(accuracy_score(labels, probabilities.argmax(1)))
    assert cls["test_macro_f1"] == pytest.approx(f1_score(labels, probabilities.argmax(1), average="macro"))
    assert cls["test_loss"] == pytest.approx(log_loss(labels, probabilities, labels=[0, 1, 2]))
    for i, name in enumerate("abc"):
        seen = labels == i
        assert cls[f"test_acc_{name}"] == pytest.approx(np.mean(probabilities[seen].argmax(1) == i))


def test_greedy_on_out_of_fold_predictions_matches_a_direct_search() -> None:
    # Three candidates' out-of-fold predictions, put together from their folds' validation rows: A is
    # 1 too high, B 1 too low, C 3 too high. Averaging A and B is exact, which a search over every
    # blend of up to four picks confirms; greedy selection on the OOF rows must find that blend.
    from itertools import combinations_with_replacement

    from hpo.objectives import DataConfig, TrialResult, make_folds
    from hpo.objectives._folds import combine

    targets = np.arange(1.0, 7.0)
    folds = make_folds(DataConfig(cv_folds=3, split_seed=5), len(targets))
    oof = []
    for offset in (1.0, -1.0, 3.0):
        results = [TrialResult({"val_rmse": 0.0}, val_predictions=targets[f.val] + offset) for f in folds]
        oof.append(combine(results, folds, n_rows=len(targets))[1].val_predictions)  # type: ignore[union-attr]
    np.testing.assert_array_equal(oof[0], targets + 1.0)
    _, score, maximize = selection_score("val_rmse", classification=False)
    ensemble = greedy_ensemble(oof, targets, score, maximize=maximize)
    blends = [c for size in range(1, 5) for c in combinations_with_replacement(range(3), size)]
    best = min(blends, key=lambda c: (score(np.mean([oof[i] for i in c], axis=0), targets), len(c)))
    direct = [best.count(i) / len(best) for i in range(3)]
    assert ensemble.weights == pytest.approx(direct) == [0.5, 0.5, 0.0]
    assert ensemble.val_score == pytest.approx(0.0)
