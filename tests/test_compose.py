"""docker-compose.yml and the Dockerfile: they parse, and the commands inside are the ones hpo's native
tests run (the same builders: hpo.server.server_argv, hpo.schedule.create_argv / worker_argv), so the
file cannot drift from what is tested. There is no Docker engine here; `docker compose config` is run
when the Docker CLI has the compose plugin."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from sqlalchemy.engine import make_url

from hpo.config import load_study
from hpo.config.settings import STORAGE_ENV, TRACKING_ENV, check_storage_url, check_tracking_uri
from hpo.operations.schedule import STOP_GRACE_SECONDS, create_argv, worker_argv
from hpo.operations.server import BACKEND_STORE_ENV, server_argv

ROOT = Path(__file__).resolve().parents[1]
STUDY = "studies/boston-quick.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_services_run_the_commands_the_tests_run(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["mlflow"]["command"] == server_argv(
        host="0.0.0.0", port=5000, artifacts_destination="/mlartifacts", grpc_port=13000
    )
    assert services["study"]["command"] == create_argv(STUDY)
    assert services["worker"]["command"] == worker_argv(STUDY)
    load_study(ROOT / STUDY)  # the study they name exists and is valid


def test_storage_and_tracking_are_separate_databases_of_one_server_without_passwords(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker_env, server_env = services["worker"]["environment"], services["mlflow"]["environment"]
    # workers reach the study database through the server's gRPC storage proxy, which serves HPO_STORAGE
    assert worker_env[STORAGE_ENV] == "grpc://mlflow:13000" == services["study"]["environment"][STORAGE_ENV]
    check_storage_url(worker_env[STORAGE_ENV])
    storage, backend = make_url(server_env[STORAGE_ENV]), make_url(server_env[BACKEND_STORE_ENV])
    check_storage_url(server_env[STORAGE_ENV], allow_grpc=False)
    check_tracking_uri(worker_env[TRACKING_ENV])
    assert (storage.host, storage.port) == (backend.host, backend.port) == ("postgres", 5432)
    assert storage.database != backend.database
    assert storage.password is None and backend.password is None  # the password comes from PGPASSWORD
    assert worker_env[TRACKING_ENV] == "http://mlflow:5000"
    postgres_password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert worker_env["PGPASSWORD"] == server_env["PGPASSWORD"] == postgres_password
    assert postgres_password.startswith("${POSTGRES_PASSWORD:?")  # no default password to forget
    # optuna-dashboard reads the same storage
    assert services["dashboard"]["command"][-1] == server_env[STORAGE_ENV]
    assert services["dashboard"]["profiles"] == ["dashboard"]


def test_startup_order_health_and_scaling(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/var/lib/postgresql/data" in services["postgres"]["volumes"][0]
    assert "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["study"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["study"]["condition"] == "service_completed_successfully"
    assert any(v.endswith(":/mlartifacts") for v in services["mlflow"]["volumes"])
    assert {"pgdata", "mlartifacts", "data"} <= set(compose["volumes"])
    # other containers reach the server as `mlflow`: its Host header must be allowed
    assert "mlflow:*" in services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    # `--scale worker=N` needs no fixed name or host port; a stop lets the trial close first
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["stop_grace_period"] == f"{STOP_GRACE_SECONDS}s"


def test_dockerfile_installs_the_pinned_torch_for_cpu() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pins = [
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith(("torch==", "torchvision=="))
    ]
    assert len(pins) == 2
    install = next(line for line in dockerfile.splitlines() if "download.pytorch.org/whl/cpu" in line)
    assert sorted(re.findall(r"torch(?:vision)?==[\w.]+", install)) == sorted(pins)
    assert re.search(r"^FROM python:3\.\d+", dockerfile, re.MULTILINE)
    assert "pip install '.[dashboard]'" in dockerfile  # optuna-dashboard for the profile


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    # `config` needs no engine: it resolves the file (anchors, variables, profiles) and validates it.
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no `docker compose` plugin or docker-compose binary on this machine")
    result = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yml"), "--profile", "dashboard", "config"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_PASSWORD": "example"}, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["worker"]["command"] == worker_argv(STUDY)
    missing = subprocess.run(
        [*cli, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin"},
        cwd=ROOT,
    )
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
