"""Ctrl-C and SIGTERM: the trial under way is closed and re-queued, nothing is left RUNNING, exit code 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.conftest import MlflowServers, tiny_boston, wait_for_training_trials

# Early stopping off: a trial seen training is still training when the signal lands.
LONG_TRIALS = {"epochs": 5000, "hidden_layers": 1, "batch_size": 64, "early_stopping_patience": 0}


def assert_closed_and_requeued(
    storage: str, tracking_uri: str, name: str, interrupted_number: int, signal_name: str
) -> None:
    """The interrupted trial is FAIL with its MLflow run FAILED; a WAITING copy has its params; nothing RUNNING."""
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    interrupted = trials[interrupted_number]
    assert interrupted.state == TrialState.FAIL
    assert f"interrupted by {signal_name}" in interrupted.user_attrs["hpo.failure_reason"]
    copies = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == interrupted_number]
    assert [t.state for t in copies] == [TrialState.WAITING]
    assert copies[0].params == interrupted.params

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.role` = 'trial'")
    assert [r.info.status for r in runs].count("RUNNING") == 0
    run = client.get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["optuna.state"] == "FAIL"
    assert f"interrupted by {signal_name}" in run.data.tags["hpo.failure_reason"]


@pytest.mark.slow
def test_sigint_during_a_trial_exits_130_and_leaves_nothing_running(
    mlflow_server: MlflowServers, write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # Ctrl-C mid-trial: the trial's run is closed FAILED with the reason, the Optuna trial is FAIL and
    # re-queued with the same params for the next run, and `hpo run` exits with 130.
    name = "interrupted"
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    study_file = write_study(tiny_boston(name=name, n_trials=2, fixed=LONG_TRIALS))
    env = {**os.environ, "HPO_PROGRESS": "plain"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", "run", str(study_file), "--tracking-uri", mlflow_server.shared],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        [trial] = wait_for_training_trials(storage, name, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    # The last line tells the user what became of the trial under way and how to go on.
    assert (
        f"interrupted by SIGINT; finished trials are kept, trial {trial.number} was closed as FAIL and re-queued "
        "with the same params" in stderr
    )
    assert "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert_closed_and_requeued(storage, mlflow_server.shared, name, trial.number, "SIGINT")
    # The study's parent run is not left RUNNING until the next run: it ends KILLED (issue 16, O).
    client = MlflowClient(mlflow_server.shared)
    parent_id = optuna.load_study(study_name=name, storage=storage).user_attrs["hpo.mlflow_parent_run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"
    # A parent left RUNNING by a killed worker is closed by `hpo reconcile` (KILLED: a trial still waits).
    client.update_run(parent_id, status="RUNNING")
    reconciled = subprocess.run(
        [sys.executable, "-m", "hpo", "reconcile", name, "--storage", storage, "--tracking-uri", mlflow_server.shared],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert reconciled.returncode == 0, reconciled.stderr
    assert "parent run closed: KILLED" in reconciled.stdout
    assert client.get_run(parent_id).info.status == "KILLED"


@pytest.mark.slow
def test_sigterm_to_hpo_run_with_workers_reaches_every_worker_once(
    mlflow_server: MlflowServers, write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # A scheduler's SIGTERM goes to `hpo run --workers 2`, which forwards it once to each worker:
    # every worker closes and re-queues its own trial (a second signal would abandon the cleanup).
    name = "terminated"
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    study_file = write_study(tiny_boston(name=name, n_trials=4, fixed=LONG_TRIALS))
    env = {**os.environ, "HPO_PROGRESS": "plain"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", "run", str(study_file), "--workers", "2", "--tracking-uri", mlflow_server.shared],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        training = [t.number for t in wait_for_training_trials(storage, name, proc, count=2)]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert len(training) == 2
    for number in training:
        assert_closed_and_requeued(storage, mlflow_server.shared, name, number, "SIGTERM")
