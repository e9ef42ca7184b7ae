"""The databases Optuna and MLflow keep their schemas in: created once, crash-safe, and never another's.

Workers that start together on a fresh SQLite file used to race to create the same tables, and a worker
killed while MLflow migrated its schema left a half-migrated file that every later run refused. So:

- creation is serialized across processes: a file lock beside a SQLite file, a PostgreSQL advisory lock;
- a new SQLite store is built in a temporary file beside the target and moved into place, so the target
  is either absent or complete (a crash leaves only a temporary file, removed by the next start);
- before anything is written, a database is inspected read-only: a file that is not SQLite, a database
  holding another application's tables (or the other schema: Optuna's vs MLflow's), and a half-migrated
  or outdated schema are refused with the file and the fix. A half-built store that holds no data is
  rebuilt instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy

from hpo.config.settings import Settings, env_setting, redact, sqlite_path
from hpo.errors import ServiceError, UsageError

logger = logging.getLogger("hpo.operations.databases")
SQLITE_HEADER = b"SQLite format 3\x00"
# Files SQLite keeps beside a database; left over from a deleted database they would be replayed into a new one.
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Schema:
    """One application's schema: the tables that identify it, where its migrations are, how to upgrade it."""

    name: str  # "optuna" | "mlflow"
    owner: str  # for messages
    tables: frozenset[str]
    data_query: str  # counts what a user would lose: studies, runs
    package: str  # holds the alembic migrations, under `migrations`
    migrations: tuple[str, ...]
    upgrade: str  # the command that migrates an older schema, with {url}
    models: str  # "module:attribute" of the SQLAlchemy metadata that lists every table of the schema

    def all_tables(self) -> frozenset[str]:
        """Every table the installed version defines (imported only for the rare half-built store)."""
        import importlib

        module, attribute = self.models.split(":")
        return frozenset(getattr(importlib.import_module(module), attribute).metadata.tables)

    def migrations_dir(self) -> Path:
        import importlib.util

        spec = importlib.util.find_spec(
            self.package
        )  # the package's folder, without importing it (mlflow's import costs seconds)
        assert spec is not None and spec.submodule_search_locations
        return Path(list(spec.submodule_search_locations)[0]).joinpath(*self.migrations)


OPTUNA = Schema(
    "optuna", "Optuna", frozenset({"studies", "trials", "version_info"}), "SELECT COUNT(*) FROM studies",
    "optuna", ("storages", "_rdb", "alembic"), "optuna storage upgrade --storage '{url}'", "optuna.storages._rdb.models:BaseModel",
)  # fmt: skip
MLFLOW = Schema(
    "mlflow", "MLflow", frozenset({"experiments", "runs", "metrics"}),
    "SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM experiments) - 1",  # the Default experiment is always there
    "mlflow", ("store", "db_migrations"), "mlflow db upgrade '{url}'", "mlflow.store.db.utils:Base",
)  # fmt: skip
SCHEMAS = (OPTUNA, MLFLOW)


@functools.cache
def alembic_heads(schema: Schema) -> tuple[str, frozenset[str]]:
    """The schema's newest revision and every revision this installed version knows.

    Read from the migration scripts' `revision =` and `down_revision =` lines: alembic's own
    ScriptDirectory imports every script, which takes seconds for MLflow's hundred.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (schema.migrations_dir() / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        found = re.search(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found is None:
            continue
        revisions.add(found[1])
        down = re.search(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", text, re.MULTILINE)
        if down is not None:
            parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down[1]))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"{schema.owner}'s migrations have {len(heads)} heads; expected one")
    return next(iter(heads)), frozenset(revisions)


@dataclass(frozen=True)
class Contents:
    """What a database holds, read without writing: its tables, its alembic revision and a data count."""

    tables: frozenset[str]
    revision: str | None
    rows: dict[str, int]  # schema name -> data rows, for the schemas present

    @property
    def empty(self) -> bool:
        return not self.tables


# SQLite files this process has opened through SQLAlchemy (absolute paths). Closing any other file
# descriptor of such a file drops the POSIX locks SQLite holds on it for the whole process, which
# corrupts a database in use (sqlite.org/howtocorrupt.html, 2.2): they are never opened as plain files.
_OPEN_IN_PROCESS: set[str] = set()


@sqlalchemy.event.listens_for(sqlalchemy.Engine, "connect")
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


# -- reading a database without writing to it ----------------------------------------------------
def read_sqlite(path: Path, *, field: str) -> Contents | None:
    """The contents of a SQLite file (None if it does not exist or is empty), opened so that nothing is written."""
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return None
    if not path.is_file():
        raise UsageError(f"{field}: {path} is not a file; expected a SQLite database file")
    if _header(path, field=field)[: len(SQLITE_HEADER)] != SQLITE_HEADER:
        raise UsageError(f"{field}: {path} is not a SQLite database; point {field} at a new file or at one hpo created")
    try:
        conn = connect_readonly(path)
        try:
            return _contents(lambda sql: conn.execute(sql).fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise UsageError(
            f"{field}: {path} is not a readable SQLite database ({exc}); point {field} at a new file"
        ) from None


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


def read_database(engine: sqlalchemy.Engine) -> Contents:
    """The contents of a database server's database (PostgreSQL and others)."""
    with engine.connect() as conn:
        return _contents(
            lambda sql: [tuple(r) for r in conn.execute(sqlalchemy.text(sql))],
            tables=sqlalchemy.inspect(conn).get_table_names(),
        )


def _contents(query: Callable[[str], list[Any]], *, tables: list[str] | None = None) -> Contents:
    if tables is None:
        tables = [
            row[0] for row in query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
    names = frozenset(tables)
    revision = None
    if "alembic_version" in names:
        try:
            found = query("SELECT version_num FROM alembic_version")
        except Exception:
            found = []
        revision = str(found[0][0]) if found else None
    rows = {}
    for schema in SCHEMAS:
        if schema.tables <= names:
            try:
                rows[schema.name] = int(query(schema.data_query)[0][0] or 0)
            except Exception:
                rows[schema.name] = 1
    return Contents(names, revision, rows)


# -- judging what a database holds ---------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """`ok`, `empty` (create the schema), `rebuild` (a broken store without data) or `refuse` (the message)."""

    kind: str
    message: str = ""


def judge(contents: Contents | None, schema: Schema, *, where: str, url: str) -> Verdict:
    """What to do with a database that should hold `schema`; `where` names it in messages (field and file)."""
    if contents is None or contents.empty:
        return Verdict("empty")
    tables = contents.tables
    for other in SCHEMAS:
        if other is not schema and other.tables <= tables and not schema.tables <= tables:
            return Verdict(
                "refuse",
                f"{where} holds {other.owner}'s tables, not {schema.owner}'s; give {schema.owner} a database of its own "
                f"(Optuna and MLflow both keep an alembic_version table)",
            )
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    holds_data = contents.rows.get(schema.name, 0) > 0
    if not schema.tables <= tables:
        # Rebuilt only if every table is one this schema defines (an interrupted first start), never
        # because a foreign database happens to share a table name.
        alembic = {t for t in tables if t == "alembic_version" or t.startswith("_alembic_tmp_")}
        if (tables - alembic) and (tables - alembic) <= schema.all_tables():
            return Verdict("rebuild", f"{where} holds a half-built {schema.owner} schema (an interrupted first start)")
        listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        return Verdict(
            "refuse",
            f"{where} holds another application's tables ({listed}); hpo writes {schema.owner}'s schema only into "
            "an empty database or one it created: point it at a new file or database",
        )
    head, known = alembic_heads(schema)
    if leftovers or (contents.revision is not None and contents.revision != head):
        if leftovers:
            state = f"a half-migrated {schema.owner} schema (revision {contents.revision}, leftover table {leftovers[0]}: an interrupted migration)"
        elif contents.revision in known:
            state = f"an older {schema.owner} schema (revision {contents.revision}, this {schema.owner} needs {head})"
        else:
            return Verdict(
                "refuse",
                f"{where} holds a {schema.owner} schema (revision {contents.revision}) written by a newer {schema.owner} "
                f"than the one installed here; upgrade {schema.package} on this machine",
            )
        if not holds_data:
            return Verdict("rebuild", f"{where} holds {state}")
        fix = schema.upgrade.format(url=redact(url))
        drop = f"drop the {', '.join(leftovers)} table(s), then " if leftovers else ""
        return Verdict("refuse", f"{where} holds {state} and data; back it up, {drop}run `{fix}`")
    return Verdict("ok")


def check_database(url: str, schema: Schema, *, field: str, must_exist: bool = False) -> Verdict:
    """Read-only: refuse a SQLite file hpo must not write into, before anything is created anywhere.

    Other databases are inspected when they are opened (under their lock), since that needs the server.
    """
    path = sqlite_path(url)
    if path is None:
        return Verdict("ok")
    contents = read_sqlite(path, field=field)
    verdict = judge(contents, schema, where=f"{field}: {path}", url=url)
    if verdict.kind == "refuse":
        raise UsageError(verdict.message)
    if must_exist and verdict.kind != "ok":
        return Verdict("missing", f"{field}: {path} holds no {schema.owner} schema yet")
    return verdict


def same_database(storage: str, tracking_uri: str) -> bool:
    """True if both URLs name one database (one SQLite file, or one database on one server)."""
    if tracking_uri.split(":", 1)[0].lower() in ("http", "https", "file", "databricks"):
        return False
    a, b = sqlite_path(storage), sqlite_path(tracking_uri)
    if a is not None or b is not None:
        return a is not None and b is not None and a.resolve() == b.resolve()
    first, second = sqlalchemy.engine.make_url(storage), sqlalchemy.engine.make_url(tracking_uri)
    return first.get_backend_name() == second.get_backend_name() and (
        first.host or "localhost",
        first.port,
        first.database,
    ) == (second.host or "localhost", second.port, second.database)


def check_stores(settings: Settings) -> None:
    """Read-only, before anything is created: both stores may be written by hpo, and they are not one database."""
    if same_database(settings.storage, settings.tracking_uri):
        raise UsageError(
            f"{settings.storage_field}, {settings.tracking_field}: the Optuna storage and the MLflow tracking store are the same database "
            f"({redact(settings.storage)}); give each its own, e.g. sqlite:///hpo.db and sqlite:///mlflow.db (both keep an alembic_version table)"
        )
    check_database(settings.storage, OPTUNA, field=settings.storage_field)
    check_database(settings.tracking_uri, MLFLOW, field=settings.tracking_field)


# -- creating a schema once, crash-safe ----------------------------------------------------------
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
                _build_sqlite(path, build)
        else:
            _judge_server_database(url, schema, field=field)
        yield


def _judge_server_database(url: str, schema: Schema, *, field: str) -> None:
    if not url.startswith(("postgresql", "postgres")):
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


def _build_sqlite(path: Path, build: Build) -> None:
    """Build the schema in a temporary file beside `path`, fold it into one file, then move it into place."""
    for stale in path.parent.glob(f".{path.name}.hpo-new-*"):
        stale.unlink(missing_ok=True)  # a crashed start's; the init lock says no one is building now
    temporary = path.with_name(f".{path.name}.hpo-new-{os.getpid()}")
    try:
        build(f"sqlite:///{temporary}")
        conn = sqlite3.connect(temporary)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")  # the file alone is the database; WAL is set again on open
        finally:
            conn.close()
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        for suffix in _SQLITE_COMPANIONS:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in _SQLITE_COMPANIONS)):
            leftover.unlink(missing_ok=True)


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
    if not url.startswith(("postgresql", "postgres")):
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
        pass  # created by a concurrent worker (a duplicate pg_database row), or no right to list databases: the connect below tells
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceError(f"{field}: cannot reach {redact(url)}: {first_line(exc)}") from None
    finally:
        admin.dispose()


# -- locks ---------------------------------------------------------------------------------------
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
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5})
    try:
        with advisory_lock(engine, lock_key(f"hpo/schema/{schema}")):
            yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def advisory_lock(engine: sqlalchemy.Engine, key: int) -> Iterator[None]:
    """A PostgreSQL session advisory lock held on one connection (freed by the server if we die)."""
    with engine.connect() as conn:
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


def first_line(exc: BaseException) -> str:
    text = redact(str(getattr(exc, "orig", None) or exc)).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
