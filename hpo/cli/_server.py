"""`hpo server`: a real MLflow tracking server on a database, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

import typer

from hpo.cli._app import app, command
from hpo.config.settings import DEFAULT_PORT as DEFAULT_GRPC_PORT
from hpo.config.settings import STORAGE_ENV, check_storage_url
from hpo.errors import ServiceError, UsageError
from hpo.operations.server import (
    BACKEND_STORE_ENV,
    DEFAULT_ARTIFACTS_DESTINATION,
    DEFAULT_BACKEND_STORE_URI,
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServerConfig,
    TrackingServer,
    check_port_free,
    describe_backend,
)

if TYPE_CHECKING:
    from hpo.running.grpc_storage import ProxyServer


class _Stop(Exception):
    """SIGTERM (docker stop, systemd, a scheduler): stop the server like Ctrl-C does."""


@command(app, "server")
def server(
    backend_store_uri: str = typer.Option(
        DEFAULT_BACKEND_STORE_URI,
        "--backend-store-uri",
        envvar=BACKEND_STORE_ENV,
        show_envvar=True,
        help="Database for runs and metrics: "
        "sqlite:///FILE or any SQLAlchemy URL (postgresql+psycopg2://user@host/db). "
        "A password may come from PGPASSWORD or ~/.pgpass instead of the URL.",
    ),
    host: str = typer.Option(
        DEFAULT_HOST,
        "--host",
        help="Interface to listen on; 0.0.0.0 to accept other machines (then set MLFLOW_SERVER_ALLOWED_HOSTS).",
    ),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to listen on."),
    artifacts_destination: str = typer.Option(
        DEFAULT_ARTIFACTS_DESTINATION,
        "--artifacts-destination",
        help="Where the server stores uploaded artifacts: a local folder or a URI such as s3://bucket/path.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Server worker processes."),
    grpc_port: int | None = typer.Option(
        None,
        "--grpc-port",
        min=1,
        max=65535,
        help="Also serve the Optuna storage (--storage) to workers through Optuna's gRPC proxy on this port; "
        "workers then use --storage grpc://HOST:PORT.",
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        envvar=STORAGE_ENV,
        show_envvar=True,
        help="The Optuna storage database the gRPC proxy serves (with --grpc-port); created if missing.",
    ),
) -> None:
    """Run a real MLflow tracking server (UI and REST API) until Ctrl-C; the database is created if missing.

    With --grpc-port it also runs Optuna's gRPC storage proxy in front of the study database, so that
    many workers share a few database connections (README, "Many workers").
    """
    config = ServerConfig(
        backend_store_uri=backend_store_uri,
        host=host,
        port=port,
        artifacts_destination=artifacts_destination,
        workers=workers,
    )
    proxy = _proxy(storage, host, grpc_port, port)
    tracking = TrackingServer(config)
    tracking.prepare()
    typer.echo(
        f"starting MLflow server: backend {describe_backend(config.backend_store_uri)}, "
        f"artifacts {config.artifacts_uri()}",
        err=True,
    )

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if proxy is not None:
            typer.echo(
                f"starting the Optuna gRPC storage proxy: storage {describe_backend(proxy.storage_url)}", err=True
            )
            proxy_url = proxy.start()
            typer.echo(f"Optuna storage proxy ready at {proxy_url} (listening on {host}:{proxy.port})")
            typer.echo(f"workers use it with: export HPO_STORAGE={proxy_url}", err=True)
        url = tracking.start()
        typer.echo(f"MLflow tracking server ready at {url} (listening on {host}:{port}); Ctrl-C stops it")
        typer.echo(f"use it with: export MLFLOW_TRACKING_URI={url}", err=True)
        from hpo.running.tracking import UI_VIEW  # MLflow's client loads in seconds: only once the server is up

        typer.echo(f"the runs in the UI: {url}/#/experiments?{UI_VIEW}", err=True)
        code = tracking.wait()
        raise ServiceError(f"mlflow server stopped by itself (exit code {code}): {tracking.last_output()}")
    except (KeyboardInterrupt, _Stop):
        tracking.stop()
        typer.echo("MLflow server stopped", err=True)
    finally:
        tracking.stop()
        if proxy is not None:
            proxy.stop()
        signal.signal(signal.SIGTERM, previous)


def _proxy(storage: str | None, host: str, grpc_port: int | None, port: int) -> ProxyServer | None:
    """The gRPC storage proxy --grpc-port asks for, its settings checked before anything starts."""
    if grpc_port is None:
        if storage is not None and os.environ.get(STORAGE_ENV) != storage:
            raise UsageError(
                "--storage: only used with --grpc-port (the database the gRPC storage proxy serves); "
                "add --grpc-port PORT"
            )
        return None
    if grpc_port == port:
        raise UsageError(
            f"--grpc-port: {grpc_port} is also the MLflow server's --port; pick another, e.g. {DEFAULT_GRPC_PORT}"
        )
    if storage is None:
        raise UsageError(
            f"--storage: --grpc-port needs the Optuna storage database to serve (--storage or {STORAGE_ENV}), "
            "e.g. postgresql+psycopg2://user@host/optuna"
        )
    check_storage_url(storage, field="--storage", allow_grpc=False)
    check_port_free(host, grpc_port)
    from hpo.running.grpc_storage import ProxyServer  # Optuna's import only where the proxy is served

    return ProxyServer(storage, host=host, port=grpc_port)
