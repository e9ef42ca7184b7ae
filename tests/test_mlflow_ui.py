"""MLflow as users meet it: the experiment is marked as model training, the study's parent run carries
its summary and study file, Optuna clients see the metric's name, every printed link opens the runs
view, and a real browser on a real `mlflow server` shows the study's runs with metric columns."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from hpo.running.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG, RUNS_VIEW_TAG, Tracker, ui_base
from tests.conftest import MlflowServers, tiny_boston

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1800,1000",
    "--virtual-time-budget=25000",
)


def _parent(client: MlflowClient, name: str) -> Any:
    experiment = client.get_experiment_by_name(name)
    return experiment, client.search_runs([experiment.experiment_id], "tags.`hpo.role` = 'study'")[0]


def _client(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")  # absolute: MLflow caches a store per URI string


def test_parent_run_summarizes_the_study_and_describes_it_with_its_file(
    cli: Any, write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # After a run: the experiment says it holds model training; the parent run has the best value in
    # the trials' own `best_val_rmse` column, the counts by state, the best trial and its params, and a
    # description that starts with that summary and holds the resolved study file; Optuna has the
    # metric's name, so optuna-dashboard labels the value val_rmse.
    path = write_study(tiny_boston(n_trials=3))
    assert cli("run", path, "-q").exit_code == 0
    study = optuna.load_study(study_name="tiny-boston", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    assert study.metric_names == ["val_rmse"]
    client = _client(tmp_path)
    experiment, parent = _parent(client, "tiny-boston")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    metrics, tags = parent.data.metrics, parent.data.tags
    assert metrics["best_val_rmse"] == pytest.approx(study.best_value)
    assert metrics["best_trial"] == study.best_trial.number
    assert metrics["trials_complete"] == 3 and metrics["trials_pruned"] == 0 and metrics["trials_failed"] == 0
    assert tags["hpo.best_trial"] == str(study.best_trial.number)
    assert json.loads(tags["hpo.best_params"]) == study.best_trial.params
    assert tags["hpo.trials"] == "3 complete"
    note = tags[NOTE_TAG]
    assert (
        note.startswith("**Study tiny-boston**: 3 complete.")
        and f"val_rmse **{study.best_value:.6g}** (trial {study.best_trial.number})" in note
    )
    assert "Study file (resolved):\n\n```yaml\nname: tiny-boston" in note and "n_trials: 3" in note
    # Sent once per finished trial at most (here: throttled), never per epoch: the step is the number of
    # finished trials, and the last entry counts them all.
    history = client.get_metric_history(parent.info.run_id, "trials_complete")
    assert 1 <= len(history) <= 3 + 1 and max(h.step for h in history) == 3 and history[-1].value == 3
    view = json.loads(experiment.tags[RUNS_VIEW_TAG])
    assert view["orderByKey"] == "metrics.`best_val_rmse`" and view["orderByAsc"] is True
    assert {"metrics.`best_val_rmse`", "metrics.`val_rmse`", "params.`lr`", "params.`width`"} <= set(
        view["selectedColumns"]
    )


def test_a_resumed_study_updates_the_summary_of_the_same_parent_run(
    cli: Any, write_study: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_study(tiny_boston(n_trials=2))
    assert cli("run", path, "-q").exit_code == 0
    assert cli("run", path, "-q", "--n-trials", "4").exit_code == 0
    _, parent = _parent(_client(tmp_path), "tiny-boston")
    assert parent.data.metrics["trials_complete"] == 4 and parent.data.tags["hpo.trials"] == "4 complete"


def test_links_open_the_runs_view_and_never_carry_credentials() -> None:
    assert ui_base("http://alice:s3cret@mlflow.example:5000/") == "http://mlflow.example:5000"
    assert ui_base("https://[::1]/mlflow/") == "https://[::1]/mlflow"
    assert ui_base("sqlite:///mlflow.db") is None and ui_base("file:///tmp/mlruns") is None
    tracker = Tracker("sqlite:///mlflow.db", "no-ui")
    assert tracker.ui_link() is None


def test_runs_page_in_headless_chromium(
    cli: Any, write_study: Callable[..., Path], mlflow_server: MlflowServers, tmp_path: Path
) -> None:
    # The link `hpo run` prints opens, in a real browser on a real server, the model-training runs view
    # of the study: the study run and every trial run, with metric columns holding their values.
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    path = write_study(tiny_boston(name="ui-boston", n_trials=3))
    result = cli("run", path, "--tracking-uri", mlflow_server.shared)
    assert result.exit_code == 0, result.output
    link = re.search(r"MLflow: (http\S+)", result.stderr)
    assert link, result.stderr
    url = link.group(1)
    assert url.startswith(f"{mlflow_server.shared}/#/experiments/") and url.endswith(
        "/runs?viewStateShareKey=hpo&workflowType=machine_learning"
    )
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    done = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    page = html.unescape(done.stdout)
    subprocess.run(
        [*common, f"--screenshot={tmp_path / 'runs.png'}", url], capture_output=True, timeout=180
    )  # to look at when it fails
    study = optuna.load_study(study_name="ui-boston", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    for name in ("ui-boston", "trial-0000", "trial-0001", "trial-0002"):
        assert f">{name}<" in page, (
            f"{name} not on the runs page ({tmp_path / 'runs.png'}); chromium said: {done.stderr[-1500:]}"
        )
    headers = set(re.findall(r'role="columnheader"[^>]*col-id="([^"]+)"', page))
    assert {"metrics.`best_val_rmse`", "metrics.`val_rmse`", "metrics.`trials_complete`", "params.`lr`"} <= headers, (
        headers
    )
    cells = re.findall(r'role="gridcell" col-id="metrics.`best_val_rmse`"[^>]*>(.{0,600}?)</span>', page)
    assert len(cells) == 4 and sum(str(study.best_value)[:6] in cell for cell in cells) == 2, (
        cells
    )  # the study run and its best trial
