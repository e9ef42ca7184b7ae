"""`hpo server`: a real MLflow tracking server on a database, stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
from typing import Any

import typer

from hpo.cli._app import app, command
from hpo.errors import ServiceError
from hpo.server import (
    BACKEND_STORE_ENV,
    DEFAULT_ARTIFACTS_DESTINATION,
    DEFAULT_BACKEND_STORE_URI,
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServerConfig,
    TrackingServer,
    describe_backend,
)


class _Stop(Exception):
    """SIGTERM (docker stop, systemd, a scheduler): stop the server like Ctrl-C does."""


@command(app, "server")
def server(
    backend_store_uri: str = typer.Option(
        DEFAULT_BACKEND_STORE_URI,
        "--backend-store-uri",
        envvar=BACKEND_STORE_ENV,
        show_envvar=True,
        help="Database for runs and metrics: sqlite:///FILE or any SQLAlchemy URL (postgresql+psycopg2://user@host/db). "
        "A password may come from PGPASSWORD or ~/.pgpass instead of the URL.",
    ),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Interface to listen on; 0.0.0.0 to accept other machines (then set MLFLOW_SERVER_ALLOWED_HOSTS)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to listen on."),
    artifacts_destination: str = typer.Option(
        DEFAULT_ARTIFACTS_DESTINATION, "--artifacts-destination", help="Where the server stores uploaded artifacts: a local folder or a URI such as s3://bucket/path."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Server worker processes."),
) -> None:
    """Run a real MLflow tracking server (UI and REST API) until Ctrl-C; the database is created if missing."""
    config = ServerConfig(backend_store_uri=backend_store_uri, host=host, port=port, artifacts_destination=artifacts_destination, workers=workers)
    tracking = TrackingServer(config)
    tracking.prepare()
    typer.echo(f"starting MLflow server: backend {describe_backend(config.backend_store_uri)}, artifacts {config.artifacts_uri()}", err=True)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        url = tracking.start()
        typer.echo(f"MLflow tracking server ready at {url} (listening on {host}:{port}); Ctrl-C stops it")
        typer.echo(f"use it with: export MLFLOW_TRACKING_URI={url}", err=True)
        from hpo.tracking import UI_VIEW  # MLflow's client loads in seconds: only once the server is up

        typer.echo(f"the runs in the UI: {url}/#/experiments?{UI_VIEW}", err=True)
        code = tracking.wait()
        raise ServiceError(f"mlflow server stopped by itself (exit code {code}): {tracking.last_output()}")
    except (KeyboardInterrupt, _Stop):
        tracking.stop()
        typer.echo("MLflow server stopped", err=True)
    finally:
        tracking.stop()
        signal.signal(signal.SIGTERM, previous)
