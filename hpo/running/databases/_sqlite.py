"""How hpo opens SQLite files: write-ahead log, and never a second descriptor of a file in use."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy

from hpo.config.settings import env_setting
from hpo.errors import UsageError

SQLITE_HEADER = b"SQLite format 3\x00"


# Files SQLite keeps beside a database; left over from a deleted database they would be replayed into a new one.
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


# SQLite files this process has opened through SQLAlchemy (absolute paths). Closing any other file
# descriptor of such a file drops the POSIX locks SQLite holds on it for the whole process, which
# corrupts a database in use (sqlite.org/howtocorrupt.html, 2.2): they are never opened as plain files.
_OPEN_IN_PROCESS: set[str] = set()


@functools.cache
def use_write_ahead_log() -> None:
    """Have every SQLite connection SQLAlchemy opens from now on (Optuna's, MLflow's, hpo's locks) set up by
    :func:`_sqlite_write_ahead_log`: called before hpo opens a database, once per process."""
    sqlalchemy.event.listen(sqlalchemy.Engine, "connect", _sqlite_write_ahead_log)


def _sqlite_write_ahead_log(dbapi_connection: Any, connection_record: Any) -> None:
    """Every SQLite file hpo opens (Optuna's and MLflow's) runs in WAL mode with synchronous=NORMAL.

    In the default rollback-journal mode each of a trial's ~40 commits waits for the disk: sub-second
    Boston trials cost 107 ms of bookkeeping each instead of 74 ms (BENCHMARKS.md, overhead). WAL keeps
    readers and the writer out of each other's way and syncs only at checkpoints; a killed process
    loses nothing, a power cut at most the last commits. WAL needs shared memory between processes:
    on a network filesystem set HPO_SQLITE_WAL=0 (or better, use PostgreSQL).
    """
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        file = cursor.execute("PRAGMA database_list").fetchone()[2]
        if file:  # a file, not an in-memory database
            _OPEN_IN_PROCESS.add(str(Path(file).resolve()))
            if env_setting("HPO_SQLITE_WAL") != "0":
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing. A read-only open of a write-ahead-log database creates its -wal
    and -shm files; without them no process has it open, so it is opened as immutable (all of it is in
    the main file). Other files (rollback journal, or WAL in use) are opened read-only, with locking."""
    in_use_here = str(path.resolve()) in _OPEN_IN_PROCESS
    wal_mode = not in_use_here and _header(path, field="database")[18:19] == b"\x02"  # write version 2: write-ahead log
    mode = "immutable=1" if wal_mode and not Path(f"{path}-wal").exists() else "mode=ro"
    return sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=10)


def _header(path: Path, *, field: str) -> bytes:
    """The first 100 bytes of a database file, read as a plain file only if this process does not have
    it open through SQLite (then it is a SQLite file, which is all the callers ask)."""
    if str(path.resolve()) in _OPEN_IN_PROCESS:
        return SQLITE_HEADER
    try:
        with open(path, "rb") as handle:
            return handle.read(100)
    except OSError as exc:
        raise UsageError(f"{field}: cannot read {path} ({exc.strerror})") from None
