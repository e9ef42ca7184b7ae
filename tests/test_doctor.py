"""`hpo doctor`: each problem on one line with its fix, exit 1 when there is one, never a hang."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.storages import RDBStorage

from tests.conftest import PasswordPostgres, free_port, tiny_boston


def lines_about(output: str, check: str) -> list[str]:
    return [line for line in output.splitlines() if line.split()[1:2] == [check]]


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word, like a host behind a
    firewall that swallows traffic: only a timeout gets a client out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_defaults_in_an_empty_folder_are_fine(cli: Callable[..., Any], tmp_path: Path) -> None:
    # Nothing exists yet: the SQLite files and the data cache are created on first use; not problems.
    result = cli("doctor")
    assert result.exit_code == 0, result.stdout
    assert "does not exist yet; Optuna creates it" in lines_about(result.stdout, "storage")[0]
    assert lines_about(result.stdout, "devices")[0].startswith("ok")
    assert str(tmp_path / "data-cache") in lines_about(result.stdout, "data")[0]
    assert not (tmp_path / "hpo.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_dead_ports_are_reported_with_the_fix(cli: Callable[..., Any], tmp_path: Path) -> None:
    # Nothing listens on either port: connection refused, said plainly, exit 1.
    pg, http = free_port(), free_port()
    result = cli(
        "doctor",
        "--storage",
        f"postgresql://hpo:Secret-pw@127.0.0.1:{pg}/optuna",
        "--tracking-uri",
        f"http://127.0.0.1:{http}",
    )
    assert result.exit_code == 1
    (storage,) = lines_about(result.stdout, "storage")
    (tracking,) = lines_about(result.stdout, "tracking")
    assert storage.startswith("PROBLEM") and f"nothing listens on 127.0.0.1:{pg} (connection refused)" in storage
    assert "fix: start PostgreSQL there, or correct the host/port in --storage" in storage
    assert (
        tracking.startswith("PROBLEM")
        and f"nothing listens on 127.0.0.1:{http}" in tracking
        and "hpo server" in tracking
    )
    assert "Secret-pw" not in result.stdout + result.stderr
    assert "doctor found 2 problems" in result.stderr


def test_a_host_that_never_answers_is_a_problem_not_a_hang(cli: Callable[..., Any], silent_host: int) -> None:
    # libpq's connect timeout and the HTTP timeout end both checks; the run ends with exit 1.
    result = cli(
        "doctor",
        "--storage",
        f"postgresql://hpo@127.0.0.1:{silent_host}/optuna",
        "--tracking-uri",
        f"http://127.0.0.1:{silent_host}",
        "--json",
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    by_check = {c["check"]: c for c in report["checks"]}
    assert by_check["storage"]["status"] == "problem" and "did not answer within" in by_check["storage"]["message"]
    assert by_check["tracking"]["status"] == "problem" and "did not answer within" in by_check["tracking"]["message"]
    assert report["ok"] is False and report["problems"] == 2


def test_wrong_password_and_the_ways_to_give_the_right_one(
    cli: Callable[..., Any], pg_password_server: PasswordPostgres, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A server that checks passwords: a wrong one is named as such; none at all too; the right one
    # from PGPASSWORD or from a .pgpass file (libpq reads both when the URL has none) passes.
    tracking = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    wrong = cli("doctor", "--storage", pg_password_server.url("postgres", password="Wrong-pw-123"), *tracking)
    assert wrong.exit_code == 1
    (line,) = lines_about(wrong.stdout, "storage")
    assert (
        line.startswith("PROBLEM") and "wrong password for user postgres" in line and "PGPASSWORD or ~/.pgpass" in line
    )
    assert "Wrong-pw-123" not in wrong.stdout + wrong.stderr

    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "absent"))  # no ~/.pgpass of the machine either
    without = cli("doctor", "--storage", pg_password_server.url("postgres", with_password=False), *tracking)
    assert without.exit_code == 1
    assert "wants a password for user postgres and none was given" in lines_about(without.stdout, "storage")[0]

    monkeypatch.setenv("PGPASSWORD", pg_password_server.password)
    from_env = cli("doctor", "--storage", pg_password_server.url("postgres", with_password=False), *tracking)
    assert from_env.exit_code == 0, from_env.stdout
    assert lines_about(from_env.stdout, "storage")[0].startswith("ok")

    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_password_server.port}:*:postgres:{pg_password_server.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    from_file = cli(
        "doctor", "--storage", pg_password_server.url("postgres", with_password=False, driver="postgresql"), *tracking
    )
    assert from_file.exit_code == 0, from_file.stdout
    assert "PostgreSQL" in lines_about(from_file.stdout, "storage")[0]


def test_reachable_postgres_and_server(
    cli: Callable[..., Any], pg_url: Callable[[str], str], pg_mlflow_server: str, write_study: Callable[..., Path]
) -> None:
    # Everything answers: the PostgreSQL version and the MLflow server's version are reported.
    study_file = write_study(tiny_boston())
    result = cli("doctor", study_file, "--storage", pg_url("doctor"), "--tracking-uri", pg_mlflow_server)
    assert result.exit_code == 0, result.stdout
    assert "(PostgreSQL " in lines_about(result.stdout, "storage")[0]
    tracking = lines_about(result.stdout, "tracking")[0]
    assert tracking.startswith("ok") and "MLflow server 3." in tracking


def test_one_database_for_optuna_and_mlflow_is_a_problem(cli: Callable[..., Any], tmp_path: Path) -> None:
    # Both keep an alembic_version table: sharing a database breaks one of them.
    url = f"sqlite:///{tmp_path / 'both.db'}"
    result = cli("doctor", "--storage", url, "--tracking-uri", url)
    assert result.exit_code == 1
    assert any(
        "are the same database" in line and "use two databases" in line
        for line in lines_about(result.stdout, "storage")
    )


def test_old_optuna_schema_names_the_upgrade_command(cli: Callable[..., Any], tmp_path: Path) -> None:
    # A storage stamped with an older Optuna schema revision: the fix is `optuna storage upgrade`.
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    storage = RDBStorage(url)
    older = storage.get_all_versions()[1]
    storage.engine.dispose()
    import sqlite3

    with sqlite3.connect(tmp_path / "hpo.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (older,))
    result = cli("doctor", "--storage", url)
    assert result.exit_code == 1
    (line,) = lines_about(result.stdout, "storage")
    assert f"Optuna schema {older} is older" in line and f"optuna storage upgrade --storage '{url}'" in line


def test_a_cifar10_study_without_the_data_names_the_import_command(
    cli: Callable[..., Any], write_study: Callable[..., Path]
) -> None:
    # The study needs CIFAR-10 and the data cache does not hold it: say how to get it.
    study = {"name": "c", "objective": "cifar10", "n_trials": 1, "fixed": {"epochs": 1}}
    result = cli("doctor", write_study(study))
    assert result.exit_code == 1
    problems = [line for line in lines_about(result.stdout, "data") if line.startswith("PROBLEM")]
    assert len(problems) == 1 and "needs cifar10" in problems[0] and "hpo data import cifar10" in problems[0]
