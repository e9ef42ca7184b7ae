"""The Optuna storage: an RDB on SQLite or PostgreSQL with heartbeats, stale-trial retries and a budget lock.

Optuna's RDB storage is hpo's distributed engine: every worker on every machine talks to the same
database. The lock here makes the global `n_trials` cap exact when many workers ask for trials at once.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from hpo.config.settings import is_grpc_url, is_postgresql, redact, sqlite_path
from hpo.errors import ServiceError, UsageError
from hpo.running.best_query import ranking_query
from hpo.running.databases import (
    CONNECT_PATIENCE,
    OPTUNA,
    advisory_lock,
    alembic_heads,
    check_database,
    connect_patiently,
    file_lock,
    first_line,
    lock_key,
    prepared_database,
    read_sqlite,
    wait_for_connections,
)
from hpo.running.grpc_storage import HEARTBEAT_ATTR, GrpcStorage, connect
from hpo.running.trial_rows import LeanRDBStorage, read_trials

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def requeue(study: optuna.Study, trial: FrozenTrial, *, max_retry: int) -> None:
    """Queue a copy of a failed trial with its params (Optuna's RetryHeartbeatStaleTrialCallback), unless it
    was retried `max_retry` times already.

    The copy inherits the trial's attributes but not the dead worker's last heartbeat stamp (a gRPC
    worker's beat is a system attribute): a stamp older than the grace period would make the copy look
    stale the moment a worker claims it, and another worker would fail it before its first beat.
    """
    inherited = copy.copy(trial)
    inherited.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != HEARTBEAT_ATTR}
    RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, inherited)


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Several local processes share one file: wait for the write lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    # Check connections before use (a restarted server), recycle idle ones. One connection kept per worker:
    # with 32 workers on a server allowing 100 (PostgreSQL's default), two each left MLflow's server none;
    # the heartbeat thread opens a second only when it beats during the main thread's query.
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 300, "pool_size": 1, "max_overflow": 4}
    if is_postgresql(url):
        kwargs["connect_args"] = {"connect_timeout": 5}
    return kwargs


class MissingStorage(UsageError):
    """A read-only caller found no Optuna schema where it looked: nothing was created."""


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 1,
    on_stale: StaleCallback | None = None,
    create: bool = True,
    field: str = "storage",
) -> RDBStorage | GrpcStorage:
    """An RDBStorage with heartbeats; a trial whose worker died is failed, then re-queued with its params.

    With `create`, an empty database gets Optuna's schema (once, crash-safe: :mod:`hpo.running.databases`);
    without it (read commands, `hpo worker`) nothing is ever written and a missing schema raises
    :class:`MissingStorage`. A `grpc://host:port` URL is a client of a gRPC storage proxy
    (:mod:`hpo.running.grpc_storage`), whose server owns the database and its schema.
    """

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        if max_retry > 0:
            requeue(study, trial, max_retry=max_retry)

    if is_grpc_url(url):
        return connect(
            url,
            field=field,
            heartbeat_interval=heartbeat_interval or None,
            grace_period=grace_period,
            stale_trial_callback=stale if heartbeat_interval else None,
        )
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or 2 * heartbeat_interval,
            "heartbeat_stale_trial_callback": stale,
        }
    try:
        if not create:
            if check_database(url, OPTUNA, field=field, must_exist=True).kind == "missing":
                raise MissingStorage(f"{field}: {redact(url)} holds no Optuna schema yet")
            reading = None if kwargs else _reading_storage(url, field=field)
            if reading is not None:
                return reading
            storage = LeanRDBStorage(url, engine_kwargs=_engine_kwargs(url), skip_table_creation=True, **kwargs)
        else:
            with prepared_database(url, OPTUNA, _build_optuna_schema, field=field):
                storage = LeanRDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
        wait_for_connections(storage.engine)  # many workers on one server: a full server is waited for
        return storage
    except optuna.exceptions.StorageInternalError as exc:  # Optuna wraps the driver's error
        cause = exc.__cause__ or exc
        if (
            isinstance(cause, sqlalchemy.exc.ProgrammingError) and not create and "does not exist" in str(cause)
        ):  # no Optuna tables there
            raise MissingStorage(f"{field}: {redact(url)} holds no Optuna schema yet") from None
        raise ServiceError(f"{field}: cannot open {redact(url)}: {first_line(cause)}") from None
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError) as exc:
        raise ServiceError(f"{field}: cannot open {redact(url)}: {first_line(exc)}") from None
    except ImportError as exc:
        raise UsageError(f"{field}: no database driver for {redact(url)} ({exc})") from None
    except RuntimeError as exc:  # Optuna's "schema not compatible with this version; run `optuna storage upgrade`"
        raise UsageError(f"{field}: {redact(url)}: {first_line(exc)}") from None


def _reading_storage(url: str, *, field: str) -> _ReadingStorage | None:
    """A read command's storage when the database is stamped with the Optuna schema revision this
    install writes (read, not written), else None: Optuna's RDBStorage then checks, stamps or refuses."""
    head = alembic_heads(OPTUNA)[0]
    path = sqlite_path(url)
    if path is not None:
        contents = read_sqlite(path, field=field)
        at_head = contents is not None and contents.revision == head
        return _ReadingStorage(url, engine_kwargs=_engine_kwargs(url)) if at_head else None
    storage = _ReadingStorage(url, engine_kwargs=_engine_kwargs(url))  # a server: ask it on the same engine
    try:
        with storage.engine.connect() as conn:
            found = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).fetchall()
    except sqlalchemy.exc.ProgrammingError:  # no alembic_version table: no schema, or not Optuna's
        found = []
    if [str(row[0]) for row in found] == [head]:
        return storage
    storage.engine.dispose()
    return None


class _ReadingStorage(LeanRDBStorage):
    """Optuna's RDBStorage for a read command on a database found at Optuna's head revision.

    RDBStorage's constructor imports alembic, and with it every SQL dialect alembic knows (0.3 s of
    the 1.5 s `hpo status` may take), to check the schema revision and, on a database without one, to
    stamp it. :func:`_reading_storage` has just read that revision without writing, so this skips
    Optuna's version manager and builds the same engine and sessions. Its
    schema-upgrade methods, which a read command never calls, build the manager when asked.
    """

    def __init__(self, url: str, *, engine_kwargs: dict[str, Any]) -> None:  # RDBStorage.__init__ minus versions
        import sqlalchemy.orm

        self.engine_kwargs = engine_kwargs
        self.url = self._fill_storage_url_template(url)
        self.skip_compatibility_check = True
        self.heartbeat_interval = None
        self.grace_period = None
        self.heartbeat_stale_trial_callback = None
        self.failed_trial_callback = None
        self.engine = sqlalchemy.create_engine(url, **engine_kwargs)
        self.scoped_session = sqlalchemy.orm.scoped_session(sqlalchemy.orm.sessionmaker(bind=self.engine))

    def __getattr__(self, name: str) -> Any:
        if name != "_version_manager":
            raise AttributeError(name)
        from optuna.storages._rdb.storage import _VersionManager

        manager = _VersionManager(self.url, self.engine, self.scoped_session)
        self._version_manager = manager
        return manager


def _build_optuna_schema(url: str) -> None:
    storage = RDBStorage(url)
    storage.remove_session()
    storage.engine.dispose()


def best_trial_ids(storage: RDBStorage, study_name: str, *, k: int, maximize: bool) -> list[int]:
    """The storage ids of the k best COMPLETE trials of a single-objective study (:func:`ranking_query`)."""
    with storage.engine.connect() as conn:
        return [int(row[0]) for row in conn.execute(ranking_query(study_name, k=k, maximize=maximize))]


def trial_counts(storage: RDBStorage) -> dict[int, tuple[dict[str, int], Any]]:
    """Per study id: its trials counted by state, and when its first trial started, in one SQL query
    (Optuna's study summaries load every trial of every study to count them)."""
    trials = sqlalchemy.table(
        "trials", sqlalchemy.column("study_id"), sqlalchemy.column("state"), sqlalchemy.column("datetime_start")
    )
    query = sqlalchemy.select(
        trials.c.study_id, trials.c.state, sqlalchemy.func.count(), sqlalchemy.func.min(trials.c.datetime_start)
    ).group_by(trials.c.study_id, trials.c.state)
    counts: dict[int, tuple[dict[str, int], Any]] = {}
    with storage.engine.connect() as conn:
        for study_id, state, n, started in conn.execute(query):
            states, first = counts.get(int(study_id), ({}, None))
            if isinstance(started, str):  # SQLite returns the aggregate of a DATETIME column as text
                started = datetime.datetime.fromisoformat(started)
            states[str(state)] = int(n)
            counts[int(study_id)] = (
                states,
                started if first is None or (started is not None and started < first) else first,
            )
    return counts


def trials_for_listing(
    storage: RDBStorage, study_name: str, *, user_attrs: tuple[str, ...], system_attrs: tuple[str, ...]
) -> list[FrozenTrial]:
    """Every trial of the study with its state, values, times, params and the attributes named, in trial-number
    order; intermediate values are left out.

    Optuna's `get_trials` loads each trial whole, curves included (30 to 750 values a trial): `hpo status`
    on 10,000 trials spent minutes there. These trials are for showing, not for a sampler.
    """
    from optuna.storages._rdb import models

    studies, trials = models.StudyModel.__table__, models.TrialModel.__table__
    study_ids = sqlalchemy.select(studies.c.study_id).where(studies.c.study_name == study_name).scalar_subquery()
    with storage.engine.connect() as conn:
        found = read_trials(
            conn,
            trials.c.study_id == study_ids,
            intermediate_values=False,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    return sorted(found, key=lambda t: t.number)


@contextlib.contextmanager
def budget_lock(url: str, study_name: str, *, patience: float = CONNECT_PATIENCE) -> Iterator[None]:
    """Serialize 'count trials, then ask for one' across workers so the global cap is exact.

    SQLite: a file lock beside the database (all its workers are on one machine). PostgreSQL: a
    session advisory lock keyed by the study name, its connection waited for up to `patience` seconds
    while the server refuses one (see `refused_connections`). Other databases: no lock (the cap may
    overshoot by at most one trial per concurrent worker, as with Optuna's MaxTrialsCallback). A gRPC
    proxy: no lock here; hpo's proxy takes the database's lock itself when it creates a trial.
    """
    path = sqlite_path(url)
    if path is not None:
        with file_lock(path.with_name(path.name + ".hpo-lock")):
            yield
        return
    if is_postgresql(url):
        key = lock_key(study_name)
        with refused_connections(url), advisory_lock(_lock_engine(url), key, patience=patience):
            yield
        return
    yield


@contextlib.contextmanager
def refused_connections(url: str) -> Iterator[None]:
    """Turn the database's refusal of a connection (after the lock's patience) into one line naming the
    store, with what to do when the cause is more workers than the server's `max_connections`."""
    try:
        yield
    except sqlalchemy.exc.OperationalError as exc:
        reason = first_line(exc)
        hint = (
            "; more workers than the server's max_connections: run them through the gRPC proxy "
            "(`hpo server --grpc-port`, storage grpc://HOST:PORT) or raise max_connections"
            if "too many" in reason.lower()
            else ""
        )
        raise ServiceError(f"storage: {redact(url)} refused a connection: {reason}{hint}") from None


@contextlib.contextmanager
def try_lock(url: str, name: str) -> Iterator[bool]:
    """Take the lock `name` if no other process holds it, without waiting; yield whether it was taken.

    Used so that exactly one worker stays behind at the end of a study to re-run crashed trials.
    The lock dies with its holder (a closed connection, a closed file), so a killed worker frees it.
    Databases other than SQLite and PostgreSQL have no such lock: every caller gets it.
    """
    path = sqlite_path(url)
    if path is not None:
        with file_lock(path.with_name(f"{path.name}.hpo-lock-{lock_key(name)}"), wait=False) as taken:
            yield taken
        return
    if is_postgresql(url):
        key = lock_key(name)
        with refused_connections(url), connect_patiently(_lock_engine(url)) as conn:
            taken = bool(conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            try:
                yield taken
            finally:
                if taken:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    yield True


_LOCK_ENGINES: dict[str, sqlalchemy.Engine] = {}


def _lock_engine(url: str) -> sqlalchemy.Engine:
    # A connection per lock, closed with it: a worker keeps none open between trials (a few milliseconds
    # to connect, once a trial), and one holding `try_lock` still takes `budget_lock` to ask for a trial.
    if url not in _LOCK_ENGINES:
        _LOCK_ENGINES[url] = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5}
        )
    return _LOCK_ENGINES[url]
