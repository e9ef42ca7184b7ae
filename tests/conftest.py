"""Shared fixtures: a working directory per test, tiny study files, the real CLI, and (when present)
a fresh PostgreSQL database and a real `mlflow server` subprocess. Nothing here reads ../shared."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hpo.cli import app

PG_HOST = os.environ.get("HPO_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HPO_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("HPO_TEST_PG_USER", "postgres")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own folder with no hpo/MLflow settings inherited from the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("HPO_STORAGE", "MLFLOW_TRACKING_URI", "HPO_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "data-cache"))
    return tmp_path


def tiny_boston(**overrides: Any) -> dict[str, Any]:
    """A Boston study small enough to run in a few seconds: few epochs, tiny widths."""
    study: dict[str, Any] = {
        "name": "tiny-boston",
        "objective": "boston",
        "metric": "val_rmse",
        "direction": "minimize",
        "seed": 1,
        "n_trials": 3,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "params": {
            "width": {"type": "int", "low": 4, "high": 16},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": ["sgd"]}},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
        "fixed": {"epochs": 4, "hidden_layers": 1, "batch_size": 64},
    }
    study.update(overrides)
    return study


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study dict (or raw text) to a YAML file in the test folder and return its path."""

    def write(study: dict[str, Any] | str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(study if isinstance(study, str) else yaml.safe_dump(study, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Invoke the real Typer app in-process; returns the click Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str, **kwargs: Any) -> Any:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


def run_hpo(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run `python -m hpo ...` as a separate process, as a user or scheduler would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hpo", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_reachable() -> str | None:
    try:
        import psycopg2

        psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3).close()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"


@pytest.fixture(scope="session")
def postgres_available() -> None:
    reason = _postgres_reachable()
    if reason is not None:
        if os.environ.get("HPO_REQUIRE_POSTGRES"):
            pytest.fail(f"HPO_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(reason)


@pytest.fixture
def pg_url(postgres_available: None) -> Iterator[Callable[[str], str]]:
    """Factory of fresh PostgreSQL databases (dropped after the test): pg_url('optuna') -> URL."""
    import psycopg2

    created: list[str] = []

    def make(label: str = "db") -> str:
        name = f"hpo_test_{label}_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
        conn.close()
        created.append(name)
        return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    yield make
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    for name in created:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def wait_http(url: str, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Start a real `mlflow server` on a free port with the given backend store; returns its URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(backend_store_uri: str) -> str:
        port = free_port()
        artifacts = tmp_path / f"artifacts-{port}"
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        log = open(tmp_path / f"mlflow-server-{port}.log", "wb")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", timeout=90)
        return url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
