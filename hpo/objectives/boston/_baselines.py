"""Classical models beside Boston's networks: the yardsticks in the evaluation table, and candidates the
greedy ensemble may pick.

Two kinds. The *yardsticks* are scikit-learn at its defaults (linear regression, a random forest,
gradient boosting): what a network must beat to earn its complexity, shown alone and never tuned to the
test rows. The *ensemble library* adds models that err differently from boosted trees and from the
networks on a few hundred rows, because that is what a greedy blend gains from: prices are skewed, so they
model log prices, and the kernel models see skewed non-negative features (crime rate, share of lower-status
residents, distances) on a log scale, which straightens their relation to price. Which features are
skewed is read off the rows each model is fitted on (:class:`LogSkewed`), not written down per column, so a
user's CSV with other columns gets the same treatment. Every candidate is cross-validated on the trials'
own folds, so ensemble selection weighs its out-of-fold predictions beside the networks'.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from hpo.data import boston as boston_data
from hpo.objectives import Baseline, make_folds
from hpo.objectives.boston import BostonDataOptions

SKEW_THRESHOLD = 0.75  # a non-negative feature with a sample skewness above this is modelled on a log scale


class LogSkewed(TransformerMixin, BaseEstimator):
    """``log1p`` of the skewed non-negative features, in raw units; the other features pass through.

    The inputs arrive standardized (``x = (raw - shift) / scale``, hpo's scaling of the networks'
    inputs); `shift` and `scale` undo that, so "non-negative" and the logarithm refer to the raw values.
    Which columns are skewed is decided by ``fit`` on the rows it is given (a fold's training rows under
    cross-validation).
    """

    def __init__(self, shift: np.ndarray, scale: np.ndarray, threshold: float = SKEW_THRESHOLD) -> None:
        self.shift = shift
        self.scale = scale
        self.threshold = threshold

    def _raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) * np.asarray(self.scale, np.float64) + np.asarray(self.shift, np.float64)

    def fit(self, x: np.ndarray, y: Any = None) -> LogSkewed:
        raw = self._raw(x)
        centered = raw - raw.mean(axis=0)
        spread = raw.std(axis=0)
        skewness = np.where(spread > 0, (centered**3).mean(axis=0) / np.where(spread > 0, spread, 1.0) ** 3, 0.0)
        self.columns_ = np.flatnonzero((raw.min(axis=0) >= 0) & (skewness > self.threshold))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        raw = self._raw(x)
        raw[:, self.columns_] = np.log1p(np.maximum(raw[:, self.columns_], 0.0))  # a test row below 0: floor
        return raw


def baselines(data: BostonDataOptions, *, with_validation: bool) -> list[Baseline]:
    """The yardsticks and the ensemble library, fitted on the networks' training rows (train+validation
    when the networks were retrained on both; every non-test row under cross-validation).

    With cross-validation each model's validation predictions are out of fold on the trials' own folds;
    with one validation split they are its predictions of the validation rows (none when those rows
    were trained on).
    """
    from sklearn.base import clone
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    loaded = boston_data.load(data)
    x, y = loaded.train.x, loaded.train.y
    if with_validation and not data.cross_validated:
        x, y = np.concatenate([x, loaded.val.x]), np.concatenate([y, loaded.val.y])
    log_features = lambda: LogSkewed(loaded.x_mean, loaded.x_std)
    features = x.shape[1]
    kernel = ConstantKernel() * RBF(length_scale=np.full(features, 3.0)) + WhiteKernel(0.05)  # one scale per feature
    candidates = [
        # the yardsticks: scikit-learn's defaults
        ("linear_regression", "linear regression", LinearRegression()),
        ("random_forest", "random forest", RandomForestRegressor(n_estimators=100, random_state=0)),
        ("gradient_boosting", "gradient boosting", GradientBoostingRegressor(random_state=0)),
        # the ensemble library
        (
            "gradient_boosting_slow",
            "gradient boosting, 800 trees at learning rate 0.02",
            GradientBoostingRegressor(
                n_estimators=800, learning_rate=0.02, max_depth=4, subsample=0.7, min_samples_leaf=3, random_state=0
            ),
        ),
        (
            "extra_trees",
            "extra trees (log prices)",
            _log_target(ExtraTreesRegressor(n_estimators=300, max_features=0.6, random_state=0), y),
        ),
        (
            "support_vectors",
            "support-vector regression (log prices, log-scaled skewed features)",
            _log_target(make_pipeline(log_features(), StandardScaler(), SVR(C=5.0, epsilon=0.02, gamma=0.05)), y),
        ),
        (
            "gaussian_process",
            "Gaussian process (log prices, log-scaled skewed features)",
            _log_target(
                make_pipeline(
                    log_features(), StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=0)
                ),
                y,
            ),
        ),
    ]
    fitted = []
    folds = [(f.train, f.val) for f in make_folds(data, len(y))] if data.cross_validated else None
    with warnings.catch_warnings():
        # a feature the Gaussian process finds irrelevant reaches its length-scale bound: the intended outcome
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, label, estimator in candidates:
            val = cross_val_predict(clone(estimator), x, y, cv=folds).astype(np.float64) if folds is not None else None
            estimator.fit(x, y)
            if folds is None and not with_validation:
                val = estimator.predict(loaded.val.x).astype(np.float64)
            fitted.append(Baseline(name, label, estimator, val))
    return fitted


def _log_target(estimator: Any, y: np.ndarray) -> Any:
    """`estimator` fitted to log targets (predictions back in k$), when every target is positive."""
    from sklearn.compose import TransformedTargetRegressor

    if not np.all(y > 0):
        return estimator
    return TransformedTargetRegressor(
        regressor=estimator, func=np.log, inverse_func=np.exp, check_inverse=False
    )  # exact inverses


__all__ = ["SKEW_THRESHOLD", "LogSkewed", "baselines"]
