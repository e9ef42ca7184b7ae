"""A trial's MLflow run is fed in the background (hpo.running.tracking.TrialRun): opening it and logging epochs
never wait on the store, and `close` returns only once the store holds every epoch, the summary and
the final status, which is what lets hpo tell Optuna right after. Real MLflow stores throughout."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from hpo.running.tracking import Tracker, TrackingUnavailable
from hpo.running.tracking._sender import batches as _batches
from tests.conftest import free_port

METRICS = ("train_loss", "val_loss", "val_rmse")


def _epoch(step: int) -> dict[str, float]:
    return {name: 1.0 / (step + 1) + i for i, name in enumerate(METRICS)}


def _open(tracker: Tracker, opened: list[str] | None = None) -> object:
    parent = tracker.create_study_run("s", config_yaml="name: s\n")
    return tracker.open_trial_run(
        parent_run_id=parent,
        study_name="s",
        trial_number=0,
        seed=7,
        params={"width": 16, "layers": [1, 2]},
        on_open=opened.append if opened is not None else None,
    )


def test_close_returns_once_every_epoch_summary_and_status_are_stored(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "s")
    opened: list[str] = []
    run = _open(tracker, opened)
    for step in range(300):  # more than one batch's worth (MLflow caps a batch at 1000 values)
        run.log_epoch(step, _epoch(step))  # type: ignore[attr-defined]
    summary = {"best_val_rmse": 2.5}
    run.close(state="COMPLETE", summary=summary, tags={"hpo.checkpoint": "kept"})  # type: ignore[attr-defined]

    # Read back through a client of its own: what another process (`hpo best`, the UI) would see now.
    client = MlflowClient(uri)
    stored = client.get_run(run.run_id)  # type: ignore[attr-defined]
    assert opened == [run.run_id]  # type: ignore[attr-defined]  # on_open saw the run's id
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["optuna.state"] == "COMPLETE" and stored.data.tags["hpo.checkpoint"] == "kept"
    assert stored.data.params == {"width": "16", "layers": "[1, 2]"}
    assert stored.data.metrics["best_val_rmse"] == 2.5
    for name in METRICS:
        logged = client.get_metric_history(run.run_id, name)  # type: ignore[attr-defined]
        history = sorted((m.step, m.value) for m in logged)
        assert history == [(step, _epoch(step)[name]) for step in range(300)], name


def test_training_does_not_wait_for_a_locked_store_but_close_does(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    tracker = Tracker(uri, "s")
    parent = tracker.create_study_run("s", config_yaml="name: s\n")
    # Another process holds the database's write lock: every MLflow write waits for it.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()
    try:
        run = tracker.open_trial_run(parent_run_id=parent, study_name="s", trial_number=0, seed=0, params={"width": 16})
        for step in range(20):
            run.log_epoch(step, _epoch(step))
        # The loop got here while no write could happen: the run does not even exist yet.
        assert not run._opened.done()

        closing = threading.Thread(
            target=lambda: (run.close(state="PRUNED", reason="pruned at epoch 19"), released.set())
        )
        closing.start()
        closing.join(0.5)
        assert not released.is_set(), "close returned before the store had taken the run"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    closing.join(60)
    assert released.is_set()
    client = MlflowClient(uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "KILLED" and stored.data.tags["hpo.failure_reason"] == "pruned at epoch 19"
    assert sorted(m.step for m in client.get_metric_history(run.run_id, "val_rmse")) == list(range(20))


def test_epochs_reach_the_store_before_the_trial_ends(tmp_path: Path) -> None:
    # A killed worker loses only what was not sent yet: epochs go out while the trial trains.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "s")
    run = _open(tracker)
    client = MlflowClient(uri)
    for step in range(5):
        run.log_epoch(step, _epoch(step))  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while len(client.get_metric_history(run.run_id, "val_rmse")) < 5:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the epochs were never sent before close"
        time.sleep(0.05)
    assert client.get_run(run.run_id).info.status == "RUNNING"  # type: ignore[attr-defined]
    run.close(state="COMPLETE")  # type: ignore[attr-defined]


def test_quick_epochs_go_out_at_most_once_a_second(tmp_path: Path) -> None:
    # Sending shares the interpreter with the training: a trial shorter than a second sends its curve with
    # the closing batch only, and a longer one sends what accumulated about once a second, not per epoch.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "s")
    run = _open(tracker)
    client = MlflowClient(uri)
    opened = time.monotonic()
    for step in range(10):
        run.log_epoch(step, _epoch(step))  # type: ignore[attr-defined]
        time.sleep(0.02)
    _ = run.run_id  # type: ignore[attr-defined]
    if time.monotonic() - opened < 0.8:  # (a machine too slow to tell is not a failure of the rule)
        assert client.get_metric_history(run.run_id, "val_rmse") == []  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while len(client.get_metric_history(run.run_id, "val_rmse")) < 10:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the epochs were never sent before close"
        time.sleep(0.05)
    run.close(state="COMPLETE")  # type: ignore[attr-defined]


def test_an_unreachable_store_is_reported_to_the_training_loop_and_to_close(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on this port: the background open fails, and the failure is raised where hpo
    # handles it today (warn, mark the trial for `hpo reconcile`), not swallowed by the sender thread.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = Tracker(f"http://127.0.0.1:{free_port()}", "s", retries=0, backoff=0.0)
    run = tracker.open_trial_run(parent_run_id="p", study_name="s", trial_number=0, seed=0, params={"width": 16})
    with pytest.raises(TrackingUnavailable, match="did not answer"):
        run.close(state="COMPLETE")
    with pytest.raises(TrackingUnavailable):
        run.log_epoch(0, _epoch(0))


def test_batches_stay_within_mlflow_limits_and_put_tags_last() -> None:
    metrics = [Metric(f"m{i % 7}", float(i), 0, i) for i in range(2500)]
    params = [Param(f"p{i}", "v") for i in range(250)]
    tags = [RunTag(f"t{i}", "v") for i in range(150)]
    batches = list(_batches(metrics, params, tags))
    for m, p, t in batches:
        assert len(m) <= 1000 and len(p) <= 100 and len(t) <= 100 and len(m) + len(p) + len(t) <= 1000
    assert [x for b in batches for x in b[0]] == metrics
    assert [x for b in batches for x in b[1]] == params
    assert [x for b in batches for x in b[2]] == tags
    assert batches[-1][2] == tags[100:], "the last tags (the run's state) go in the last request"
    assert all(not b[2] for b in batches[:-2]), "tags come after every metric and param"
    assert list(_batches([], [], [])) == []
