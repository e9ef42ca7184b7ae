"""Cross-validation folds (`data.cv_folds`): which rows each fold holds, and one trial result from K."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hpo.data import boston as boston_data
from hpo.objectives import DataConfig, TrialResult, make_folds
from hpo.objectives._folds import combine, fold_step
from hpo.objectives.boston import BostonDataOptions


def _boston_csv(folder: Path, rows: int = 40) -> Path:
    """A Boston-style CSV of `rows` distinct, deterministic rows (no shipped data read)."""
    rng = np.random.default_rng(7)
    header = "CRIM,ZN,INDUS,CHAS,NOX,RM,AGE,DIS,RAD,TAX,PTRATIO,B,LSTAT,MEDV"
    lines = [header] + [",".join(f"{v:.4f}" for v in rng.uniform(1, 50, size=14)) for _ in range(rows)]
    path = folder / "mini.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_test_row_in_any_fold_and_each_training_row_out_of_fold_once(tmp_path: Path) -> None:
    # The folds split exactly the non-test rows: every one of them is validated on once, no test row ever.
    config = BostonDataOptions(path=str(_boston_csv(tmp_path)), cv_folds=4, test_fraction=0.25, split_seed=3)
    n = len(boston_data.read_frame(config.path))
    _, _, test_rows = boston_data._split_indices(n, config)
    cv_rows = boston_data._cv_indices(n, config)  # fold positions -> CSV rows
    folds = make_folds(config, boston_data.cv_rows(config))
    assert len(folds) == 4 and [f.index for f in folds] == [0, 1, 2, 3]
    validated = np.concatenate([cv_rows[f.val] for f in folds])
    trained = np.concatenate([cv_rows[f.train] for f in folds])
    assert not set(validated) & set(test_rows) and not set(trained) & set(test_rows)
    assert sorted(validated) == sorted(set(range(n)) - set(test_rows))  # each non-test row exactly once
    for fold in folds:
        assert not set(fold.train) & set(fold.val)
        assert len(fold.train) + len(fold.val) == len(cv_rows)
    # what the objective trains on under CV is those rows, in that order
    loaded = boston_data.load(config)
    assert len(loaded.train.y) == len(cv_rows)
    np.testing.assert_array_equal(
        loaded.train.y, boston_data.read_frame(config.path)["MEDV"].to_numpy(np.float32)[cv_rows]
    )


def test_same_seed_same_folds_another_seed_other_folds() -> None:
    def vals(seed: int) -> list[list[int]]:
        return [f.val.tolist() for f in make_folds(DataConfig(cv_folds=5, split_seed=seed), 50)]

    assert vals(11) == vals(11)
    assert vals(11) != vals(12)


@pytest.mark.parametrize(("n", "k", "seed"), [(50, 5, 0), (404, 5, 42), (41, 4, 7), (12, 12, 3)])
def test_row_count_folds_are_scikit_learns_kfold(n: int, k: int, seed: int) -> None:
    # hpo computes KFold's folds itself (importing scikit-learn costs a trial a second): they must be
    # exactly scikit-learn's, or a study resumed after this change would score on other folds.
    from sklearn.model_selection import KFold

    expected = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n)))
    folds = make_folds(DataConfig(cv_folds=k, split_seed=seed), n)
    assert [(f.train.tolist(), f.val.tolist()) for f in folds] == [(t.tolist(), v.tolist()) for t, v in expected]


def test_class_labels_give_stratified_folds() -> None:
    # 30 of class 0 and 10 of class 1 over 5 folds: each fold validates on 6 and 2 of them.
    labels = np.array([0] * 30 + [1] * 10)
    for fold in make_folds(DataConfig(cv_folds=5, split_seed=0), labels):
        assert np.bincount(labels[fold.val]).tolist() == [6, 2]


def test_too_few_rows_for_the_folds_is_named() -> None:
    with pytest.raises(ValueError, match=re.escape("data.cv_folds: 5 folds need at least 5 rows")):
        make_folds(DataConfig(cv_folds=5), 3)


def test_steps_are_cumulative_epochs() -> None:
    folds = make_folds(DataConfig(cv_folds=3), 9)
    # with an epoch budget, fold i's epoch e is step i * epochs + e in every trial
    assert [fold_step(f, 2, span=10, offset=99) for f in folds] == [2, 12, 22]
    # without one, a fold continues where the last one stopped
    assert fold_step(folds[2], 0, span=None, offset=17) == 17


def test_combine_averages_folds_and_puts_predictions_back_out_of_fold() -> None:
    folds = make_folds(DataConfig(cv_folds=3, split_seed=1), 6)
    results = [
        TrialResult(
            {"val_rmse": 1.0 + f.index, "train_seconds": 2.0},
            models=(f"model{f.index}",),
            meta={"k": 1},
            val_predictions=f.val * 10.0,
            best_epoch=3 + f.index,
        )
        for f in folds
    ]
    metrics, result, per_fold = combine(results, folds, n_rows=6, spread=["val_rmse"])
    assert metrics["val_rmse"] == pytest.approx(2.0)  # mean of 1, 2, 3
    assert metrics["val_rmse_fold_std"] == pytest.approx(1.0)  # sample std of 1, 2, 3
    assert metrics["train_seconds"] == pytest.approx(6.0)  # time adds up
    assert "train_seconds_fold_std" not in metrics
    assert per_fold["val_rmse"] == [1.0, 2.0, 3.0]
    assert result is not None and list(result.models) == ["model0", "model1", "model2"]
    # row r's prediction came from the fold that validated on r: here 10 * r
    np.testing.assert_array_equal(result.val_predictions, np.arange(6) * 10.0)
    assert result.best_epoch == 4


def test_combine_of_plain_metrics_has_no_result() -> None:
    folds = make_folds(DataConfig(cv_folds=2), 4)
    metrics, result, _ = combine([{"val_loss": 1.0}, {"val_loss": 3.0}], folds, n_rows=4, spread=["val_loss"])
    assert metrics == {"val_loss": 2.0, "val_loss_fold_std": pytest.approx(2**0.5)}
    assert result is None
