"""The objectives in examples/, written as a user writes them, run through the real CLI (`python -m hpo`
in a subprocess): Optuna and MLflow read back as for the built-ins, evaluate + ensemble for the full one,
and no torch import anywhere in the process for the scikit-learn one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import run_hpo

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
README = EXAMPLES.parent / "README.md"
# Prunes every trial that is not the best so far at its first report, once one trial has completed.
ALWAYS_PRUNE = {"type": "percentile", "percentile": 1.0, "n_startup_trials": 1, "n_warmup_steps": 0}
ONE_THREAD = {"HPO_THREADS": "1"}  # small models on a busy 2-core machine: threads only contend


def _example_study(folder: Path, name: str, **changes: Any) -> Path:
    """The shipped example study with `changes`, naming the example's file by its absolute path (as a study
    kept in another folder would)."""
    study = yaml.safe_load((EXAMPLES / name).read_text())
    file, function = study["objective"].split(":")
    study["objective"] = f"{EXAMPLES / file}:{function}"
    for key, value in changes.items():
        study[key] = {**study[key], **value} if isinstance(value, dict) and key in ("fixed", "data") else value
    path = folder / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _runs(client: MlflowClient, experiment: str, role: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    return client.search_runs([found.experiment_id], f"tags.`hpo.role` = '{role}'", max_results=1000)


def _check_trials_in_mlflow(
    study_name: str, metric: str, steps: list[int], folder: Path
) -> list[optuna.trial.FrozenTrial]:
    """One parent run, one child per trial with its params and per-epoch curve; pruned trials KILLED."""
    trials = optuna.load_study(study_name=study_name, storage=f"sqlite:///{folder / 'hpo.db'}").trials
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (parent,) = _runs(client, study_name, "study")
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _runs(client, study_name, "trial")}
    assert sorted(runs) == [t.number for t in trials]
    for trial in trials:
        run = runs[trial.number]
        assert (
            run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            and trial.user_attrs["mlflow_run_id"] == run.info.run_id
        )
        assert {k: run.data.params[k] for k in trial.params} == {k: str(v) for k, v in trial.params.items()}
        history = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
        if trial.state.name == "COMPLETE":
            assert history == steps and run.info.status == "FINISHED"
            assert run.data.metrics[f"best_{metric}"] == pytest.approx(trial.value)
        else:
            assert trial.state.name == "PRUNED" and run.info.status == "KILLED" and history == steps[: len(history)]
            assert run.data.tags["hpo.failure_reason"].startswith("pruned at epoch")
    assert {t.state.name for t in trials} == {"COMPLETE", "PRUNED"}
    return trials


def test_minimal_pytorch_objective_runs_with_curves_and_pruning(tmp_path: Path) -> None:
    # A plain function (no declaration) with its CNN architecture searched: exit 0, every trial an MLflow
    # child run with its val_acc curve, pruned trials KILLED.
    study = _example_study(tmp_path, "digits-cnn.yaml", n_trials=4, fixed={"epochs": 3}, pruner=ALWAYS_PRUNE)
    done = run_hpo("run", study, "--quiet", cwd=tmp_path, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _check_trials_in_mlflow("digits-cnn", "val_acc", [0, 1, 2], tmp_path)
    assert {"channels", "conv_layers", "kernel_size", "dropout", "lr"} == set(trials[0].params)


def test_full_objective_is_evaluated_once_and_ensembled(cli: Any, tmp_path: Path) -> None:
    # hpo run in a subprocess, then hpo evaluate: one evaluation run per checkpointed trial and a greedy
    # ensemble run, all with test metrics, the objective's test_split called exactly once; a second
    # evaluate reads nothing; the registered ensemble (a pyfunc model) predicts class probabilities.
    import mlflow

    from hpo.data import TEST_SPLIT_READS

    study = _example_study(tmp_path, "digits-full.yaml", n_trials=4, fixed={"epochs": 3})
    done = run_hpo("run", study, "--quiet", cwd=tmp_path, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    key = f"{EXAMPLES / 'digits_full.py'}:digits"
    before = TEST_SPLIT_READS[key]
    result = cli("evaluate", study)
    assert result.exit_code == 0, result.output
    assert TEST_SPLIT_READS[key] == before + 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    evaluations, ensembles = _runs(client, "digits-full", "evaluation"), _runs(client, "digits-full", "ensemble")
    assert len(evaluations) == 3 and len(ensembles) == 1  # top_k 3 of the 4 trials
    for run in [*evaluations, *ensembles]:
        assert {"test_acc", "test_macro_f1", "test_loss"} <= set(run.data.metrics) and 0 <= run.data.metrics[
            "test_acc"
        ] <= 1
    assert max(r.data.metrics["test_acc"] for r in evaluations) > 0.5  # ten classes: chance is 0.1
    again = cli("evaluate", study)
    assert again.exit_code == 0 and "already exist" in again.output and TEST_SPLIT_READS[key] == before + 1

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/digits-full-ensemble/1")
    probabilities = model.predict(np.zeros((3, 1, 8, 8), np.float32))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-4)


def _imports_torch(stderr: str) -> bool:
    """Whether `python -X importtime` (PYTHONPROFILEIMPORTTIME) logged an import of torch."""
    return re.search(r"\|\s+torch(\.|$)", stderr, re.MULTILINE) is not None


def test_scikit_learn_objective_prunes_by_stage_without_importing_torch(tmp_path: Path) -> None:
    # Gradient boosting reports every 10 trees: curves over the stages, pruning, and neither `hpo run` nor a
    # joining `hpo worker` ever imports torch (their whole import log is read).
    profile = {"PYTHONPROFILEIMPORTTIME": "1"}
    study = _example_study(
        tmp_path, "diabetes-boosting.yaml", n_trials=4, fixed={"n_estimators": 40}, pruner=ALWAYS_PRUNE
    )
    done = run_hpo("run", study, "--quiet", cwd=tmp_path, env=profile)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "import time:" in done.stderr and not _imports_torch(done.stderr)
    assert run_hpo("create", study, "--n-trials", "6", cwd=tmp_path).returncode == 0
    joined = run_hpo("worker", study, "--quiet", cwd=tmp_path, env=profile)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert "import time:" in joined.stderr and not _imports_torch(joined.stderr)
    assert (
        "differs from the config" not in joined.stderr
    )  # its metric comes from the declaration: the file is unchanged
    trials = _check_trials_in_mlflow("diabetes-boosting", "val_rmse", [10, 20, 30, 40], tmp_path)
    assert len(trials) == 6


@pytest.mark.parametrize(
    ("study", "name", "file"),
    [
        ("digits-cnn.yaml", "train", "digits_cnn.py"),
        ("digits-full.yaml", "digits", "digits_full.py"),
        ("diabetes-boosting.yaml", "boosting", "diabetes_boosting.py"),
    ],
)
def test_shipped_example_studies_validate_and_name_their_objective(study: str, name: str, file: str, cli: Any) -> None:
    # The relative `objective:` of each shipped example resolves from the study file's folder, not the
    # current one (the test runs elsewhere).
    result = cli("validate", EXAMPLES / study)
    assert result.exit_code == 0, result.output
    assert f"# objective: {name} (file: {EXAMPLES / file})" in result.stdout


def test_readme_shows_the_minimal_example_as_it_is() -> None:
    # The README's "Your own model" section holds the minimal example's code and study file verbatim.
    readme = README.read_text(encoding="utf-8")
    code = (EXAMPLES / "digits_cnn.py").read_text().split('"""', 2)[2].strip()
    assert code in readme
    assert (EXAMPLES / "digits-cnn.yaml").read_text().split("\n", 2)[2].strip() in readme
