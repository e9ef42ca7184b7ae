"""Creating a schema once and crash-safe: the database made if missing, a SQLite store moved into place."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy

from hpo.config.settings import data_dir, is_postgresql, redact, sqlite_path
from hpo.errors import ServiceError, UsageError
from hpo.running.databases._inspect import check_database, judge, read_database, read_sqlite
from hpo.running.databases._locks import database_init_lock
from hpo.running.databases._schemas import Schema, alembic_heads
from hpo.running.databases._sqlite import _OPEN_IN_PROCESS, _SQLITE_COMPANIONS

logger = logging.getLogger("hpo.running.databases")


Build = Callable[[str], None]  # creates `schema` in the (empty) database at the URL given


@contextlib.contextmanager
def prepared_database(url: str, schema: Schema, build: Build, *, field: str) -> Iterator[None]:
    """Hold the database's init lock while the caller opens it; its schema exists and is current by then.

    SQLite: an absent (or empty, or broken and data-less) file is built in a temporary file and moved
    into place. Other databases: the caller's open creates the schema, one process at a time.
    """
    check_database(url, schema, field=field)  # before the lock file or folder is created
    ensure_database(url, field=field)
    path = sqlite_path(url)
    with database_init_lock(url, schema.name):
        if path is not None:
            verdict = judge(read_sqlite(path, field=field), schema, where=f"{field}: {path}", url=url)
            if verdict.kind == "refuse":
                raise UsageError(verdict.message)
            if verdict.kind == "rebuild" and str(path.resolve()) in _OPEN_IN_PROCESS:
                raise UsageError(
                    f"{verdict.message}; it is open in this process, so it is not rebuilt now: run hpo again"
                )
            if verdict.kind == "rebuild":
                logger.warning("%s and no data; rebuilding it", verdict.message)
                _remove_sqlite(path)
            if verdict.kind in ("empty", "rebuild"):
                _build_sqlite(path, schema, build)
        else:
            _judge_server_database(url, schema, field=field)
        yield


def _judge_server_database(url: str, schema: Schema, *, field: str) -> None:
    if not is_postgresql(url):
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5})
    try:
        verdict = judge(read_database(engine), schema, where=f"{field}: {redact(url)}", url=url)
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceError(f"{field}: cannot reach {redact(url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()
    if verdict.kind == "rebuild":  # a server database is never dropped by hpo
        raise UsageError(f"{verdict.message}; it holds no data: drop its tables (or the database) and start again")
    if verdict.kind == "refuse":
        raise UsageError(verdict.message)


def _build_sqlite(path: Path, schema: Schema, build: Build) -> None:
    """Fill a temporary file beside `path` with the schema (copied from this install's template, or built),
    fold it into one file, then move it into place."""
    for stale in path.parent.glob(f".{path.name}.hpo-new-*"):
        stale.unlink(missing_ok=True)  # a crashed start's; the init lock says no one is building now
    temporary = path.with_name(f".{path.name}.hpo-new-{os.getpid()}")
    try:
        template = schema_template(schema, build)
        if template is not None:
            shutil.copyfile(template, temporary)
        else:
            build(f"sqlite:///{temporary}")
            _fold(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        for suffix in _SQLITE_COMPANIONS:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in _SQLITE_COMPANIONS)):
            leftover.unlink(missing_ok=True)


def schema_template(schema: Schema, build: Build) -> Path | None:
    """An empty SQLite store of `schema` at the revision this install writes, kept in the user's cache
    (`HPO_DATA_DIR/schemas`) and built once per revision; None when the cache cannot be written.

    Building MLflow's schema runs its hundred-odd migrations (0.7-1.1 s), Optuna's a dozen: every new
    study folder paid that before its first trial. A copy takes milliseconds. A template is used only
    when it reads back at this install's head revision, so an upgrade of MLflow or Optuna builds a new one.
    """
    head = alembic_heads(schema)[0]
    template = data_dir() / "schemas" / f"{schema.name}-{head}.db"
    try:
        contents = read_sqlite(template, field="template")
    except UsageError:  # damaged: built again below
        contents = None
    if contents is not None and contents.revision == head and judge(contents, schema, where="", url="").kind == "ok":
        return template
    building = template.with_name(f".{template.name}.{os.getpid()}")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_builders(template)
        build(f"sqlite:///{building}")
        _fold(building)
        os.replace(building, template)  # whole or not at all; concurrent builders each replace it whole
    except (OSError, sqlite3.Error, sqlalchemy.exc.SQLAlchemyError) as exc:  # e.g. a read-only cache
        logger.debug("no schema template in %s: %s", template.parent, exc)
        return None
    finally:
        for leftover in (building, *(Path(f"{building}{s}") for s in _SQLITE_COMPANIONS)):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return template


def _remove_dead_builders(template: Path) -> None:
    """Delete what a killed process left while building `template` (its temporary files end in its pid)."""
    for leftover in template.parent.glob(f".{template.name}.*"):
        pid = leftover.name[len(template.name) + 2 :].split("-", 1)[0]  # ".NAME.PID" or ".NAME.PID-wal"
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except OSError:  # alive under another user, or not ours to judge
            continue


def _fold(path: Path) -> None:
    """One self-contained file: the write-ahead log checkpointed in, the journal mode back to DELETE."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")  # the file alone is the database; WAL is set again on open
    finally:
        conn.close()


def _remove_sqlite(path: Path) -> None:
    for file in (path, *(Path(f"{path}{s}") for s in _SQLITE_COMPANIONS)):
        file.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    if not is_postgresql(url):
        return
    target = sqlalchemy.engine.make_url(url)
    admin = sqlalchemy.create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
            ).first()
            if not exists:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{target.database}"'))
    except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError):
        # Created by a concurrent worker (a duplicate pg_database row), or no right to list databases:
        # the connect below tells.
        pass
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceError(f"{field}: cannot reach {redact(url)}: {first_line(exc)}") from None
    finally:
        admin.dispose()


def first_line(exc: BaseException) -> str:
    text = redact(str(getattr(exc, "orig", None) or exc)).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
