"""Connecting to the database behind a URL, read-only, and saying why it cannot be reached or read."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from hpo.config.writable import write_problem
from hpo.operations.doctor._findings import CONNECT_TIMEOUT, Finding, Reader, _first_line


def _connect_database(
    name: str, url: str, source: str, *, answered: threading.Event
) -> tuple[set[str], Reader, str] | Finding:
    """Connect once (short timeout) and read the table names; a Finding that explains a failure."""
    import sqlalchemy

    target = sqlalchemy.engine.make_url(url)
    is_pg = target.get_backend_name() == "postgresql"
    connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT} if is_pg else {}
    try:
        engine = sqlalchemy.create_engine(target, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
    except ImportError as exc:
        return Finding(
            name,
            "problem",
            f"{url}: no database driver ({exc})",
            "pip install the driver the URL names"
            " (psycopg2-binary for postgresql+psycopg2, psycopg[binary] for postgresql)",
        )
    try:
        with engine.connect() as conn:
            answered.set()  # the network part is done: reading the schema is local work
            tables = set(sqlalchemy.inspect(conn).get_table_names())
            server = (
                "PostgreSQL " + str(conn.execute(sqlalchemy.text("SHOW server_version")).scalar()).split()[0]
                if is_pg
                else target.get_backend_name()
            )
            rows: dict[str, list[tuple[Any, ...]]] = {}

            def read(sql: str) -> list[tuple[Any, ...]]:
                if sql not in rows:
                    rows[sql] = [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
                return rows[sql]

            # read eagerly what the schema checks need while the connection is open
            if "alembic_version" in tables:
                read("SELECT version_num FROM alembic_version")
            if "studies" in tables:
                read("SELECT study_name FROM studies ORDER BY study_id")
            if "experiments" in tables:
                read("SELECT COUNT(*) FROM experiments WHERE lifecycle_stage = 'active'")
        return tables, lambda sql: rows[sql], server
    except sqlalchemy.exc.OperationalError as exc:
        answered.set()  # a refusal or a timeout of libpq's own is an answer
        return (
            _database_finding(name, url, target, exc, source)
            if is_pg
            else Finding(name, "problem", f"{url}: {_first_line(exc)}", f"check {source}")
        )
    except sqlalchemy.exc.DBAPIError as exc:
        return Finding(name, "problem", f"{url}: {_first_line(exc)}", f"check {source}")
    finally:
        engine.dispose()


def _database_finding(name: str, url: str, target: Any, exc: Exception, source: str) -> Finding:
    """Turn libpq's error text into what is wrong and what to do."""
    text = _first_line(exc)
    lower = str(getattr(exc, "orig", exc)).lower()
    user = target.username or os.environ.get("PGUSER") or "the current user"
    where = f"{target.host or 'localhost'}:{target.port or 5432}"
    secret = "the URL's password, PGPASSWORD or ~/.pgpass (libpq reads the last two when the URL has none)"
    if "password authentication failed" in lower:
        return Finding(name, "problem", f"{url}: wrong password for user {user}", f"correct {secret}")
    if "no password supplied" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: the server wants a password for user {user} and none was given",
            f"set {secret}; a ~/.pgpass line is host:port:database:user:password, chmod 600",
        )
    if "connection refused" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: nothing listens on {where} (connection refused)",
            f"start PostgreSQL there, or correct the host/port in {source}",
        )
    if "timeout expired" in lower or "timed out" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: {where} did not answer within {CONNECT_TIMEOUT}s",
            "check that the host is up and that no firewall drops port 5432",
        )
    if "could not translate host name" in lower or "name or service not known" in lower:
        return Finding(name, "problem", f"{url}: unknown host {target.host}", f"correct the host name in {source}")
    if "does not exist" in lower and f'database "{target.database}"' in lower:
        return _missing_database(name, url, target, source)
    if "role" in lower and "does not exist" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: user {user} does not exist on {where}",
            f"create it (CREATE ROLE {user} LOGIN PASSWORD ...) or correct the user in {source}",
        )
    if "pg_hba.conf" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: the server does not accept this host/user/database ({text})",
            "add a matching line to the server's pg_hba.conf and reload it",
        )
    return Finding(name, "problem", f"{url}: {text}", f"check {source}")


def _missing_database(name: str, url: str, target: Any, source: str) -> Finding:
    """A database that does not exist yet is fine if the user may create it: hpo does on first run."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(
        target.set(database="postgres"),
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )
    try:
        with admin.connect() as conn:
            may_create = conn.execute(
                sqlalchemy.text("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar()
    except sqlalchemy.exc.DBAPIError:
        may_create = None
    finally:
        admin.dispose()
    if may_create:
        return Finding(
            name, "ok", f"{url}: database {target.database} does not exist yet; hpo creates it on the first run"
        )
    return Finding(
        name,
        "problem",
        f"{url}: database {target.database} does not exist and user {target.username} may not create it",
        f'CREATE DATABASE "{target.database}" OWNER {target.username} as an administrator, or correct {source}',
    )


def _sqlite_tables(path: Path) -> tuple[set[str], Reader]:
    from hpo.running.databases import connect_readonly

    conn = connect_readonly(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for sql, needs in (
            ("SELECT version_num FROM alembic_version", "alembic_version"),
            ("SELECT study_name FROM studies ORDER BY study_id", "studies"),
            ("SELECT COUNT(*) FROM experiments WHERE lifecycle_stage = 'active'", "experiments"),
        ):
            if needs in tables:
                rows[sql] = [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()
    return tables, lambda sql: rows[sql]


def _missing_sqlite(name: str, path: Path, owner: str, source: str) -> Finding:
    folder = path.resolve().parent
    if write_problem(folder, is_folder=True) is None:
        return Finding(name, "ok", f"sqlite:///{path}: does not exist yet; {owner} creates it on the first `hpo run`")
    return Finding(
        name,
        "problem",
        f"sqlite:///{path}: cannot be created, {folder} is not writable",
        f"point {source} at a writable place",
    )


def _alembic_revision(read: Reader) -> str | None:
    try:
        rows = read("SELECT version_num FROM alembic_version")
    except KeyError:
        return None
    return str(rows[0][0]) if rows else None


def check_separate_databases(storage: str, tracking_uri: str) -> list[Finding]:
    """Optuna and MLflow in one database break each other: both keep an `alembic_version` table."""
    from hpo.running.databases import same_database

    if not same_database(storage, tracking_uri):
        return []
    return [
        Finding(
            "storage",
            "problem",
            "the Optuna storage and the MLflow tracking store are the same database",
            "use two databases, e.g. .../optuna and .../mlflow on the same server"
            " (Optuna and MLflow both keep an alembic_version table)",
        )
    ]
