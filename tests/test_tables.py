"""A run's records written straight into MLflow's tables: the rows equal what MLflow's own client writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from hpo.running.tracking._connection import open_client
from hpo.running.tracking._tables import MlflowTables

# Batches as a trial's sender and closing batch send them, and the cases MLflow's store decides:
# a NaN and both infinities, a metric repeated within a batch, a batch sent twice (a retried request),
# an older step with a newer stamp, a later step, equal step and stamp with a larger and a smaller value,
# and a NaN and a 0 at the same step and stamp (stored alike but for is_nan: the first one is the latest).
BATCHES = [
    [
        Metric(key, 1.0 / (step + 1) + i, 1_000 + step, step)
        for step in range(4)
        for i, key in enumerate(["loss", "rmse"])
    ]
    + [Metric("lr", math.nan, 1_002, 2), Metric("up", math.inf, 1_000, 0), Metric("down", -math.inf, 1_000, 0)]
    + [Metric("loss", 0.25, 1_003, 3), Metric("zero", math.nan, 1_000, 1), Metric("zero", 0.0, 1_000, 1)],
    [Metric("loss", 0.25, 1_003, 3), Metric("rmse", 9.0, 5_000, 1), Metric("lr", 0.1, 1_001, 1)],
    [Metric("rmse", 2.0, 1_003, 3), Metric("rmse", 0.5, 1_003, 3), Metric("loss", 0.1, 900, 7)],
    [
        Metric("loss", 0.2, 1_003, 3),
        Metric("lr", math.nan, 1_002, 2),
        Metric("best_rmse", 0.5, 2_000, 0),
        Metric("zero", 0.0, 1_000, 1),
    ],
]


def _sqlite_store_with_a_run(tmp_path: Path) -> tuple[MlflowClient, MlflowTables, str]:
    """A fresh SQLite tracking store, its direct writer and one active run."""
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(url)
    run_id = client.create_run(client.create_experiment("tables")).info.run_id
    writer = MlflowTables.for_store(url)
    assert writer is not None
    return client, writer, run_id


def _rows(engine: sqlalchemy.Engine, table: str, run_id: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = :run"),
            {"run": run_id},
        ).all()
    return sorted((key, float(value), int(stamp), int(step), bool(nan)) for key, value, stamp, step, nan in rows)


def _same_as_mlflow(url: str) -> None:
    client = open_client(url)
    writer = MlflowTables.for_store(url)
    assert writer is not None, "a store at this install's MLflow revision takes curves directly"
    experiment = client.create_experiment("curves")
    by_mlflow, by_hpo = (client.create_run(experiment).info.run_id for _ in range(2))
    for batch in BATCHES:
        client.log_batch(by_mlflow, metrics=batch, synchronous=True)
        assert writer.write(by_hpo, batch) is True
    assert writer.write("0" * 32, BATCHES[0]) is False, "no such run: left to MLflow's log_batch to say"
    engine = sqlalchemy.create_engine(url)
    try:
        for table in ("metrics", "latest_metrics"):
            assert _rows(engine, table, by_hpo) == _rows(engine, table, by_mlflow), table
    finally:
        engine.dispose()
        writer._engine.dispose()
    # what MLflow's readers make of them: the run's latest values and every history
    latest_mlflow, latest_hpo = (client.get_run(r).data.metrics for r in (by_mlflow, by_hpo))
    assert latest_hpo.keys() == latest_mlflow.keys() == {"loss", "rmse", "lr", "up", "down", "best_rmse", "zero"}
    for key, value in latest_mlflow.items():
        assert latest_hpo[key] == value or (math.isnan(value) and math.isnan(latest_hpo[key])), key
    assert [(m.step, m.value) for m in client.get_metric_history(by_hpo, "rmse")] == [
        (m.step, m.value) for m in client.get_metric_history(by_mlflow, "rmse")
    ]


def test_rows_equal_mlflows_own(database_url: str) -> None:
    # Every row of `metrics` and `latest_metrics`, and what MLflow reads back, as if log_batch had written
    # them (on PostgreSQL the existing latest rows are locked while they are compared).
    _same_as_mlflow(database_url)


def test_anything_but_mlflows_own_layout_goes_through_mlflow(tmp_path: Path) -> None:
    # An MLflow server, a database at another MLflow revision, a deleted run: MLflow's own requests
    # apply (no writer, or nothing written and False, so the caller's log_batch gives MLflow's answer).
    assert MlflowTables.for_store("http://127.0.0.1:5000") is None
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client: MlflowClient = open_client(url)
    experiment = client.create_experiment("curves")
    deleted = client.create_run(experiment).info.run_id
    client.delete_run(deleted)
    writer = MlflowTables.for_store(url)
    assert writer is not None
    assert writer.write(deleted, BATCHES[0]) is False
    assert client.get_metric_history(deleted, "loss") == []
    writer._engine.dispose()
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'from-another-mlflow'"))
    engine.dispose()
    assert MlflowTables.for_store(url) is None


def test_a_bad_metric_name_is_refused_as_mlflow_refuses_it(tmp_path: Path) -> None:
    # A plug-in objective may report any name: MLflow's own check applies, nothing is written.
    client, writer, run_id = _sqlite_store_with_a_run(tmp_path)
    with pytest.raises(MlflowException) as refused:
        writer.write(run_id, [Metric("val loss/../x", 1.0, 1, 0)])
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert client.get_run(run_id).data.metrics == {}
    writer._engine.dispose()


# A run's closing as a trial's sender sends it: params (one with a value over MLflow's limit, which it
# cuts), tags (a key given twice: the last wins; one the run already holds: replaced) and a status.
PARAMS = [Param("lr", "0.01"), Param("width", "64"), Param("note", "x" * 7000)]
TAGS = [RunTag("optuna.state", "RUNNING"), RunTag("optuna.state", "COMPLETE"), RunTag("hpo.checkpoint", "y" * 9000)]


def _table(engine: sqlalchemy.Engine, sql: str, run_id: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(sqlalchemy.text(sql), {"run": run_id}).all())


def _closed_as_mlflow_closes(url: str) -> None:
    client = open_client(url)
    writer = MlflowTables.for_store(url)
    assert writer is not None
    experiment = client.create_experiment("closing")
    by_mlflow, by_hpo = (client.create_run(experiment, tags={"optuna.state": "RUNNING"}).info.run_id for _ in range(2))
    client.log_batch(by_mlflow, metrics=BATCHES[0], params=PARAMS[:1], synchronous=True)
    assert writer.write(by_hpo, BATCHES[0], params=PARAMS[:1]) is True  # a streamed send with the params
    client.log_batch(by_mlflow, metrics=BATCHES[1], params=PARAMS, tags=TAGS, synchronous=True)
    client.set_terminated(by_mlflow, status="FINISHED")
    assert writer.write(by_hpo, BATCHES[1], params=PARAMS, tags=TAGS, status="FINISHED", end_time=5) is True
    engine = sqlalchemy.create_engine(url)
    try:
        for sql in (
            "SELECT key, value FROM params WHERE run_uuid = :run",
            "SELECT key, value FROM tags WHERE run_uuid = :run AND key NOT LIKE 'mlflow.%'",
            "SELECT status, lifecycle_stage, end_time IS NULL FROM runs WHERE run_uuid = :run",
        ):
            assert _table(engine, sql, by_hpo) == _table(engine, sql, by_mlflow), sql
        for table in ("metrics", "latest_metrics"):
            assert _rows(engine, table, by_hpo) == _rows(engine, table, by_mlflow), table
    finally:
        engine.dispose()
        writer._engine.dispose()
    mlflow_run, hpo_run = (client.get_run(r) for r in (by_mlflow, by_hpo))
    assert hpo_run.info.status == mlflow_run.info.status == "FINISHED" and hpo_run.info.end_time == 5
    assert hpo_run.data.params == mlflow_run.data.params and len(hpo_run.data.params["note"]) == 6000
    assert hpo_run.data.tags["optuna.state"] == "COMPLETE" and len(hpo_run.data.tags["hpo.checkpoint"]) == 8000


def test_a_run_closes_as_mlflows_client_closes_it(database_url: str) -> None:
    # Params, tags, the status and the curve in one transaction: the same rows as log_batch + set_terminated
    # (tags replaced through each database's ON CONFLICT).
    _closed_as_mlflow_closes(database_url)


def test_what_mlflow_would_refuse_or_do_otherwise_is_left_to_it(tmp_path: Path) -> None:
    # A changed param, a closed-and-deleted run, a tag that renames the run: nothing is written (not the
    # status either), and False sends the caller to MLflow's client, which refuses or renames as it does.
    client, writer, run_id = _sqlite_store_with_a_run(tmp_path)
    assert writer.write(run_id, [], params=[Param("lr", "0.01")]) is True
    assert writer.write(run_id, BATCHES[0], params=[Param("lr", "0.1")], status="FINISHED", end_time=5) is False
    with pytest.raises(MlflowException):
        client.log_batch(run_id, params=[Param("lr", "0.1")], synchronous=True)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.metrics == {} and run.data.params == {"lr": "0.01"}
    assert writer.write(run_id, [], tags=[RunTag("mlflow.runName", "renamed")]) is False
    with pytest.raises(MlflowException):
        writer.write(run_id, [], params=[Param("lr", "1"), Param("lr", "1")])  # MLflow's duplicate-key check
    client.delete_run(run_id)
    assert writer.write(run_id, [], tags=[RunTag("a", "b")], status="FAILED", end_time=5) is False
    assert client.get_run(run_id).info.status == "RUNNING"
    writer._engine.dispose()


def _created_as_mlflow_creates(url: str) -> None:
    client = open_client(url)
    writer = MlflowTables.for_store(url)
    assert writer is not None
    experiment_id = client.create_experiment("opening", artifact_location="file:///tmp/hpo-tables-test")
    tags = {"mlflow.parentRunId": "p" * 32, "hpo.role": "trial", "optuna.trial_number": "3"}
    by_mlflow = client.create_run(experiment_id, tags=tags, run_name="trial-0003").info.run_id
    location = client.get_experiment(experiment_id).artifact_location
    created = writer.create_run(experiment_id, location, run_name="trial-0003", tags=tags, start_time=7)
    assert created is not None
    by_hpo, artifact_uri = created
    columns = "name, experiment_id, source_type, source_name, entry_point_name, user_id, status, end_time, "
    columns += "deleted_time, source_version, lifecycle_stage"
    engine = sqlalchemy.create_engine(url)
    try:
        for sql in (
            f"SELECT {columns} FROM runs WHERE run_uuid = :run",
            "SELECT key, value FROM tags WHERE run_uuid = :run",
        ):
            assert _table(engine, sql, by_hpo) == _table(engine, sql, by_mlflow), sql
    finally:
        engine.dispose()
    mlflow_run, hpo_run = (client.get_run(r) for r in (by_mlflow, by_hpo))
    assert hpo_run.info.artifact_uri == artifact_uri == mlflow_run.info.artifact_uri.replace(by_mlflow, by_hpo)
    assert (
        hpo_run.info.start_time == 7
        and hpo_run.info.run_name == "trial-0003"
        and hpo_run.data.tags == {**mlflow_run.data.tags}
    )
    # what MLflow does with the run next takes it as its own
    client.log_batch(by_hpo, metrics=BATCHES[0], params=PARAMS[:1], synchronous=True)
    client.set_terminated(by_hpo)
    assert client.get_run(by_hpo).info.status == "FINISHED"
    # found by tag as MLflow's search finds them (every tag must match; a deleted run is not found)
    searched = client.search_runs([experiment_id], filter_string="tags.`hpo.role` = 'trial'")
    found = writer.tagged_runs(experiment_id, {"hpo.role": "trial", "optuna.trial_number": "3"})
    assert sorted(found) == sorted((r.info.run_id, r.info.artifact_uri) for r in searched) and len(found) == 2
    assert writer.tagged_runs(experiment_id, {"hpo.role": "trial", "optuna.trial_number": "4"}) == []
    client.delete_run(by_mlflow)
    assert writer.tagged_runs(experiment_id, {"hpo.role": "trial"}) == [(by_hpo, artifact_uri)]
    client.delete_experiment(experiment_id)
    assert writer.create_run(experiment_id, location, run_name="x", tags={}, start_time=7) is None
    assert writer.create_run("999999", location, run_name="x", tags={}, start_time=7) is None
    assert len(client.search_runs([experiment_id], run_view_type=3)) == 2, "nothing written by a refused create"
    writer._engine.dispose()


def test_a_run_opens_as_mlflows_client_opens_it(database_url: str) -> None:
    # The run's row and tags equal what MLflow's create_run writes, its artifact URI is where MLflow puts
    # it, runs are found by tag as MLflow's search finds them, and a deleted or missing experiment gets no
    # run (MLflow's client then answers; on PostgreSQL the foreign key refuses the missing one).
    _created_as_mlflow_creates(database_url)
