"""A study on PostgreSQL end to end: Optuna storage and MLflow backend in separate databases of one
server, tracking over HTTP through a real `hpo server`, read back through the server's REST API.

The commands are the ones docker-compose.yml runs (hpo.operations.schedule.create_argv / worker_argv), started
as separate processes like the containers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpo.operations.schedule import create_argv, worker_argv
from hpo.running.runner import trial_seed
from tests.conftest import PG_HOST, PG_PORT, PG_USER, drop_database, tiny_boston

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
PYTHON_HPO = (sys.executable, "-m", "hpo")


# -- the server's REST API ------------------------------------------------------------------------
def rest(server: str, endpoint: str, payload: dict[str, Any] | None = None, **query: Any) -> dict[str, Any]:
    url = f"{server}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST" if data else "GET"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read() or b"{}"))


def experiments_named(server: str, name: str) -> list[dict[str, Any]]:
    found = rest(server, "experiments/search", {"max_results": 1000, "filter": f"name = '{name}'"})
    return list(found.get("experiments", []))


def all_runs(server: str, experiment_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    token = None
    while True:
        payload: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 1000}
        if token:
            payload["page_token"] = token
        page = rest(server, "runs/search", payload)
        runs.extend(page.get("runs", []))
        token = page.get("next_page_token")
        if not token:
            return runs


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics(run: dict[str, Any]) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def history(server: str, run_id: str, key: str) -> list[dict[str, Any]]:
    return list(rest(server, "metrics/get-history", run_id=run_id, metric_key=key).get("metrics", []))


def artifact_text(server: str, run: dict[str, Any], path: str) -> str:
    # runs store artifacts at mlflow-artifacts:/<experiment>/<run>/artifacts, proxied by the server
    root = run["info"]["artifact_uri"].split("mlflow-artifacts:", 1)[1].lstrip("/")
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", timeout=30) as response:
        return str(response.read().decode())


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def fresh_pg_name(postgres_available: None) -> Iterator[Callable[[str], str]]:
    """URLs of PostgreSQL databases that do not exist yet (hpo must create them); dropped afterwards."""
    names: list[str] = []

    def make(label: str) -> str:
        names.append(f"hpo_test_{label}_{uuid.uuid4().hex[:10]}")
        return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{names[-1]}"

    yield make
    for name in names:
        drop_database(name)


def start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    return results


def assert_contract_layout(
    server: str, storage: str, name: str, config: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The contract's MLflow layout, checked against the Optuna storage: returns (parent, children)."""
    (experiment,) = experiments_named(server, name)
    runs = all_runs(server, experiment["experiment_id"])
    parents = [r for r in runs if tags(r).get("hpo.role") == "study"]
    children = [r for r in runs if tags(r).get("hpo.role") == "trial"]
    assert len(parents) == 1, f"{len(parents)} parent runs"
    parent = parents[0]
    stored = yaml.safe_load(artifact_text(server, parent, "study.yaml"))
    assert stored["name"] == name and stored["objective"] == "boston"

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(children) == len(trials)
    by_number = {int(tags(r)["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == [t.number for t in trials]
    epochs = config["fixed"]["epochs"]
    for trial in trials:
        run = by_number[trial.number]
        run_tags = tags(run)
        assert run_tags["mlflow.parentRunId"] == parent["info"]["run_id"]
        assert run_tags["optuna.study_name"] == name
        assert run_tags["optuna.state"] == trial.state.name
        assert run_tags["hpo.seed"] == str(trial_seed(config["seed"], trial.number))
        assert trial.user_attrs["mlflow_run_id"] == run["info"]["run_id"]
        # every hyperparameter the trial used, sampled and fixed
        expected = {**{k: str(v) for k, v in config["fixed"].items()}, **{k: str(v) for k, v in trial.params.items()}}
        assert params(run) == expected
        assert trial.state == TrialState.COMPLETE
        assert run["info"]["status"] == "FINISHED" and int(run["info"]["end_time"]) > 0
        summary = metrics(run)
        assert summary["best_val_rmse"] == pytest.approx(trial.value)
        assert {"best_epoch", "n_params", "train_seconds"} <= set(summary)
        for key in ("train_loss", "val_loss", "val_rmse"):
            steps = sorted(int(m["step"]) for m in history(server, run["info"]["run_id"], key))
            assert steps == list(range(epochs)), f"{key} of trial {trial.number}: steps {steps}"
        best = history(server, run["info"]["run_id"], "val_rmse")
        assert min(m["value"] for m in best) == pytest.approx(trial.value)
    return parent, children


# -- tests ----------------------------------------------------------------------------------------
def test_compose_flow_on_postgres_over_http_and_a_resume(
    pg_mlflow_server: str,
    fresh_pg_name: Callable[[str], str],
    write_study: Callable[..., Path],
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # `hpo create`, then two `hpo worker` processes together (docker compose up --scale worker=2), then
    # a later `hpo run` that raises the budget: one experiment, one parent run, one child per trial.
    name = f"pg-flow-{uuid.uuid4().hex[:6]}"
    config = tiny_boston(name=name, n_trials=3)
    study_file = write_study(config)
    storage = fresh_pg_name("optuna")
    env = {"HPO_STORAGE": storage, "MLFLOW_TRACKING_URI": pg_mlflow_server, "HPO_PROGRESS": "plain"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    created = cli(*create_argv(study_file)[1:])  # in this process: the same command, one start-up less
    assert created.exit_code == 0, created.stderr
    results = finish([start(worker_argv(study_file, program=PYTHON_HPO), env, tmp_path) for _ in range(2)])
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    parent, children = assert_contract_layout(pg_mlflow_server, storage, name, config)
    assert len(children) == 3

    resumed = cli("run", study_file, "--n-trials", "5")
    assert resumed.exit_code == 0, resumed.stderr
    parent_again, children = assert_contract_layout(pg_mlflow_server, storage, name, config)
    assert parent_again["info"]["run_id"] == parent["info"]["run_id"]
    assert len(children) == 5


def test_runs_started_together_on_fresh_databases_make_one_experiment_and_one_parent(
    pg_mlflow_server: str, fresh_pg_name: Callable[[str], str], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # Three `hpo run` at once on a database that does not exist yet: it is created once, Optuna's
    # schema once, the MLflow experiment and the parent run once, and the budget holds.
    import psycopg2

    name = f"pg-race-{uuid.uuid4().hex[:6]}"
    config = tiny_boston(name=name, n_trials=3, fixed={"epochs": 2, "hidden_layers": 1, "batch_size": 64})
    study_file = write_study(config)
    storage = fresh_pg_name("race")
    env = {"HPO_STORAGE": storage, "MLFLOW_TRACKING_URI": pg_mlflow_server, "HPO_PROGRESS": "plain"}
    results = finish([start([*PYTHON_HPO, "run", str(study_file)], env, tmp_path) for _ in range(3)])
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]

    assert len(experiments_named(pg_mlflow_server, name)) == 1
    _, children = assert_contract_layout(pg_mlflow_server, storage, name, config)
    assert len(children) == 3
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=storage.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM alembic_version")
            assert cur.fetchone() == (1,)
            cur.execute("SELECT count(*) FROM studies")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_database_init_lock_lets_one_process_at_a_time_initialize(pg_url: Callable[[str], str]) -> None:
    # The lock workers take around creating Optuna's or MLflow's tables: a second holder waits until
    # the first lets go (it is a PostgreSQL advisory lock, so it works across processes and machines).
    import threading
    import time

    from hpo.running.databases import database_init_lock

    url = pg_url("lock")
    events: list[str] = []
    first_in = threading.Event()

    def second() -> None:
        first_in.wait(30)
        with database_init_lock(url, "mlflow"):
            events.append("second in")

    thread = threading.Thread(target=second)
    thread.start()
    with database_init_lock(url, "mlflow"):
        events.append("first in")
        first_in.set()
        time.sleep(1.0)  # the second holder is blocked meanwhile
        with database_init_lock(url, "optuna"):  # another schema's lock is independent
            events.append("optuna lock taken")
        events.append("first out")
    thread.join(30)
    assert events == ["first in", "optuna lock taken", "first out", "second in"]
