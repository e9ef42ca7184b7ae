"""The Optuna storage: an RDB on SQLite or PostgreSQL with heartbeats, stale-trial retries and a budget lock.

Optuna's RDB storage is hpo's distributed engine: every worker on every machine talks to the same
database. The lock here makes the global `n_trials` cap exact when many workers ask for trials at once.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from hpo.errors import ServiceError, UsageError
from hpo.settings import redact, sqlite_path

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


@sqlalchemy.event.listens_for(sqlalchemy.Engine, "connect")
def _sqlite_write_ahead_log(dbapi_connection: Any, connection_record: Any) -> None:
    """Every SQLite file hpo opens (Optuna's and MLflow's) runs in WAL mode with synchronous=NORMAL.

    In the default rollback-journal mode each of a trial's ~40 commits waits for the disk: sub-second
    Boston trials cost 107 ms of bookkeeping each instead of 74 ms (BENCHMARKS.md, overhead). WAL keeps
    readers and the writer out of each other's way and syncs only at checkpoints; a killed process
    loses nothing, a power cut at most the last commits. WAL needs shared memory between processes:
    on a network filesystem set HPO_SQLITE_WAL=0 (or better, use PostgreSQL).
    """
    if not isinstance(dbapi_connection, sqlite3.Connection) or os.environ.get("HPO_SQLITE_WAL", "1") == "0":
        return
    cursor = dbapi_connection.cursor()
    try:
        if cursor.execute("PRAGMA database_list").fetchone()[2]:  # a file, not an in-memory database
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Several local processes share one file: wait for the write lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    # Check connections before use (a restarted server), recycle idle ones, keep the pool small per worker.
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 300, "pool_size": 2, "max_overflow": 4}
    if url.startswith(("postgresql", "postgres")):
        kwargs["connect_args"] = {"connect_timeout": 5}
    return kwargs


def ensure_database(url: str, *, field: str = "storage") -> None:
    """Create the SQLite file's folder, or the PostgreSQL database, if it does not exist yet.

    `field` names the setting in error messages (`storage`, `--backend-store-uri`, ...).
    """
    path = sqlite_path(url)
    if path is not None:
        try:
            path.resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{field}: cannot create the folder of {path} ({exc.strerror})") from None
        return
    if not url.startswith(("postgresql", "postgres")):
        return
    target = sqlalchemy.engine.make_url(url)
    admin = sqlalchemy.create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect() as conn:
            exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).first()
            if not exists:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{target.database}"'))
    except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError):
        pass  # created by a concurrent worker (a duplicate pg_database row), or no right to list databases: the connect below tells
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceError(f"{field}: cannot reach {redact(url)}: {_first_line(exc)}") from None
    finally:
        admin.dispose()


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 1,
    on_stale: StaleCallback | None = None,
) -> RDBStorage:
    """An RDBStorage with heartbeats; a trial whose worker died is failed, then re-queued with its params."""
    ensure_database(url)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if max_retry > 0 else None

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        if retry is not None:
            retry(study, trial)

    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or 2 * heartbeat_interval,
            "heartbeat_stale_trial_callback": stale,
        }
    try:
        with database_init_lock(url, "optuna"):
            return RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError) as exc:
        raise ServiceError(f"storage: cannot open {redact(url)}: {_first_line(exc)}") from None
    except ImportError as exc:
        raise UsageError(f"storage: no database driver for {redact(url)} ({exc})") from None


def best_trial_ids(storage: RDBStorage, study_name: str, *, k: int, maximize: bool) -> list[int]:
    """The storage ids of the k best COMPLETE trials of a single-objective study, in one SQL query.

    Optuna can only rank by loading every trial with all its params and attributes (about a second
    for 2,000 trials); `hpo best` needs five. The query orders as Optuna's own best-trial query does
    (-inf < finite < +inf, then the value), with the trial number breaking ties.
    """
    trials = sqlalchemy.table("trials", sqlalchemy.column("trial_id"), sqlalchemy.column("study_id"), sqlalchemy.column("number"), sqlalchemy.column("state"))
    values = sqlalchemy.table("trial_values", sqlalchemy.column("trial_id"), sqlalchemy.column("objective"), sqlalchemy.column("value"), sqlalchemy.column("value_type"))
    studies = sqlalchemy.table("studies", sqlalchemy.column("study_id"), sqlalchemy.column("study_name"))
    kind = sqlalchemy.case((values.c.value_type == "INF_NEG", -1), (values.c.value_type == "FINITE", 0), else_=1)
    order = (kind.desc(), values.c.value.desc()) if maximize else (kind.asc(), values.c.value.asc())
    query = (
        sqlalchemy.select(trials.c.trial_id)
        .select_from(trials.join(values, values.c.trial_id == trials.c.trial_id).join(studies, studies.c.study_id == trials.c.study_id))
        .where(studies.c.study_name == study_name, trials.c.state == "COMPLETE", values.c.objective == 0)
        .order_by(*order, trials.c.number.asc())
        .limit(k)
    )
    with storage.engine.connect() as conn:
        return [int(row[0]) for row in conn.execute(query)]


@contextlib.contextmanager
def database_init_lock(url: str, schema: str) -> Iterator[None]:
    """Let one process at a time initialize `schema` ("optuna", "mlflow") in a PostgreSQL database.

    Workers starting together on a fresh database would otherwise race to create the same tables
    (duplicate pg_type rows) and stamp the schema version twice. A session advisory lock on that
    database: released by the server if the process dies. Other databases: no lock.
    """
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    key = _key(f"hpo/schema/{schema}")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5})
    try:
        with _advisory_lock(engine, key):
            yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def _advisory_lock(engine: sqlalchemy.Engine, key: int) -> Iterator[None]:
    """A PostgreSQL session advisory lock held on one connection (freed by the server if we die)."""
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _first_line(exc: BaseException) -> str:
    text = redact(str(getattr(exc, "orig", None) or exc)).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


@contextlib.contextmanager
def budget_lock(url: str, study_name: str) -> Iterator[None]:
    """Serialize 'count trials, then ask for one' across workers so the global cap is exact.

    SQLite: a file lock beside the database (all its workers are on one machine). PostgreSQL: a
    session advisory lock keyed by the study name. Other databases: no lock (the cap may overshoot
    by at most one trial per concurrent worker, as with Optuna's MaxTrialsCallback).
    """
    path = sqlite_path(url)
    if path is not None:
        with _file_lock(path.with_name(path.name + ".hpo-lock")):
            yield
        return
    if url.startswith(("postgresql", "postgres")):
        key = _key(study_name)
        with _advisory_lock(_lock_engine(url), key):
            yield
        return
    yield


@contextlib.contextmanager
def try_lock(url: str, name: str) -> Iterator[bool]:
    """Take the lock `name` if no other process holds it, without waiting; yield whether it was taken.

    Used so that exactly one worker stays behind at the end of a study to re-run crashed trials.
    The lock dies with its holder (a closed connection, a closed file), so a killed worker frees it.
    Databases other than SQLite and PostgreSQL have no such lock: every caller gets it.
    """
    path = sqlite_path(url)
    if path is not None:
        with _file_lock(path.with_name(f"{path.name}.hpo-lock-{_key(name)}"), wait=False) as taken:
            yield taken
        return
    if url.startswith(("postgresql", "postgres")):
        key = _key(name)
        with _lock_engine(url).connect() as conn:
            taken = bool(conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            try:
                yield taken
            finally:
                if taken:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    yield True


def _key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


_LOCK_ENGINES: dict[str, sqlalchemy.Engine] = {}


def _lock_engine(url: str) -> sqlalchemy.Engine:
    # Two connections: a worker holding `try_lock` still takes `budget_lock` to ask for a trial.
    if url not in _LOCK_ENGINES:
        _LOCK_ENGINES[url] = sqlalchemy.create_engine(url, pool_size=2, max_overflow=0, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    return _LOCK_ENGINES[url]


@contextlib.contextmanager
def _file_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking is all there is
        yield True
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
