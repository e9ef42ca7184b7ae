"""The airbench-style family end to end through the real CLI on tiny generated data: a trial with
whitening, warmup + linear decay, EMA, label smoothing, Nesterov SGD, flip + translate and flip TTA
completes; its validation score is the TTA score of the kept model; `hpo status` shows the device;
`hpo evaluate --tta` re-scores validation and test with test-time augmentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from hpo.config import DataConfig
from hpo.data import cifar10 as cifar10_data
from hpo.objectives import TTA_META_KEY, TrialContext
from hpo.objectives._checkpoint import predictions
from hpo.objectives.cifar10 import HYPERPARAMETERS
from hpo.objectives.cifar10 import _model as objective

AIRBENCH = {
    "model": "airbench",
    "width_scale": 0.0625,
    "whiten": True,
    "tta": "flip",
    "optimizer": "sgd",
    "nesterov": True,
    "momentum": 0.85,
    "lr_schedule": "linear",
    "lr_warmup_epochs": 0.5,
    "ema_decay": 0.9,
    "label_smoothing": 0.2,
    "batch_size": 16,
    "augment_flip": True,
    "augment_crop": 2,
    "epochs": 2,
    "early_stopping_patience": 0,
    "weight_decay": 1e-3,
}


def test_an_airbench_trial_runs_through_the_cli_and_evaluate_applies_tta(
    cli: Any, write_study: Any, tiny_cifar10: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_cifar10(train_per_class=12, test_per_class=2)
    study = {
        "name": "tiny-airbench",
        "objective": "cifar10",
        "seed": 0,
        "n_trials": 2,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "params": {"lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True}},
        "enqueue": [{"lr": 0.2}],
        "fixed": {k: v for k, v in AIRBENCH.items() if k != "lr"},
        "execution": {"precision": "bf16"},
        "evaluation": {"top_k": 2, "ensemble": "greedy", "tta": "flip_translate"},
    }
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="tiny-airbench", storage="sqlite:///hpo.db").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"] and trials[0].params["lr"] == 0.2

    status = cli("status", "tiny-airbench", "--json")
    rows = json.loads(status.stdout)
    assert all(row["device"].startswith("cpu (") and ", pid " in row["device"] for row in rows)

    # The study file's evaluation.tta replaces the flip the trials were validated with; --tta overrides the file.
    evaluated = cli("evaluate", "tiny-airbench")
    assert evaluated.exit_code == 0, evaluated.output
    assert "test-time augmentation flip_translate: recomputing the validation predictions" in evaluated.output
    # The registered ensemble's member files rebuild with the augmentation they were tested with.
    import mlflow

    from hpo.objectives._checkpoint import Checkpoint

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")  # undone after the test
    registered = Path(
        mlflow.artifacts.download_artifacts("models:/tiny-airbench-ensemble/1", dst_path=str(tmp_path / "registered"))
    )
    members = [model for path in sorted(registered.rglob("*.pt")) for model in Checkpoint.load_model(path).models()]
    assert members and all(getattr(model, "mode", None) == "flip_translate" for model in members)
    again = cli("evaluate", "tiny-airbench", "--force", "--tta", "flip")
    assert again.exit_code == 0, again.output
    assert "test-time augmentation flip: recomputing the validation predictions" in again.output


def test_the_tta_hook_replaces_the_mode_a_model_was_validated_with() -> None:
    # A model trained with flip TTA predicts, after the hook, exactly what the same network does with
    # flip_translate computed directly; a model trained without TTA gains it; the weights are the same objects.
    from hpo.models import Airbench
    from hpo.models.tta import TestTimeAugment, tta_logits

    torch.manual_seed(0)
    net = Airbench(HYPERPARAMETERS.resolve({**AIRBENCH, "lr": 0.2}), num_classes=10).eval()
    images = torch.randn(3, 3, 32, 32)
    for trained in (TestTimeAugment(net, "flip"), net):
        augmented = objective.test_time_augmentation(trained, "flip_translate").eval()
        assert isinstance(augmented, TestTimeAugment) and augmented.mode == "flip_translate"
        assert augmented.net is net
        with torch.no_grad():
            torch.testing.assert_close(augmented(images), tta_logits(net, images, "flip_translate"))
    # A model file whose meta names the tested augmentation rebuilds with it; without it, the trial's own.
    hp = HYPERPARAMETERS.resolve({**AIRBENCH, "lr": 0.2})
    assert objective.build_model(hp, {TTA_META_KEY: "flip_translate"}).mode == "flip_translate"
    assert objective.build_model(hp, {}).mode == "flip"


def test_an_unknown_evaluate_tta_is_refused(cli: Any, write_study: Any, tiny_cifar10: Any) -> None:
    tiny_cifar10(train_per_class=12, test_per_class=2)
    study = {
        "name": "tiny-cnn-tta",
        "objective": "cifar10",
        "seed": 0,
        "n_trials": 1,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "fixed": {"model": "cnn", "filters": 4, "conv_blocks": 2, "hidden_layers": 0, "epochs": 1, "batch_size": 16},
    }
    assert cli("run", write_study(study), "--quiet").exit_code == 0
    result = cli("evaluate", "tiny-cnn-tta", "--tta", "rotate")
    assert result.exit_code == 2
    assert "--tta: unknown test-time augmentation 'rotate'; accepted: none, flip, flip_translate" in result.output


def test_validation_is_scored_with_the_trials_tta_and_the_stem_is_whitened_from_training_images(
    tiny_cifar10: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trial's val_acc is the accuracy of the kept (EMA, best-epoch) model predicting with flip TTA, so
    # it equals what the evaluation hooks compute on the validation split; the whitening came from the
    # training rows only (the same filters as computed directly from them).
    tiny_cifar10(train_per_class=12, test_per_class=2)
    hp = HYPERPARAMETERS.resolve({**AIRBENCH, "lr": 0.2})
    result = objective.train(TrialContext(hp, data=DataConfig(), seed=3, metrics=["val_acc"], directions=["maximize"]))
    inputs, labels = objective.val_split(DataConfig(), result.meta)
    probabilities = predictions(objective, [result.models[0]], inputs, result.meta)
    assert result.metrics["val_acc"] == pytest.approx(float(np.mean(probabilities.argmax(1) == labels)))
    np.testing.assert_allclose(result.val_predictions, probabilities, atol=1e-5)

    from hpo.models.airbench import whitening_filters

    train_images = cifar10_data.load(DataConfig()).train.images
    expected = whitening_filters(objective.normalize(train_images, result.meta))[0]
    torch.testing.assert_close(result.models[0].net.stem.weight, expected, rtol=1e-4, atol=1e-4)
