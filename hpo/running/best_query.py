"""A study's best trials read straight from Optuna's tables, without importing Optuna: `hpo best`'s path.

Importing Optuna (its samplers, numpy) and SQLAlchemy's ORM is most of a read command's fixed cost,
while ranking a study needs one query and reading five trials a handful more. Only a database stamped
with the Optuna schema revision this install writes is read this way (its tables are then the ones
named here); anything else (another revision, a gRPC proxy, several objectives, a study not found)
returns None and the caller goes through Optuna, which also words the errors.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import sqlalchemy

from hpo.config.settings import is_postgresql, redact, sqlite_path
from hpo.errors import ServiceError
from hpo.running.databases import OPTUNA, alembic_heads, first_line, read_sqlite
from hpo.running.meta import (
    BACKFILLED_RUNS_ATTR,
    DEVICE_ATTR,
    METRICS_ATTR,
    REASON_ATTR,
    RETRIED_SYSTEM_ATTR,
    RUN_ID_ATTR,
)

_col = sqlalchemy.column
TRIALS = sqlalchemy.table(
    "trials",
    _col("trial_id", sqlalchemy.Integer),
    _col("number", sqlalchemy.Integer),
    _col("study_id", sqlalchemy.Integer),
    _col("state", sqlalchemy.String),
    _col("datetime_start", sqlalchemy.DateTime),
    _col("datetime_complete", sqlalchemy.DateTime),
)
VALUES = sqlalchemy.table(
    "trial_values",
    _col("trial_id", sqlalchemy.Integer),
    _col("objective", sqlalchemy.Integer),
    _col("value", sqlalchemy.Float),
    _col("value_type", sqlalchemy.String),
)
STUDIES = sqlalchemy.table("studies", _col("study_id", sqlalchemy.Integer), _col("study_name", sqlalchemy.String))
_DIRECTIONS = sqlalchemy.table(
    "study_directions", _col("study_id"), _col("objective", sqlalchemy.Integer), _col("direction", sqlalchemy.String)
)


def _attributes(name: str, owner: str) -> sqlalchemy.TableClause:
    """One of Optuna's key / JSON-value attribute tables."""
    return sqlalchemy.table(name, _col(owner, sqlalchemy.Integer), _col("key", sqlalchemy.String), _col("value_json"))


_STUDY_ATTRS = _attributes("study_user_attributes", "study_id")
_PARAMS = sqlalchemy.table(
    "trial_params",
    _col("param_id", sqlalchemy.Integer),
    _col("trial_id", sqlalchemy.Integer),
    _col("param_name", sqlalchemy.String),
    _col("param_value", sqlalchemy.Float),
    _col("distribution_json", sqlalchemy.Text),
)
_USER_ATTRS = _attributes("trial_user_attributes", "trial_id")
_SYSTEM_ATTRS = _attributes("trial_system_attributes", "trial_id")
_INTEGER_DISTRIBUTIONS = ("IntDistribution", "IntUniformDistribution", "IntLogUniformDistribution")
ROW_USER_ATTRS = (RUN_ID_ATTR, REASON_ATTR, DEVICE_ATTR)  # the trial user attributes a row shows


def _enum(name: str) -> sqlalchemy.ColumnElement[Any]:
    # Optuna stores its enums by name; a literal, not a bound parameter: psycopg 3 (a plain postgresql://
    # URL) sends parameters as typed VARCHAR, which PostgreSQL will not compare with an enum column.
    return sqlalchemy.literal_column(f"'{name}'")


def ranking_query(study_name: str, *, k: int, maximize: bool) -> sqlalchemy.Select[Any]:
    """The storage ids of the k best COMPLETE trials of a single-objective study, in one SQL query.

    Optuna can only rank by loading every trial with all its params and attributes (about a second
    for 2,000 trials); `hpo best` needs five. The order is Optuna's own (-inf < finite < +inf, then
    the value), with the trial number breaking ties.
    """
    kind = sqlalchemy.case(
        (VALUES.c.value_type == _enum("INF_NEG"), -1), (VALUES.c.value_type == _enum("FINITE"), 0), else_=1
    )
    order = (kind.desc(), VALUES.c.value.desc()) if maximize else (kind.asc(), VALUES.c.value.asc())
    return (
        sqlalchemy.select(TRIALS.c.trial_id)
        .select_from(
            TRIALS.join(VALUES, VALUES.c.trial_id == TRIALS.c.trial_id).join(
                STUDIES, STUDIES.c.study_id == TRIALS.c.study_id
            )
        )
        .where(STUDIES.c.study_name == study_name, TRIALS.c.state == _enum("COMPLETE"), VALUES.c.objective == 0)
        .order_by(*order, TRIALS.c.number.asc())
        .limit(k)
    )


def metric_names(stored: list[str] | None, objectives: int) -> list[str]:
    """The names of a study's values: as hpo stored them, else Optuna's `value` / `value_0`, `value_1`, ..."""
    if stored:
        return list(stored)
    return ["value"] if objectives == 1 else [f"value_{i}" for i in range(objectives)]


def trial_row(
    *,
    number: int,
    state: str,
    values: list[float],
    metrics: list[str],
    duration: datetime.timedelta | None,
    params: dict[str, Any],
    user_attrs: dict[str, Any],
    retried_from: int | None,
    backfilled: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One trial as `hpo status` and `hpo best` show it (table and --json)."""
    seconds = duration.total_seconds() if duration is not None else None
    row: dict[str, Any] = {"number": number, "state": state}
    for i, metric in enumerate(metrics):
        row[metric] = values[i] if i < len(values) else None
    row.update(
        duration_s=round(seconds, 3) if seconds is not None else None,
        params=params,
        mlflow_run_id=(backfilled or {}).get(str(number)) or user_attrs.get(RUN_ID_ATTR),
        retried_from=retried_from,
        reason=user_attrs.get(REASON_ATTR),
        device=user_attrs.get(DEVICE_ATTR),  # where it trained: several trials may share one GPU
    )
    return row


def best_rows(url: str, study_name: str, *, k: int, field: str = "storage") -> list[dict[str, Any]] | None:
    """The k best trials' rows (best first) of a single-objective study, or None where Optuna must read it."""
    path = sqlite_path(url)
    if path is None and not (is_postgresql(url) or url.startswith("mysql")):
        return None  # a gRPC proxy, or a database whose dialect hpo does not know
    if path is not None and (path == ":memory:" or not _sqlite_at_head(path, field=field)):
        return None
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **_connect_args(url))
    except ImportError:
        return None  # no driver: Optuna's path says so
    try:
        with engine.connect() as conn:  # one connection: the revision, then the rows
            if path is None and not _server_at_head(conn):
                return None
            return _read_best(conn, study_name, k)
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceError(f"{field}: cannot open {redact(url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()


def _connect_args(url: str) -> dict[str, Any]:
    return {"connect_args": {"connect_timeout": 5}} if is_postgresql(url) else {}


def _sqlite_at_head(path: Path, *, field: str) -> bool:
    contents = read_sqlite(path, field=field)
    return contents is not None and contents.revision == alembic_heads(OPTUNA)[0]


def _server_at_head(conn: sqlalchemy.Connection) -> bool:
    """Whether the database is stamped with exactly the Optuna revision this install writes."""
    try:
        found = [str(r[0]) for r in conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))]
    except sqlalchemy.exc.ProgrammingError:  # no alembic_version table: no schema, or not Optuna's
        return False
    return found == [alembic_heads(OPTUNA)[0]]


def _read_best(conn: sqlalchemy.Connection, study_name: str, k: int) -> list[dict[str, Any]] | None:
    study_id = conn.execute(
        sqlalchemy.select(STUDIES.c.study_id).where(STUDIES.c.study_name == study_name)
    ).scalar_one_or_none()
    if study_id is None:
        return None
    directions = list(
        conn.execute(
            sqlalchemy.select(_DIRECTIONS.c.direction)
            .where(_DIRECTIONS.c.study_id == study_id)
            .order_by(_DIRECTIONS.c.objective)
        ).scalars()
    )
    if len(directions) != 1:
        return None  # several objectives: the Pareto front is Optuna's to compute
    attrs = {
        key: json.loads(value)
        for key, value in conn.execute(
            sqlalchemy.select(_STUDY_ATTRS.c.key, _STUDY_ATTRS.c.value_json).where(
                _STUDY_ATTRS.c.study_id == study_id, _STUDY_ATTRS.c.key.in_([METRICS_ATTR, BACKFILLED_RUNS_ATTR])
            )
        )
    }
    metrics = metric_names(attrs.get(METRICS_ATTR), objectives=1)
    ids = list(conn.execute(ranking_query(study_name, k=k, maximize=directions[0] == "MAXIMIZE")).scalars())
    if not ids:
        return []
    trials = {r.trial_id: r for r in conn.execute(sqlalchemy.select(TRIALS).where(TRIALS.c.trial_id.in_(ids)))}
    values: dict[int, list[float]] = {i: [] for i in ids}
    for r in conn.execute(
        sqlalchemy.select(VALUES).where(VALUES.c.trial_id.in_(ids)).order_by(VALUES.c.trial_id, VALUES.c.objective)
    ):
        values[r.trial_id].append(_value(r.value, r.value_type))
    params: dict[int, dict[str, Any]] = {i: {} for i in ids}
    for r in conn.execute(sqlalchemy.select(_PARAMS).where(_PARAMS.c.trial_id.in_(ids)).order_by(_PARAMS.c.param_id)):
        params[r.trial_id][r.param_name] = _external(r.param_value, r.distribution_json)
    user: dict[int, dict[str, Any]] = {i: {} for i in ids}
    for r in conn.execute(
        sqlalchemy.select(_USER_ATTRS).where(_USER_ATTRS.c.trial_id.in_(ids), _USER_ATTRS.c.key.in_(ROW_USER_ATTRS))
    ):
        user[r.trial_id][r.key] = json.loads(r.value_json)
    retried: dict[int, int] = {
        r.trial_id: json.loads(r.value_json)
        for r in conn.execute(
            sqlalchemy.select(_SYSTEM_ATTRS).where(
                _SYSTEM_ATTRS.c.trial_id.in_(ids), _SYSTEM_ATTRS.c.key == RETRIED_SYSTEM_ATTR
            )
        )
    }
    backfilled = dict(attrs.get(BACKFILLED_RUNS_ATTR) or {})
    rows = []
    for trial_id in ids:
        t = trials[trial_id]
        done = t.datetime_start is not None and t.datetime_complete is not None
        rows.append(
            trial_row(
                number=t.number,
                state=t.state,
                values=values[trial_id],
                metrics=metrics,
                duration=t.datetime_complete - t.datetime_start if done else None,
                params=params[trial_id],
                user_attrs=user[trial_id],
                retried_from=retried.get(trial_id),
                backfilled=backfilled,
            )
        )
    return rows


def _value(value: float | None, value_type: str) -> float:
    if value_type == "INF_POS":
        return float("inf")
    if value_type == "INF_NEG":
        return float("-inf")
    return float(value) if value is not None else float("nan")


def _external(value: float, distribution_json: str) -> Any:
    """A param as the objective saw it: Optuna stores a categorical's index and every number as a float."""
    distribution = json.loads(distribution_json)
    name = distribution["name"]
    if name == "CategoricalDistribution":
        return distribution["attributes"]["choices"][int(value)]
    if name in _INTEGER_DISTRIBUTIONS:
        return int(value)
    return float(value)


__all__ = ["ROW_USER_ATTRS", "best_rows", "metric_names", "ranking_query", "trial_row"]
