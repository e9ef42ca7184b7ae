"""Boston housing regression with an MLP: the declaration (no torch; the training code is in ``._model``).

The data ships with hpo. Feature ``B`` encodes the share of Black residents of a town; a study may
leave features out (``data: {drop_features: [B]}``), as the shipped ``boston-mlp`` study does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, StrictInt, field_validator, model_validator

from hpo.objectives import (
    MLP,
    TRAINING,
    DataConfig,
    Hyperparameter,
    HyperparameterTable,
    Objective,
    TrialContext,
    TrialResult,
    check_batch_statistics,
    check_schedule,
    choice,
)
from hpo.objectives._data import MAX_FOLDS

if TYPE_CHECKING:
    from hpo.config import StudyConfig

FEATURES: tuple[str, ...] = (
    "CRIM",
    "ZN",
    "INDUS",
    "CHAS",
    "NOX",
    "RM",
    "AGE",
    "DIS",
    "RAD",
    "TAX",
    "PTRATIO",
    "B",
    "LSTAT",
)
SHIPPED_CSV = "hpo/data/boston_house_prices.csv"


class BostonDataOptions(DataConfig):
    """Boston's own `data:` keys, beside the generic ones."""

    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="share of the rows held out for `hpo evaluate` (seeded by split_seed)"
    )
    drop_features: list[str] = Field(default_factory=list, description="columns to leave out, e.g. [B]")
    path: str | None = Field(default=None, description="a CSV with the same columns to use instead of the shipped one")
    # 506 rows: a 10% validation split is 51 houses, too few to rank trials by; 5 folds score each on all.
    cv_folds: StrictInt = Field(
        default=5, ge=1, le=MAX_FOLDS, description=DataConfig.model_fields["cv_folds"].description
    )

    @field_validator("drop_features")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        for feature in value:
            if feature not in FEATURES:
                raise ValueError(f"unknown feature {feature!r}; accepted: {', '.join(FEATURES)}")
        return value

    @model_validator(mode="after")
    def _rows_left_for_training(self) -> BostonDataOptions:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave rows for training (sum below 1)")
        return self


# What the training loop logs, in what unit: the network trains on the standardized target (so both
# losses are MSEs of standardized prices; train_loss also holds the L1 term when l1 > 0), while the
# validation scores are computed back in thousands of dollars.
UNITS = {
    "train_loss": "standardized MSE",
    "val_loss": "standardized MSE",
    "val_mse": "k$²",
    "val_rmse": "k$",
    "val_mae": "k$",
    "epoch_seconds": "s",
    "train_seconds": "s",
    "samples_per_second": "rows/s",
}

HYPERPARAMETERS = (
    HyperparameterTable(Hyperparameter("model", choice("mlp"), "mlp", "the network (model family)"))
    + MLP
    + TRAINING.with_defaults(batch_size=32, epochs=100, early_stopping_patience=15)
)


def train(ctx: TrialContext) -> TrialResult:
    """Train one MLP regressor on the training rows; score it on the validation rows (k$)."""
    from hpo.objectives.boston import _model

    return _model.train(ctx)


def validate(config: StudyConfig) -> None:
    """What the table cannot say: batch norm needs batches of two or more; exponential decay needs its own lr_gamma."""
    check_batch_statistics(config)
    check_schedule(config)


def preflight(config: StudyConfig) -> None:
    """Fail before anything is written if the CSV is missing, unreadable or too small to split."""
    from hpo.data import boston as boston_data

    boston_data.check(config.data)  # type: ignore[arg-type]  # data: is BostonDataOptions


def data_fingerprint(config: StudyConfig) -> str:
    """What the study's trials were scored on, stored with the study: `hpo evaluate` refuses other data."""
    from hpo.data import boston as boston_data

    return boston_data.fingerprint(config.data)  # type: ignore[arg-type]  # data: is BostonDataOptions


def cv_rows(data: DataConfig) -> int:
    """The non-test rows cross-validation splits (a count: regression folds are not stratified)."""
    from hpo.data import boston as boston_data

    return boston_data.cv_rows(data)  # type: ignore[arg-type]  # data: is BostonDataOptions


class _ShippedData:
    """The CSV inside the package: nothing to fetch or import."""

    name = "boston"

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "cached": True,
            "path": f"shipped with hpo ({SHIPPED_CSV})",
            "summary": f"shipped with hpo ({SHIPPED_CSV})",
        }


objective = Objective(
    train,
    name="boston",
    metrics={
        "val_rmse": "minimize",
        "val_mse": "minimize",
        "val_mae": "minimize",
        "val_r2": "maximize",
        "val_loss": "minimize",
        "n_params": "minimize",
    },
    default_metric="val_rmse",
    units=UNITS,
    hyperparameters=HYPERPARAMETERS,
    data_options=BostonDataOptions,
    evaluation="hpo.objectives.boston._model",
    validate=validate,
    preflight=preflight,
    data_fingerprint=data_fingerprint,
    cv_rows=cv_rows,
    datasets=(_ShippedData(),),
    description="Boston housing prices (k$) from 13 features, an MLP regressor",
)

__all__ = ["FEATURES", "HYPERPARAMETERS", "UNITS", "BostonDataOptions", "objective"]
