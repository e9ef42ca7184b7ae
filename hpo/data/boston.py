"""Boston housing: the shipped CSV, a seeded test split studies never read, and train-only scaling.

The split is fixed by `data.split_seed` (not the study seed), so every study and `hpo evaluate`
see the same test rows. Features are standardized with statistics of the training rows only; the
target is standardized too for training, and metrics are reported back in k$.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpo.data._test_guard import record_test_read
from hpo.errors import UsageError
from hpo.objectives.boston import FEATURES as BOSTON_FEATURES
from hpo.objectives.boston import BostonDataOptions as DataConfig

if TYPE_CHECKING:
    import pandas as pd

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


SHIPPED = "boston_house_prices.csv"
MAX_BYTES = 256 * 1024 * 1024  # a Boston-style CSV is a few kilobytes; anything this big is the wrong file
MIN_TRAIN_ROWS = 2
# Leading bytes of archives pandas would try to open by the file's name (and fail with a traceback).
_ARCHIVES = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"7z\xbc\xaf": "7z",
}


def _name(path: str | Path | None) -> str:
    return SHIPPED if path is None else str(path)


def read_bytes(path: str | Path | None = None) -> bytes:
    """The CSV's bytes: the shipped file, or a local file at `path`. Anything else is a one-line UsageError."""
    if path is None:
        return resources.files("hpo.data").joinpath(SHIPPED).read_bytes()
    text = str(path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise UsageError(f"data.path: {text} is a URL; hpo reads a local CSV file (download it first)")
    file = Path(text).expanduser()
    if not text.strip() or not file.exists():
        raise UsageError(f"data.path: file not found: {text}")
    if file.is_dir():
        raise UsageError(f"data.path: {text} is a folder; expected a CSV file")
    if not file.is_file():
        raise UsageError(f"data.path: {text} is not a regular file (a device or a pipe); expected a CSV file")
    if file.stat().st_size > MAX_BYTES:
        raise UsageError(
            f"data.path: {text} is {file.stat().st_size / 2**20:.0f} MB; "
            f"a Boston-style CSV is a few kilobytes (at most {MAX_BYTES // 2**20} MB)"
        )
    try:
        return file.read_bytes()
    except OSError as exc:
        raise UsageError(f"data.path: cannot read {text} ({exc.strerror or exc.__class__.__name__})") from None


def read_frame(path: str | Path | None = None) -> pd.DataFrame:
    """The CSV shipped in the package, or the one at `path` (same columns): numeric, finite, float32-sized."""
    import pandas as pd  # half a second to import: `hpo validate` of a study on the shipped CSV never needs it

    raw = read_bytes(path)
    name = _name(path)
    for magic, kind in _ARCHIVES.items():
        if raw.startswith(magic):
            raise UsageError(f"data.path: {name} is a {kind} archive; give hpo the plain CSV file")
    try:
        frame = pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"data.path: {name} is not a readable CSV ({exc.__class__.__name__})") from None
    missing = [c for c in (*BOSTON_FEATURES, TARGET) if c not in frame.columns]
    if missing:
        raise UsageError(f"data.path: {name} lacks columns {', '.join(missing)}")
    numeric = frame[[*BOSTON_FEATURES, TARGET]].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        raise UsageError(f"data.path: {name} has empty or non-numeric values (column {_first_bad(numeric.isna())})")
    values = numeric.to_numpy(np.float64)
    too_big = ~np.isfinite(values) | (np.abs(values) > np.finfo(np.float32).max)
    if too_big.any():
        row, col = np.argwhere(too_big)[0]
        raise UsageError(
            f"data.path: {name} has the value {float(values[row, col])!r} in column {numeric.columns[col]}, "
            f"data row {row + 1}; accepted: finite numbers"
        )
    return numeric


def _first_bad(mask: pd.DataFrame) -> str:
    column = mask.any().idxmax()
    return f"{column}, data row {int(mask[column].to_numpy().argmax()) + 1}"


def _shipped_rows() -> int:
    """The shipped CSV's data rows, counted without parsing it: it is part of the package, and a test
    checks that :func:`read_frame` accepts it and counts the same."""
    return len([line for line in read_bytes().decode("utf-8-sig").splitlines()[1:] if line.strip()])


def check(config: DataConfig) -> None:
    """Everything about the data that can only fail once a trial reads it: readable, enough rows, some features."""
    if not _features(config):
        raise UsageError(f"data.drop_features: drops every feature; keep at least one of {', '.join(BOSTON_FEATURES)}")
    n = _shipped_rows() if config.path is None else len(read_frame(config.path))
    train, val, test = _split_indices(n, config)
    train = _subset(train, config)
    if len(train) < MIN_TRAIN_ROWS or len(val) < 1 or len(test) < 1:
        raise UsageError(
            f"data.path: {_name(config.path)} has {n} data row(s); "
            f"the test ({len(test)}) and validation ({len(val)}) rows leave {max(len(train), 0)} to train on "
            f"(at least {MIN_TRAIN_ROWS} needed, and 1 each to validate and test)"
        )
    if config.cross_validated:
        rows, needed = len(_cv_indices(n, config)), max(MIN_TRAIN_ROWS, config.cv_folds)
        if rows < needed:
            raise UsageError(
                f"data.cv_folds: {config.cv_folds} folds need at least {needed} non-test rows; "
                f"{_name(config.path)} leaves {rows}"
            )


def fingerprint(config: DataConfig) -> str:
    """The CSV's bytes and the columns a study uses, hashed: a study records it, `hpo evaluate` compares."""
    digest = hashlib.sha256(read_bytes(config.path))
    digest.update(",".join([*_features(config), TARGET]).encode())
    return f"{_name(config.path)} sha256:{digest.hexdigest()[:16]}"


def _split_indices(n: int, config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded permutation: the first test_fraction rows are test, the next val_fraction validation."""
    order = np.random.default_rng(config.split_seed).permutation(n)
    n_test = min(n, max(1, round(n * config.test_fraction)))
    n_val = min(n - n_test, max(1, round(n * config.val_fraction)))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def _subset(train_idx: np.ndarray, config: DataConfig) -> np.ndarray:
    """The first `subset` share of the training rows (at least two)."""
    if config.subset < 1.0:
        return train_idx[: max(MIN_TRAIN_ROWS, round(len(train_idx) * config.subset))]
    return train_idx


def _features(config: DataConfig) -> list[str]:
    return [f for f in BOSTON_FEATURES if f not in set(config.drop_features)]


def _cv_indices(n: int, config: DataConfig) -> np.ndarray:
    """The rows cross-validation folds split: every non-test row (the `subset` share of them)."""
    train_idx, val_idx, _ = _split_indices(n, config)
    return _subset(np.concatenate([val_idx, train_idx]), config)


def cv_rows(config: DataConfig) -> int:
    """How many rows `data.cv_folds` splits into folds (positions refer to `load(config).train`)."""
    return len(_cv_indices(len(read_frame(config.path)), config))


def load(config: DataConfig) -> BostonData:
    """Training and validation rows (never the test rows), scaled with training statistics.

    With cross-validation (`data.cv_folds` >= 2) every non-test row is a training row: `train` holds
    them all, in the order fold positions refer to, and `val` is the same rows (each fold validates
    on its share of them, out of fold).
    """
    frame = read_frame(config.path)
    train_idx, val_idx, _ = _split_indices(len(frame), config)
    train_idx = _subset(train_idx, config)
    if config.cross_validated:
        train_idx = val_idx = _cv_indices(len(frame), config)
    features = _features(config)
    x = frame[features].to_numpy(np.float32)
    y = frame[TARGET].to_numpy(np.float32)
    # statistics in float64: float32 sums of squares overflow for large (but float32-sized) values
    mean = x[train_idx].astype(np.float64).mean(axis=0).astype(np.float32)
    std = x[train_idx].astype(np.float64).std(axis=0).astype(np.float32)
    std[~(std > 0) | ~np.isfinite(std)] = 1.0
    scale = lambda rows: Split(((x[rows] - mean) / std).astype(np.float32), y[rows])
    return BostonData(train=scale(train_idx), val=scale(val_idx), features=features, x_mean=mean, x_std=std)


def load_test(config: DataConfig, *, x_mean: np.ndarray, x_std: np.ndarray) -> Split:
    """The test rows, scaled with the training statistics given. Only `hpo evaluate` calls this."""
    record_test_read("boston")
    frame = read_frame(config.path)
    _, _, test_idx = _split_indices(len(frame), config)
    x = frame[_features(config)].to_numpy(np.float32)[test_idx]
    return Split(((x - x_mean) / x_std).astype(np.float32), frame[TARGET].to_numpy(np.float32)[test_idx])


def read_rows(path: str | Path, features: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Raw (unscaled) feature values of a user's CSV for `hpo predict`, in `features` order, and a label per row.

    Either a header row naming every feature (other columns, such as MEDV or a dropped B, are ignored)
    or rows of exactly ``len(features)`` numbers in that order. Anything else is a FieldError naming the
    file (and row) and what is accepted.
    """
    from hpo.objectives import FieldError, read_input_file

    accepted = (
        f"CSV files with a header row naming {', '.join(features)} (other columns are ignored), "
        f"or rows of exactly {len(features)} numbers in that order"
    )
    raw = read_input_file(path, accepted=accepted, max_bytes=MAX_BYTES)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FieldError(str(path), f"not a text CSV file; accepted: {accepted}") from None
    if "\x00" in text:
        raise FieldError(str(path), f"not a text CSV file; accepted: {accepted}")
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if rows and all(_number(cell) is None for cell in rows[0]):  # a header names columns: no number in it
        header = [cell.strip() for cell in rows[0]]
        missing = [f for f in features if f not in header]
        if missing:
            raise FieldError(str(path), f"the header row lacks {', '.join(missing)}; accepted: {accepted}")
        columns, width, rows = [header.index(f) for f in features], len(header), rows[1:]
    else:
        columns, width = list(range(len(features))), len(features)
    if not rows:
        raise FieldError(str(path), f"holds no data rows; accepted: {accepted}")
    values = np.empty((len(rows), len(features)), np.float64)
    for i, row in enumerate(rows):
        where = f"{path} row {i + 1}"
        if len(row) != width:
            raise FieldError(where, f"{len(row)} values where {width} are expected; accepted: {accepted}")
        for j, column in enumerate(columns):
            value = _number(row[column])
            if value is None:
                raise FieldError(
                    where, f"{features[j]} is {row[column].strip()!r}, not a finite number; accepted: {accepted}"
                )
            values[i, j] = value
    return values.astype(np.float32), [f"{path} row {i + 1}" for i in range(len(rows))]


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) and abs(value) <= np.finfo(np.float32).max else None
