"""`hpo server`: a real MLflow server on a database; refuses bad settings before starting anything."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo.operations.server import ServerConfig, server_command
from tests.conftest import PG_HOST, PG_PORT, PG_USER, HpoServer, drop_database, free_port


def test_backend_store_uri_stays_out_of_the_command_line() -> None:
    # The password of the backend URL must not show in `ps`: it travels in MLFLOW_BACKEND_STORE_URI.
    config = ServerConfig(
        backend_store_uri="postgresql://hpo:s3cret@db:5432/mlflow", port=5123, artifacts_destination="/srv/artifacts"
    )
    argv, env = server_command(config)
    assert "s3cret" not in " ".join(argv)
    assert env["MLFLOW_BACKEND_STORE_URI"] == config.backend_store_uri
    assert argv[argv.index("--artifacts-destination") + 1] == "/srv/artifacts"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_the_servers_pool_outnumbers_its_request_threads_unless_the_user_sized_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One pooled connection more than MLflow's 40 request threads, counted from the user's pool size;
    # MLflow's own pool variables, when the user set them, are passed on untouched.
    config = ServerConfig()
    for name in (
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE",
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW",
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS",
    ):
        monkeypatch.delenv(name, raising=False)
    assert server_command(config)[1]["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] == "36"
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "20")
    assert server_command(config)[1]["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"] == "21"
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "3")
    assert "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW" not in server_command(config)[1]
    monkeypatch.delenv("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW")
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    assert "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW" not in server_command(config)[1]


def test_the_composed_command_takes_the_backend_store_uri_from_the_environment(tmp_path: Path) -> None:
    # docker-compose and the tests start `hpo server` with server_argv, which has no room for the URL: the
    # server must find it in MLFLOW_BACKEND_STORE_URI. An unreachable database shows that it did (and that
    # the password stays hidden); without the variable the server would start on its default store.
    dead = free_port()
    server = HpoServer(f"postgresql://hpo:s3cret@127.0.0.1:{dead}/mlflow", tmp_path / "server")
    try:
        code = server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None  # it started on another store
    finally:
        server.stop()
    assert code == 1, server.stdout + server.stderr
    assert f"cannot reach postgresql://hpo:***@127.0.0.1:{dead}/mlflow" in server.stderr
    assert "s3cret" not in server.stdout + server.stderr
    assert "--backend-store-uri" not in server.argv and "s3cret" not in " ".join(server.argv)


def test_busy_port_is_refused_before_anything_is_created(cli: Callable[..., Any], tmp_path: Path) -> None:
    # Another server on the port would answer the health check in our place: refuse, exit 2.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("server", "--port", port, "--backend-store-uri", f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert result.exit_code == 2
    assert f"--port: {port} is already in use" in result.stderr
    assert not (tmp_path / "new").exists()


def test_malformed_backend_store_uri_names_the_option(cli: Callable[..., Any]) -> None:
    result = cli("server", "--backend-store-uri", "postgresql//hpo:pw@db/mlflow", "--port", free_port())
    assert result.exit_code == 2
    assert result.stderr.startswith("hpo: --backend-store-uri: malformed URL")
    assert "pw" not in result.stderr.replace("postgresql", "")


def test_unreachable_backend_database_fails_at_once(cli: Callable[..., Any]) -> None:
    # Nothing listens on the port: a one-line error (exit 1) instead of MLflow's minutes of retries.
    dead = free_port()
    result = cli(
        "server", "--backend-store-uri", f"postgresql://hpo:Hidden-pw@127.0.0.1:{dead}/mlflow", "--port", free_port()
    )
    assert result.exit_code == 1
    assert f"--backend-store-uri: cannot reach postgresql://hpo:***@127.0.0.1:{dead}/mlflow" in result.stderr
    assert "Connection refused" in result.stderr
    assert "Hidden-pw" not in result.stdout + result.stderr


def _processes(*, field: int, value: int) -> list[int]:
    """Pids whose /proc/PID/stat field (1 = parent pid, 2 = process group) equals `value`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[field]) == value and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_a_burst_of_requests_does_not_drain_the_servers_database_pool(tmp_path: Path) -> None:
    # Many workers log at once. MLflow's `log_batch` holds one pooled connection while it asks for a
    # second; with SQLAlchemy's default pool (15) and 40 request threads the requests waited on each
    # other for the pool's 30 s and were answered 400, which MLflow's client does not retry (curves
    # lost). Every request must succeed, none may wait anywhere near the pool's timeout.
    server = HpoServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "server")
    try:
        url = server.wait_ready()

        def post(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
            request = urllib.request.Request(
                f"{url}/api/2.0/mlflow/{endpoint}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=25) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result

        experiment_id = post("experiments/create", {"name": "burst"})["experiment_id"]
        runs = [post("runs/create", {"experiment_id": experiment_id})["run"]["info"]["run_id"] for _ in range(48)]
        failures: list[str] = []
        slowest = 0.0

        def log_for_a_while(run_id: str) -> None:
            nonlocal slowest
            end = time.monotonic() + 6
            step = 0
            while time.monotonic() < end:
                began = time.monotonic()
                try:
                    post(
                        "runs/log-batch",
                        {
                            "run_id": run_id,
                            "params": [{"key": "lr", "value": "0.1"}],
                            "metrics": [
                                {"key": key, "value": 1.0, "timestamp": 0, "step": step} for key in ("loss", "rmse")
                            ],
                        },
                    )
                except (urllib.error.URLError, OSError) as exc:
                    failures.append(repr(exc))
                    return
                slowest = max(slowest, time.monotonic() - began)
                step += 1

        with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
            list(pool.map(log_for_a_while, runs))
    finally:
        server.stop()
    assert failures == [], failures[:3]
    assert slowest < 20, slowest


@pytest.mark.slow
@pytest.mark.postgres
def test_server_on_a_new_postgres_database_serves_artifacts_and_stops_on_sigterm(
    postgres_available: None, tmp_path: Path
) -> None:
    # The database does not exist yet: `hpo server` creates it, waits for /health, says where it is,
    # proxies artifacts to the folder, never shows the password, and SIGTERM stops every process.
    name = f"hpo_test_server_{uuid.uuid4().hex[:10]}"
    password = f"Planted-{uuid.uuid4().hex[:8]}"  # the shared server trusts local connections: any password passes
    # docker-compose.yml's allowed Host headers: other containers call the server `mlflow`
    allowed = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())["services"][
        "mlflow"
    ]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    server = HpoServer(
        f"postgresql+psycopg2://{PG_USER}:{password}@{PG_HOST}:{PG_PORT}/{name}",
        tmp_path / "server",
        env={"MLFLOW_SERVER_ALLOWED_HOSTS": allowed},
    )
    try:
        url = server.wait_ready()
        assert f"MLflow tracking server ready at {url}" in server.stdout
        with urllib.request.urlopen(f"{url}/version", timeout=10) as response:
            assert response.read().decode().count(".") >= 2
        # an artifact uploaded through the REST API lands in --artifacts-destination
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/experiments/create",
            data=json.dumps({"name": "served"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            experiment_id = json.loads(response.read())["experiment_id"]
        upload = urllib.request.Request(
            f"{url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/note.txt", data=b"hello", method="PUT"
        )
        with urllib.request.urlopen(upload, timeout=30):
            pass
        assert (server.artifacts / experiment_id / "note.txt").read_text() == "hello"
        # the compose network's host name is answered, a stranger's is not (DNS rebinding protection)
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=5"
        with urllib.request.urlopen(
            urllib.request.Request(search, headers={"Host": "mlflow:5000"}), timeout=30
        ) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(search, headers={"Host": "attacker.example:5000"}), timeout=30
            )
        assert refused.value.code in (400, 403)
        # the server's processes: the password is in no command line
        (mlflow,) = _processes(field=1, value=server.proc.pid)  # `mlflow server`, leader of its own group
        group = _processes(field=2, value=mlflow)
        assert len(group) >= 2, "mlflow server and its uvicorn"
        for pid in [server.proc.pid, *group]:
            assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    finally:
        code = server.stop()
    assert code == 0
    assert "MLflow server stopped" in server.stderr
    assert _processes(field=2, value=mlflow) == []
    assert password not in server.stdout + server.stderr
    assert "postgres:***@" in server.stderr
    drop_database(name)
