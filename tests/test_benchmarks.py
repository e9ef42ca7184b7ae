"""The benchmark scripts run end to end in their quick mode on tiny data and report every figure they promise.

Figures themselves are not asserted (no timing assertions): what must hold is that each script runs the
ways it compares on the same work, and returns and prints the rows BENCHMARKS.md quotes. The scripts run
in this process (importing hpo, torch and MLflow once) with the globals they touch restored afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    free_port,
    make_cifar10_arrays,
    tar_folder,
    tiny_boston,
    write_cifar10_image_folder,
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"hpo_benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The scripts set torch threads, Optuna's verbosity and MLflow's fluent URI: put them back."""
    import mlflow
    import optuna
    import torch

    threads, verbosity = torch.get_num_threads(), optuna.logging.get_verbosity()
    monkeypatch.setattr(sys, "path", list(sys.path))
    # MLflowCallback calls mlflow.set_tracking_uri and set_experiment, which also export environment variables.
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.setenv(name, "")  # records "unset", so monkeypatch unsets it again afterwards
        monkeypatch.delenv(name)
    yield
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(verbosity)


def test_overhead_runs_the_same_trials_three_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Bare loop, Optuna + MLflowCallback and hpo train the same configurations with the same seeds,
    # so their final metrics agree exactly; each way reports its non-training time and ratio to bare.
    script = load_script("overhead")
    out = tmp_path / "overhead.json"
    payload = script.main(
        [
            "--quick",
            "--rounds",
            "1",
            "--groups",
            "boston-short",
            "--short-trials",
            "2",
            "--max-epochs",
            "2",
            "--skip-import-timing",
            "--phases",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    assert [r["way"] for r in payload["records"]] == ["bare", "optuna+mlflow", "hpo"]
    assert all(r["trials"] == 2 and len(r["values"]) == 2 for r in payload["records"])
    assert script.check_same_training(payload["records"]) == 0.0
    summary = {r["way"]: r for r in payload["summary"]}
    assert summary["bare"]["wall / bare (median)"] == 1.0
    assert summary["hpo"]["non-training ms/trial (median)"] > 0
    # --phases splits hpo's non-training time into the trial loop's steps; each step was timed.
    steps = {row["step"]: row["ms/trial"] for row in payload["phases"]}
    assert any(step.startswith("close the MLflow run") for step in steps) and any(
        step.startswith("ask") for step in steps
    )
    assert all(ms > 0 for step, ms in steps.items() if not step.startswith(("everything else", "checkpoint")))
    # The saved file stands on its own: its summary is what its raw records give (one round: the ratio of
    # hpo's wall time to the bare loop's, and hpo's own non-training time per trial).
    saved = json.loads(out.read_text())
    records = {r["way"]: r for r in saved["records"]}
    saved_summary = {r["way"]: r for r in saved["summary"]}
    assert saved_summary["hpo"]["wall / bare (median)"] == pytest.approx(
        records["hpo"]["wall_s"] / records["bare"]["wall_s"]
    )
    assert saved_summary["hpo"]["non-training ms/trial (median)"] == pytest.approx(
        records["hpo"]["overhead_ms_per_trial"]
    )
    printed = capsys.readouterr().out
    assert "## Overhead" in printed and "- command: `python" in printed and "non-training ms/trial" in printed


def test_end_to_end_times_hpo_run_against_the_same_training_in_fresh_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both ways are fresh processes training the same configurations with the same seeds: their final
    # metrics agree exactly, and the ratio includes every fixed cost of `hpo run`.
    payload = load_script("end_to_end").main(
        [
            "--trials",
            "2",
            "--epochs",
            "2",
            "--rounds",
            "1",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(tmp_path / "e2e.json"),
        ]
    )
    [row] = payload["rounds"]
    assert row["largest metric difference"] == 0.0
    assert (
        row["bare s"] > 0
        and row["hpo run s"] > 0
        and row["hpo / bare"] == pytest.approx(row["hpo run s"] / row["bare s"])
    )
    assert payload["summary"]["trials"] == 2 and payload["summary"]["epochs"] == 2
    assert json.loads((tmp_path / "e2e.json").read_text())["summary"] == payload["summary"]
    assert "- command: `python" in capsys.readouterr().out


def test_search_efficiency_compares_hpo_with_random_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Both variants run under the same wall budget; the report has a best-so-far row per variant and,
    # per seed, random search's final best and how long hpo needed to reach it (or that it did not).
    script = load_script("search_efficiency")
    payload = script.main(
        [
            "--quick",
            "--seeds",
            "1",
            "--budget",
            "2",
            "--epochs",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--plot",
            str(tmp_path / "curves.png"),
        ]
    )
    assert set(payload["runs"]) == {"hpo", "random"}
    assert all(run["trials"] for runs in payload["runs"].values() for run in runs)
    assert [row["variant"] for row in payload["curves"]] == ["hpo", "random"]
    assert len(payload["seeds"]) == 1 and payload["seeds"][0]["random: final best"] > 0
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert "fraction of random search's budget" in capsys.readouterr().out


def test_quality_evaluates_boston_and_cifar10_against_baselines(tmp_path: Path) -> None:
    # Boston: the best trial and the three scikit-learn baselines get test RMSE on the
    # same split; CIFAR-10 (a tiny generated archive): the best trial gets a test accuracy.
    tree = write_cifar10_image_folder(tmp_path / "tiny-src", make_cifar10_arrays(train_per_class=6, test_per_class=2))
    archive = tar_folder(tree, tmp_path / "tiny-cifar10.tar.gz")
    script = load_script("quality")
    payload = script.main(
        [
            "--quick",
            "--boston-trials",
            "2",
            "--boston-epochs",
            "2",
            "--top-k",
            "1",
            "--cifar-source",
            str(archive),
            "--cifar-trials",
            "2",
            "--cifar-minutes",
            "1",
            "--cifar-epochs",
            "1",
            "--cifar-subset",
            "1.0",
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    boston = {row["model"]: row for row in payload["boston"][0]["rows"]}
    assert {"linear regression", "random forest", "gradient boosting"} <= set(boston)
    assert all(row["test_rmse"] > 0 for row in boston.values())
    assert any(row["kind"] == "trial" and row["rank"] == 1 for row in boston.values())
    cifar = payload["cifar10"]
    assert cifar is not None and cifar["complete"] >= 1
    assert any(row["kind"] == "trial" and 0.0 <= row["test_acc"] <= 1.0 for row in cifar["rows"])


def test_tracking_measures_throughput_and_best_of_n(tmp_path: Path) -> None:
    # Every way logs into every reachable backend; the best-k query is timed through hpo and MLflow.
    script = load_script("tracking")
    payload = script.main(
        [
            "--quick",
            "--epochs",
            "3",
            "--repeats",
            "1",
            "--runs",
            "12",
            "--per-value-seconds",
            "1",
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    backends = {row["backend"] for row in payload["throughput"]}
    assert "sqlite" in backends
    assert ("postgresql" in backends) != any("PostgreSQL skipped" in note for note in payload["notes"])
    for backend in backends:
        assert len({row["way"] for row in payload["throughput"] if row["backend"] == backend}) == 3
        assert {row["way"] for row in payload["best_of_n"] if row["backend"] == backend} == {
            "hpo best (Optuna storage)",
            "MLflow search_runs order_by",
        }
    assert all(row["points/s (median)"] > 0 for row in payload["throughput"])


def _run_storage_overhead(
    tmp_path: Path, write_study: Callable[..., Path], postgres: str
) -> tuple[dict[str, Any], Path]:
    """storage_overhead.py's quick mode on a 2-epoch Boston study whose file asks for 3 trials, capped at 2 by
    --n-trials."""
    study = write_study(
        tiny_boston(name="storage-overhead", n_trials=3, fixed={"epochs": 2, "hidden_layers": 1, "batch_size": 64})
    )
    out = tmp_path / "storage_overhead.json"
    payload = load_script("storage_overhead").main(
        [
            "--quick",
            "--study",
            str(study),
            "--n-trials",
            "2",
            "--postgres",
            postgres,
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    return payload, out


def _check_storage_rows(payload: dict[str, Any], out: Path, backends: list[str]) -> None:
    """One run per backend of exactly the 2 capped trials, training time read back from MLflow, figures in the JSON."""
    assert [row["backend"] for row in payload["rows"]] == backends
    for row in payload["rows"]:
        assert row["runs"] == 1 and row["trials/run"] == 2
        assert row["training s/trial"] > 0  # train_seconds of each trial's MLflow run, 0.0 when it is not found
        assert all(
            math.isfinite(row[key]) for key in ("wall s/trial", "non-training s/trial", "in-trial overhead s/trial")
        )
        assert row["wall s/trial"] == pytest.approx(row["training s/trial"] + row["non-training s/trial"])
    assert list(payload["samples"]) == backends and all(len(runs) == 1 for runs in payload["samples"].values())
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(payload["rows"]))
    assert (
        saved["command"] == payload["command"]
        and "--quick" in saved["command"]
        and saved["command"].startswith("python ")
    )


@pytest.mark.postgres
def test_storage_overhead_runs_hpo_on_sqlite_and_on_postgres_with_a_server(
    postgres_available: None, tmp_path: Path, write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The same study runs as a real `hpo run` on SQLite files and on PostgreSQL + a real `hpo server`;
    # each backend reports its per-trial figures and the comparison sentence; the databases are dropped.
    import psycopg2

    payload, out = _run_storage_overhead(tmp_path, write_study, f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}")
    _check_storage_rows(payload, out, ["sqlite", "postgres+server"])
    assert payload["notes"] == []
    (log,) = (tmp_path / "work").glob("server-*.log")
    assert log.read_text().strip()  # the MLflow server really ran and wrote its log
    tag = log.stem.removeprefix("server-")
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database WHERE datname IN (%s, %s)",
                (f"hpo_bench_optuna_{tag}", f"hpo_bench_mlflow_{tag}"),
            )
            assert cur.fetchall() == []
    finally:
        conn.close()
    printed = capsys.readouterr().out
    assert (
        "## Storage overhead" in printed and "- command: `python" in printed and "PostgreSQL + server costs" in printed
    )


def test_storage_overhead_runs_sqlite_alone_when_postgres_is_unreachable(
    tmp_path: Path, write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on the PostgreSQL port given: the SQLite run still happens and is reported,
    # and a note (in the JSON and the printed section) says why PostgreSQL + server is missing.
    payload, out = _run_storage_overhead(
        tmp_path, write_study, f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{free_port()}"
    )
    _check_storage_rows(payload, out, ["sqlite"])
    assert len(payload["notes"]) == 1 and "PostgreSQL + server skipped" in payload["notes"][0]
    assert json.loads(out.read_text())["notes"] == payload["notes"]
    printed = capsys.readouterr().out
    assert (
        "## Storage overhead" in printed and "- command: `python" in printed and f"- {payload['notes'][0]}" in printed
    )


def test_cifar10_pipeline_compares_hpo_with_dataloader_loops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # On the same generated images, every model trains one epoch through hpo and through each DataLoader
    # variant; the summary has a row per model and way, and hpo's ratio to the best DataLoader loop per round.
    script = load_script("cifar10_pipeline")
    out = tmp_path / "cifar10_pipeline.json"
    payload = script.main(
        [
            "--quick",
            "--images",
            "128",
            "--rounds",
            "1",
            "--batch-size",
            "64",
            "--workers",
            "0",
            "--model",
            "mlp,quick-cnn",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    models = ["mlp", "quick-cnn"]
    assert [(r["model"], r["way"]) for r in payload["records"]] == [
        (m, w) for m in models for w in ("hpo", "dataloader-w0")
    ]
    assert all(r["images_per_second"] > 0 and 0.0 <= r["train_acc"] <= 1.0 for r in payload["records"])
    assert [row["way"] for row in payload["summary"]] == ["hpo", "dataloader-w0"] * 2
    assert [row["model"].split(" (")[0] for row in payload["summary"]] == [m for m in models for _ in range(2)]
    assert list(payload["ratios"]) == models and all(
        len(values) == 1 and values[0] > 0 for values in payload["ratios"].values()
    )
    hpo_rows = [row for row in payload["summary"] if row["way"] == "hpo"]
    assert [row["hpo / best DataLoader"] for row in hpo_rows] == [payload["ratios"][m][0] for m in models]
    saved = json.loads(out.read_text())
    assert saved["ratios"] == payload["ratios"] and saved["summary"] == json.loads(json.dumps(payload["summary"]))
    printed = capsys.readouterr().out
    assert (
        "## CIFAR-10 input pipeline" in printed
        and "**mlp: hpo / best DataLoader loop = " in printed
        and "**quick-cnn: hpo / best DataLoader loop = " in printed
    )


@pytest.mark.postgres
@pytest.mark.slow
def test_scale_runs_real_workers_on_both_storage_paths_and_checks_the_invariants(
    postgres_available: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --quick: 4 real `hpo worker` processes on a direct PostgreSQL study, then 4 through the gRPC proxy
    # of a real `hpo server` with 3 of them SIGKILLed mid-trial. Every invariant holds in both (budget
    # exact, no duplicates, nothing RUNNING, the killed trials failed and re-run), no worker imported
    # torch, every figure is measured, and the benchmark's databases are gone afterwards.
    import psycopg2

    out = tmp_path / "scale.json"
    payload = load_script("scale").main(
        [
            "--quick",
            "--postgres",
            f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    rows = payload["rows"]
    assert [(r["path"], r["workers"], r["kill"]) for r in rows] == [("direct", 4, False), ("grpc", 4, True)]
    for row in rows:
        assert row["invariants ok"], row["problems"]
        assert row["torch imported"] is False
        assert row["trials/s"] > 0 and row["ideal trials/s"] > 0
        assert all(
            math.isfinite(row[k]) and row[k] > 0
            for k in ("ask p50 ms", "tell p99 ms", "mlflow p50 ms", "worker RSS MB (max)", "worker CPU s/trial")
        )
    assert rows[0]["peak optuna db conns"] >= 4  # every direct worker connects to the database itself
    assert len(rows[1]["killed trials"]) == 3
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))
    (tag,) = {
        p.name.rsplit("-", 1)[-1] for p in (tmp_path / "work").glob("scale-*")
    }  # the runs' folders end with the databases' tag
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT datname FROM pg_database WHERE datname IN (%s, %s)",
                (f"hpo_scale_optuna_{tag}", f"hpo_scale_mlflow_{tag}"),
            )
            assert cur.fetchall() == []
    finally:
        conn.close()
    printed = capsys.readouterr().out
    assert (
        "## Many workers" in printed and "- command: `python" in printed and "Invariants held in every run" in printed
    )


def test_scale_counts_the_machines_busy_cores_inside_the_window_only() -> None:
    # Busy cores = busy CPU seconds over wall seconds between the first and the last sample inside the
    # steady window; samples outside it do not count, and a window holding fewer than two has no figure.
    cpu = load_script("scale").MachineCpu()
    cpu.samples = [(0.0, 0.0), (10.0, 5.0), (20.0, 25.0), (30.0, 45.0), (40.0, 100.0)]
    assert cpu.busy_cores(10.0, 30.0) == 2.0
    assert cpu.busy_cores(5.0, 35.0) == 2.0
    assert math.isnan(cpu.busy_cores(12.0, 18.0))


def test_scale_checks_mlflow_runs_only_for_tracked_runs() -> None:
    # The bare Optuna loop (`--paths optuna`) logs no MLflow run: its invariants are Optuna's alone (the
    # budget, nothing left running); a tracked run without its MLflow runs is broken.
    from optuna.trial import TrialState, create_trial

    trials = [create_trial(state=TrialState.COMPLETE, value=1.0) for _ in range(3)]
    for number, trial in enumerate(trials):
        trial.number = number
    scale = load_script("scale")
    assert scale.check_invariants(trials, [], n_trials=3, killed=[], tracked=False) == []
    assert scale.check_invariants(trials, [], n_trials=3, killed=[]) == ["0 MLflow trial runs for 3 trials"]
    assert scale.check_invariants(trials, [], n_trials=4, killed=[], tracked=False) == [
        "budget: 3 trials count towards n_trials=4"
    ]


def test_large_study_fills_an_hpo_study_and_times_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --quick: 100 trials on SQLite. The filled study must be one hpo's commands accept as their own
    # (each ran as a real process and succeeded), every trial linked to its closed MLflow child run.
    import optuna
    from mlflow import MlflowClient

    payload = load_script("large_study").main(
        ["--quick", "--sqlite", "--asks", "2", "--workdir", str(tmp_path), "--json", str(tmp_path / "large.json")]
    )
    (row,) = payload["rows"]
    assert row["trials"] == 100 and payload["backend"] == "sqlite"
    assert all(row[f"{c} s"] > 0 for c in ("status", "best", "report", "reconcile", "ask"))
    (storage,) = tmp_path.glob("hpo-*.db")
    (store,) = tmp_path.glob("mlflow-*.db")
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{storage}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{storage}")
    filled = [t for t in study.trials if "hpo.bench_asked" not in t.user_attrs]
    assert len(filled) == 100 and {t.state.name for t in filled} == {"COMPLETE", "PRUNED", "FAIL"}
    client = MlflowClient(f"sqlite:///{store}")
    parent = study.user_attrs["hpo.mlflow_parent_run_id"]
    for trial in filled[:10]:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["optuna.trial_number"] == str(
            trial.number
        )
        assert run.data.tags["optuna.state"] == trial.state.name and run.info.status != "RUNNING"
        assert len(client.get_metric_history(run.info.run_id, "val_rmse")) == len(trial.intermediate_values)
    assert (tmp_path / "report-100" / "index.html").is_file()
    printed = capsys.readouterr().out
    assert "## Large studies" in printed and "- command: `python" in printed


def test_gpu_smoke_reports_every_section_on_the_cpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # --smoke runs the GPU script end to end on generated tiny data: throughput rows for both families
    # and every variant (compile rows say why they are skipped on a CPU), the airbench-style
    # configuration's seconds and test accuracy, concurrent trials, and a study with its evaluation.
    script = load_script("gpu")
    out = tmp_path / "gpu.json"
    payload = script.main(["--smoke", "--json", str(out)])
    rows = payload["throughput"]
    assert [(r["model"].split(" ")[0], r["variant"]) for r in rows] == [
        (m, v[0]) for m in ("airbench-style", "cnn") for v in script.VARIANTS
    ]
    assert all(r["images/s"] > 0 for r in rows if "compile" not in r["variant"])
    assert all(
        r["images/s"] is None and "skipped on the CPU" in r["precision"] for r in rows if "compile" in r["variant"]
    )
    assert len(payload["airbench_seeds"]) == 1 and 0.0 <= payload["airbench_seeds"][0]["test_acc"] <= 1.0
    assert [r["trials at once"] for r in payload["concurrent"]] == [1, 2] and all(
        r["images/s (sum)"] > 0 for r in payload["concurrent"]
    )
    study = payload["study"]
    assert (
        study["trials complete"] == 1
        and 0.0 <= study["best val_acc"] <= 1.0
        and 0.0 <= study["best test accuracy (single model)"] <= 1.0
    )
    assert json.loads(out.read_text())["study"]["trials complete"] == 1
    printed = capsys.readouterr().out
    assert "## CIFAR-10 on one GPU (CPU (" in printed and "### Trials training at once on the device" in printed


def test_gpu_median_configuration_takes_the_middle_of_each_range() -> None:
    # cifar10-cnn.yaml's median configuration: the geometric middle of log ranges, the middle of linear
    # ones (rounded for integers), the first of two choices, conditional parameters only when they apply.
    script = load_script("gpu")
    median = script.median_configuration()
    assert (
        median["filters"] == round(math.sqrt(16 * 96))
        and median["conv_blocks"] == 3
        and median["filters_growth"] == 1.5
    )
    assert (
        median["optimizer"] == "sgd"
        and median["momentum"] == pytest.approx(0.875)
        and median["hidden_layers"] == 0
        and "width" not in median
    )
    assert median["model"] == "cnn" and median["epochs"] == 30
