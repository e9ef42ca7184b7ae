"""`hpo data import|fetch cifar10`: decode an archive or image folder once into the checksummed cache.

The official batches are unpickled with an allow-list (numpy arrays only); the new cache replaces the
old one only when every file is written.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np

from hpo.config.settings import DATA_DIR_ENV, data_dir, env_setting
from hpo.config.writable import write_problem
from hpo.data.cifar10._cache import (
    _LOADED,
    CLASSES,
    FORMAT_VERSION,
    IMAGE_SHAPE,
    MANIFEST,
    NAME,
    SPLITS,
    _file_names,
    _sha256,
    cache_dir,
)
from hpo.data.cifar10._images import _image_decoder
from hpo.errors import HpoError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OFFICIAL_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
OFFICIAL_TEST_BATCH = "test_batch"
# Where `hpo data fetch` gets the official archive (torchvision's source); HPO_CIFAR10_URL points it at a mirror.
URL_ENV = "HPO_CIFAR10_URL"

# Called as progress(stage, done, total) while importing, so the CLI can draw a bar.
ProgressFn = Callable[[str, int, int], None]


# -- import ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportSummary:
    path: Path
    source: str
    source_format: str
    counts: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        """The line `hpo data import|fetch` prints."""
        return (
            f"{self.counts['train']:,} training + {self.counts['test']:,} test images from {self.source} "
            f"({self.source_format}) cached in {self.path} in {self.seconds:.1f}s"
        )


def import_dataset(source: str | Path, *, progress: ProgressFn | None = None) -> ImportSummary:
    """Decode `source` once and write the checksummed cache; the old cache is replaced only on success."""
    started = time.perf_counter()
    source = Path(source).expanduser()
    check_data_dir()
    if not source.exists():
        raise UsageError(f"{source}: no such file or folder; accepted: {_ACCEPTED}")
    try:
        arrays, source_format = _read_source(source, progress or _no_progress)
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise UsageError(
            f"{source}: cannot read it as a CIFAR-10 archive ({exc.__class__.__name__}: {exc}); accepted: {_ACCEPTED}"
        ) from None
    _write_cache(arrays, source=source.resolve(), source_format=source_format)
    counts = {split: int(arrays[split][1].shape[0]) for split in SPLITS}
    return ImportSummary(cache_dir(), str(source.resolve()), source_format, counts, time.perf_counter() - started)


_ACCEPTED = (
    "the official cifar-10-python.tar.gz (or its extracted folder), "
    "or an image-folder tree or tarball train/<class>/*, test/<class>/* of 32x32 PNG/JPEG"
)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def _read_source(source: Path, progress: ProgressFn) -> tuple[Arrays, str]:
    batch_names = (*OFFICIAL_TRAIN_BATCHES, OFFICIAL_TEST_BATCH)
    if source.is_dir():
        batches = _find_batch_folder(source)
        if batches is not None:
            return _read_official(
                {name: (batches / name).read_bytes for name in batch_names}, source, progress
            ), "official (pickled batches)"
        files = [(p.relative_to(source).as_posix(), p.read_bytes) for p in sorted(source.rglob("*")) if p.is_file()]
        return _read_image_folder(files, source, progress)
    if not tarfile.is_tarfile(source):
        raise UsageError(f"{source}: not a tar archive or folder; accepted: {_ACCEPTED}")
    contents = _read_tar(
        source, progress, keep=lambda name: PurePosixPath(name).name in batch_names or _image_entry(name) is not None
    )
    by_base = {PurePosixPath(name).name: data for name, data in contents.items()}
    if all(name in by_base for name in batch_names):
        return _read_official(
            {name: _reader(by_base[name]) for name in batch_names}, source, progress
        ), "official (pickled batches)"
    return _read_image_folder([(name, _reader(data)) for name, data in contents.items()], source, progress)


def _reader(data: bytes) -> Callable[[], bytes]:
    """A reader of bytes already in memory, like a file's `read_bytes` (the archive was read in one pass)."""
    return lambda: data


class _PositionReader(io.RawIOBase):
    """A file wrapper that reports how far it has been read, for the progress bar of a streamed archive."""

    def __init__(self, raw: Any, report: Callable[[int], None]) -> None:
        self.raw = raw
        self.report = report
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.position += n or 0
        self.report(self.position)
        return n


def _read_tar(source: Path, progress: ProgressFn, *, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """Every kept regular file's bytes, read in one streaming pass (a gzip stream cannot seek back cheaply)."""
    size = source.stat().st_size
    contents: dict[str, bytes] = {}
    with open(source, "rb") as raw:
        reader = io.BufferedReader(
            _PositionReader(raw, lambda position: progress("reading archive", position, size)), buffer_size=1 << 20
        )
        with tarfile.open(fileobj=reader, mode="r|*") as archive:
            for member in archive:
                if member.isfile() and keep(member.name):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        contents[member.name] = handle.read()
    progress("reading archive", size, size)
    return contents


def _image_entry(name: str) -> tuple[str, str] | None:
    """(split, class folder) of an image-folder path `.../train|test/<class>/<image>`, else None."""
    path = PurePosixPath(name)
    parts = path.parts
    if (
        len(parts) < 3
        or parts[-3] not in SPLITS
        or parts[-1].startswith(".")
        or path.suffix.lower() not in IMAGE_SUFFIXES
    ):
        return None
    return parts[-3], parts[-2]


def _find_batch_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder / "cifar-10-batches-py"):
        if all((candidate / name).is_file() for name in (*OFFICIAL_TRAIN_BATCHES, OFFICIAL_TEST_BATCH)):
            return candidate
    return None


class _BatchUnpickler(pickle.Unpickler):
    """The official batches are pickles; allow only what they contain (numpy arrays), never code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_official(readers: dict[str, Callable[[], bytes]], source: Path, progress: ProgressFn) -> Arrays:
    """data_batch_1..5 -> train, test_batch -> test; each a dict with b'data' (N x 3072) and b'labels'."""
    chunks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    names = (*OFFICIAL_TRAIN_BATCHES, OFFICIAL_TEST_BATCH)
    for done, name in enumerate(names):
        progress("reading batches", done, len(names))
        batch = _BatchUnpickler(io.BytesIO(readers[name]()), encoding="bytes").load()
        if (
            not isinstance(batch, dict)
            or b"data" not in batch
            or (b"labels" not in batch and b"fine_labels" not in batch)
        ):
            raise UsageError(f"{source}: {name} is not a CIFAR-10 batch (no data/labels); accepted: {_ACCEPTED}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != int(np.prod(IMAGE_SHAPE)) or labels.shape != (data.shape[0],):
            raise UsageError(f"{source}: {name} holds data of shape {data.shape}; CIFAR-10 batches are N x 3072")
        if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise UsageError(f"{source}: {name} has labels outside 0..9; is it CIFAR-100?")
        chunks["test" if name == OFFICIAL_TEST_BATCH else "train"].append(
            (data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.uint8))
        )
    progress("reading batches", len(names), len(names))
    return {
        split: (np.concatenate([c[0] for c in parts]), np.concatenate([c[1] for c in parts]))
        for split, parts in chunks.items()
    }


def _read_image_folder(
    files: list[tuple[str, Callable[[], bytes]]], source: Path, progress: ProgressFn
) -> tuple[Arrays, str]:
    """`.../train/<class>/<file>` and `.../test/<class>/<file>`; labels follow CIFAR-10's class order."""
    decode = _image_decoder()
    entries: list[tuple[str, int, str, Callable[[], bytes]]] = []
    suffixes: set[str] = set()
    for name, read in files:
        entry = _image_entry(name)
        if entry is None:
            continue
        split, folder = entry
        if folder not in CLASSES:
            raise UsageError(f"{source}: {name}: unknown class folder {folder!r}; accepted: {', '.join(CLASSES)}")
        suffixes.add("PNG" if name.lower().endswith(".png") else "JPEG")
        entries.append((split, CLASSES.index(folder), name, read))
    if not entries:
        raise UsageError(
            f"{source}: no CIFAR-10 batches and no train/<class>/*.png|jpg images found; accepted: {_ACCEPTED}"
        )
    arrays: Arrays = {}
    total = len(entries)
    done = 0
    for split in SPLITS:
        chosen = sorted((e for e in entries if e[0] == split), key=lambda e: (e[1], e[2]))
        missing = sorted(set(range(len(CLASSES))) - {e[1] for e in chosen})
        if missing:
            raise UsageError(
                f"{source}: {split}/ has no images of class {', '.join(CLASSES[m] for m in missing)}; "
                "every class needs train and test images"
            )
        images = np.empty((len(chosen), *IMAGE_SHAPE), dtype=np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's notice about TorchCodec
            for i, (_, _, name, read) in enumerate(chosen):
                try:
                    image = decode(read())
                except (RuntimeError, OSError, ValueError) as exc:
                    raise UsageError(
                        f"{source}: {name}: cannot decode the image "
                        f"({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})"
                    ) from None
                if image.shape != IMAGE_SHAPE:
                    raise UsageError(
                        f"{source}: {name} is {image.shape[2]}x{image.shape[1]}; CIFAR-10 images are 32x32 RGB"
                    )
                images[i] = image
                done += 1
                if done % 500 == 0:
                    progress("decoding images", done, total)
        arrays[split] = (images, np.array([e[1] for e in chosen], dtype=np.uint8))
    progress("decoding images", total, total)
    return arrays, f"image folder ({'/'.join(sorted(suffixes))})"


def _write_cache(arrays: Arrays, *, source: Path, source_format: str) -> None:
    """Write every file into a fresh folder, then swap it in: a failed import leaves the old cache intact."""
    target = cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{NAME}-import-", dir=target.parent))
    try:
        files: dict[str, dict[str, Any]] = {}
        for split in SPLITS:
            for name, array in zip(_file_names(split), arrays[split]):
                np.save(staging / name, np.ascontiguousarray(array), allow_pickle=False)
                files[name] = {"sha256": _sha256(staging / name), "bytes": (staging / name).stat().st_size}
        manifest = {
            "dataset": NAME,
            "format": FORMAT_VERSION,
            "classes": list(CLASSES),
            "source": str(source),
            "source_format": source_format,
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "splits": {
                split: {
                    "images": int(arrays[split][1].shape[0]),
                    "per_class": np.bincount(arrays[split][1], minlength=len(CLASSES)).tolist(),
                }
                for split in SPLITS
            },
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        old = target.with_name(f".{NAME}-old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _LOADED.clear()


# -- fetch ----------------------------------------------------------------------------------------
def check_data_dir() -> None:
    """Refuse a data folder that cannot be written, before a long download or decode starts."""
    problem = write_problem(data_dir(), is_folder=True)
    if problem:
        raise UsageError(
            f"{DATA_DIR_ENV}: cannot write {data_dir()}: {problem}; set {DATA_DIR_ENV} to a folder you can write to"
        )


def fetch(*, progress: ProgressFn | None = None) -> ImportSummary:
    """torchvision's official download of cifar-10-python.tar.gz (MD5-checked), then import it."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_url

    url = env_setting(URL_ENV) or CIFAR10.url
    check_data_dir()
    data_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cifar10-download-", dir=data_dir()) as folder:
        try:
            download_url(url, folder, CIFAR10.filename, CIFAR10.tgz_md5)
        except (OSError, RuntimeError) as exc:
            reason = str(getattr(exc, "reason", None) or exc).strip().splitlines()
            raise HpoError(
                f"cannot download CIFAR-10 from {url} ({exc.__class__.__name__}: {reason[0] if reason else ''}); "
                f"without internet, copy cifar-10-python.tar.gz here and run `hpo data import cifar10 PATH`"
            ) from None
        archive = Path(folder) / CIFAR10.filename
        if not archive.exists():
            raise HpoError(f"cannot download CIFAR-10 from {url}: the download did not produce {CIFAR10.filename}")
        return import_dataset(archive, progress=progress)
