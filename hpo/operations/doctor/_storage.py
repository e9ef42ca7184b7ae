"""The Optuna storage check: a database (or gRPC proxy) that answers, with a schema this Optuna can use."""

from __future__ import annotations

import threading

from hpo.config.settings import grpc_address, is_grpc_url, redact, sqlite_path
from hpo.errors import UsageError
from hpo.operations.doctor._databases import _alembic_revision, _connect_database, _missing_sqlite, _sqlite_tables
from hpo.operations.doctor._findings import (
    _MLFLOW_TABLES,
    _OPTUNA_TABLES,
    CONNECT_TIMEOUT,
    Finding,
    Reader,
    _first_line,
)
from hpo.operations.doctor._host import _version
from hpo.running.databases import OPTUNA, alembic_heads


def check_storage(url: str, *, source: str = "--storage", answered: threading.Event | None = None) -> list[Finding]:
    """The Optuna storage: reachable with these credentials, and its schema one this Optuna can use."""
    if is_grpc_url(url):
        return [check_grpc_proxy(url, source=source, answered=answered)]
    opened = _open_database(
        "storage", url, source, owner="Optuna", instead="a file (sqlite:///hpo.db) or PostgreSQL", answered=answered
    )
    if isinstance(opened, Finding):
        return [opened]
    tables, read, server = opened
    return [_optuna_schema(url, server, tables, read)]


def check_grpc_proxy(url: str, *, source: str = "--storage", answered: threading.Event | None = None) -> Finding:
    """A gRPC storage proxy (`grpc://host:port`): it answers, and serves an Optuna storage."""
    try:
        host, port = grpc_address(url, field=source)
        from optuna.storages import GrpcStorageProxy

        proxy = GrpcStorageProxy(host=host, port=port)
    except UsageError as exc:
        return Finding("storage", "problem", str(exc))
    except ImportError as exc:
        return Finding("storage", "problem", f"{url}: the gRPC client is not installed ({exc})", "pip install grpcio")
    start = f"start the proxy: `hpo server --grpc-port {port} --storage DATABASE_URL` on {host}, or correct {source}"
    try:
        proxy.wait_server_ready(timeout=CONNECT_TIMEOUT)
        if answered is not None:
            answered.set()
        studies = proxy.get_all_studies()
    except ConnectionError:
        return Finding(
            "storage",
            "problem",
            f"{url}: no gRPC storage proxy answers at {host}:{port} within {CONNECT_TIMEOUT}s",
            start,
        )
    except Exception as exc:
        return Finding(
            "storage",
            "problem",
            f"{url}: the proxy answers but cannot read its storage ({_first_line(exc)})",
            "see the `hpo server` log: its --storage database",
        )
    finally:
        proxy.close()
    return Finding("storage", "ok", f"{url}: Optuna gRPC storage proxy answers, {len(studies)} studies")


def _open_database(
    name: str, url: str, source: str, *, owner: str, instead: str, answered: threading.Event | None = None
) -> Finding | tuple[set[str], Reader, str]:
    """The tables of the SQLite file or database server behind `url`, a reader and the server's name;
    or the Finding that says why they cannot be read (in-memory, missing file, unreachable server)."""
    if not url.startswith("sqlite"):
        return _connect_database(name, url, source, answered=answered or threading.Event())
    path = sqlite_path(url)
    if path is None:
        return Finding(
            name, "warning", f"{url}: an in-memory database is lost when the process ends", f"use {instead} in {source}"
        )
    if not path.exists():
        return _missing_sqlite(name, path, owner, source)
    tables, read = _sqlite_tables(path)
    return tables, read, "SQLite"


def _optuna_schema(raw_url: str, server: str, tables: set[str], read: Reader) -> Finding:
    name = "storage"
    url = f"{raw_url} ({server})"
    if not tables:
        return Finding(name, "ok", f"{url}: empty database; Optuna creates its tables on the first `hpo run`")
    if not _OPTUNA_TABLES <= tables:
        if _MLFLOW_TABLES <= tables:
            return Finding(
                name,
                "problem",
                f"{url}: holds MLflow's tables, not Optuna's",
                "give the Optuna storage a database of its own (Optuna and MLflow both keep an alembic_version table)",
            )
        if "alembic_version" in tables:
            return Finding(
                name,
                "problem",
                f"{url}: another application's schema (alembic_version) is there",
                "give the Optuna storage a database of its own",
            )
        return Finding(
            name,
            "warning",
            f"{url}: holds other tables ({', '.join(sorted(tables)[:5])}); Optuna will add its own beside them",
        )
    current = _alembic_revision(read)
    head, known = alembic_heads(OPTUNA)
    studies = [row[0] for row in read("SELECT study_name FROM studies ORDER BY study_id")]
    listed = f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}" + (
        f" ({', '.join(studies[:5])}{', ...' if len(studies) > 5 else ''})" if studies else ""
    )
    version = _version("optuna")
    if current is None or current == head:
        return Finding(name, "ok", f"{url}: Optuna schema current, {listed}")
    if current in known:
        return Finding(
            name,
            "problem",
            f"{url}: Optuna schema {current} is older than this Optuna {version} ({head})",
            f"`optuna storage upgrade --storage '{redact(raw_url)}'` (back up first)",
        )
    return Finding(
        name,
        "problem",
        f"{url}: Optuna schema {current} was written by a newer Optuna than {version}",
        "`pip install -U optuna` on this machine",
    )
