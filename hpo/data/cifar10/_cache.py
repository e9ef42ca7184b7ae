"""CIFAR-10's facts and its checksummed cache: the manifest, verified reads, and the arrays kept in memory.

numpy only: `hpo validate` checks a cached dataset (checksums, split sizes) without torch.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config.settings import data_dir
from hpo.errors import UsageError

NAME = "cifar10"
CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
# Per-channel statistics of the CIFAR-10 training images, the usual constants for normalisation.
MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "test")
IMPORT_HINT = (
    "run `hpo data import cifar10 PATH` (the official cifar-10-python.tar.gz or an image-folder tarball) "
    "or, with internet, `hpo data fetch cifar10`"
)


class CorruptCache(UsageError):
    """A cached file does not match its checksum or cannot be parsed: re-import fixes it."""


# -- the cache ------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return data_dir() / NAME


def _file_names(split: str) -> tuple[str, str]:
    return f"{split}_images.npy", f"{split}_labels.npy"


def read_manifest() -> dict[str, Any] | None:
    """The cache's manifest, or None when CIFAR-10 has not been imported into HPO_DATA_DIR."""
    path = cache_dir() / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
            raise ValueError("unknown format")
    except (ValueError, OSError) as exc:
        raise CorruptCache(f"{path}: the cache manifest is unreadable ({exc}); {IMPORT_HINT} again") from None
    return manifest


def fingerprint() -> str:
    """The cache's identity: the checksums it already verifies, combined (a re-import of other data changes it)."""
    manifest = require_cached()
    digest = hashlib.sha256(
        "".join(f"{name}={entry['sha256']};" for name, entry in sorted(manifest["files"].items())).encode()
    )
    return f"{cache_dir()} sha256:{digest.hexdigest()[:16]}"


def require_cached() -> dict[str, Any]:
    """The manifest, or a UsageError that says which command would put CIFAR-10 into the cache."""
    manifest = read_manifest()
    if manifest is None:
        raise UsageError(f"data: CIFAR-10 is not in the data cache {cache_dir()} (HPO_DATA_DIR); {IMPORT_HINT}")
    for name in manifest["files"]:
        if not (cache_dir() / name).exists():
            raise CorruptCache(f"{cache_dir() / name}: missing from the CIFAR-10 cache; {IMPORT_HINT} again")
    return manifest


def _read_checked(path: Path, expected_sha256: str) -> np.ndarray:
    """Read a .npy file once, hashing it on the way, and refuse it if the checksum differs."""
    try:
        size = path.stat().st_size
        buffer = bytearray(size)
        view = memoryview(buffer)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            position = 0
            while position < size:
                n = fh.readinto(view[position : position + (1 << 22)])
                if not n:
                    break
                digest.update(view[position : position + n])
                position += n
    except OSError as exc:
        raise CorruptCache(f"{path}: cannot read the cached file ({exc}); {IMPORT_HINT} again") from None
    if position != size or digest.hexdigest() != expected_sha256:
        raise CorruptCache(
            f"{path}: the cached file is corrupt (its SHA-256 does not match {MANIFEST}); {IMPORT_HINT} again"
        )
    try:
        header = io.BytesIO(view[: min(size, 4096)])
        version = np.lib.format.read_magic(header)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(header)
        if fortran_order:
            raise ValueError("Fortran order")
        return np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape)), offset=header.tell()).reshape(shape)
    except ValueError as exc:
        raise CorruptCache(f"{path}: the cached file is not a valid array ({exc}); {IMPORT_HINT} again") from None


# One dataset's arrays, checksum-verified, kept as numpy so that checking a study file needs no torch;
# `torch.from_numpy` shares their memory when a trial asks for tensors.
_LOADED: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _load_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's images and int64 labels from the cache, checksum-verified; kept in memory so later trials
    skip the read."""
    manifest = require_cached()
    images_name, labels_name = _file_names(split)
    key = (str(cache_dir()), manifest["files"][images_name]["sha256"] + manifest["files"][labels_name]["sha256"])
    if key not in _LOADED:
        images = _read_checked(cache_dir() / images_name, manifest["files"][images_name]["sha256"])
        labels = _read_checked(cache_dir() / labels_name, manifest["files"][labels_name]["sha256"])
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or labels.shape != (images.shape[0],):
            raise CorruptCache(f"{cache_dir() / images_name}: unexpected shape {images.shape}; {IMPORT_HINT} again")
        if split == "train":
            _LOADED.clear()  # keep one dataset's training images in memory, not every version seen
        _LOADED[key] = (images, labels.astype(np.int64))
    return _LOADED[key]


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):  # hashlib.file_digest is Python 3.11+
            digest.update(chunk)
        return digest.hexdigest()


def describe() -> dict[str, Any]:
    """What `hpo data info` shows about the CIFAR-10 cache (nothing is read but the manifest)."""
    manifest = read_manifest()
    if manifest is None:
        return {
            "dataset": NAME,
            "cached": False,
            "path": str(cache_dir()),
            "fix": IMPORT_HINT,
            "summary": f"not cached; {IMPORT_HINT}",
        }
    size = sum(int(f["bytes"]) for f in manifest["files"].values())
    train, test = manifest["splits"]["train"]["images"], manifest["splits"]["test"]["images"]
    return {
        "dataset": NAME,
        "cached": True,
        "path": str(cache_dir()),
        "train_images": manifest["splits"]["train"]["images"],
        "test_images": manifest["splits"]["test"]["images"],
        "source": manifest["source"],
        "source_format": manifest["source_format"],
        "imported_at": manifest["imported_at"],
        "megabytes": round(size / 1e6, 1),
        "sha256": {name: f["sha256"] for name, f in manifest["files"].items()},
        "summary": f"{train:,} train + {test:,} test images, {round(size / 1e6, 1)} MB in {cache_dir()}\n"
        f"  from {manifest['source']} ({manifest['source_format']}), imported {manifest['imported_at']}",
    }


def verify() -> None:
    """Re-hash every cached file; raises CorruptCache naming the first bad one."""
    manifest = require_cached()
    for name, entry in manifest["files"].items():
        _read_checked(cache_dir() / name, entry["sha256"])
