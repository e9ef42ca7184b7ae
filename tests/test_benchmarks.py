"""The benchmark scripts run end to end in their quick mode on tiny data and report every figure they promise.

Figures themselves are not asserted (no timing assertions): what must hold is that each script runs the
ways it compares on the same work, and returns and prints the rows BENCHMARKS.md quotes. The scripts run
in this process (importing hpo, torch and MLflow once) with the globals they touch restored afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import make_cifar10_arrays, tar_folder, write_cifar10_image_folder

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
    payload = script.main(["--quick", "--rounds", "1", "--groups", "boston-short", "--short-trials", "2", "--max-epochs", "2", "--skip-import-timing", "--workdir", str(tmp_path / "work"), "--json", str(out)])
    assert [r["way"] for r in payload["records"]] == ["bare", "optuna+mlflow", "hpo"]
    assert all(r["trials"] == 2 and len(r["values"]) == 2 for r in payload["records"])
    assert script.check_same_training(payload["records"]) == 0.0
    summary = {r["way"]: r for r in payload["summary"]}
    assert summary["bare"]["wall / bare (median)"] == 1.0
    assert summary["hpo"]["non-training ms/trial (median)"] > 0
    assert json.loads(out.read_text())["summary"] == json.loads(json.dumps(payload["summary"]))
    printed = capsys.readouterr().out
    assert "## Overhead" in printed and "- command: `python" in printed and "non-training ms/trial" in printed


def test_search_efficiency_compares_hpo_with_random_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Both variants run under the same wall budget; the report has a best-so-far row per variant and,
    # per seed, random search's final best and how long hpo needed to reach it (or that it did not).
    script = load_script("search_efficiency")
    payload = script.main(["--quick", "--seeds", "1", "--budget", "2", "--epochs", "2", "--workdir", str(tmp_path / "work"), "--plot", str(tmp_path / "curves.png")])
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
    payload = script.main(["--quick", "--boston-trials", "2", "--boston-epochs", "2", "--top-k", "1", "--cifar-source", str(archive), "--cifar-trials", "2", "--cifar-minutes", "1", "--cifar-epochs", "1", "--cifar-subset", "1.0", "--workdir", str(tmp_path / "work")])
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
    payload = script.main(["--quick", "--epochs", "3", "--repeats", "1", "--runs", "12", "--per-value-seconds", "1", "--workdir", str(tmp_path / "work")])
    backends = {row["backend"] for row in payload["throughput"]}
    assert "sqlite" in backends
    assert ("postgresql" in backends) != any("PostgreSQL skipped" in note for note in payload["notes"])
    for backend in backends:
        assert len({row["way"] for row in payload["throughput"] if row["backend"] == backend}) == 3
        assert {row["way"] for row in payload["best_of_n"] if row["backend"] == backend} == {"hpo best (Optuna storage)", "MLflow search_runs order_by"}
    assert all(row["points/s (median)"] > 0 for row in payload["throughput"])
