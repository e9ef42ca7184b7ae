"""Many workers on one study: `hpo run --workers N` on PostgreSQL, and batch sweeps of several study files."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpo.running.runner import default_workers_env
from tests.conftest import MlflowServers, run_hpo, tiny_boston


def trial_runs(tracking_uri: str, experiment: str, *, role: str = "trial") -> list[Any]:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"the MLflow experiment {experiment} must exist"
    return client.search_runs([found.experiment_id], filter_string=f"tags.`hpo.role` = '{role}'", max_results=1000)


@pytest.mark.slow
def test_three_workers_complete_exactly_n_trials_on_postgresql(
    pg_url: Callable[[str], str], mlflow_server: MlflowServers, write_study: Callable[..., Path]
) -> None:
    # Three worker processes share one study: together they run exactly n_trials trials, no trial
    # number twice, each with one MLflow child run, none left RUNNING; and the summary counts them.
    storage = pg_url("workers")
    name = "workers-pg"
    study_file = write_study(tiny_boston(name=name, n_trials=5, execution={"heartbeat_interval": 1, "grace_period": 3}))

    result = run_hpo(
        "run", study_file, "--workers", "3", "--storage", storage, "--tracking-uri", mlflow_server.shared, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"study {name}: 5 complete, 0 pruned, 0 failed in this run" in result.stderr

    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert [t.number for t in trials] == list(range(5))
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 5}
    # Workers sharing the study seed still propose different params (the sampler is seeded per trial).
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5

    runs = trial_runs(mlflow_server.shared, name)
    by_number = Counter(int(r.data.tags["optuna.trial_number"]) for r in runs)
    assert by_number == {n: 1 for n in range(5)}
    for trial in trials:
        run = next(r for r in runs if r.info.run_id == trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.state"] == "COMPLETE"
    assert [r.info.status for r in trial_runs(mlflow_server.shared, name, role="study")] == ["FINISHED"]


def test_local_workers_get_a_gpu_each_round_robin_and_share_the_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Worker i of N sees only GPU i mod (number of visible GPUs), and N workers split the cores.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    envs = [default_workers_env(i, 3) for i in range(3)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5", "3"]
    cores = len(os.sched_getaffinity(0))
    assert {e["HPO_THREADS"] for e in envs} == {e["OMP_NUM_THREADS"] for e in envs} == {str(max(1, cores // 3))}


def test_batch_sweep_runs_several_study_files_and_prints_a_summary_table(
    cli: Callable[..., Any], mlflow_server: MlflowServers, write_study: Callable[..., Path]
) -> None:
    # `hpo run a.yaml b.yaml` runs both studies one after the other and ends with one table row per study.
    first = write_study(tiny_boston(name="sweep-a", n_trials=2), "a.yaml")
    second = write_study(tiny_boston(name="sweep-b", n_trials=1, seed=5), "b.yaml")

    result = cli("run", first, second, "--tracking-uri", mlflow_server.shared)
    assert result.exit_code == 0, result.output

    assert "sweep summary" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "sweep-" in line]
    assert len(rows) == 2, result.stdout
    assert rows[0].split("│")[1].strip() == "sweep-a" and rows[0].split("│")[2].strip() == "2"
    assert rows[1].split("│")[1].strip() == "sweep-b" and rows[1].split("│")[2].strip() == "1"
    for name, n in (("sweep-a", 2), ("sweep-b", 1)):
        trials = optuna.load_study(study_name=name, storage="sqlite:///hpo.db").get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * n
        assert len(trial_runs(mlflow_server.shared, name)) == n


def test_a_bad_second_file_stops_the_sweep_before_anything_runs(
    cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # Every study file is checked before the first study starts: nothing is created.
    good = write_study(tiny_boston(name="sweep-ok"), "a.yaml")
    bad = write_study(tiny_boston(name="sweep-bad", sampler={"type": "tpe", "n_startup": 3}), "b.yaml")

    result = cli("run", good, bad)
    assert result.exit_code == 2
    assert "n_startup" in result.stderr
    assert not (tmp_path / "hpo.db").exists()


def test_trials_per_device_sets_the_default_worker_count_and_shares_gpus_round_robin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # execution.trials_per_device K: `hpo run` without --workers starts K workers per visible GPU (K on
    # the CPU), and worker i gets GPU i mod #GPUs, so each GPU runs K trials at once; 1 keeps one worker.
    from hpo.running.runner import default_workers, default_workers_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert default_workers(1) == 1 and default_workers(3) == 6
    assert [default_workers_env(i, 6)["CUDA_VISIBLE_DEVICES"] for i in range(6)] == ["3", "5", "3", "5", "3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert default_workers(2) == 2
    env = default_workers_env(0, 2)
    assert "CUDA_VISIBLE_DEVICES" not in env and int(env["HPO_THREADS"]) >= 1
