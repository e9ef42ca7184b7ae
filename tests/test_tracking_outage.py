"""The tracking server dying mid-study loses no trial: Optuna stays the record, MLflow calls retry with
backoff and then warn, and `hpo reconcile` against a restarted server backfills so that every finished
trial has exactly one MLflow run in the right state."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import MlflowServers, run_hpo, tiny_boston

N_TRIALS = 6


# The contract, written out here rather than read from hpo.running.tracking: a finished Optuna trial's
# state as the MLflow run status a user filters on in the UI.
MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _finished(storage: str) -> int:
    try:
        study = optuna.load_study(study_name="tiny-boston", storage=storage)
    except KeyError:  # not created yet
        return 0
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


@pytest.mark.slow
def test_dead_tracking_server_loses_no_trial_and_reconcile_backfills(
    tmp_path: Path, mlflow_server: MlflowServers
) -> None:
    backend = f"sqlite:///{tmp_path / 'mlflow-backend.db'}"
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    server = mlflow_server.start(backend)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(tiny_boston(n_trials=N_TRIALS, fixed={"epochs": 30, "hidden_layers": 1, "batch_size": 64}))
    )  # 30 epochs: a trial lasts long enough that the server dies mid-study even on a loaded machine
    # Short waits for the test; the defaults wait seconds (tracking.py) and MLflow's own HTTP retries are off.
    env = {
        **os.environ,
        "HPO_TRACKING_RETRIES": "2",
        "HPO_TRACKING_BACKOFF": "0.05",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        "HPO_PROGRESS": "plain",
    }
    study = subprocess.Popen(
        [sys.executable, "-m", "hpo", "run", str(study_file), "--storage", storage, "--tracking-uri", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 180
        while _finished(storage) < 2:
            assert study.poll() is None, study.communicate()
            assert time.monotonic() < deadline, "the study did not get going"
            time.sleep(0.1)
        server.kill()  # mid-study: trials are still to run
        assert _finished(storage) < N_TRIALS
        _out, err = study.communicate(timeout=300)
    finally:
        if study.poll() is None:
            study.kill()
    # The study completes every trial on Optuna's side and says MLflow must be reconciled.
    assert study.returncode == 0, err
    assert "warning:" in err and "hpo reconcile" in err
    trials = optuna.load_study(study_name="tiny-boston", storage=storage).trials
    assert len(trials) == N_TRIALS and all(t.state.is_finished() for t in trials)
    unsynced = [t.number for t in trials if t.user_attrs.get("hpo.mlflow_synced") is False]
    assert unsynced, "trials after the outage are marked for reconcile"

    # A new server on the same backend store; reconcile closes and backfills.
    restarted = mlflow_server.start(backend)
    result = run_hpo(
        "reconcile", "tiny-boston", "--storage", storage, "--tracking-uri", restarted.url, env={"HPO_PROGRESS": "plain"}
    )
    assert result.returncode == 0, result.stderr
    assert "MLflow runs backfilled:" in result.stdout

    parent = optuna.load_study(study_name="tiny-boston", storage=storage).user_attrs["hpo.mlflow_parent_run_id"]
    client = MlflowClient(restarted.url)
    experiment = client.get_experiment_by_name("tiny-boston")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.role` = 'trial'", max_results=1000)
    by_trial: dict[int, list[Any]] = {}
    for run in runs:
        by_trial.setdefault(int(run.data.tags["optuna.trial_number"]), []).append(run)
    assert sorted(by_trial) == [t.number for t in trials]
    for trial in trials:
        assert len(by_trial[trial.number]) == 1, f"trial {trial.number} has {len(by_trial[trial.number])} runs"
        run = by_trial[trial.number][0]
        assert run.info.status == MLFLOW_STATUS[trial.state.name], trial.number
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert {k: v for k, v in run.data.params.items() if k in trial.params} == {
            k: str(v) for k, v in trial.params.items()
        }
        if trial.state.name == "COMPLETE":
            assert run.data.metrics["best_val_rmse"] == pytest.approx(trial.value)
    # Running reconcile again changes nothing: it is safe to run from cron.
    again = run_hpo("reconcile", "tiny-boston", "--storage", storage, "--tracking-uri", restarted.url)
    assert (
        again.returncode == 0
        and "MLflow runs backfilled: 0" in again.stdout
        and "MLflow runs closed: 0" in again.stdout
    )


def test_commands_that_need_mlflow_say_in_one_line_that_it_is_down(write_study: Any, tmp_path: Path) -> None:
    # reconcile, and predict of a study's best or of a registered model, cannot go on without MLflow: each
    # ends with exit 1 and one line naming the server, not a traceback or the HTTP client's retry warnings.
    from tests.conftest import free_port

    assert run_hpo("run", write_study(tiny_boston(n_trials=1)), "--quiet").returncode == 0
    (tmp_path / "rows.csv").write_text("CRIM,ZN\n0.1,0\n")
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"HPO_TRACKING_RETRIES": "0", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    for args in (
        ("reconcile", "tiny-boston"),
        ("predict", "tiny-boston", "rows.csv"),
        ("predict", "models:/tiny-boston-best/1", "rows.csv"),
    ):
        done = run_hpo(*args, "--tracking-uri", dead, env=env, cwd=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hpo: ") and dead in lines[0], (args, done.stderr)
