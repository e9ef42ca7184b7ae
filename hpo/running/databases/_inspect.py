"""Reading what a database holds without writing to it, and judging whether hpo may use it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy

from hpo.config.settings import Settings, redact, sqlite_path
from hpo.errors import UsageError
from hpo.running.databases._schemas import MLFLOW, OPTUNA, SCHEMAS, Schema, alembic_heads
from hpo.running.databases._sqlite import SQLITE_HEADER, _header, connect_readonly, use_write_ahead_log


@dataclass(frozen=True)
class Contents:
    """What a database holds, read without writing: its tables, its alembic revision and a data count."""

    tables: frozenset[str]
    revision: str | None
    rows: dict[str, int]  # schema name -> data rows, for the schemas present

    @property
    def empty(self) -> bool:
        return not self.tables


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
                f"{where} holds {other.owner}'s tables, not {schema.owner}'s;"
                f" give {schema.owner} a database of its own (Optuna and MLflow both keep an alembic_version table)",
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
            state = (
                f"a half-migrated {schema.owner} schema (revision {contents.revision},"
                f" leftover table {leftovers[0]}: an interrupted migration)"
            )
        elif contents.revision in known:
            state = f"an older {schema.owner} schema (revision {contents.revision}, this {schema.owner} needs {head})"
        else:
            return Verdict(
                "refuse",
                f"{where} holds a {schema.owner} schema (revision {contents.revision}) written by a newer"
                f" {schema.owner} than the one installed here; upgrade {schema.package} on this machine",
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
    use_write_ahead_log()  # every open of a database starts here (or in `prepared_database`, which calls this)
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
            f"{settings.storage_field}, {settings.tracking_field}: the Optuna storage and the MLflow tracking store"
            f" are the same database ({redact(settings.storage)}); give each its own,"
            " e.g. sqlite:///hpo.db and sqlite:///mlflow.db (both keep an alembic_version table)"
        )
    check_database(settings.storage, OPTUNA, field=settings.storage_field)
    check_database(settings.tracking_uri, MLFLOW, field=settings.tracking_field)
