"""`data.cv_folds` end to end through the CLI: a cross-validated Boston study, its MLflow runs and checkpoints,
then `hpo evaluate` with out-of-fold ensemble selection and bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from hpo.data import TEST_SPLIT_READS
from tests.conftest import tiny_boston

FOLDS = 3


def _client() -> MlflowClient:
    return MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")


def _runs(client: MlflowClient, name: str, role: str) -> list[Any]:
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`hpo.role` = '{role}'", max_results=500)


def test_cross_validated_study_scores_trials_by_the_mean_over_folds(
    cli: Any, write_study: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trial trains one model per fold; its value is the mean of the folds' values, which its MLflow run
    # shows one by one (fold_val_rmse, step = fold) with their spread; the checkpoint keeps all K models and
    # one out-of-fold prediction per non-test row. The test rows are not read until `hpo evaluate`.
    reads = TEST_SPLIT_READS["boston"]
    study = tiny_boston(
        name="cv-boston",
        n_trials=2,
        data={"cv_folds": FOLDS, "subset": 0.3},
        evaluation={"top_k": 2, "ensemble": "greedy"},
    )
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 0, result.output
    assert TEST_SPLIT_READS["boston"] == reads

    trials = optuna.load_study(study_name="cv-boston", storage="sqlite:///hpo.db").trials
    client = _client()
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _runs(client, "cv-boston", "trial")}
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        run = runs[trial.number]
        history = sorted(client.get_metric_history(run.info.run_id, "fold_val_rmse"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(FOLDS))
        per_fold = [m.value for m in history]
        assert trial.value == pytest.approx(np.mean(per_fold))
        assert run.data.metrics["val_rmse_fold_std"] == pytest.approx(np.std(per_fold, ddof=1))
        assert run.data.metrics["cv_folds"] == FOLDS
        # per-epoch curves: fold i's epoch e at step i * epochs + e (4 epochs per fold)
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_rmse")}
        assert {0, 4, 8} <= steps and max(steps) < FOLDS * 4

    folder = Path(client.download_artifacts(runs[trials[0].number].info.run_id, "checkpoint", str(tmp_path / "ckpt")))
    import torch

    saved = torch.load(folder / "model.pt", weights_only=True)
    assert len(saved["state_dicts"]) == FOLDS
    oof = np.load(folder / "val_predictions.npy")
    n_non_test = round((506 - round(506 * 0.2)) * 0.3)  # non-test rows, of which `subset` share
    assert oof.shape == (n_non_test,) and np.isfinite(oof).all()

    # `hpo evaluate`: selection on the OOF rows, baselines (cross-validated on the same folds) among the
    # candidates, a bootstrap interval beside every headline test metric.
    result = cli("evaluate", "cv-boston")
    assert result.exit_code == 0, result.output
    assert TEST_SPLIT_READS["boston"] == reads + 1
    ensemble = _runs(client, "cv-boston", "ensemble")[0]
    spec = json.loads(
        Path(client.download_artifacts(ensemble.info.run_id, "ensemble.json", str(tmp_path / "spec"))).read_text()
    )
    candidates = spec["validation"]["members"]
    assert {"gradient_boosting", "random_forest", "linear_regression", "extra_trees", "support_vectors"} <= set(
        candidates
    )
    assert spec["validation"]["value"] <= min(candidates.values()) + 1e-12
    for run in [*_runs(client, "cv-boston", "evaluation"), ensemble]:
        metrics = run.data.metrics
        assert metrics["test_rmse_ci_low"] <= metrics["test_rmse"] <= metrics["test_rmse_ci_high"]
    assert "test_rmse [95% CI]" in result.output

    # The registered ensemble (networks and any selected baselines) reproduces its logged test predictions.
    import mlflow
    import pandas as pd

    from hpo.data import boston as boston_data
    from hpo.objectives.boston import BostonDataOptions
    from hpo.objectives.boston import _model as boston

    options = BostonDataOptions(cv_folds=FOLDS, subset=0.3)
    scaling = boston_data.load(options)
    inputs, _ = boston.test_split(options, {"x_mean": scaling.x_mean.tolist(), "x_std": scaling.x_std.tolist()})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")  # undone after the test
    predicted = mlflow.pyfunc.load_model("models:/cv-boston-ensemble/1").predict(inputs.numpy())
    logged = pd.read_csv(
        client.download_artifacts(ensemble.info.run_id, "predictions/test_predictions.csv", str(tmp_path / "logged"))
    )
    np.testing.assert_allclose(predicted, logged["predicted"].to_numpy(), rtol=1e-4, atol=1e-3)


def test_cv_folds_is_validated(cli: Any, write_study: Any) -> None:
    # Out of range or not an integer: one line naming the field, exit 2, nothing written.
    for value, words in ((0, "[1, 20]"), (21, "[1, 20]"), (2.5, "integer"), ("five", "integer")):
        result = cli("validate", write_study(tiny_boston(data={"cv_folds": value})))
        assert result.exit_code == 2, result.output
        assert "data.cv_folds" in result.output and words in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not Path("hpo.db").exists()


def test_an_objective_without_cv_rows_refuses_folds(cli: Any, write_study: Any, tmp_path: Path) -> None:
    # A user objective that declares no cv_rows keeps working on one split and refuses cv_folds >= 2.
    (tmp_path / "mine.py").write_text("def train(ctx):\n    assert ctx.fold is None\n    return {'val_loss': 1.0}\n")
    study = {
        "name": "mine",
        "objective": "mine.py:train",
        "metric": "val_loss",
        "direction": "minimize",
        "n_trials": 1,
        "params": {"x": {"type": "float", "low": 0, "high": 1}},
    }
    assert cli("run", write_study({**study, "data": {"cv_folds": 1}}), "--quiet").exit_code == 0
    result = cli("validate", write_study({**study, "data": {"cv_folds": 3}}))
    assert (
        result.exit_code == 2
        and "data.cv_folds" in result.output
        and "does not support cross-validation" in result.output
    )


def test_more_folds_than_rows_is_a_one_line_error(cli: Any, write_study: Any, tmp_path: Path) -> None:
    # 12 rows leave 10 non-test rows: 20 folds cannot split them; refused before anything is written.
    header = "CRIM,ZN,INDUS,CHAS,NOX,RM,AGE,DIS,RAD,TAX,PTRATIO,B,LSTAT,MEDV"
    (tmp_path / "small.csv").write_text(
        "\n".join([header] + [",".join(str((r * 7 + c) % 13 + 1) for c in range(14)) for r in range(12)]) + "\n"
    )
    result = cli("run", write_study(tiny_boston(data={"cv_folds": 20, "path": "small.csv"})), "--quiet")
    assert result.exit_code == 2, result.output
    assert "data.cv_folds: 20 folds need at least 20 non-test rows; small.csv leaves 10" in result.output
    assert not Path("hpo.db").exists()


def test_a_boston_study_stored_before_cross_validation_keeps_its_single_split(cli: Any, write_study: Any) -> None:
    # A study stored by an hpo without data.cv_folds was scored on one validation split: evaluating it
    # reads it so (not as Boston's new default of 5 folds), and resuming it with today's default is
    # refused, naming the change, rather than mixing hold-out and cross-validated trials.
    from hpo.config import parse_study
    from hpo.running.runner import CONFIG_ATTR, stored_config

    resolved = parse_study(tiny_boston(name="old-boston", data={"cv_folds": 1})).resolved()
    del resolved["data"]["cv_folds"]
    study = optuna.create_study(study_name="old-boston", storage="sqlite:///hpo.db")
    study.set_user_attr(CONFIG_ATTR, resolved)
    assert stored_config(study).data.cv_folds == 1
    result = cli("run", write_study(tiny_boston(name="old-boston", data={})), "--quiet")
    assert result.exit_code == 2 and "data.cv_folds: 1 -> 5" in result.output, result.output
