"""Boston housing: the shipped CSV, a seeded test split studies never read, and train-only scaling.

The split is fixed by `data.split_seed` (not the study seed), so every study and `hpo evaluate`
see the same test rows. Features are standardized with statistics of the training rows only; the
target is standardized too for training, and metrics are reported back in k$.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from hpo.objectives.boston import FEATURES as BOSTON_FEATURES
from hpo.objectives.boston import BostonDataOptions as DataConfig
from hpo.data._test_guard import record_test_read
from hpo.errors import UsageError

TARGET = "MEDV"


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, standardized with training statistics
    y: np.ndarray  # float32, in k$


@dataclass(frozen=True)
class BostonData:
    train: Split
    val: Split
    features: list[str]
    x_mean: np.ndarray
    x_std: np.ndarray


def read_frame(path: str | Path | None = None) -> pd.DataFrame:
    """The CSV shipped in the package, or the one at `path` (same columns)."""
    try:
        if path is None:
            with resources.files("hpo.data").joinpath("boston_house_prices.csv").open("rb") as fh:
                frame = pd.read_csv(fh)
        else:
            frame = pd.read_csv(path)
    except FileNotFoundError:
        raise UsageError(f"data.path: file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"data.path: {path} is not a readable CSV ({exc.__class__.__name__})") from None
    missing = [c for c in (*BOSTON_FEATURES, TARGET) if c not in frame.columns]
    if missing:
        raise UsageError(f"data.path: {path or 'boston_house_prices.csv'} lacks columns {', '.join(missing)}")
    numeric = frame[[*BOSTON_FEATURES, TARGET]].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        raise UsageError(f"data.path: {path or 'boston_house_prices.csv'} has empty or non-numeric values")
    return numeric


def _split_indices(n: int, config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded permutation: the first test_fraction rows are test, the next val_fraction validation."""
    order = np.random.default_rng(config.split_seed).permutation(n)
    n_test = max(1, round(n * config.test_fraction))
    n_val = max(1, round(n * config.val_fraction))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def _features(config: DataConfig) -> list[str]:
    return [f for f in BOSTON_FEATURES if f not in set(config.drop_features)]


def load(config: DataConfig) -> BostonData:
    """Training and validation rows (never the test rows), scaled with training statistics."""
    frame = read_frame(config.path)
    train_idx, val_idx, _ = _split_indices(len(frame), config)
    if config.subset < 1.0:
        keep = max(2, round(len(train_idx) * config.subset))
        train_idx = train_idx[:keep]
    features = _features(config)
    x = frame[features].to_numpy(np.float32)
    y = frame[TARGET].to_numpy(np.float32)
    mean = x[train_idx].mean(axis=0)
    std = x[train_idx].std(axis=0)
    std[std == 0] = 1.0
    scale = lambda rows: Split(((x[rows] - mean) / std).astype(np.float32), y[rows])  # noqa: E731
    return BostonData(train=scale(train_idx), val=scale(val_idx), features=features, x_mean=mean, x_std=std)


def load_test(config: DataConfig, *, x_mean: np.ndarray, x_std: np.ndarray) -> Split:
    """The test rows, scaled with the training statistics given. Only `hpo evaluate` calls this."""
    record_test_read("boston")
    frame = read_frame(config.path)
    _, _, test_idx = _split_indices(len(frame), config)
    x = frame[_features(config)].to_numpy(np.float32)[test_idx]
    return Split(((x - x_mean) / x_std).astype(np.float32), frame[TARGET].to_numpy(np.float32)[test_idx])
