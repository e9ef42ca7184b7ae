"""Crashes survived: a worker killed with SIGKILL mid-trial, and `hpo reconcile` repairing old leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hpo.operations.schedule import worker_argv
from hpo.running.tracking import Tracker
from tests.conftest import MlflowServers, tiny_boston, wait_for_training_trials

FAST_HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 3}


def experiment_runs(tracking_uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return client.search_runs([found.experiment_id], filter_string="tags.`hpo.role` = 'trial'", max_results=1000)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_failed_and_its_trial_rerun_with_the_same_params(
    cli: Callable[..., Any],
    pg_url: Callable[[str], str],
    mlflow_server: MlflowServers,
    write_study: Callable[..., Path],
) -> None:
    # SIGKILL leaves no chance to clean up: the heartbeat goes stale, another worker fails the trial,
    # closes its MLflow run FAILED with the reason and re-runs it with the same params and seed;
    # the study still completes its budget of 3, and nothing stays RUNNING on either side.
    storage = pg_url("faults")
    name = "killed-worker"
    study_file = write_study(
        tiny_boston(
            name=name,
            n_trials=3,
            execution=FAST_HEARTBEAT,
            fixed={"epochs": 250, "hidden_layers": 1, "batch_size": 64, "early_stopping_patience": 0},
        )
    )
    assert cli("create", study_file, "--storage", storage, "--tracking-uri", mlflow_server.shared).exit_code == 0

    env = {**os.environ, "HPO_STORAGE": storage, "MLFLOW_TRACKING_URI": mlflow_server.shared, "HPO_PROGRESS": "plain"}
    argv = worker_argv(study_file, quiet=True, program=(sys.executable, "-m", "hpo"))
    victim = subprocess.Popen(argv, env=env)
    try:
        [killed] = wait_for_training_trials(storage, name, victim)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    survivor = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    assert survivor.returncode == 0, survivor.stderr[-3000:]

    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    states = Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: 3, TrialState.FAIL: 1}, states
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == killed.params
    assert retry.user_attrs["hpo.seed"] == killed.user_attrs["hpo.seed"]

    runs = {r.info.run_id: r for r in experiment_runs(mlflow_server.shared, name)}
    dead_run = runs[killed.user_attrs["mlflow_run_id"]]
    assert dead_run.info.status == "FAILED"
    assert dead_run.data.tags["optuna.state"] == "FAIL"
    assert "heartbeats" in dead_run.data.tags["hpo.failure_reason"]
    retry_run = runs[retry.user_attrs["mlflow_run_id"]]
    assert retry_run.info.status == "FINISHED"
    assert retry_run.data.tags["hpo.retried_from"] == str(killed.number)
    assert [r.info.status for r in runs.values()].count("RUNNING") == 0
    assert len(runs) == len(trials)
    # The last worker out closes the study's parent run.
    parent = MlflowClient(mlflow_server.shared).get_run(retry_run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"

    # `hpo status` shows which trial re-ran which.
    status = cli("status", name, "--storage", storage, "--json")
    rows = {row["number"]: row for row in json.loads(status.stdout)}
    assert rows[retry.number]["retried_from"] == killed.number
    assert rows[killed.number]["retried_from"] is None


def test_reconcile_repairs_crash_leftovers_and_backfills_missing_runs(
    cli: Callable[..., Any], mlflow_server: MlflowServers, write_study: Callable[..., Path]
) -> None:
    # What an older crash leaves behind: a trial RUNNING in Optuna whose heartbeat stopped, with its
    # MLflow run RUNNING; and a finished trial whose MLflow run is missing (the server was down).
    # `hpo reconcile` fails and re-queues the first, closes its run FAILED, and backfills the second.
    name = "reconcile-me"
    study_file = write_study(tiny_boston(name=name, n_trials=3, execution=FAST_HEARTBEAT))
    assert cli("run", study_file, "--n-trials", "2", "--tracking-uri", mlflow_server.shared, "--quiet").exit_code == 0

    study = optuna.load_study(study_name=name, storage="sqlite:///hpo.db")
    finished = study.trials[0]
    client = MlflowClient(mlflow_server.shared)
    client.delete_run(finished.user_attrs["mlflow_run_id"])

    # A worker that died mid-trial: asked, beating, its run open, then gone.
    crashed = study.ask()
    crashed.suggest_int("width", 4, 16)
    study._storage.record_heartbeat(crashed._trial_id)  # the heartbeat API takes Optuna's private trial id
    tracker = Tracker(mlflow_server.shared, name)
    parent = study.user_attrs["hpo.mlflow_parent_run_id"]
    crashed_run = tracker.start_trial_run(
        parent_run_id=parent, study_name=name, trial_number=crashed.number, seed=1, params=crashed.params
    )
    crashed.set_user_attr("mlflow_run_id", crashed_run)
    time.sleep(FAST_HEARTBEAT["grace_period"] + 1.5)

    result = cli("reconcile", study_file, "--tracking-uri", mlflow_server.shared)
    assert result.exit_code == 0, result.output
    assert "stale trials failed and re-queued: 1" in result.stdout
    assert "MLflow runs backfilled: 1 [0]" in result.stdout

    trials = optuna.load_study(study_name=name, storage="sqlite:///hpo.db").get_trials()
    assert trials[crashed.number].state == TrialState.FAIL
    requeued = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == crashed.number]
    assert [t.state for t in requeued] == [TrialState.WAITING]
    assert requeued[0].params == {"width": crashed.params["width"]}

    closed = client.get_run(crashed_run)
    assert closed.info.status == "FAILED"
    assert "heartbeats" in closed.data.tags["hpo.failure_reason"]
    runs = experiment_runs(mlflow_server.shared, name)
    backfilled = [r for r in runs if r.data.tags["optuna.trial_number"] == "0"]
    assert len(backfilled) == 1
    assert backfilled[0].data.tags["hpo.backfilled"] == "true"
    assert backfilled[0].info.status == "FINISHED"
    assert backfilled[0].data.metrics["best_val_rmse"] == pytest.approx(finished.value)
    assert backfilled[0].data.params["width"] == str(finished.params["width"])
    assert all(r.info.status != "RUNNING" for r in runs)
    # ... and the trial leads to its new run: `hpo status` and `hpo best` show the backfilled run's id.
    import json

    shown = {row["number"]: row["mlflow_run_id"] for row in json.loads(cli("status", name, "--json").stdout)}
    assert shown[0] == backfilled[0].info.run_id
    best = json.loads(cli("best", name, "--top-k", "5", "--json").stdout)
    assert {row["number"]: row["mlflow_run_id"] for row in best}[0] == backfilled[0].info.run_id

    # Reconciling again finds nothing left to repair.
    again = cli("reconcile", study_file, "--tracking-uri", mlflow_server.shared)
    assert "stale trials failed and re-queued: 0" in again.stdout
    assert "MLflow runs closed: 0" in again.stdout and "MLflow runs backfilled: 0" in again.stdout
