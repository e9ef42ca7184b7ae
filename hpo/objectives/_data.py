"""The study file's `data:` mapping: the options every objective has, which an objective may extend.

An objective with data options of its own (a CSV path, features to leave out) declares a subclass
as its `data_options`; the study file keeps one flat `data:` mapping, and a trial's
``ctx.data`` is an instance of that subclass.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds in [0, 2**32 - 1]
MAX_FOLDS = 20  # beyond this, K-fold costs K trainings per trial for no measurable gain


class DataConfig(BaseModel):
    """Splitting and sub-sampling options every objective understands (and may ignore)."""

    # Unknown keys are typos; .inf and .nan are always mistakes.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    val_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="share of the data held out for validation (Boston: of all rows, a 70/10/20 split with "
        "test_fraction 0.2; CIFAR-10: of the 50,000 training images)",
    )
    subset: float = Field(
        default=1.0, gt=0, le=1, description="share of the training rows a trial trains on (quick studies)"
    )
    split_seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="seed of the test/validation split, the same for every study"
    )
    cv_folds: StrictInt = Field(
        default=1,
        ge=1,
        le=MAX_FOLDS,
        description="K >= 2 scores a trial by K-fold cross-validation of the non-test rows "
        "(folds seeded by split_seed); 1 = one validation split",
    )

    @property
    def cross_validated(self) -> bool:
        """Whether trials are scored by cross-validation (``cv_folds`` of 2 or more)."""
        return self.cv_folds > 1


__all__ = ["MAX_FOLDS", "MAX_SEED", "DataConfig"]
