"""Workers through Optuna's gRPC storage proxy (`grpc://host:port`): a real proxy in front of a real database."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.config.settings import check_storage_url, check_tracking_uri, grpc_address
from hpo.errors import UsageError
from hpo.operations.doctor import check_grpc_proxy, check_storage
from hpo.running.grpc_storage import HEARTBEAT_ATTR, GrpcStorage, ProxyServer, budget_refused
from hpo.running.runner import BUDGET_ATTR
from hpo.running.storage import open_storage
from tests.conftest import free_port, run_hpo

OBJECTIVE = """
import sys
import time


def train(ctx):
    for epoch in range(3):
        time.sleep(0.05)
        ctx.report(epoch, {"val_loss": ctx.hyperparameters["x"] ** 2 + 1.0 / (epoch + 1)})
    assert "torch" not in sys.modules, "a torch-free objective's worker imported torch"
    return {"val_loss": ctx.hyperparameters["x"] ** 2}
"""


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ProxyServer]:
    """hpo's gRPC proxy on a free loopback port, serving a SQLite study database created on start."""
    server = ProxyServer(f"sqlite:///{tmp_path / 'optuna.db'}", host="127.0.0.1", port=free_port(), threads=4)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sleepy_study(tmp_path: Path, write_study: Callable[..., Path]) -> Callable[..., Path]:
    (tmp_path / "sleepy.py").write_text(OBJECTIVE)

    def write(name: str, n_trials: int) -> Path:
        return write_study(
            {
                "name": name,
                "objective": "sleepy.py:train",
                "metric": "val_loss",
                "direction": "minimize",
                "n_trials": n_trials,
                "sampler": {"type": "tpe", "n_startup_trials": 2},
                "pruner": {"type": "median", "n_startup_trials": 2},
                "params": {"x": {"type": "float", "low": -1, "high": 1}},
                "execution": {"heartbeat_interval": 1, "grace_period": 3},
            },
            name=f"{name}.yaml",
        )

    return write


def test_grpc_urls_are_storage_urls_only(tmp_path: Path) -> None:
    # grpc://host:port is accepted wherever an Optuna storage URL is, with 13000 as the default port;
    # a malformed one, or one where a database must be (MLflow's store), is a one-line error naming the field.
    check_storage_url("grpc://127.0.0.1:13000")
    assert grpc_address("grpc://mlflow") == ("mlflow", 13000)
    assert grpc_address("grpc://[::1]:14000") == ("::1", 14000)
    with pytest.raises(
        UsageError, match=r"^--storage: malformed URL 'grpc://host:port:9'; a gRPC storage proxy is grpc://host:port"
    ):
        check_storage_url("grpc://host:port:9", field="--storage")
    with pytest.raises(UsageError, match=r"^tracking_uri: malformed URI"):
        check_tracking_uri("grpc://127.0.0.1:13000")
    with pytest.raises(UsageError, match=r"^--backend-store-uri: malformed URL"):
        check_storage_url("grpc://127.0.0.1:13000", field="--backend-store-uri", allow_grpc=False)


@pytest.mark.slow
def test_hpo_run_with_two_workers_through_the_proxy_runs_exactly_the_budget(
    proxy: ProxyServer, sleepy_study: Callable[..., Path], tmp_path: Path
) -> None:
    # Two real worker processes share the study only through the proxy: exactly n_trials finish, each
    # number once, each with its MLflow run; `hpo status` reads the study through the proxy too.
    study_file = sleepy_study("via-grpc", 5)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_hpo(
        "run", study_file, "--workers", "2", "--storage", proxy.url, "--tracking-uri", tracking, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = re.search(r"study via-grpc: (\d+) complete, (\d+) pruned, 0 failed in this run", result.stderr)
    assert done is not None and int(done[1]) + int(done[2]) == 5, result.stderr[-2000:]

    direct = optuna.load_study(study_name="via-grpc", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = direct.get_trials()
    assert [t.number for t in trials] == list(range(5))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["mlflow_run_id"] for t in trials}) == 5
    # the workers' heartbeats reached the database itself, where `hpo reconcile` on the RDB URL looks
    with sqlite3.connect(tmp_path / "optuna.db") as conn:
        assert conn.execute("SELECT count(DISTINCT trial_id) FROM trial_heartbeats").fetchone()[0] == 5

    status = run_hpo("status", "via-grpc", "--storage", proxy.url, "--json")
    assert status.returncode == 0, status.stderr
    assert [row["number"] for row in json.loads(status.stdout)] == list(range(5))


def test_the_proxy_refuses_a_new_trial_beyond_the_stored_budget(proxy: ProxyServer) -> None:
    # Workers cannot take the database's budget lock through the proxy, so the proxy counts under it:
    # with the budget used up, asking for a new trial is refused (the worker reads it as "done"),
    # while a re-queued (WAITING) trial can still be added.
    client = GrpcStorage("127.0.0.1", proxy.port)
    study = optuna.create_study(study_name="capped", storage=client)
    study.set_user_attr(BUDGET_ATTR, {"n_trials": 2, "timeout": None, "deadline": None})
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    with pytest.raises(KeyError) as refused:
        client.create_new_trial(study._study_id)
    assert budget_refused(refused.value)
    study.enqueue_trial({"x": 0.5})
    assert Counter(t.state for t in study.get_trials()) == {TrialState.COMPLETE: 2, TrialState.WAITING: 1}
    client.close()


def test_a_trial_without_heartbeats_is_failed_and_requeued_through_the_proxy(proxy: ProxyServer) -> None:
    # A worker beats through the proxy; once its beats stop for longer than the grace period, any
    # other worker's stale check fails the trial and the callback re-queues it, all through gRPC.
    stale: list[int] = []
    client = open_storage(
        proxy.url, heartbeat_interval=1, grace_period=2, on_stale=lambda study, trial: stale.append(trial.number)
    )
    assert isinstance(client, GrpcStorage)
    study = optuna.create_study(study_name="beats", storage=client)
    trial = study.ask()
    client.record_heartbeat(trial._trial_id)
    beat = client.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR]
    assert abs(beat - time.time()) < 5  # stamped by the proxy's clock
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[0].state == TrialState.RUNNING  # fresh: left alone
    time.sleep(3)
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING] and stale == [0]
    client.close()


def test_a_requeued_copy_is_not_failed_for_its_dead_predecessors_heartbeat(proxy: ProxyServer) -> None:
    # The copy of a dead worker's trial must not inherit its last beat: claimed by another worker, it is
    # alive until its own beats stop (found by benchmarks/scale.py: a copy failed before its first beat,
    # sharing the dead trial's MLflow run, and the worker that claimed it crashed). A claimed trial that
    # never beats still goes stale after the grace period.
    client = open_storage(proxy.url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="copies", storage=client)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    client.record_heartbeat(dead._trial_id)
    time.sleep(3)
    optuna.storages.fail_stale_trials(study)
    copy = study.get_trials()[1]
    assert copy.state == TrialState.WAITING and HEARTBEAT_ATTR not in copy.system_attrs
    claimed = study.ask()
    assert claimed.number == copy.number and claimed.params == dead.params
    optuna.storages.fail_stale_trials(study)  # another worker's check, before the claimant's first beat
    assert study.get_trials()[1].state == TrialState.RUNNING
    time.sleep(3)
    optuna.storages.fail_stale_trials(study)  # the claimant died without a beat of its own
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]
    client.close()


def test_doctor_checks_the_proxy(proxy: ProxyServer) -> None:
    # ok with the number of studies when the proxy answers; a problem that says how to start one when nothing listens.
    optuna.create_study(study_name="seen", storage=GrpcStorage("127.0.0.1", proxy.port))
    (finding,) = check_storage(proxy.url)
    assert finding.status == "ok" and "gRPC storage proxy answers, 1 studies" in finding.message
    port = free_port()
    down = check_grpc_proxy(f"grpc://127.0.0.1:{port}", answered=threading.Event())
    assert down.status == "problem" and "no gRPC storage proxy answers" in down.message
    assert down.fix is not None and f"hpo server --grpc-port {port}" in down.fix
    # a malformed address is a problem naming the setting, not a crash
    malformed = check_grpc_proxy("grpc://127.0.0.1:99999", source="HPO_STORAGE")
    assert malformed.status == "problem" and "HPO_STORAGE: malformed URL" in malformed.message


def test_hpo_server_serves_the_proxy_and_refuses_bad_grpc_settings(tmp_path: Path) -> None:
    # `hpo server --grpc-port` runs the proxy beside MLflow and says how workers reach it; the port
    # of MLflow itself, or no database to serve, is refused (exit 2) before anything starts.
    same = run_hpo("server", "--port", "5999", "--grpc-port", "5999", "--storage", "sqlite:///x.db", timeout=120)
    assert same.returncode == 2 and "--grpc-port: 5999 is also the MLflow server's --port" in same.stderr
    missing = run_hpo("server", "--port", str(free_port()), "--grpc-port", str(free_port()), timeout=120)
    assert missing.returncode == 2 and "--storage: --grpc-port needs the Optuna storage database" in missing.stderr
    remote = run_hpo("server", "--grpc-port", str(free_port()), "--storage", "grpc://127.0.0.1:1", timeout=120)
    assert remote.returncode == 2 and "--storage: malformed URL" in remote.stderr
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "mlflow.db").exists()
