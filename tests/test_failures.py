"""Failing trials never stop a study: a diverging optimizer (NaN/inf loss), CUDA out-of-memory and a
non-finite result end one trial FAIL or PRUNED with the reason in Optuna and in its MLflow run, the
study goes on; a study whose trials all fail stops after `execution.max_consecutive_failures`."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import optuna
import torch
from mlflow import MlflowClient

from hpo.objectives import TrialContext, TrialResult
from hpo.objectives.boston import objective as boston
from tests.conftest import tiny_boston

REASON = "hpo.failure_reason"


def _client() -> MlflowClient:
    # An absolute URI: MLflow caches stores by URI, and each test runs in its own folder.
    return MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")


def _runs_by_trial(study_name: str) -> dict[int, Any]:
    client = _client()
    experiment = client.get_experiment_by_name(study_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.role` = 'trial'", max_results=100)
    by_trial: dict[int, Any] = {}
    for run in runs:
        number = int(run.data.tags["optuna.trial_number"])
        assert number not in by_trial, f"trial {number} has two MLflow runs"
        by_trial[number] = run
    return by_trial


def _trials(study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage="sqlite:///hpo.db").trials


def test_diverging_optimizer_is_pruned_by_default_and_the_study_goes_on(cli: Any, write_study: Any) -> None:
    # SGD with lr=1e6 blows the training loss up to inf/NaN in the first epoch (real training, no
    # stand-in). With the default execution.nan_policy (prune) that trial ends PRUNED in Optuna and
    # KILLED in MLflow, with the reason on both sides; the trial with a sane lr completes and the
    # command succeeds. (nan_policy: fail is exercised by the next test.)
    state, status = "PRUNED", "KILLED"
    study = tiny_boston(
        n_trials=2,
        sampler={"type": "grid"},
        params={"lr": {"type": "categorical", "choices": [1e-3, 1e6]}},
        fixed={"epochs": 3, "hidden_layers": 1, "width": 8, "optimizer": "sgd", "batch_size": 64},
    )
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 0, result.output

    trials = {t.params["lr"]: t for t in _trials("tiny-boston")}
    assert trials[1e-3].state.name == "COMPLETE"
    diverged = trials[1e6]
    assert diverged.state.name == state
    assert "training loss became" in diverged.user_attrs[REASON] and "lower lr" in diverged.user_attrs[REASON]
    runs = _runs_by_trial("tiny-boston")
    run = runs[diverged.number]
    assert run.info.status == status
    assert run.data.tags["optuna.state"] == state
    assert run.data.tags[REASON] == diverged.user_attrs[REASON]
    assert runs[trials[1e-3].number].info.status == "FINISHED"


def _troublemaker(ctx: TrialContext) -> TrialResult:
    """The real Boston objective, except that width 16 runs out of GPU memory during its second epoch
    and width 24 finishes training with a NaN score."""
    width = int(ctx.hyperparameters["width"])
    if width == 16:
        report = ctx.report

        def out_of_memory(epoch: int, metrics: dict[str, float]) -> None:
            report(epoch, metrics)
            if epoch == 1:
                raise torch.cuda.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.78 GiB total capacity)"
                )

        ctx.report = out_of_memory  # type: ignore[method-assign]
    result = boston.train(ctx)
    assert isinstance(result, TrialResult)
    if width == 24:
        result.metrics = {**result.metrics, "val_rmse": math.nan}
    return result


# Boston's declaration (table, data, metrics) with another training function, named by the studies
# below as `tests.test_failures:troublemaker`: the way a user names an objective of their own.
troublemaker = dataclasses.replace(boston, train=_troublemaker, name="troublemaker")


def test_out_of_memory_diverging_and_nan_results_fail_one_trial_each(cli: Any, write_study: Any) -> None:
    # Six grid trials: one healthy, the others out of memory, diverging or scoring NaN. Each failure
    # is a FAIL trial with its own reason in Optuna and a FAILED MLflow run carrying the same reason
    # (and the epochs it logged before failing); the study runs all six and exits 0.
    study = tiny_boston(
        objective="tests.test_failures:troublemaker",
        n_trials=6,
        sampler={"type": "grid"},
        execution={"nan_policy": "fail", "max_consecutive_failures": 10},
        params={
            "lr": {"type": "categorical", "choices": [1e-3, 1e6]},
            "width": {"type": "categorical", "choices": [8, 16, 24]},
        },
        fixed={"epochs": 3, "hidden_layers": 1, "optimizer": "sgd", "batch_size": 64},
    )
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 0, result.output

    trials = _trials("tiny-boston")
    assert len(trials) == 6
    runs = _runs_by_trial("tiny-boston")
    client = _client()
    for trial in trials:
        lr, width = trial.params["lr"], trial.params["width"]
        run = runs[trial.number]
        if lr == 1e-3 and width == 8:
            assert trial.state.name == "COMPLETE" and run.info.status == "FINISHED"
            continue
        reason = trial.user_attrs[REASON]
        if lr == 1e6:
            assert "training loss became" in reason
        elif width == 16:
            assert reason.startswith("out of memory: CUDA out of memory") and "smaller batch_size" in reason
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_rmse")] == [0, 1]
        else:
            assert reason.startswith("non-finite objective value")
        assert trial.state.name == "FAIL"
        assert run.info.status == "FAILED"
        assert run.data.tags["optuna.state"] == "FAIL"
        assert run.data.tags[REASON] == reason


def _always_fails(ctx: TrialContext) -> TrialResult:
    raise RuntimeError("simulated failure: the feature file vanished")


always_fails = dataclasses.replace(boston, train=_always_fails, name="always_fails")


def test_a_study_whose_trials_all_fail_stops_after_max_consecutive_failures(cli: Any, write_study: Any) -> None:
    # Ten trials budgeted, every one fails: the run stops after three in a row with exit code 1 and
    # one line that says why and what to change, instead of burning the budget.
    study = tiny_boston(
        objective="tests.test_failures:always_fails", n_trials=10, execution={"max_consecutive_failures": 3}
    )
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 1
    lines = [
        line for line in result.stderr.splitlines() if line.startswith("hpo:")
    ]  # in-process, MLflow's own INFO lines show too
    assert len(lines) == 1, result.stderr
    assert "3 trials failed in a row" in lines[0]
    assert "simulated failure: the feature file vanished" in lines[0]
    assert "execution.max_consecutive_failures" in lines[0]

    trials = _trials("tiny-boston")
    assert [t.state.name for t in trials] == ["FAIL"] * 3
    assert all(t.user_attrs[REASON] == "RuntimeError: simulated failure: the feature file vanished" for t in trials)
    runs = _runs_by_trial("tiny-boston")
    assert sorted(runs) == [0, 1, 2]
    assert {r.info.status for r in runs.values()} == {"FAILED"}


def _fails_when_told(ctx: TrialContext) -> TrialResult | Any:
    if os.environ.get("HPO_TEST_TRIALS_FAIL"):
        raise RuntimeError("simulated failure: the disk filled up")
    return boston.train(ctx)


fails_when_told = dataclasses.replace(boston, train=_fails_when_told, name="fails_when_told")


def test_a_run_or_worker_whose_every_trial_failed_exits_1_even_when_earlier_trials_completed(
    cli: Any, write_study: Any, monkeypatch: Any
) -> None:
    # The contract's exit 1 ("no trial completed") is about the work asked for: a resumed run, or a
    # worker, whose trials all failed must tell the scheduler so, although the study holds a result.
    path = write_study(tiny_boston(objective="tests.test_failures:fails_when_told", n_trials=1))
    assert cli("run", path, "--quiet").exit_code == 0
    monkeypatch.setenv("HPO_TEST_TRIALS_FAIL", "1")
    resumed = cli("run", path, "--quiet", "--n-trials", "3")
    assert resumed.exit_code == 1
    assert "every trial of this run failed in study tiny-boston" in resumed.stderr

    assert cli("create", path, "--n-trials", "5").exit_code == 0
    worker = cli("worker", path, "--quiet")
    assert worker.exit_code == 1
    assert "every trial this worker ran failed (2)" in worker.stderr
    assert [t.state.name for t in _trials("tiny-boston")] == ["COMPLETE"] + ["FAIL"] * 4

    monkeypatch.delenv("HPO_TEST_TRIALS_FAIL")
    assert cli("worker", path, "--quiet").exit_code == 0  # the budget is used up: nothing to do is no failure
