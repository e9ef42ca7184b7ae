"""The MLflow check: a tracking server that answers (with these credentials), or a store with a usable schema."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hpo.config.settings import redact
from hpo.config.writable import write_problem
from hpo.operations.doctor._databases import _alembic_revision
from hpo.operations.doctor._findings import (
    _MLFLOW_TABLES,
    _OPTUNA_TABLES,
    CONNECT_TIMEOUT,
    Finding,
    Reader,
    _first_line,
)
from hpo.operations.doctor._host import _version
from hpo.operations.doctor._storage import _open_database
from hpo.running.databases import MLFLOW, alembic_heads


def check_tracking(
    uri: str, *, source: str = "--tracking-uri", answered: threading.Event | None = None
) -> list[Finding]:
    """The MLflow tracking store: a server that answers with its version, or a database hpo can use."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return [_check_server(uri, source, answered=answered or threading.Event())]
    if scheme == "file":
        folder = Path(urlsplit(uri).path)
        writable = write_problem(folder, is_folder=True) is None
        if writable:
            return [
                Finding(
                    "tracking",
                    "warning",
                    f"{uri}: MLflow's file store is deprecated and slow with many runs",
                    f"use sqlite:///mlflow.db or a server (`hpo server`) in {source}",
                )
            ]
        return [
            Finding(
                "tracking",
                "problem",
                f"{uri}: {folder} cannot be written",
                f"point {source} at a writable folder or a database",
            )
        ]
    if scheme == "databricks":
        return [Finding("tracking", "warning", f"{uri}: Databricks is not checked by hpo doctor")]
    opened = _open_database(
        "tracking", uri, source, owner="MLflow", instead="sqlite:///mlflow.db or a server", answered=answered
    )
    if isinstance(opened, Finding):
        return [opened]
    tables, read, server = opened
    return [_mlflow_schema(uri, server, tables, read)]


def _mlflow_schema(raw_uri: str, server: str, tables: set[str], read: Reader) -> Finding:
    name = "tracking"
    uri = f"{raw_uri} ({server})"
    if not tables:
        return Finding(name, "ok", f"{uri}: empty database; MLflow creates its tables on first use")
    if not _MLFLOW_TABLES <= tables:
        if _OPTUNA_TABLES <= tables:
            return Finding(
                name,
                "problem",
                f"{uri}: holds Optuna's tables, not MLflow's",
                "give MLflow a database of its own (Optuna and MLflow both keep an alembic_version table)",
            )
        return Finding(
            name,
            "warning",
            f"{uri}: holds other tables ({', '.join(sorted(tables)[:5])}); MLflow will add its own beside them",
        )
    current = _alembic_revision(read)
    head, known = alembic_heads(MLFLOW)
    count = read("SELECT COUNT(*) FROM experiments WHERE lifecycle_stage = 'active'")[0][0]
    version = _version("mlflow")
    if current is None or current == head:
        return Finding(name, "ok", f"{uri}: MLflow schema current, {count} active experiment(s)")
    if current in known:
        return Finding(
            name,
            "problem",
            f"{uri}: MLflow schema {current} is older than this MLflow {version}",
            f"`mlflow db upgrade '{redact(raw_uri)}'` (back up first)",
        )
    return Finding(
        name,
        "problem",
        f"{uri}: MLflow schema {current} was written by a newer MLflow than {version}",
        "`pip install -U mlflow` on this machine",
    )


def _check_server(uri: str, source: str, *, answered: threading.Event) -> Finding:
    name = "tracking"
    base = uri.rstrip("/")
    parts = urlsplit(base)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    try:
        _http_get(f"{base}/health", answered=answered)
        version = _http_get(f"{base}/version").strip()
        body = json.loads(_http_post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 1000}) or "{}")
    except urllib.error.HTTPError as exc:
        detail = _first_line(exc.read().decode("utf-8", "replace") or exc.reason)
        if exc.code in (401, 403) and "host" not in detail.lower():
            return Finding(
                name,
                "problem",
                f"{uri}: the server refused hpo ({exc.code} {detail})",
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
            )
        if "host" in detail.lower():
            return Finding(
                name,
                "problem",
                f"{uri}: the server rejects this host name ({exc.code} {detail})",
                f"start the server with MLFLOW_SERVER_ALLOWED_HOSTS (or --allowed-hosts) including {parts.netloc}",
            )
        if exc.code == 404:
            return Finding(
                name,
                "problem",
                f"{uri}: answers but is not an MLflow tracking server (404 on {exc.url})",
                f"point {source} at the MLflow server's address",
            )
        return Finding(name, "problem", f"{uri}: the server answered {exc.code} ({detail})", "look at the server's log")
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return _network_finding(
            name,
            uri,
            where,
            reason,
            fix_start=f"start it (`hpo server --port {parts.port or 5000}`) or correct {source}",
        )
    except ValueError:
        return Finding(
            name,
            "problem",
            f"{uri}: answers but not like an MLflow server (the API did not return JSON)",
            f"point {source} at the MLflow server's address",
        )
    ours = _version("mlflow")
    experiments = len(body.get("experiments", []))
    message = f"{uri}: MLflow server {version}, {experiments} experiment(s)"
    if version.split(".")[0] != ours.split(".")[0]:
        return Finding(
            name,
            "warning",
            f"{message}; this machine has MLflow {ours}",
            f"install mlflow=={version} here, or the same major version on both sides",
        )
    return Finding(name, "ok", message)


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send, so doctor sees what hpo sees."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _http_get(url: str, *, answered: threading.Event | None = None) -> str:
    request = urllib.request.Request(url, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
            if answered is not None:
                answered.set()
            return str(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError:
        if answered is not None:  # an HTTP error is an answer too
            answered.set()
        raise


def _http_post(url: str, payload: dict[str, Any]) -> str:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **_auth_headers()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
        return str(response.read().decode("utf-8", "replace"))


def _network_finding(name: str, url: str, where: str, reason: Any, *, fix_start: str) -> Finding:
    if isinstance(reason, ConnectionRefusedError):
        return Finding(name, "problem", f"{url}: nothing listens on {where} (connection refused)", fix_start)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return Finding(
            name,
            "problem",
            f"{url}: {where} did not answer within {CONNECT_TIMEOUT}s",
            "check that the host is up and that no firewall drops the connection",
        )
    if isinstance(reason, socket.gaierror):
        return Finding(
            name, "problem", f"{url}: unknown host {where.rsplit(':', 1)[0]}", "correct the host name in the URL"
        )
    return Finding(name, "problem", f"{url}: cannot connect to {where} ({_first_line(reason)})", fix_start)
