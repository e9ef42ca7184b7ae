"""Curves written straight into MLflow's tables: the rows equal what MLflow's own `log_batch` writes."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from mlflow import MlflowClient
from mlflow.entities import Metric

from hpo.running.tracking._connection import open_client
from hpo.running.tracking._curves import CurveWriter

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


def _rows(engine: sqlalchemy.Engine, table: str, run_id: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = :run"),
            {"run": run_id},
        ).all()
    return sorted((key, float(value), int(stamp), int(step), bool(nan)) for key, value, stamp, step, nan in rows)


def _same_as_mlflow(url: str) -> None:
    client = open_client(url)
    writer = CurveWriter.for_store(url)
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


def test_rows_equal_mlflows_own_on_sqlite(tmp_path: Path) -> None:
    # Every row of `metrics` and `latest_metrics`, and what MLflow reads back, as if log_batch had written them.
    _same_as_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.postgres
def test_rows_equal_mlflows_own_on_postgres(pg_url: Callable[[str], str]) -> None:
    # The same on PostgreSQL, where the existing latest rows are locked while they are compared.
    _same_as_mlflow(pg_url("curves"))


def test_anything_but_mlflows_own_layout_goes_through_mlflow(tmp_path: Path) -> None:
    # An MLflow server, a database at another MLflow revision, a deleted run: MLflow's own requests
    # apply (no writer, or nothing written and False, so the caller's log_batch gives MLflow's answer).
    assert CurveWriter.for_store("http://127.0.0.1:5000") is None
    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client: MlflowClient = open_client(url)
    experiment = client.create_experiment("curves")
    deleted = client.create_run(experiment).info.run_id
    client.delete_run(deleted)
    writer = CurveWriter.for_store(url)
    assert writer is not None
    assert writer.write(deleted, BATCHES[0]) is False
    assert client.get_metric_history(deleted, "loss") == []
    writer._engine.dispose()
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'from-another-mlflow'"))
    engine.dispose()
    assert CurveWriter.for_store(url) is None


def test_a_bad_metric_name_is_refused_as_mlflow_refuses_it(tmp_path: Path) -> None:
    # A plug-in objective may report any name: MLflow's own check applies, nothing is written.
    from mlflow.exceptions import MlflowException

    url = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(url)
    run_id = client.create_run(client.create_experiment("curves")).info.run_id
    writer = CurveWriter.for_store(url)
    assert writer is not None
    with pytest.raises(MlflowException) as refused:
        writer.write(run_id, [Metric("val loss/../x", 1.0, 1, 0)])
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert client.get_run(run_id).data.metrics == {}
    writer._engine.dispose()
