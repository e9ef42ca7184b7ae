"""Locks across processes: a file lock beside a SQLite file, a PostgreSQL advisory lock."""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy

from hpo.config.settings import is_postgresql, sqlite_path

T = TypeVar("T")


@contextlib.contextmanager
def database_init_lock(url: str, schema: str) -> Iterator[None]:
    """Let one process at a time initialize `schema` ("optuna", "mlflow") in a database.

    SQLite: a file lock beside the file (all its users are on one machine). PostgreSQL: a session
    advisory lock on that database. Either is released if the process dies. Other databases: no lock.
    """
    path = sqlite_path(url)
    if path is not None:
        with file_lock(path.with_name(f"{path.name}.hpo-init-lock")):
            yield
        return
    if not is_postgresql(url):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5})
    try:
        with advisory_lock(engine, lock_key(f"hpo/schema/{schema}")):
            yield
    finally:
        engine.dispose()


CONNECT_PATIENCE = 60.0  # seconds a lock waits for a connection the server refuses before giving up


def connect_patiently(engine: sqlalchemy.Engine, *, patience: float = CONNECT_PATIENCE) -> sqlalchemy.Connection:
    """`engine.connect()`, retried with backoff (0.25 s doubling to 5 s) for up to `patience` seconds.

    Many workers starting at once can exceed the server's `max_connections` ("too many clients"), or
    meet a server restarting; both pass as other workers' connections close or the server returns, so a
    worker waits for its lock rather than dying. The last refusal is raised once the patience is spent.
    """
    return _patiently(engine.connect, sqlalchemy.exc.OperationalError, patience=patience)


# PostgreSQL's refusals that pass by themselves: every slot taken (the server's, a role's), the server starting
_PASSING_REFUSALS = (
    "too many clients",
    "too many connections",
    "remaining connection slots",
    "the database system is starting up",
)


def wait_for_connections(engine: sqlalchemy.Engine, *, patience: float = CONNECT_PATIENCE) -> sqlalchemy.Engine:
    """Make each new connection of a PostgreSQL `engine` wait, as :func:`connect_patiently` does, while the
    server refuses it for want of a free slot or while it starts: a worker's query then waits for one of
    the other workers' connections to close instead of failing its trial and the worker with it. Other
    refusals (a wrong address, password or database) fail at once. Returns `engine`."""
    if engine.dialect.name != "postgresql":
        return engine
    dbapi = engine.dialect.loaded_dbapi

    def passing(exc: BaseException) -> bool:
        return isinstance(exc, dbapi.OperationalError) and any(r in str(exc) for r in _PASSING_REFUSALS)

    @sqlalchemy.event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        return _patiently(lambda: dbapi.connect(*cargs, **cparams), passing, patience=patience)

    return engine


def _patiently(
    call: Callable[[], T],
    retry_on: type[BaseException] | Callable[[BaseException], bool],
    *,
    patience: float,
) -> T:
    """`call()`, retried with backoff (0.25 s doubling to 5 s) while it raises what `retry_on` names, for up to
    `patience` seconds; the last error is raised once the patience is spent."""
    deadline = time.monotonic() + patience
    delay = 0.25
    while True:
        try:
            return call()
        except Exception as exc:
            retry = isinstance(exc, retry_on) if isinstance(retry_on, type) else retry_on(exc)
            if not retry or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


@contextlib.contextmanager
def advisory_lock(engine: sqlalchemy.Engine, key: int, *, patience: float = CONNECT_PATIENCE) -> Iterator[None]:
    """A PostgreSQL session advisory lock held on one connection (freed by the server if we die)."""
    with connect_patiently(engine, patience=patience) as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` (created if missing); yields whether it was taken (always, when waiting)."""
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


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF
