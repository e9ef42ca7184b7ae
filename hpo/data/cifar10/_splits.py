"""Training and validation splits of the cached training images, as tensors; and the counted test reader.

The split itself (:func:`split_indices`, :func:`check`) needs numpy only; torch comes with :func:`load`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.config import DataConfig
from hpo.data._test_guard import record_test_read
from hpo.data.cifar10._cache import NAME, _file_names, _load_arrays, cache_dir, require_cached
from hpo.errors import UsageError

if TYPE_CHECKING:  # torch is imported when a trial reads the images, not when a study file is checked
    import torch


@dataclass(frozen=True)
class Split:
    """Images (N x 3 x 32 x 32 uint8) and labels (N, int64 class indices into CLASSES)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Cifar10Data:
    train: Split
    val: Split


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    import torch

    return Split(torch.from_numpy(images), torch.from_numpy(labels))


# -- splits ---------------------------------------------------------------------------------------
def split_indices(
    labels: np.ndarray, *, val_fraction: float, subset: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (train, validation) indices into the training images.

    Each class gives `val_fraction` of its images to validation (5,000 of 50,000 at the default 0.1);
    `subset` then keeps that fraction of each class's remaining images for training. The validation
    images do not depend on `subset`, and smaller subsets are contained in larger ones.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1) if len(members) > 1 else 0
        rest = members[n_val:]
        keep = max(1, round(len(rest) * subset)) if len(rest) else 0
        val.append(members[:n_val])
        train.append(rest[:keep])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _indices(config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The verified training arrays and the (train, validation) indices `config` draws from them."""
    images, labels = _load_arrays("train")
    train_idx, val_idx = split_indices(
        labels, val_fraction=config.val_fraction, subset=config.subset, seed=config.split_seed
    )
    if len(val_idx) == 0:
        raise UsageError(
            f"data.val_fraction: {config.val_fraction} leaves no validation image "
            f"in the {len(labels)} cached training images"
        )
    if len(train_idx) < 2:  # a batch of one breaks batch norm, and one image teaches nothing
        raise UsageError(
            f"data.subset: {config.subset} leaves {len(train_idx)} training image(s) of {len(labels)}; "
            "at least 2 are needed"
        )
    return images, labels, train_idx, val_idx


def check(config: DataConfig) -> None:
    """What `load` would refuse, found without torch: not imported, corrupt, or a split left empty.
    The verified arrays stay in memory, so the trials of the same process skip the read."""
    _indices(config)


# The last split a worker process loaded, on its device, keyed by what decides its rows: the trials of a
# study share it (one host-to-GPU copy per worker, not per trial). One entry, so memory stays bounded.
_ON_DEVICE: dict[tuple[Any, ...], Cifar10Data] = {}


def load(config: DataConfig, *, device: torch.device | str | None = None) -> Cifar10Data:
    """Training and validation images, both drawn from the official training set (never the test set).

    With `device`, the split is returned on that device and kept there for the next call with the same
    data (cache file, val_fraction, subset, split_seed) and device in this process.
    """
    if device is None:
        return _host_split(config)
    import torch

    manifest = require_cached()
    images_name, labels_name = _file_names("train")
    key = (
        str(cache_dir()),
        manifest["files"][images_name]["sha256"],
        manifest["files"][labels_name]["sha256"],
        config.val_fraction,
        config.subset,
        config.split_seed,
        str(torch.device(device)),
    )
    if key not in _ON_DEVICE:
        _ON_DEVICE.clear()
        data = _host_split(config)
        move = lambda split: Split(split.images.to(device), split.labels.to(device))
        _ON_DEVICE[key] = Cifar10Data(train=move(data.train), val=move(data.val))
    return _ON_DEVICE[key]


def _host_split(config: DataConfig) -> Cifar10Data:
    images, labels, train_idx, val_idx = _indices(config)
    # numpy gathers rows faster than torch indexing
    return Cifar10Data(train=_split(images[train_idx], labels[train_idx]), val=_split(images[val_idx], labels[val_idx]))


def load_test() -> Split:
    """The official 10,000 test images. Only `hpo evaluate` calls this; every call is counted."""
    record_test_read(NAME)
    return _split(*_load_arrays("test"))
