"""docker-compose.yml and the Dockerfile: they parse, and the commands inside are the ones hpo's native
tests run (the same builders: hpo.operations.server.server_argv, hpo.operations.schedule.create_argv /
worker_argv), so the file cannot drift from what is tested. There is no Docker engine here; `docker compose
config` is run when the Docker CLI has the compose plugin."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tomllib
import typer
import yaml
from sqlalchemy.engine import make_url

from hpo.cli import app
from hpo.config import load_study
from hpo.config.settings import STORAGE_ENV, TRACKING_ENV, check_storage_url, check_tracking_uri
from hpo.operations.schedule import STOP_GRACE_SECONDS, create_argv, worker_argv
from hpo.operations.server import BACKEND_STORE_ENV, server_argv

ROOT = Path(__file__).resolve().parents[1]
STUDY = "studies/boston-quick.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _hpo_options(argv: list[str]) -> dict[str, Any]:
    """The options `hpo` itself parses from a compose command (a typo or a removed option fails here)."""
    assert argv[0] == "hpo", argv
    command = getattr(typer.main.get_command(app), "commands", {}).get(argv[1])  # hpo's subcommands
    assert command is not None, argv
    return dict(command.make_context(argv[1], list(argv[2:])).params)


def _host_port(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def test_services_run_the_commands_the_tests_run(compose: dict[str, Any]) -> None:
    # Each hpo command of the file is exactly what the builder the native tests use makes of the
    # options the command carries, so the tests run what the containers run.
    services = compose["services"]
    server = _hpo_options(services["mlflow"]["command"])
    assert services["mlflow"]["command"] == server_argv(
        host=server["host"],
        port=server["port"],
        artifacts_destination=server["artifacts_destination"],
        grpc_port=server["grpc_port"],
    )
    study = _hpo_options(services["study"]["command"])["study_file"]
    assert services["study"]["command"] == create_argv(str(study))
    assert services["worker"]["command"] == worker_argv(str(study))
    load_study(ROOT / study)  # the study they name exists and is valid


def test_storage_and_tracking_are_separate_databases_of_one_server_without_passwords(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker_env, server_env = services["worker"]["environment"], services["mlflow"]["environment"]
    server = _hpo_options(services["mlflow"]["command"])
    # workers reach the study database through the server's gRPC storage proxy, which serves HPO_STORAGE
    assert worker_env[STORAGE_ENV] == services["study"]["environment"][STORAGE_ENV]
    check_storage_url(worker_env[STORAGE_ENV])
    assert worker_env[STORAGE_ENV].startswith("grpc://")
    assert _host_port(worker_env[STORAGE_ENV]) == ("mlflow", server["grpc_port"])
    check_tracking_uri(worker_env[TRACKING_ENV])
    assert _host_port(worker_env[TRACKING_ENV]) == ("mlflow", server["port"])
    storage, backend = make_url(server_env[STORAGE_ENV]), make_url(server_env[BACKEND_STORE_ENV])
    check_storage_url(server_env[STORAGE_ENV], allow_grpc=False)
    assert storage.host == backend.host and storage.port == backend.port
    assert services[storage.host]["image"].startswith("postgres:")  # the compose service of that name
    assert storage.database != backend.database
    assert storage.password is None and backend.password is None  # the password comes from PGPASSWORD
    postgres_password = services[storage.host]["environment"]["POSTGRES_PASSWORD"]
    assert worker_env["PGPASSWORD"] == server_env["PGPASSWORD"] == postgres_password
    assert postgres_password.startswith("${POSTGRES_PASSWORD:?")  # no default password to forget
    # optuna-dashboard reads the same storage
    assert services["dashboard"]["command"][-1] == server_env[STORAGE_ENV]
    assert services["dashboard"]["profiles"] == ["dashboard"]


def _needs(services: dict[str, Any], name: str) -> set[str]:
    """Every service `name` waits for, directly or through the ones it waits for."""
    found: set[str] = set()
    todo = [name]
    while todo:
        for other in services[todo.pop()].get("depends_on", {}):
            if other not in found:
                found.add(other)
                todo.append(other)
    return found


def test_startup_order_health_and_scaling(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server = _hpo_options(services["mlflow"]["command"])
    # a service starts after every service its settings name as a host, and waits for the health or the
    # completion it asks for, which the service it waits for must be able to give
    for name, service in services.items():
        settings = " ".join(map(str, [*service.get("command", []), *dict(service.get("environment", {})).values()]))
        named = {other for other in services if other != name and re.search(rf"[/@]{other}:\d", settings)}
        assert named <= _needs(services, name), (name, named)
        for other, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[other], (name, other)
            else:
                assert condition["condition"] == "service_completed_successfully"
                assert services[other]["restart"] == "no", (name, other)
    postgres = services["postgres"]
    check = " ".join(postgres["healthcheck"]["test"])
    assert f"-U {postgres['environment']['POSTGRES_USER']}" in check and "pg_isready" in check
    # the server's health check asks the port the server listens on
    assert f"127.0.0.1:{server['port']}/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert services["mlflow"]["ports"] == [f"127.0.0.1:{server['port']}:{server['port']}"]  # loopback only
    # what must outlive a container is on a named volume: the databases, the artifacts, the data cache
    mounts = {
        target: source
        for service in services.values()
        for source, target, *_ in (v.split(":") for v in service.get("volumes", []))
    }
    assert mounts[server["artifacts_destination"]] in compose["volumes"]
    assert mounts[services["worker"]["environment"]["HPO_DATA_DIR"]] in compose["volumes"]
    assert mounts["/var/lib/postgresql/data"] in compose["volumes"]  # the postgres image's data folder
    # other containers reach the server by its service name: their Host header must be allowed
    allowed = services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    host = urlsplit(services["worker"]["environment"][TRACKING_ENV]).netloc
    assert any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed), (host, allowed)
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
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_PASSWORD": "example"},
        cwd=ROOT,
    )
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
