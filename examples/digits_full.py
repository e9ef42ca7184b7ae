"""A full objective: digits classified by a small CNN trained with hpo's own training loop, with what
`hpo evaluate` needs to test the best trials once and ensemble them.

- a hyperparameter table: hpo's TRAINING fragment (optimizer, lr, schedule, batch size, epochs, early
  stopping, ...) with defaults of its own, plus two rows for the network;
- data options of its own: `data: {test_fraction: 0.2}` beside the generic val_fraction and split_seed;
- evaluation hooks: rebuild a model, the validation and test splits, outputs to probabilities.
The function returns a TrialResult with the trained model, which hpo keeps as the trial's checkpoint.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from pydantic import Field
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F

from hpo.objectives import (
    TRAINING,
    DataConfig,
    Hyperparameter,
    HyperparameterTable,
    TrialContext,
    TrialResult,
    integer,
    number,
    objective,
)
from hpo.training.loop import Task, train


class DigitsData(DataConfig):
    test_fraction: float = Field(
        default=0.2, gt=0, lt=0.5, description="share of the images held out for `hpo evaluate`"
    )


HYPERPARAMETERS = TRAINING.with_defaults(epochs=8, batch_size=64, early_stopping_patience=3) + HyperparameterTable(
    Hyperparameter("channels", integer(ge=1, le=64), 16, "convolution channels"),
    Hyperparameter("dropout", number(ge=0, lt=1), 0.1, "dropout before the classifier"),
)


def _splits(data: DigitsData) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Seeded train/validation/test splits of the 1,797 images: the test images first, never trained on."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    rest_x, test_x, rest_y, test_y = train_test_split(
        x, y, test_size=data.test_fraction, random_state=data.split_seed, stratify=y
    )
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=data.val_fraction, random_state=data.split_seed, stratify=rest_y
    )
    return {"train": (train_x, train_y), "val": (val_x, val_y), "test": (test_x, test_y)}


class DigitsEvaluation:
    """The evaluation hooks: `hpo evaluate` rebuilds checkpoints and reads the test split through these."""

    def build_model(self, hyperparameters: Mapping[str, Any], meta: Mapping[str, Any]) -> nn.Module:
        channels = int(hyperparameters["channels"])
        return nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(float(hyperparameters["dropout"])),
            nn.Linear(channels * 16, 10),
        )

    def val_split(self, data: DigitsData, meta: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
        x, y = _splits(data)["val"]
        return x, y.numpy()

    def test_split(self, data: DigitsData, meta: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
        x, y = _splits(data)["test"]
        return x, y.numpy()

    def to_predictions(self, outputs: torch.Tensor, meta: Mapping[str, Any]) -> np.ndarray:
        return torch.softmax(outputs.detach().float(), dim=1).cpu().numpy()


EVALUATION = DigitsEvaluation()


@objective(
    metrics={"val_acc": "maximize", "val_loss": "minimize"},
    hyperparameters=HYPERPARAMETERS,
    data_options=DigitsData,
    evaluation=EVALUATION,
)
def digits(ctx: TrialContext) -> TrialResult:
    """Train on the training images with hpo's loop (early stopping, schedules, pruning); score on validation."""
    splits = _splits(ctx.data)  # type: ignore[arg-type]
    (x_train, y_train), (x_val, y_val) = splits["train"], splits["val"]
    task = Task(
        x_train=x_train.to(ctx.device),
        y_train=y_train.to(ctx.device),
        x_val=x_val.to(ctx.device),
        y_val=y_val.to(ctx.device),
        loss_fn=F.cross_entropy,
        score=lambda outputs, targets: {"val_acc": float((outputs.argmax(1) == targets).float().mean())},
    )
    torch.manual_seed(ctx.seed)
    model = EVALUATION.build_model(ctx.hyperparameters, {}).to(ctx.device)
    monitor, maximize = ctx.monitor
    fit = train(
        model,
        task,
        dict(ctx.hyperparameters),
        monitor=monitor,
        maximize=maximize,
        device=ctx.device,
        seed=ctx.seed,
        on_epoch=ctx.report,
    )
    predictions = EVALUATION.to_predictions(fit.val_outputs, {})
    return TrialResult.of(fit.best_metrics, fit.model, val_predictions=predictions, best_epoch=fit.best_epoch)
