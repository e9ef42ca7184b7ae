"""Throwaway PostgreSQL databases for the benchmarks that need a server (storage_overhead, scale,
large_study): whether the server answers, and creating and dropping uniquely named databases on it."""

from __future__ import annotations

from collections.abc import Sequence


def postgres_reason(server_url: str) -> str | None:
    """Why the PostgreSQL at `server_url` cannot be used, or None when it answers (password hidden)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{server_url}/postgres", connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return None
    except Exception as exc:
        host = sqlalchemy.engine.make_url(f"{server_url}/postgres").render_as_string(hide_password=True)
        return f"PostgreSQL not reachable at {host} ({exc.__class__.__name__})"
    finally:
        engine.dispose()


def _each(server_url: str, names: Sequence[str], statement: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in names:
                conn.execute(sqlalchemy.text(statement.format(name=name)))
    finally:
        engine.dispose()


def create_databases(server_url: str, names: Sequence[str]) -> None:
    _each(server_url, names, 'CREATE DATABASE "{name}"')


def drop_databases(server_url: str, names: Sequence[str]) -> None:
    """Drop them even while a killed worker's connection lingers (FORCE)."""
    _each(server_url, names, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
