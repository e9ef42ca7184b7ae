"""Credentials: a password in a storage or tracking URL is never printed, logged or stored; a URL
without one works with the password from PGPASSWORD or a .pgpass file, as libpq reads them.

Against a private PostgreSQL that checks passwords (the shared one trusts every local connection)."""

from __future__ import annotations

import logging
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpo.config.settings import redact
from tests.conftest import PasswordPostgres, free_port, run_hpo, tiny_boston

pytestmark = pytest.mark.postgres


def dump_database(server: PasswordPostgres, database: str) -> str:
    """Every row of every table, as text: whatever hpo, Optuna or MLflow stored there."""
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [row[0] for row in cur.fetchall()]
            parts = []
            for table in tables:
                cur.execute(f'SELECT * FROM "{table}"')
                parts.append(f"{table}: {cur.fetchall()!r}")
            return "\n".join(parts)
    finally:
        conn.close()


def files_text(folder: Path, *, skip: set[Path]) -> dict[Path, str]:
    return {p: p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file() and p not in skip}


def run_everything(
    study_file: Path, commands: Any, cli: Callable[..., Any], caplog: pytest.LogCaptureFixture, **run_kwargs: Any
) -> list[str]:
    """`hpo run` as a process (logging at DEBUG), then each (args, exit code) in-process: their outputs."""
    caplog.set_level(logging.DEBUG)
    run = run_hpo("run", study_file, env={"HPO_LOG_LEVEL": "DEBUG", "HPO_PROGRESS": "plain"}, **run_kwargs)
    assert run.returncode == 0, redact(run.stderr)
    outputs = [run.stdout, run.stderr]
    for args, code in commands:
        result = cli(*args)
        assert result.exit_code == code, (args, redact(result.stdout + result.stderr))
        outputs += [result.stdout, result.stderr]
    return [*outputs, caplog.text]


def assert_written_nowhere(
    secrets: set[str], outputs: list[str], stored: dict[str, str], written: dict[Path, str]
) -> None:
    for secret in secrets:
        for index, text in enumerate(outputs):
            assert secret not in text, f"output {index} shows {secret!r}"
        for where, text in stored.items():
            assert secret not in text, f"the {where} holds {secret!r}"
        for path, text in written.items():
            assert secret not in text, f"{path} holds {secret!r}"


def test_redact_hides_query_string_passwords_too() -> None:
    # libpq takes ?password=... as well as user:password@.
    assert (
        redact("postgresql://h/db?sslmode=require&password=Sec%40ret&x=1")
        == "postgresql://h/db?sslmode=require&password=***&x=1"
    )
    assert redact("postgresql://u:Sec@h/d?PWD=x") == "postgresql://u:***@h/d?PWD=***"


@pytest.mark.slow
def test_a_planted_password_is_written_nowhere(
    pg_password_server: PasswordPostgres,
    write_study: Callable[..., Path],
    cli: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # The study file carries both URLs with the password (as a user may write them); a run, the read
    # commands, doctor and a failing command all print, log and store only the redacted form.
    password = pg_password_server.password
    planted = {password, urllib.parse.quote(password, safe="")}
    optuna_db, mlflow_db = f"hpo_optuna_{uuid.uuid4().hex[:6]}", f"hpo_mlflow_{uuid.uuid4().hex[:6]}"
    storage, tracking = pg_password_server.url(optuna_db), pg_password_server.url(mlflow_db)
    study_file = write_study(tiny_boston(n_trials=2, storage=storage, tracking_uri=tracking))
    dead = f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/nothing"
    outputs = run_everything(
        study_file,
        (
            (("validate", study_file), 0),
            (("status", "tiny-boston", "--storage", storage), 0),
            (("best", study_file), 0),
            (("doctor", study_file), 0),
            (("status", "--storage", dead), 1),
            (("doctor", "--storage", dead, "--tracking-uri", dead.replace("nothing", "neither")), 1),
        ),
        cli,
        caplog,
    )
    stored = {
        "optuna database": dump_database(pg_password_server, optuna_db),
        "mlflow database": dump_database(pg_password_server, mlflow_db),
    }
    written = files_text(tmp_path, skip={study_file})
    # the scan looks where it matters: the redacted URL is in the run's tags and the study file artifact
    assert "postgres:***@" in stored["mlflow database"]
    assert any(
        p.name == "study.yaml" and f"postgres:***@127.0.0.1:{pg_password_server.port}/{optuna_db}" in text
        for p, text in written.items()
    )
    study = optuna.load_study(study_name="tiny-boston", storage=storage)
    assert len(study.trials) == 2 and all(t.user_attrs.get("mlflow_run_id") for t in study.trials)
    assert_written_nowhere(planted, outputs, stored, written)


def test_password_from_pgpass_or_pgpassword_when_the_url_has_none(
    pg_password_server: PasswordPostgres,
    write_study: Callable[..., Path],
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # libpq reads PGPASSWORD or the .pgpass file (PGPASSFILE, default ~/.pgpass) for a URL without a
    # password: a whole study runs on a server that checks passwords, and without either it says why.
    optuna_db, mlflow_db = f"hpo_optuna_{uuid.uuid4().hex[:6]}", f"hpo_mlflow_{uuid.uuid4().hex[:6]}"
    storage = pg_password_server.url(optuna_db, with_password=False)
    tracking = pg_password_server.url(mlflow_db, with_password=False, driver="postgresql")  # psycopg 3
    study_file = write_study(tiny_boston(n_trials=1, fixed={"epochs": 2, "hidden_layers": 1, "batch_size": 64}))
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "absent"))

    refused = cli("run", study_file, "--storage", storage, "--tracking-uri", tracking)
    assert refused.exit_code == 1
    assert "no password supplied" in refused.stderr

    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_password_server.port}:*:postgres:{pg_password_server.password}\n")
    pgpass.chmod(0o600)  # libpq ignores a .pgpass others can read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    ran = cli("run", study_file, "--storage", storage, "--tracking-uri", tracking)
    assert ran.exit_code == 0, ran.stderr

    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "absent"))
    monkeypatch.setenv("PGPASSWORD", pg_password_server.password)
    status = cli("status", "tiny-boston", "--storage", storage, "--json")
    assert status.exit_code == 0, status.stderr
    assert '"COMPLETE"' in status.stdout
    conn = pg_password_server.connect(mlflow_db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT e.name, count(r.run_uuid) FROM experiments e JOIN runs r ON r.experiment_id = "
                "e.experiment_id GROUP BY e.name"
            )
            assert cur.fetchall() == [("tiny-boston", 2)]  # the parent run and the trial's run
    finally:
        conn.close()


# Issue 16, F: a password holding every character that is special in a URL. Its own role on the
# password-checking server; the URLs carry it percent-encoded (as a URL must for "@"), and a second role
# is given it raw (every special character but "@", which SQLAlchemy's parser also reads raw).
PLANTED = "Pl4nted/p@ss:w#rd?x%y+z"
PLANTED_RAW = "R4wPlant/x:y#z?w%v+u"


def _leaks(secret: str) -> set[str]:
    """The forms a password could be written in: raw, percent-encoded (fully, or keeping '/'), and its ends."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret), secret[:7], secret[-7:]}


@pytest.mark.slow
def test_a_password_with_every_url_special_character_is_written_nowhere(
    pg_password_server: PasswordPostgres,
    write_study: Callable[..., Path],
    cli: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # The run, every read command, doctor, the schedules (refused where they would inline a password) and
    # failing commands: nothing in their output, in either database, in MLflow's params, tags and
    # artifacts, or in any file hpo wrote holds any form of the password.
    admin = pg_password_server.connect()
    roles = {"hpo_planted": PLANTED, "hpo_planted_raw": PLANTED_RAW}
    try:
        with admin.cursor() as cur:
            for role, password in roles.items():
                cur.execute(f'DROP ROLE IF EXISTS "{role}"')
                cur.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB PASSWORD %s', (password,))
            cur.execute('GRANT "hpo_planted" TO "hpo_planted_raw"')  # reads the tables the first role creates
    finally:
        admin.close()
    host = f"127.0.0.1:{pg_password_server.port}"
    optuna_db, mlflow_db = f"hpo_optuna_{uuid.uuid4().hex[:6]}", f"hpo_mlflow_{uuid.uuid4().hex[:6]}"
    encoded = urllib.parse.quote(PLANTED, safe="")
    storage = f"postgresql+psycopg2://hpo_planted:{encoded}@{host}/{optuna_db}"
    tracking = f"postgresql+psycopg2://hpo_planted:{encoded}@{host}/{mlflow_db}"
    raw_storage = f"postgresql+psycopg2://hpo_planted_raw:{PLANTED_RAW}@{host}/{optuna_db}"
    study_file = write_study(tiny_boston(n_trials=1, storage=storage, tracking_uri=tracking))
    dead = f"postgresql://hpo_planted_raw:{PLANTED_RAW}@127.0.0.1:{free_port()}/nothing"
    outputs = run_everything(
        study_file,
        (
            (("validate", study_file), 0),
            (("status", "tiny-boston", "--storage", raw_storage), 0),
            (("best", study_file), 0),
            (("status", "nosuch", "--storage", storage), 2),
            (("status", "nosuch", "--storage", raw_storage), 2),
            (("doctor", study_file), 0),
            (("doctor", "--storage", raw_storage, "--tracking-uri", tracking), 0),
            (("status", "--storage", dead), 1),
            (("schedule", "slurm", study_file), 0),
            (("schedule", "cron", study_file), 0),
            (("schedule", "k8s", study_file), 2),
            (("schedule", "slurm", study_file, "--storage", raw_storage), 2),
            (("schedule", "cron", study_file, "--tracking-uri", tracking), 2),
            (("status", "--storage", raw_storage.replace(host, "127.0.0.1:99999")), 2),
            (("run", study_file, "--study-name", "it's", "--storage", raw_storage), 2),
        ),
        cli,
        caplog,
        cwd=tmp_path,
    )
    stored = {
        "optuna database": dump_database(pg_password_server, optuna_db),
        "mlflow database": dump_database(pg_password_server, mlflow_db),
    }
    written = files_text(tmp_path, skip={study_file})
    assert "hpo_planted:***@" in stored["mlflow database"]  # the scan looks where the URL is: the parent run's tags
    assert any(p.name == "study.yaml" and "hpo_planted:***@" in text for p, text in written.items())
    assert_written_nowhere(_leaks(PLANTED) | _leaks(PLANTED_RAW), outputs, stored, written)
