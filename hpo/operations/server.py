"""`hpo server`: a real MLflow tracking server (UI and REST API) on a database, run as a supervised child.

MLflow's own `mlflow server` does the serving. This module adds what a shared server needs around it:
safe defaults (loopback only, SQLite in the working directory, artifacts proxied to a local folder),
the database created if missing, the backend URL kept out of the command line (so its password is not
in `ps`) and out of the log, a wait until the server answers before anyone is told where it is, and a
stop that takes down the server's whole process tree (uvicorn workers included), never leaving orphans.
"""

from __future__ import annotations

import collections
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from hpo.config.settings import check_storage_url, redact, sqlite_path
from hpo.errors import ServiceError, UsageError

DEFAULT_BACKEND_STORE_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS_DESTINATION = "mlartifacts"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
BACKEND_STORE_ENV = "MLFLOW_BACKEND_STORE_URI"
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
# MLflow's server answers each REST request on a thread of AnyIO's default pool (40 threads per server
# worker process), and some of its store's calls (`log_batch` among them) hold one pooled database
# connection while they ask the pool for a second.
_MLFLOW_REQUEST_THREADS = 40
_MLFLOW_POOL_SIZE_ENV = "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"
_MLFLOW_MAX_OVERFLOW_ENV = "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"
_MLFLOW_POOLCLASS_ENV = "MLFLOW_SQLALCHEMYSTORE_POOLCLASS"
_SQLALCHEMY_DEFAULT_POOL_SIZE = 5


@dataclass(frozen=True)
class ServerConfig:
    """What `hpo server` starts: the backend database, where it listens and where artifacts go."""

    backend_store_uri: str = DEFAULT_BACKEND_STORE_URI
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION
    workers: int = 1

    @property
    def url(self) -> str:
        """The address clients on this machine use (loopback when bound to every interface)."""
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def artifacts_uri(self) -> str:
        """A plain path becomes an absolute folder, so the server does not depend on its CWD."""
        if "://" in self.artifacts_destination:
            return self.artifacts_destination
        return str(Path(self.artifacts_destination).expanduser().resolve())


def server_argv(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION,
    grpc_port: int | None = None,
    program: Sequence[str] = ("hpo",),
) -> list[str]:
    """`hpo server` as docker-compose runs it and the tests run it.

    No backend store URI among the arguments: it comes from MLFLOW_BACKEND_STORE_URI, so that a
    password in it does not show in the process list; likewise the Optuna storage the gRPC proxy
    serves (`grpc_port`) comes from HPO_STORAGE.
    """
    grpc = ["--grpc-port", str(grpc_port)] if grpc_port is not None else []
    return [
        *program,
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--artifacts-destination",
        artifacts_destination,
        *grpc,
    ]


def server_command(config: ServerConfig) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` argv and the environment it needs on top of ours.

    The backend store URI travels in MLflow's own `MLFLOW_BACKEND_STORE_URI` variable rather than on
    the command line, where any local user could read its password with `ps`. MLflow's job runner
    (GenAI evaluation jobs) is switched off unless the user asks for it: hpo does not use it, and it
    adds half a dozen processes and a slow start.
    """
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--workers",
        str(config.workers),
        "--artifacts-destination",
        config.artifacts_uri(),
    ]
    env = {
        BACKEND_STORE_ENV: config.backend_store_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
        **_store_pool_env(os.environ),
    }
    return argv, env


def _store_pool_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A database pool the server's request threads cannot drain.

    With SQLAlchemy's default pool (5 connections + 10 overflow), more than 15 requests that each hold
    a connection and wait for a second wait on each other until the pool's 30-s timeout, and MLflow
    answers them 400, which its client does not retry: a trial's curve is lost (16+ workers on one
    server did it, BENCHMARKS.md §7). One connection more than the request threads always leaves one
    free. Overflow connections close when the burst is over; a user's own pool settings win.
    """
    if _MLFLOW_MAX_OVERFLOW_ENV in environ or _MLFLOW_POOLCLASS_ENV in environ:
        return {}
    try:
        pool_size = int(environ.get(_MLFLOW_POOL_SIZE_ENV) or _SQLALCHEMY_DEFAULT_POOL_SIZE)
    except ValueError:
        return {}  # MLflow reports its own variable's bad value
    return {_MLFLOW_MAX_OVERFLOW_ENV: str(max(0, _MLFLOW_REQUEST_THREADS + 1 - pool_size))}


_HOST_CHOICES = "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on: the health check would find that server instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror:  # not an address, and no name the resolver knows
            raise UsageError(
                f"--host: {host!r} is neither an IP address nor a known host name; {_HOST_CHOICES}"
            ) from None
        except (OSError, OverflowError) as exc:
            if getattr(exc, "errno", None) == errno.EADDRINUSE:
                raise UsageError(
                    f"--port: {port} is already in use on {host} (another server?); pick a free one with --port"
                ) from None
            if getattr(exc, "errno", None) == errno.EACCES:
                raise UsageError(f"--port: {port} needs administrator rights; use a port above 1023") from None
            raise UsageError(
                f"--host: cannot listen on {host} ({getattr(exc, 'strerror', None) or exc}); {_HOST_CHOICES}"
            ) from None


class TrackingServer:
    """A running `mlflow server`: start it, wait until it answers, stop its process tree.

    Use as a context manager; the server's output is copied to `log` with credentials redacted.
    """

    def __init__(self, config: ServerConfig, *, log: IO[str] | None = None) -> None:
        self.config = config
        self.log = log if log is not None else sys.stderr
        self.process: subprocess.Popen[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=15)
        self._pump: threading.Thread | None = None
        self._prepared = False

    def prepare(self) -> None:
        """Everything that can refuse bad settings, before any process starts: the backend URL, the
        port, the database (created if missing) and the artifacts folder."""
        from hpo.running.databases import (
            MLFLOW,
            check_database,
            prepared_database,
        )  # slow imports: `hpo --help` should not pay them

        config = self.config
        check_storage_url(config.backend_store_uri, field="--backend-store-uri", allow_grpc=False)
        check_database(config.backend_store_uri, MLFLOW, field="--backend-store-uri")  # read-only: not another's file
        check_port_free(config.host, config.port)
        from hpo.running.tracking import build_mlflow_schema, configure_mlflow

        configure_mlflow()  # MLflow's settings for hpo, which the server process inherits
        # The schema is built here, once and crash-safe (a SQLite store in a temporary file moved into
        # place), rather than by the server's first request, which a kill could leave half-migrated.
        with prepared_database(config.backend_store_uri, MLFLOW, build_mlflow_schema, field="--backend-store-uri"):
            pass
        if "://" not in config.artifacts_destination:
            try:
                Path(config.artifacts_uri()).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"--artifacts-destination: cannot create {config.artifacts_destination} ({exc.strerror})"
                ) from None
        self._prepared = True

    def start(self, *, timeout: float = 300.0) -> str:
        """Start the server and return its URL once `/health` answers; raise if it dies or stalls."""
        if not self._prepared:
            self.prepare()
        config = self.config
        argv, extra_env = server_command(config)
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: one signal reaches uvicorn and its workers
        )
        self._pump = threading.Thread(target=self._copy_output, name="hpo-server-log", daemon=True)
        self._pump.start()
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return config.url

    def _copy_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            clean = redact(line.rstrip("\n"))
            self._tail.append(clean)
            try:
                print(clean, file=self.log, flush=True)
            except (OSError, ValueError):  # our stderr went away; keep draining the pipe
                pass

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        health = f"{self.config.url}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"mlflow server exited with code {self.process.returncode} before answering: {self.last_output()}"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise ServiceError(f"mlflow server did not answer at {health} within {timeout:.0f}s: {self.last_output()}")

    def last_output(self) -> str:
        """The server's last log lines (redacted), for an error message."""
        if self._pump is not None:
            self._pump.join(timeout=1)
        lines = [line for line in self._tail if line.strip()]
        return " | ".join(lines[-3:]) if lines else "no output"

    def wait(self) -> int:
        """Block until the server exits by itself; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, *, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left after `timeout` seconds."""
        proc = self.process
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        # uvicorn workers or other helpers of the server that outlived it
        _signal_group(proc.pid, signal.SIGKILL)
        if self._pump is not None:
            self._pump.join(timeout=5)

    def __enter__(self) -> TrackingServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def describe_backend(uri: str) -> str:
    """The backend for humans: the absolute SQLite path, or the URL with its password hidden."""
    path = sqlite_path(uri)
    return f"sqlite:///{path.resolve()}" if path is not None else redact(uri)
