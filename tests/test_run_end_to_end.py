"""`hpo run` end to end on a tiny Boston study: read Optuna and MLflow back and check the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from hpo.data import TEST_SPLIT_READS
from tests.conftest import tiny_boston


def _client() -> MlflowClient:
    # An absolute URI: MLflow caches stores per URI, and every test runs in its own folder.
    return MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")


def _trial_runs(client: MlflowClient, experiment_name: str) -> list[Any]:
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, "the study's MLflow experiment must exist"
    return client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.role` = 'trial'", max_results=1000)


def _study_runs(client: MlflowClient, experiment_name: str) -> list[Any]:
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.role` = 'study'")


def test_run_logs_one_child_run_per_trial_with_params_and_curves(cli: Any, write_study: Any, tmp_path: Path) -> None:
    # Every trial must have exactly one child run under the study's parent run, with the trial's
    # params (sampled and fixed), per-epoch curves with step=epoch, summary metrics and tags.
    reads_before = TEST_SPLIT_READS["boston"]
    result = cli("run", write_study(tiny_boston()), "--quiet")
    assert result.exit_code == 0, result.output

    study = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db")
    trials = study.get_trials()
    assert len(trials) == 3
    client = _client()
    parents = _study_runs(client, "tiny-boston")
    assert len(parents) == 1
    parent = parents[0]
    assert "study.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _trial_runs(client, "tiny-boston")}
    assert sorted(runs) == [t.number for t in trials]

    fixed = {"epochs": "4", "hidden_layers": "1", "batch_size": "64"}
    for trial in trials:
        run = runs[trial.number]
        # Optuna -> MLflow and MLflow -> Optuna.
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.study_name"] == "tiny-boston"
        assert run.data.tags["optuna.state"] == trial.state.name == "COMPLETE"
        assert run.data.tags["hpo.seed"] == str(trial.user_attrs["hpo.seed"])
        assert run.info.status == "FINISHED"
        assert run.data.params == {**fixed, **{k: str(v) for k, v in trial.params.items()}}
        history = client.get_metric_history(run.info.run_id, "val_rmse")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2, 3]
        for key in ("train_loss", "val_loss", "val_mse", "val_mae", "lr", "epoch_seconds"):
            assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
        assert run.data.metrics["best_val_rmse"] == pytest.approx(trial.value)
        assert {"best_epoch", "n_params", "train_seconds"} <= set(run.data.metrics)
    # The study never touched the test split.
    assert TEST_SPLIT_READS["boston"] == reads_before


def test_seeds_derive_from_study_seed_and_trial_number(cli: Any, write_study: Any) -> None:
    # The per-trial seed is a function of (study seed, trial number), so trials differ and repeat.
    from hpo.running.runner import trial_seed

    assert cli("run", write_study(tiny_boston(n_trials=2)), "--quiet").exit_code == 0
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").trials
    assert [t.user_attrs["hpo.seed"] for t in trials] == [trial_seed(1, 0), trial_seed(1, 1)]
    assert trial_seed(1, 0) != trial_seed(1, 1) != trial_seed(2, 1)


def test_pruned_trials_are_killed_runs_with_a_reason(cli: Any, write_study: Any) -> None:
    # A pruner that stops trials at once: every trial after the first becomes PRUNED in Optuna
    # and a KILLED run in MLflow whose tags say so.
    study = tiny_boston(
        n_trials=4,
        pruner={"type": "percentile", "percentile": 1.0, "n_startup_trials": 1, "n_warmup_steps": 0},
        fixed={"epochs": 6, "hidden_layers": 1, "batch_size": 64},
    )
    assert cli("run", write_study(study), "--quiet").exit_code == 0
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "a 1st-percentile pruner must prune some trial"
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _trial_runs(_client(), "tiny-boston")}
    for trial in pruned:
        run = runs[trial.number]
        assert run.info.status == "KILLED"
        assert run.data.tags["optuna.state"] == "PRUNED"
        assert "pruned at epoch" in run.data.tags["hpo.failure_reason"]


def test_running_again_resumes_the_study(cli: Any, write_study: Any) -> None:
    # The same study name continues the stored study: the budget is global, so raising it adds trials
    # and the parent run is reused rather than duplicated.
    path = write_study(tiny_boston(n_trials=2))
    assert cli("run", path, "--quiet").exit_code == 0
    assert cli("run", path, "--quiet", "--n-trials", "4").exit_code == 0
    assert cli("run", path, "--quiet", "--n-trials", "4").exit_code == 0  # budget met: nothing more
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    client = _client()
    assert len(_study_runs(client, "tiny-boston")) == 1
    assert len(_trial_runs(client, "tiny-boston")) == 4


def test_multi_objective_study_runs_with_nsga2(cli: Any, write_study: Any) -> None:
    # Two metrics and two directions: values are stored per metric and the Pareto front is reported.
    study = tiny_boston(
        metric=["val_rmse", "n_params"],
        direction=["minimize", "minimize"],
        sampler={"type": "nsga2", "population_size": 2},
    )
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 0, result.output
    study_ = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db")
    assert [d.name for d in study_.directions] == ["MINIMIZE", "MINIMIZE"]
    client = _client()
    for trial in study_.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        # the second value is the model's parameter count: 13 inputs -> width -> 1 output
        width = trial.params["width"]
        assert trial.values[1] == run.data.metrics["n_params"] == 13 * width + width + width + 1
        assert trial.values[0] == pytest.approx(run.data.metrics["best_val_rmse"])
    assert 1 <= len(study_.best_trials) <= 3


def test_status_and_best_read_the_stored_study(cli: Any, write_study: Any) -> None:
    # status lists every trial with its MLflow run id; best returns the lowest val_rmse first.
    import json

    assert cli("run", write_study(tiny_boston()), "--quiet").exit_code == 0
    status = json.loads(cli("status", "tiny-boston", "--json").stdout)
    assert [row["number"] for row in status] == [0, 1, 2]
    assert all(row["mlflow_run_id"] for row in status)
    best = json.loads(cli("best", "tiny-boston", "--top-k", "2", "--json").stdout)
    values = sorted(row["val_rmse"] for row in status)
    assert [row["val_rmse"] for row in best] == values[:2]
    studies = json.loads(cli("status", "--json").stdout)
    assert [s["study"] for s in studies] == ["tiny-boston"]


def test_environment_overrides_the_study_file_and_flags_override_both(
    cli: Any, write_study: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Precedence: flag > HPO_STORAGE > study file > default.
    path = write_study(tiny_boston(n_trials=1, storage="sqlite:///from-file.db"))
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///from-env.db")
    assert cli("run", path, "--quiet").exit_code == 0
    assert (tmp_path / "from-env.db").exists() and not (tmp_path / "from-file.db").exists()
    assert cli("run", path, "--quiet", "--storage", "sqlite:///from-flag.db").exit_code == 0
    assert (tmp_path / "from-flag.db").exists()


def test_top_k_checkpoints_keep_exactly_the_k_best_trials_on_disk(cli: Any, write_study: Any) -> None:
    # With checkpoints: top_k and top_k 2, after 7 trials exactly the two best trials hold a checkpoint:
    # their runs are tagged `kept` and have the files; every other run's checkpoint was never written
    # or was deleted (tagged `deleted`) when it fell out of the top 2, so disk use stays bounded.
    study_file = write_study(tiny_boston(n_trials=7, evaluation={"top_k": 2, "checkpoints": "top_k"}))
    assert cli("run", study_file, "--quiet").exit_code == 0
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)
    )
    best_two = {t.user_attrs["mlflow_run_id"] for t in sorted(trials, key=lambda t: t.value)[:2]}
    client = _client()
    runs = _trial_runs(client, "tiny-boston")
    assert len(runs) == 7
    kept = {r.info.run_id for r in runs if r.data.tags.get("hpo.checkpoint") == "kept"}
    assert kept == best_two
    for run in runs:
        files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        if run.info.run_id in best_two:
            assert {"checkpoint/model.pt", "checkpoint/val_predictions.npy", "checkpoint/metrics.json"} <= files
        else:
            assert files == set(), f"trial {run.data.tags['optuna.trial_number']} still holds a checkpoint"
    assert any(r.data.tags.get("hpo.checkpoint") == "deleted" for r in runs), (
        "with 7 random trials some checkpoint must have been dropped"
    )


def test_a_multi_objective_study_keeps_the_checkpoints_of_its_pareto_front(cli: Any, write_study: Any) -> None:
    # `hpo evaluate` ranks the Pareto front first: with top_k 1, every trial on the final front (a small
    # net with a worse RMSE included) must still hold its checkpoint, not only the best RMSE.
    study = tiny_boston(
        metric=["val_rmse", "n_params"],
        direction=["minimize", "minimize"],
        n_trials=6,
        evaluation={"top_k": 1, "checkpoints": "top_k"},
        # the smallest net, slowly trained (alone on the front's n_params end), then a wide, fast-learning one
        enqueue=[{"width": 4, "optimizer": "adam", "lr": 0.001}, {"width": 16, "optimizer": "adam", "lr": 0.01}],
    )
    assert cli("run", write_study(study), "--quiet").exit_code == 0
    front = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").best_trials
    assert len(front) >= 2 and 0 in {t.number for t in front}, "the smallest net is on the front"
    client = _client()
    for trial in front:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags.get("hpo.checkpoint") == "kept", f"trial {trial.number} on the front lost its checkpoint"
        files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert "checkpoint/model.pt" in files


def test_status_shows_where_every_trial_trained_from_a_fresh_process(write_study: Any) -> None:
    # A fresh worker imports torch inside its first trial: that trial must still record its device,
    # as the later ones do (before, trial 0 of every `hpo run` showed an empty device column).
    import json

    from tests.conftest import run_hpo

    done = run_hpo("run", write_study(tiny_boston(n_trials=2)), "--quiet", env={"HPO_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    status = run_hpo("status", "tiny-boston", "--json")
    assert status.returncode == 0, status.stderr
    devices = [row["device"] for row in json.loads(status.stdout)]
    assert len(devices) == 2 and all(d and d.startswith("cpu (") and ", pid " in d for d in devices), devices
