"""Boston housing regression with an MLP: training a trial, and the hooks `hpo evaluate` uses.

Targets are standardized for training; every score and prediction is back in k$.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpo.data import boston as boston_data
from hpo.models import MLP
from hpo.objectives import Baseline, TrialContext, TrialResult
from hpo.objectives._scores import regression_metrics
from hpo.objectives.boston import BostonDataOptions
from hpo.training.loop import Task, count_parameters
from hpo.training.loop import train as fit


def build_model(hp: Mapping[str, Any], meta: Mapping[str, Any]) -> nn.Module:
    return MLP.from_hyperparameters(dict(hp), in_features=int(meta["in_features"]), out_features=1)


def make_task(data: boston_data.BostonData, device: torch.device) -> tuple[Task, float, float]:
    """Targets are standardized for training with the training rows' mean and std; scores are computed back in k$."""
    y_mean, y_std = float(data.train.y.mean()), float(data.train.y.std() or 1.0)
    to = lambda a: torch.as_tensor(a, device=device)
    y_train = to((data.train.y - y_mean) / y_std).unsqueeze(1)
    y_val = to((data.val.y - y_mean) / y_std).unsqueeze(1)

    def score(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        predicted = outputs.squeeze(1).cpu().numpy() * y_std + y_mean
        return regression_metrics(predicted, data.val.y, prefix="val")

    task = Task(
        x_train=to(data.train.x),
        y_train=y_train,
        x_val=to(data.val.x),
        y_val=y_val,
        loss_fn=nn.functional.mse_loss,
        score=score,
    )
    return task, y_mean, y_std


def test_split(data: BostonDataOptions, meta: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """Model-ready test inputs and targets (k$), scaled with the training statistics in `meta`.

    Reads the test rows: only `hpo evaluate` may call this.
    """
    split = boston_data.load_test(
        data, x_mean=np.asarray(meta["x_mean"], np.float32), x_std=np.asarray(meta["x_std"], np.float32)
    )
    return torch.as_tensor(split.x), split.y


def to_predictions(outputs: torch.Tensor, meta: Mapping[str, Any]) -> np.ndarray:
    """Raw model outputs -> predictions in k$ (what is saved, ensembled and scored)."""
    return outputs.squeeze(1).detach().cpu().numpy() * float(meta["y_std"]) + float(meta["y_mean"])


def read_inputs(paths: Sequence[Path], meta: Mapping[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """CSV rows of raw feature values (a header naming the features, or the model's features in order),
    for `hpo predict`.

    They are standardized with the training statistics in `meta`, as the model's inputs were; predictions
    come back in k$.
    """
    read = [boston_data.read_rows(path, list(meta["features"])) for path in paths]
    x = np.concatenate([values for values, _ in read])
    scaled = (x - np.asarray(meta["x_mean"], np.float32)) / np.asarray(meta["x_std"], np.float32)
    return torch.as_tensor(scaled.astype(np.float32)), [label for _, labels in read for label in labels]


def val_split(data: BostonDataOptions, meta: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """Model-ready validation inputs and targets (k$): ensemble selection and report pictures use them."""
    split = boston_data.load(data).val
    return torch.as_tensor(split.x), split.y


def retrain_task(data: BostonDataOptions, meta: Mapping[str, Any], device: torch.device) -> tuple[Task, dict[str, Any]]:
    """Training on train+validation rows for `hpo evaluate --retrain-seeds`, and the meta that goes with it.

    The input scaling of `meta` is kept (so test inputs stay comparable across members); the target
    statistics are refitted on the rows now trained on. Validation is still scored, but it is training data.
    """
    loaded = boston_data.load(data)
    both = (
        loaded.train
        if data.cross_validated
        else boston_data.Split(
            np.concatenate([loaded.train.x, loaded.val.x]), np.concatenate([loaded.train.y, loaded.val.y])
        )
    )
    task, y_mean, y_std = make_task(
        boston_data.BostonData(
            train=both, val=loaded.val, features=loaded.features, x_mean=loaded.x_mean, x_std=loaded.x_std
        ),
        device,
    )
    return task, {**meta, "y_mean": y_mean, "y_std": y_std}


def baselines(data: BostonDataOptions, *, with_validation: bool) -> list[Baseline]:
    """The evaluation hook fitting the classical models (:func:`hpo.objectives.boston._baselines.baselines`),
    imported on call: scikit-learn takes about a second to import, which a trial's worker never needs."""
    from hpo.objectives.boston._baselines import baselines as fit_baselines

    return fit_baselines(data, with_validation=with_validation)


def train(ctx: TrialContext) -> TrialResult:
    """Train one MLP regressor on the training rows; score it on the validation rows.

    One fold of cross-validation standardizes inputs and targets with the statistics of the fold's own
    training rows (its validation rows stay unseen), trains, and then rewrites the model to take the
    inputs and give the outputs in the scale of all non-test rows (:func:`rescale_linear_ends`), so that
    every fold's model shares one `meta` and the checkpoint can average them on the test rows.
    """
    if ctx.data.cross_validated and ctx.fold is None:
        # under CV `load` returns every non-test row as both training and validation rows
        raise ValueError(
            f"data.cv_folds is {ctx.data.cv_folds} but this call has no fold: run it through hpo, or set cv_folds: 1"
        )
    data = boston_data.load(ctx.data)  # type: ignore[arg-type]  # data: is BostonDataOptions
    meta = {
        "in_features": len(data.features),
        "features": data.features,
        "x_mean": data.x_mean.tolist(),
        "x_std": data.x_std.tolist(),
        "y_mean": float(data.train.y.mean()),
        "y_std": float(data.train.y.std() or 1.0),
    }
    fold_scale: tuple[np.ndarray, np.ndarray] | None = None
    if ctx.fold is not None:
        rows = data.train
        fold_x, fold_y = rows.x[ctx.fold.train], rows.y[ctx.fold.train]
        fold_scale = (fold_x.astype(np.float64).mean(axis=0), fold_x.astype(np.float64).std(axis=0))
        fold_scale[1][~(fold_scale[1] > 0)] = 1.0
        rescale = lambda x: ((x - fold_scale[0]) / fold_scale[1]).astype(np.float32)
        data = replace(
            data,
            train=boston_data.Split(rescale(fold_x), fold_y),
            val=boston_data.Split(rescale(rows.x[ctx.fold.val]), rows.y[ctx.fold.val]),
        )
    task, y_mean, y_std = make_task(data, ctx.device)
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.hyperparameters, meta).to(ctx.device)
    monitor, maximize = ctx.monitor
    result = fit(
        model,
        task,
        dict(ctx.hyperparameters),
        monitor=monitor,
        maximize=maximize,
        device=ctx.device,
        seed=ctx.seed,
        on_epoch=ctx.report,
    )
    n_params = count_parameters(model)
    trained_scale = {"y_mean": y_mean, "y_std": y_std}
    predictions = to_predictions(result.val_outputs, trained_scale) if result.val_outputs is not None else np.empty(0)
    trained = result.model
    if fold_scale is not None:
        trained = rescale_linear_ends(
            trained,
            x_shift=fold_scale[0],
            x_scale=fold_scale[1],
            y_from=(y_mean, y_std),
            y_to=(meta["y_mean"], meta["y_std"]),
        )
    else:
        meta.update(trained_scale)
    metrics = {**result.best_metrics, "n_params": float(n_params), "train_seconds": result.train_seconds}
    return TrialResult.of(metrics, trained, meta=meta, val_predictions=predictions, best_epoch=result.best_epoch)


@torch.no_grad()
def rescale_linear_ends(
    model: nn.Module,
    *,
    x_shift: np.ndarray,
    x_scale: np.ndarray,
    y_from: tuple[float, float],
    y_to: tuple[float, float],
) -> nn.Module:
    """The same function, taking inputs ``x`` where it was trained on ``(x - x_shift) / x_scale`` and
    giving outputs standardized by `y_to` (mean, std) where it gave them standardized by `y_from`.

    Both maps are affine, so they fold into the first and the last Linear layer (a Linear followed by
    BatchNorm has no bias: its input shift moves into the BatchNorm's running mean, exact in eval mode).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    first, last = linears[0], linears[-1]
    as_tensor = lambda a: torch.as_tensor(a, dtype=first.weight.dtype, device=first.weight.device)
    first.weight.mul_(as_tensor(1.0 / x_scale))  # W' = W / s
    offset = first.weight @ as_tensor(x_shift)  # W' @ shift: W((x - shift) / s) = W'x - offset
    after_first = _follower(model, first)
    if first.bias is not None:
        first.bias.sub_(offset)
    elif isinstance(after_first, nn.modules.batchnorm._BatchNorm) and after_first.running_mean is not None:
        after_first.running_mean.add_(offset)
    else:
        raise ValueError(
            "the first Linear layer has no bias and no BatchNorm after it: the input shift cannot be folded in"
        )
    (mean_from, std_from), (mean_to, std_to) = y_from, y_to
    last.weight.mul_(std_from / std_to)
    assert last.bias is not None  # the output layer always has one
    last.bias.mul_(std_from / std_to).add_((mean_from - mean_to) / std_to)
    return model


def _follower(model: nn.Module, layer: nn.Module) -> nn.Module | None:
    """The module right after `layer` in the model's flat order of leaf modules."""
    leaves = [m for m in model.modules() if not list(m.children())]
    at = next(i for i, m in enumerate(leaves) if m is layer)
    return leaves[at + 1] if at + 1 < len(leaves) else None
