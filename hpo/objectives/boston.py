"""Boston housing regression with an MLP: the objective, and the builders `hpo evaluate` reuses."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hpo.config import DataConfig, StudyConfig
from hpo.data import boston as boston_data
from hpo.models import MLP
from hpo.objectives._context import TrialContext, TrialOutcome
from hpo.training.loop import Task, count_parameters, train


def build_model(hp: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    return MLP.from_hyperparameters(hp, in_features=int(meta["in_features"]), out_features=1)


def regression_metrics(predicted: np.ndarray, actual: np.ndarray, *, prefix: str) -> dict[str, float]:
    error = predicted - actual
    mse = float(np.mean(error**2))
    total = float(np.sum((actual - actual.mean()) ** 2)) or 1.0
    return {
        f"{prefix}_mse": mse,
        f"{prefix}_rmse": mse**0.5,
        f"{prefix}_mae": float(np.mean(np.abs(error))),
        f"{prefix}_r2": 1.0 - float(np.sum(error**2)) / total,
    }


def make_task(data: boston_data.BostonData, device: torch.device) -> tuple[Task, float, float]:
    """Targets are standardized for training; scores are computed back in k$."""
    y_mean, y_std = float(data.train.y.mean()), float(data.train.y.std() or 1.0)
    to = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    y_train = to((data.train.y - y_mean) / y_std).unsqueeze(1)
    y_val = to((data.val.y - y_mean) / y_std).unsqueeze(1)

    def score(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        predicted = outputs.squeeze(1).cpu().numpy() * y_std + y_mean
        return regression_metrics(predicted, data.val.y, prefix="val")

    task = Task(
        x_train=to(data.train.x), y_train=y_train, x_val=to(data.val.x), y_val=y_val,
        loss_fn=nn.functional.mse_loss, score=score,
    )  # fmt: skip
    return task, y_mean, y_std


def test_split(data: DataConfig, meta: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """Model-ready test inputs and targets (k$), scaled with the training statistics in `meta`.

    Reads the test rows: only `hpo evaluate` may call this.
    """
    split = boston_data.load_test(data, x_mean=np.asarray(meta["x_mean"], np.float32), x_std=np.asarray(meta["x_std"], np.float32))
    return torch.as_tensor(split.x), split.y


def to_predictions(outputs: torch.Tensor, meta: dict[str, Any]) -> np.ndarray:
    """Raw model outputs -> predictions in k$ (what is saved, ensembled and scored)."""
    return outputs.squeeze(1).detach().cpu().numpy() * float(meta["y_std"]) + float(meta["y_mean"])


def val_split(data: DataConfig, meta: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """Model-ready validation inputs and targets (k$): ensemble selection and report pictures use them."""
    split = boston_data.load(data).val
    return torch.as_tensor(split.x), split.y


def full_task(data: DataConfig, meta: dict[str, Any], device: torch.device) -> tuple[Task, dict[str, Any]]:
    """Training on train+validation rows for `hpo evaluate --retrain-seeds`, and the meta that goes with it.

    The input scaling of `meta` is kept (so test inputs stay comparable across members); the target
    statistics are refitted on the rows now trained on. Validation is still scored, but it is training data.
    """
    loaded = boston_data.load(data)
    both = boston_data.Split(np.concatenate([loaded.train.x, loaded.val.x]), np.concatenate([loaded.train.y, loaded.val.y]))
    task, y_mean, y_std = make_task(boston_data.BostonData(train=both, val=loaded.val, features=loaded.features, x_mean=loaded.x_mean, x_std=loaded.x_std), device)
    return task, {**meta, "y_mean": y_mean, "y_std": y_std}


def preflight(config: StudyConfig) -> None:
    """Fail before anything is written if the CSV is missing, unreadable or too small to split."""
    boston_data.check(config.data)


def data_fingerprint(config: StudyConfig) -> str:
    """What the study's trials were scored on, stored with the study: `hpo evaluate` refuses other data."""
    return boston_data.fingerprint(config.data)


def objective(ctx: TrialContext) -> TrialOutcome:
    """Train one MLP regressor on the training rows; score it on the validation rows."""
    data = boston_data.load(ctx.data)
    task, y_mean, y_std = make_task(data, ctx.device)
    meta = {
        "in_features": len(data.features),
        "features": data.features,
        "x_mean": data.x_mean.tolist(),
        "x_std": data.x_std.tolist(),
        "y_mean": y_mean,
        "y_std": y_std,
    }
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.hyperparameters, meta).to(ctx.device)
    monitor, maximize = ctx.monitor
    fit = train(model, task, ctx.hyperparameters, monitor=monitor, maximize=maximize, device=ctx.device, seed=ctx.seed, on_epoch=ctx.on_epoch)
    n_params = count_parameters(model)
    predictions = to_predictions(fit.val_outputs, meta) if fit.val_outputs is not None else np.empty(0)
    metrics = {**fit.best_metrics, "n_params": float(n_params), "train_seconds": fit.train_seconds}
    return TrialOutcome(metrics=metrics, fit=fit, n_params=n_params, model=fit.model, val_predictions=predictions, model_meta=meta)
