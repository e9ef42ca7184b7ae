"""A run's per-epoch metrics written in one statement into MLflow's own tables, where hpo holds the database.

MLflow's `log_batch` on a database store builds one ORM object per value: ~0.12 ms a value, ~67 ms for
the 540 values of a 60-epoch Boston curve, most of what hpo added to a sub-second trial (BENCHMARKS.md
§1). Here the same rows go into MLflow's `metrics` table in one multi-row INSERT, and the run's
`latest_metrics` rows are brought up to date as MLflow's store does it (per key the newest by step,
timestamp, value; the first of equals), in one transaction: ~5 ms. Only where that is exactly MLflow's
layout: a SQLite or PostgreSQL tracking store at the MLflow schema revision this install writes, and a
run that is active; anything else (an MLflow server, another revision, a deleted run) goes through
`log_batch`. The table definitions are MLflow's own; `tests/test_curves.py` checks the rows equal what
MLflow's `log_batch` writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from mlflow.entities import Metric
from mlflow.utils.validation import _validate_metric

from hpo.running.databases import MLFLOW, alembic_heads

_DIALECTS = ("sqlite", "postgresql")
_LARGEST_FLOAT = 1.7976931348623157e308  # what MLflow's store writes for an infinity (SQL has none)


class CurveWriter:
    """Writes metric rows straight into a database tracking store at this install's MLflow revision."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun

        self._engine = engine
        self._metrics: sqlalchemy.Table = SqlMetric.__table__
        self._latest: sqlalchemy.Table = SqlLatestMetric.__table__
        self._runs: sqlalchemy.Table = SqlRun.__table__
        self._valid_keys: set[str] = set()
        self._postgres = engine.dialect.name == "postgresql"

    @classmethod
    def for_store(cls, tracking_uri: str) -> CurveWriter | None:
        """A writer for this tracking URI, or None where only MLflow's own requests apply."""
        try:
            scheme = sqlalchemy.engine.make_url(tracking_uri).get_backend_name()
        except sqlalchemy.exc.ArgumentError:
            return None  # not a database URL (an MLflow server, a folder)
        if scheme not in _DIALECTS:
            return None
        # One connection, kept: only the tracker's sender thread writes curves.
        # SQLite waits for another writer as long as MLflow's own sessions do (busy_timeout 20 s).
        connect_args = {"connect_timeout": 5} if scheme == "postgresql" else {"timeout": 20}
        engine = sqlalchemy.create_engine(tracking_uri, pool_size=1, max_overflow=0, connect_args=connect_args)
        try:
            with engine.connect() as conn:
                revision = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
        except sqlalchemy.exc.SQLAlchemyError:
            revision = None
        if revision != alembic_heads(MLFLOW)[0]:
            engine.dispose()
            return None
        return cls(engine)

    def write(self, run_id: str, metrics: Sequence[Metric]) -> bool:
        """Store `metrics` in run `run_id`; False (nothing written) when the run is not an active run, so
        the caller's `log_batch` gives MLflow's own answer."""
        if not metrics:
            return True
        self._validate(metrics)
        rows = _rows(run_id, metrics)
        try:
            with self._engine.begin() as conn:
                # The write comes first: a SQLite transaction that read first cannot always become a writer
                # once another process has written (WAL), where one that writes first waits its turn.
                conn.execute(self._insert_new_rows(), rows)
                stage = conn.execute(
                    sqlalchemy.select(self._runs.c.lifecycle_stage).where(self._runs.c.run_uuid == run_id)
                ).scalar()
                if stage != "active":
                    conn.rollback()
                    return False
                self._update_latest(conn, run_id, rows)
        except sqlalchemy.exc.IntegrityError:
            return False  # no such run (PostgreSQL checks the foreign key): MLflow's log_batch says so
        return True

    def _insert_new_rows(self) -> sqlalchemy.Executable:
        """A row already there (the same key, step, stamp and value) is skipped, as MLflow's store skips it."""
        if self._postgres:
            return sqlalchemy.dialects.postgresql.insert(self._metrics).on_conflict_do_nothing()
        return sqlalchemy.dialects.sqlite.insert(self._metrics).on_conflict_do_nothing()

    def _validate(self, metrics: Sequence[Metric]) -> None:
        """MLflow's own check, once per metric name (hpo makes the values floats, steps and stamps ints)."""
        for metric in metrics:
            if metric.key not in self._valid_keys:
                _validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
                self._valid_keys.add(metric.key)

    def _update_latest(self, conn: sqlalchemy.Connection, run_id: str, rows: list[dict[str, Any]]) -> None:
        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            held = newest.get(row["key"])
            if held is None or _recency(row) > _recency(held):
                newest[row["key"]] = row
        latest = self._latest
        stored = {
            row.key: row
            for row in conn.execute(
                sqlalchemy.select(latest)
                .where(latest.c.run_uuid == run_id, latest.c.key.in_(sorted(newest)))
                .order_by(latest.c.key)
                .with_for_update()
            )
        }
        fresh = [row for key, row in newest.items() if key not in stored]
        if fresh:
            conn.execute(sqlalchemy.insert(latest), fresh)
        newer = [
            {"row_key": key, **{name: row[name] for name in ("value", "timestamp", "step", "is_nan")}}
            for key, row in newest.items()
            if key in stored and _recency(row) > (stored[key].step, stored[key].timestamp, stored[key].value)
        ]
        if newer:  # one statement for every key that moved on (a streamed curve moves them all)
            conn.execute(
                sqlalchemy.update(latest)
                .where(latest.c.run_uuid == run_id, latest.c.key == sqlalchemy.bindparam("row_key"))
                .values(
                    value=sqlalchemy.bindparam("value"),
                    timestamp=sqlalchemy.bindparam("timestamp"),
                    step=sqlalchemy.bindparam("step"),
                    is_nan=sqlalchemy.bindparam("is_nan"),
                ),
                newer,
            )


def _rows(run_id: str, metrics: Sequence[Metric]) -> list[dict[str, Any]]:
    rows = []
    for metric in metrics:
        value = float(metric.value)
        is_nan = math.isnan(value)
        if is_nan:
            value = 0.0
        elif math.isinf(value):
            value = math.copysign(_LARGEST_FLOAT, value)
        rows.append(
            {
                "run_uuid": run_id,
                "key": metric.key,
                "value": value,
                "timestamp": metric.timestamp,
                "step": metric.step,
                "is_nan": is_nan,
            }
        )
    return rows


def _recency(row: dict[str, Any]) -> tuple[int, int, float]:
    return row["step"], row["timestamp"], row["value"]


__all__ = ["CurveWriter"]
