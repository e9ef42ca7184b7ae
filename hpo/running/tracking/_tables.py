"""A trial run's records written in one transaction into MLflow's own tables, where hpo holds the database.

MLflow's store builds one ORM object per value and reads the run back for each request: its `log_batch`
takes ~0.12 ms a value, ~67 ms for the 540 values of a 60-epoch Boston curve, and the closing of a run
(params, tags, then `set_terminated`) two more sessions; together most of what hpo added to a sub-second
trial (BENCHMARKS.md §1). Here the same rows go in as a few statements in one transaction: the metric
values as one multi-row INSERT into MLflow's `metrics` table, the run's `latest_metrics` rows brought up
to date as MLflow's store does it (per key the newest by step, timestamp, value; the first of equals),
params added where new (a changed value is refused, as MLflow refuses it), tags set, and the run's status
and end time. Only where that is exactly MLflow's layout: a SQLite or PostgreSQL tracking store at the
MLflow schema revision this install writes, and a run that is active; anything else (an MLflow server,
another revision, a deleted run, a changed param) goes through MLflow's client, which gives its own
answer. The table definitions and the checks of names and values are MLflow's own; `tests/test_tables.py`
checks the rows equal what MLflow's client writes.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from mlflow.entities import Metric, Param, RunStatus, RunTag, SourceType
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_metric, _validate_param, _validate_param_keys_unique, _validate_tag

from hpo.running.databases import MLFLOW, alembic_heads, wait_for_connections

_DIALECTS = ("sqlite", "postgresql")
_LARGEST_FLOAT = 1.7976931348623157e308  # what MLflow's store writes for an infinity (SQL has none)


class MlflowTables:
    """A database tracking store at this install's MLflow revision, reached without MLflow's ORM: runs
    created, their metrics, params, tags and status written, and runs found by tag."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        from mlflow.store.tracking.dbmodels.models import (
            SqlExperiment,
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self._engine = engine
        self._metrics: sqlalchemy.Table = SqlMetric.__table__
        self._latest: sqlalchemy.Table = SqlLatestMetric.__table__
        self._params: sqlalchemy.Table = SqlParam.__table__
        self._tags: sqlalchemy.Table = SqlTag.__table__
        self._runs: sqlalchemy.Table = SqlRun.__table__
        self._experiments: sqlalchemy.Table = SqlExperiment.__table__
        self._artifacts_folder: str = SqlAlchemyStore.ARTIFACTS_FOLDER_NAME  # a run's files, in its experiment's
        self._valid_keys: set[str] = set()
        self._postgres = engine.dialect.name == "postgresql"

    @classmethod
    def for_store(cls, tracking_uri: str) -> MlflowTables | None:
        """A writer for this tracking URI, or None where only MLflow's own requests apply."""
        try:
            scheme = sqlalchemy.engine.make_url(tracking_uri).get_backend_name()
        except sqlalchemy.exc.ArgumentError:
            return None  # not a database URL (an MLflow server, a folder)
        if scheme not in _DIALECTS:
            return None
        # One connection, kept: the tracker's writes (mostly its sender thread's) take turns on it.
        # SQLite waits for another writer as long as MLflow's own sessions do (busy_timeout 20 s).
        connect_args = {"connect_timeout": 5} if scheme == "postgresql" else {"timeout": 20}
        engine = wait_for_connections(
            sqlalchemy.create_engine(tracking_uri, pool_size=1, max_overflow=0, connect_args=connect_args)
        )
        try:
            with engine.connect() as conn:
                revision = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
        except sqlalchemy.exc.SQLAlchemyError:
            revision = None
        if revision != alembic_heads(MLFLOW)[0]:
            engine.dispose()
            return None
        return cls(engine)

    def write(
        self,
        run_id: str,
        metrics: Sequence[Metric],
        *,
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        status: str | None = None,
        end_time: int | None = None,
    ) -> bool:
        """Store `metrics`, `params` and `tags` in run `run_id` and, given a `status`, end it then (`end_time`,
        ms), as MLflow's `log_batch` and `set_terminated` would, all or nothing. False (nothing written) when
        the run is not an active run, a param would change, or a tag renames the run: the caller's MLflow
        request then gives MLflow's own answer."""
        if any(tag.key == MLFLOW_RUN_NAME for tag in tags):
            return False  # renaming a run also changes its `name` column: MLflow's store does that
        if not (metrics or params or tags or status):
            return True
        self._validate(metrics)
        checked_params = [_validate_param(p.key, p.value) for p in params]  # names checked, long values cut
        _validate_param_keys_unique(checked_params)
        checked_tags = {t.key: t.value for t in (_validate_tag(t.key, t.value) for t in tags)}  # the last one wins
        ended = RunStatus.to_string(RunStatus.from_string(status)) if status is not None else None  # MLflow's names
        rows = _rows(run_id, metrics)
        try:
            with self._engine.begin() as conn:
                # Writes come first: a SQLite transaction that read first cannot always become a writer once
                # another process has written (WAL), where one that writes first waits its turn.
                if rows:
                    conn.execute(self._insert_new_rows(), rows)
                self._set_tags(conn, run_id, checked_tags)
                if not self._active(conn, run_id) or not self._add_params(conn, run_id, checked_params):
                    conn.rollback()
                    return False
                if rows:
                    self._update_latest(conn, run_id, rows)
                if ended is not None:
                    self._end_run(conn, run_id, ended, end_time)
        except sqlalchemy.exc.IntegrityError:
            return False  # no such run (PostgreSQL checks the foreign key): MLflow's request says so
        return True

    def create_run(
        self, experiment_id: str, artifact_location: str, *, run_name: str, tags: dict[str, str], start_time: int
    ) -> tuple[str, str] | None:
        """A new RUNNING run with `tags`, as MLflow's `create_run` makes it: its id and artifact URI, or None
        (nothing written) when the experiment is not active or a tag names the run otherwise."""
        if tags.get(MLFLOW_RUN_NAME, run_name) != run_name:
            return None  # MLflow refuses the two names
        run_id = uuid.uuid4().hex
        artifact_uri = append_to_uri_path(artifact_location, run_id, self._artifacts_folder)
        row = {
            "run_uuid": run_id,
            "name": run_name,
            "artifact_uri": artifact_uri,
            "experiment_id": int(experiment_id),
            "source_type": SourceType.to_string(SourceType.UNKNOWN),
            "source_name": "",
            "entry_point_name": "",
            "user_id": tags.get(MLFLOW_USER, "unknown"),
            "status": RunStatus.to_string(RunStatus.RUNNING),
            "start_time": start_time,
            "end_time": None,
            "deleted_time": None,
            "source_version": "",
            "lifecycle_stage": "active",
        }
        experiments = self._experiments
        named = {MLFLOW_RUN_NAME: run_name, **tags}
        try:
            with self._engine.begin() as conn:
                conn.execute(sqlalchemy.insert(self._runs), [row])
                conn.execute(
                    sqlalchemy.insert(self._tags),
                    [{"run_uuid": run_id, "key": k, "value": v} for k, v in named.items()],
                )
                stage = conn.execute(
                    sqlalchemy.select(experiments.c.lifecycle_stage).where(
                        experiments.c.experiment_id == int(experiment_id)
                    )
                ).scalar()
                if stage != "active":
                    conn.rollback()
                    return None
        except sqlalchemy.exc.IntegrityError:
            return None  # no such experiment (PostgreSQL checks the foreign key): MLflow's create_run says so
        return run_id, artifact_uri

    def tagged_runs(self, experiment_id: str, tags: dict[str, str]) -> list[tuple[str, str]]:
        """The experiment's active runs holding every one of `tags`: (run id, artifact URI) each, as MLflow's
        `search_runs` finds them with a tag filter, in one query."""
        runs, table = self._runs, self._tags
        query = sqlalchemy.select(runs.c.run_uuid, runs.c.artifact_uri).where(
            runs.c.experiment_id == int(experiment_id), runs.c.lifecycle_stage == "active"
        )
        for key, value in tags.items():
            holding = sqlalchemy.select(table.c.run_uuid).where(table.c.key == key, table.c.value == value)
            query = query.where(runs.c.run_uuid.in_(holding))
        with self._engine.connect() as conn:
            return [(run_id, uri) for run_id, uri in conn.execute(query.order_by(runs.c.start_time.desc()))]

    def _active(self, conn: sqlalchemy.Connection, run_id: str) -> bool:
        runs = self._runs
        stage = conn.execute(sqlalchemy.select(runs.c.lifecycle_stage).where(runs.c.run_uuid == run_id)).scalar()
        return stage == "active"

    def _end_run(self, conn: sqlalchemy.Connection, run_id: str, status: str, end_time: int | None) -> None:
        """The run's status and end time (MLflow's `update_run_info`)."""
        runs = self._runs
        values: dict[str, Any] = {"status": status}
        if end_time is not None:
            values["end_time"] = end_time
        conn.execute(sqlalchemy.update(runs).where(runs.c.run_uuid == run_id).values(values))

    def _add_params(self, conn: sqlalchemy.Connection, run_id: str, params: list[Param]) -> bool:
        """New params added; one already logged stays if its value is the same, else False (MLflow refuses)."""
        if not params:
            return True
        table = self._params
        held = dict(
            conn.execute(
                sqlalchemy.select(table.c.key, table.c.value).where(
                    table.c.run_uuid == run_id, table.c.key.in_([p.key for p in params])
                )
            ).all()
        )
        if any(held[p.key] != p.value for p in params if p.key in held):
            return False
        new = [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in params if p.key not in held]
        if new:
            conn.execute(sqlalchemy.insert(table), new)
        return True

    def _set_tags(self, conn: sqlalchemy.Connection, run_id: str, tags: dict[str, str]) -> None:
        """Each tag set, replacing a value the run already holds under its key."""
        if not tags:
            return
        dialect = sqlalchemy.dialects.postgresql if self._postgres else sqlalchemy.dialects.sqlite
        insert = dialect.insert(self._tags)
        conn.execute(
            insert.on_conflict_do_update(index_elements=["key", "run_uuid"], set_={"value": insert.excluded.value}),
            [{"run_uuid": run_id, "key": key, "value": value} for key, value in tags.items()],
        )

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


__all__ = ["MlflowTables"]
