"""`hpo evaluate`: the test split is read by evaluate alone, once; runs, artifacts and registered models
land in MLflow as the contract says; the ensemble model stands on its own in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from hpo.data import TEST_SPLIT_READS
from tests.conftest import EvaluatedStudy, tiny_boston


def _runs(study: EvaluatedStudy, role: str) -> list[Any]:
    client = MlflowClient(study.tracking_uri)
    experiment = client.get_experiment_by_name(study.name)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`hpo.role` = '{role}'", max_results=500)
    return [r for r in runs if r.data.tags.get("hpo.superseded") != "true"]


def _download(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(tmp_path)))


def test_run_never_reads_the_test_split_and_evaluate_reads_it_once(evaluated_boston: EvaluatedStudy) -> None:
    # `hpo run` (in-process CLI) leaves the counter alone; `hpo evaluate` reads the test split exactly once.
    assert evaluated_boston.reads_after_run == evaluated_boston.reads_before
    assert evaluated_boston.reads_after_evaluate == evaluated_boston.reads_before + 1


def test_evaluate_logs_the_contract_runs_and_artifacts(evaluated_boston: EvaluatedStudy, tmp_path: Path) -> None:
    # One evaluation run per top trial and per baseline, one ensemble run; all children of the study run.
    client = MlflowClient(evaluated_boston.tracking_uri)
    parent = _runs(evaluated_boston, "study")[0].info.run_id
    evaluations = _runs(evaluated_boston, "evaluation")
    ensembles = _runs(evaluated_boston, "ensemble")
    trials = [r for r in evaluations if r.data.tags["hpo.kind"] == "trial"]
    baselines = {r.data.tags["hpo.baseline"]: r for r in evaluations if r.data.tags["hpo.kind"] == "baseline"}
    assert len(trials) == 3 and len(ensembles) == 1
    assert set(baselines) == {
        "linear_regression",
        "random_forest",
        "gradient_boosting",
        "gradient_boosting_slow",
        "extra_trees",
        "support_vectors",
        "gaussian_process",
    }
    for run in [*evaluations, *ensembles]:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status == "FINISHED"
        assert {"test_mse", "test_rmse", "test_mae", "test_r2"} <= set(run.data.metrics)
        files = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert files == {"plots/predicted_vs_actual.png", "plots/residuals.png"}
        csv = pd.read_csv(
            _download(client, run.info.run_id, "predictions/test_predictions.csv", tmp_path / run.info.run_id)
        )
        # The logged RMSE is the RMSE of the logged predictions.
        assert np.sqrt(np.mean((csv["predicted"] - csv["actual"]) ** 2)) == pytest.approx(
            run.data.metrics["test_rmse"], rel=1e-5
        )
    ranks = sorted(int(r.data.tags["hpo.rank"]) for r in trials)
    assert ranks == [1, 2, 3]
    ensemble = ensembles[0]
    spec = json.loads(_download(client, ensemble.info.run_id, "ensemble.json", tmp_path / "spec").read_text())
    assert spec["method"] == "greedy"
    assert sum(spec["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert json.loads(ensemble.data.tags["hpo.members"]) == [int(k) for k in spec["weights"]]
    # Greedy selection on validation is never worse there than the best member.
    assert spec["validation"]["value"] <= min(spec["validation"]["members"].values())
    registered = {m.name for m in client.search_registered_models()}
    assert {f"{evaluated_boston.name}-best", f"{evaluated_boston.name}-ensemble"} <= registered
    assert client.get_run(parent).data.tags.get("hpo.evaluated_at")


def test_ensemble_pyfunc_loads_and_predicts_in_a_fresh_process(
    evaluated_boston: EvaluatedStudy, tmp_path: Path
) -> None:
    # A new interpreter loads the registered ensemble and reproduces the weighted validation predictions.
    client = MlflowClient(evaluated_boston.tracking_uri)
    ensemble = _runs(evaluated_boston, "ensemble")[0]
    spec = json.loads(_download(client, ensemble.info.run_id, "ensemble.json", tmp_path / "spec").read_text())
    expected = sum(
        weight
        * np.load(_download(client, spec["member_runs"][trial], "checkpoint/val_predictions.npy", tmp_path / trial))
        for trial, weight in spec["weights"].items()
    ) / sum(spec["weights"].values())
    script = textwrap.dedent(
        f"""
        import json, sys
        import mlflow
        from hpo.objectives.boston import BostonDataOptions
        from hpo.objectives.boston import _model as boston
        mlflow.set_tracking_uri({evaluated_boston.tracking_uri!r})
        model = mlflow.pyfunc.load_model("models:/{evaluated_boston.name}-ensemble/1", suppress_warnings=True)
        inputs, _ = boston.val_split(BostonDataOptions(cv_folds=1), {{}})
        print(json.dumps(model.predict(inputs.numpy()).tolist()))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HPO_STORAGE")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    predicted = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-3)


def test_second_evaluate_shows_results_without_reading_the_test_split(
    evaluated_boston: EvaluatedStudy, cli: Any
) -> None:
    # Without --force the test split is not read again; the existing results are shown instead.
    before = TEST_SPLIT_READS["boston"]
    runs_before = len(_runs(evaluated_boston, "evaluation"))
    result = cli("evaluate", evaluated_boston.name, *evaluated_boston.flags)
    assert result.exit_code == 0, result.output
    assert "already exist" in result.output and "--force" in result.output
    assert "linear regression" in result.output and "ensemble (greedy)" in result.output
    assert TEST_SPLIT_READS["boston"] == before
    assert len(_runs(evaluated_boston, "evaluation")) == runs_before


def test_an_evaluation_that_failed_after_reading_the_test_split_is_not_repeated_without_force(
    write_study: Any, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry fails after the test split was read: no finished results exist, but a plain second
    # evaluate must not read the test split again (exit 2, asks for --force); --force reads it once more.
    from hpo.evaluation import _evaluate

    assert cli("run", write_study(tiny_boston(name="broken-boston", n_trials=2)), "-q").exit_code == 0
    before = TEST_SPLIT_READS["boston"]

    def registry_down(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("model registry unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(_evaluate, "register_best", registry_down)
        with pytest.raises(RuntimeError, match="model registry unavailable"):
            cli("evaluate", "broken-boston")
    assert TEST_SPLIT_READS["boston"] == before + 1

    again = cli("evaluate", "broken-boston")
    assert again.exit_code == 2
    assert "read the test split at" in again.output and "--force" in again.output
    assert TEST_SPLIT_READS["boston"] == before + 1
    forced = cli("evaluate", "broken-boston", "--force")
    assert forced.exit_code == 0, forced.output
    assert TEST_SPLIT_READS["boston"] == before + 2


def test_evaluate_names_a_missing_study(evaluated_boston: EvaluatedStudy, cli: Any) -> None:
    result = cli("evaluate", "no-such-study", *evaluated_boston.flags)
    assert result.exit_code == 2
    assert "no-such-study" in result.output and "tiny-boston" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_retrain_and_force_read_again_and_supersede(
    evaluated_boston: EvaluatedStudy, write_study: Any, cli: Any
) -> None:
    # --force re-reads the test split once; --retrain-seeds logs the spread over seeds; old runs are superseded.
    flags = evaluated_boston.flags
    path = write_study(tiny_boston(name="retrain-boston", n_trials=2, evaluation={"top_k": 2}))
    assert cli("run", path, "-q", *flags).exit_code == 0
    first = cli("evaluate", "retrain-boston", "--ensemble", "none", "--top-k", "1", *flags)
    assert first.exit_code == 0, first.output
    before = TEST_SPLIT_READS["boston"]
    again = cli("evaluate", path, "--force", "--retrain-seeds", "2", "--ensemble", "mean", "--top-k", "1", *flags)
    assert again.exit_code == 0, again.output
    assert TEST_SPLIT_READS["boston"] == before + 1
    client = MlflowClient(evaluated_boston.tracking_uri)
    experiment = client.get_experiment_by_name("retrain-boston")
    runs = client.search_runs([experiment.experiment_id], "tags.`hpo.role` = 'evaluation'")
    current = [r for r in runs if r.data.tags.get("hpo.superseded") != "true"]
    superseded = [r for r in runs if r.data.tags.get("hpo.superseded") == "true"]
    assert len(superseded) == 1 + 7  # the first evaluation: 1 trial and 7 baselines
    trial_runs = [r for r in current if r.data.tags["hpo.kind"] == "trial"]
    assert len(trial_runs) == 1
    assert "test_rmse_seed_std" in trial_runs[0].data.metrics
    assert "train+validation" in trial_runs[0].data.tags["hpo.detail"]
    assert "one member only: no ensemble" in again.output


def test_cifar10_evaluation_compares_mlp_and_cnn(
    evaluated_boston: EvaluatedStudy,
    tiny_cifar10: Any,
    write_study: Any,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Classification: accuracy, macro-F1, per-class accuracy and a confusion matrix per model; the best
    # MLP against the best CNN; the CNN's first-layer filters and feature maps of a test image.
    monkeypatch.setitem(TEST_SPLIT_READS, "cifar10", 0)  # restored afterwards: other tests count from their own start
    tiny_cifar10(train_per_class=6, test_per_class=2)
    study = {
        "name": "tiny-cifar",
        "objective": "cifar10",
        "metric": "val_acc",
        "direction": "maximize",
        "seed": 0,
        "n_trials": 2,
        "sampler": {"type": "grid"},
        "data": {"val_fraction": 0.2},
        "params": {"model": {"type": "categorical", "choices": ["mlp", "cnn"]}},
        "fixed": {"epochs": 1, "batch_size": 16, "width": 8, "hidden_layers": 1, "conv_blocks": 2, "filters": 4},
        "evaluation": {"top_k": 2, "ensemble": "mean"},
    }
    flags = evaluated_boston.flags
    assert cli("run", write_study(study), "-q", *flags).exit_code == 0
    assert TEST_SPLIT_READS["cifar10"] == 0
    # Before evaluation the report shows the CNN's feature maps of a validation image, never a test image.
    report = cli("report", "tiny-cifar", "--out", tmp_path / "report", *flags)
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "index.html").read_text()
    # conv_blocks 2 x convs_per_block 1: a grid of filters and one of feature maps per layer.
    for layer in ("layer01-features-0", "layer02-features-3"):
        assert f'src="conv_{layer}-filters.png"' in page and f'src="conv_{layer}-feature-maps.png"' in page
    assert "validation image 0" in page and "test image 0" not in page
    assert TEST_SPLIT_READS["cifar10"] == 0
    result = cli("evaluate", "tiny-cifar", *flags)
    assert result.exit_code == 0, result.output
    assert TEST_SPLIT_READS["cifar10"] == 1
    assert "best MLP (trial" in result.output and "best CNN (trial" in result.output and " vs best " in result.output
    client = MlflowClient(evaluated_boston.tracking_uri)
    experiment = client.get_experiment_by_name("tiny-cifar")
    runs = [
        r
        for role in ("evaluation", "ensemble")
        for r in client.search_runs([experiment.experiment_id], f"tags.`hpo.role` = '{role}'")
    ]
    assert len(runs) == 3
    for run in runs:
        assert {"test_acc", "test_macro_f1", "test_loss", "test_acc_airplane", "test_acc_truck"} <= set(
            run.data.metrics
        )
        files = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert {"plots/confusion_matrix.png", "plots/per_class_accuracy.png"} <= files
        if run.data.tags.get("hpo.model_family") == "cnn":
            conv = {a.path for a in client.list_artifacts(run.info.run_id, "plots/conv")}
            assert {
                f"plots/conv/{name}"
                for name in (
                    "index.json",
                    "input.png",
                    "layer02-features-3-filters.png",
                    "layer02-features-3-feature-maps.png",
                )
            } <= conv
    assert {r.data.tags.get("hpo.baseline") for r in runs} >= {"best_mlp", "best_cnn"}
    # After evaluation the report shows every layer's pictures of the test image as evaluate logged
    # them, and still never reads the test split itself.
    report = cli("report", "tiny-cifar", "--out", tmp_path / "report-after", *flags)
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report-after" / "index.html").read_text()
    assert 'src="conv_layer02-features-3-feature-maps.png"' in page and "feature maps of test image 0" in page
    assert TEST_SPLIT_READS["cifar10"] == 1
    csv = pd.read_csv(_download(client, runs[0].info.run_id, "predictions/test_predictions.csv", tmp_path))
    assert len(csv) == 20 and (csv["predicted"] == csv["actual"]).mean() == pytest.approx(
        runs[0].data.metrics["test_acc"]
    )
