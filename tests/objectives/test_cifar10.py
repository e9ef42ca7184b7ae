"""The CIFAR-10 objective through the real CLI on tiny generated data: MLflow metrics, test split never
read, multi-objective with NSGA-II, the evaluation builders, and the missing-data error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient

from hpo.config import DataConfig
from hpo.data import TEST_SPLIT_READS
from hpo.objectives import TrialContext, load_objective
from hpo.objectives.cifar10 import HYPERPARAMETERS
from hpo.objectives.cifar10 import _model as objective
from hpo.training.loop import predict


def tiny_cifar10_study(**overrides: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": "tiny-cifar10",
        "objective": "cifar10",
        "seed": 0,
        "n_trials": 2,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "data": {"subset": 0.5},
        "params": {
            "model": {"type": "categorical", "choices": ["cnn", "mlp"]},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
        "fixed": {
            "epochs": 2,
            "batch_size": 16,
            "filters": 4,
            "conv_blocks": 2,
            "hidden_layers": 1,
            "width": 8,
            "batch_norm": True,
            "augment_flip": True,
            "augment_crop": 2,
            "augment_cutout": 4,
            "label_smoothing": 0.1,
        },
    }
    study.update(overrides)
    return study


def test_study_logs_image_metrics_and_never_reads_the_test_split(
    cli: Any, write_study: Any, tiny_cifar10: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CIFAR-10 study runs end to end on the cached data: every trial completes with per-epoch
    # train/val loss and accuracy, lr, timings and throughput in MLflow, n_params as a summary metric,
    # and the official test images are never read.
    tiny_cifar10(train_per_class=12, test_per_class=2)
    monkeypatch.setitem(TEST_SPLIT_READS, "cifar10", 0)  # other tests in this process may have read it
    result = cli("run", write_study(tiny_cifar10_study()), "--quiet")
    assert result.exit_code == 0, result.output
    assert TEST_SPLIT_READS["cifar10"] == 0

    trials = optuna.load_study(study_name="tiny-cifar10", storage="sqlite:///hpo.db").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(0.0 <= t.value <= 1.0 for t in trials)
    client = MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        for name in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "images_per_second"):
            history = client.get_metric_history(run.info.run_id, name)
            assert [m.step for m in history] == [0, 1], name
        assert run.data.metrics["n_params"] > 0
        assert run.data.params["model"] == trial.params["model"]


def test_multi_objective_accuracy_against_size_with_nsga2(
    cli: Any, write_study: Any, tiny_cifar10: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # [val_acc, n_params] with NSGA-II: each trial gets both values (n_params exactly the model's size)
    # and the Pareto front is non-empty.
    tiny_cifar10(train_per_class=12, test_per_class=2)
    monkeypatch.setitem(TEST_SPLIT_READS, "cifar10", 0)
    study = tiny_cifar10_study(
        name="tiny-cifar10-pareto",
        metric=["val_acc", "n_params"],
        direction=["maximize", "minimize"],
        sampler={"type": "nsga2", "population_size": 2},
        n_trials=3,
        params={"filters": {"type": "int", "low": 2, "high": 8}},
        fixed={"epochs": 1, "batch_size": 32, "conv_blocks": 2, "hidden_layers": 0},
    )
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 0, result.output
    loaded = optuna.load_study(study_name="tiny-cifar10-pareto", storage="sqlite:///hpo.db")
    for trial in loaded.get_trials():
        hp = HYPERPARAMETERS.resolve({**study["fixed"], **trial.params})
        assert trial.values[1] == sum(p.numel() for p in objective.build_model(hp, {}).parameters())
    assert loaded.best_trials
    assert TEST_SPLIT_READS["cifar10"] == 0


def test_evaluation_builders_rebuild_score_and_read_test_once(tiny_cifar10: Any) -> None:
    # The hooks `hpo evaluate` uses: a trained model rebuilt from (hyperparameters, meta) gives the
    # same outputs; predictions are class probabilities; test_split is the one counted test reader.
    arrays = tiny_cifar10(train_per_class=12, test_per_class=3)
    declared = load_objective("cifar10").objective
    assert declared.hooks is objective and declared.preflight is not None
    hp = HYPERPARAMETERS.resolve(
        {"model": "cnn", "epochs": 1, "batch_size": 32, "filters": 4, "conv_blocks": 2, "hidden_layers": 0}
    )

    epochs: list[dict[str, float]] = []
    ctx = TrialContext(
        hp,
        metrics=["val_acc"],
        directions=["maximize"],
        seed=3,
        device="cpu",
        report=lambda epoch, metrics: epochs.append(metrics),
        precision="fp32",  # the rebuilt model infers in fp32; `auto` may train in bf16 on a CPU with its kernels
    )
    result = declared.train(ctx)
    assert result.val_predictions.shape == (10, 10)  # a tenth of each class validates
    np.testing.assert_allclose(result.val_predictions.sum(1), 1.0, rtol=1e-5)
    (model,) = result.models
    assert result.metrics["n_params"] == sum(p.numel() for p in model.parameters()) and set(epochs[0]) >= {
        "train_acc",
        "val_acc",
        "images_per_second",
    }

    rebuilt = objective.build_model(hp, result.meta)
    rebuilt.load_state_dict(model.state_dict())
    val_inputs, val_targets = objective.val_split(DataConfig(), result.meta)
    np.testing.assert_allclose(
        objective.to_predictions(predict(rebuilt, val_inputs), result.meta), result.val_predictions, atol=1e-5
    )
    assert val_targets.shape == (10,)

    before = TEST_SPLIT_READS["cifar10"]
    test_inputs, test_targets = objective.test_split(DataConfig(), result.meta)
    assert TEST_SPLIT_READS["cifar10"] == before + 1
    assert test_inputs.dtype == torch.float32 and tuple(test_inputs.shape) == (30, 3, 32, 32)
    np.testing.assert_array_equal(test_targets, arrays["test"][1])

    task, meta = objective.retrain_task(DataConfig(), result.meta, torch.device("cpu"))
    assert task.x_train.shape[0] == 120 and meta is result.meta


def test_onecycle_schedule_covers_a_partial_last_batch(tiny_cifar10: Any) -> None:
    # 110 training images in batches of 32 make 4 optimizer steps per epoch (the last one of 14); the
    # one-cycle schedule must be sized for exactly that, or it raises after the last step.
    tiny_cifar10(train_per_class=12, test_per_class=1)
    hp = HYPERPARAMETERS.resolve(
        {
            "model": "mlp",
            "width": 8,
            "hidden_layers": 1,
            "epochs": 2,
            "batch_size": 32,
            "lr_schedule": "onecycle",
            "optimizer": "sgd",
        }
    )
    epochs: list[int] = []
    ctx = TrialContext(
        hp,
        metrics=["val_acc"],
        directions=["maximize"],
        device="cpu",
        report=lambda epoch, metrics: epochs.append(epoch),
    )
    objective.train(ctx)
    assert epochs == [0, 1]


def test_missing_data_fails_at_once_with_the_fix_and_writes_nothing(cli: Any, write_study: Any, tmp_path: Path) -> None:
    # No CIFAR-10 in HPO_DATA_DIR: exit 2 before any storage or tracking file exists, naming the command.
    result = cli("run", write_study(tiny_cifar10_study()))
    assert result.exit_code == 2
    assert "hpo data import cifar10" in result.stderr
    assert not (tmp_path / "hpo.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_study_stored_by_an_earlier_hpo_loads_again() -> None:
    # Before objectives had data options of their own, every stored cifar10 study listed Boston's data
    # keys with their defaults: such a study must load (for evaluate, report, workers); set to anything
    # else they are refused, naming why.
    from hpo.config import parse_study
    from hpo.errors import UsageError

    stored = {
        "name": "old",
        "objective": "cifar10",
        "data": {
            "val_fraction": 0.1,
            "test_fraction": 0.2,
            "subset": 1.0,
            "split_seed": 0,
            "drop_features": [],
            "path": None,
        },
    }
    assert parse_study(stored).resolved()["data"] == {
        "val_fraction": 0.1,
        "subset": 1.0,
        "split_seed": 0,
        "cv_folds": 1,
    }
    with pytest.raises(UsageError, match=re.escape("data.drop_features: not used by objective cifar10")):
        parse_study({**stored, "data": {**stored["data"], "drop_features": ["B"]}})
