"""CIFAR-10: import once into a checksummed uint8 cache, then seeded stratified splits in well under a second.

Accepted sources (``hpo data import cifar10 PATH``): the official ``cifar-10-python.tar.gz`` (pickled
batches) or its extracted folder, and an image-folder tree or tarball ``train/<class>/*``,
``test/<class>/*`` of 32x32 PNG or JPEG files. The cache under ``HPO_DATA_DIR/cifar10`` holds one
``.npy`` file per split and array (images ``N x 3 x 32 x 32`` uint8, labels uint8) and a
``manifest.json`` with each file's SHA-256, verified on every load.

Training and validation come from the training images only; the official test images have their own
reader, :func:`load_test`, which counts every call (``hpo evaluate`` alone may call it).
"""

from __future__ import annotations

import hashlib
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
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.config import DataConfig
from hpo.config.settings import DATA_DIR_ENV, data_dir, env_setting
from hpo.config.writable import write_problem
from hpo.data._test_guard import record_test_read
from hpo.errors import HpoError, UsageError

if TYPE_CHECKING:  # torch is imported when a trial reads the images, not when a study file is checked
    import torch

NAME = "cifar10"
CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
# Per-channel statistics of the CIFAR-10 training images, the usual constants for normalisation.
MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OFFICIAL_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
OFFICIAL_TEST_BATCH = "test_batch"
# Where `hpo data fetch` gets the official archive (torchvision's source); HPO_CIFAR10_URL points it at a mirror.
URL_ENV = "HPO_CIFAR10_URL"
IMPORT_HINT = "run `hpo data import cifar10 PATH` (the official cifar-10-python.tar.gz or an image-folder tarball) or, with internet, `hpo data fetch cifar10`"

# Called as progress(stage, done, total) while importing, so the CLI can draw a bar.
ProgressFn = Callable[[str, int, int], None]


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
    """One split's images and int64 labels from the cache, checksum-verified; kept in memory so later trials skip the read."""
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
            f"data.val_fraction: {config.val_fraction} leaves no validation image in the {len(labels)} cached training images"
        )
    if len(train_idx) < 2:  # a batch of one breaks batch norm, and one image teaches nothing
        raise UsageError(
            f"data.subset: {config.subset} leaves {len(train_idx)} training image(s) of {len(labels)}; at least 2 are needed"
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
    key = (str(cache_dir()), manifest["files"][images_name]["sha256"], manifest["files"][labels_name]["sha256"],
           config.val_fraction, config.subset, config.split_seed, str(torch.device(device)))  # fmt: skip
    if key not in _ON_DEVICE:
        _ON_DEVICE.clear()
        data = _host_split(config)
        move = lambda split: Split(split.images.to(device), split.labels.to(device))  # noqa: E731
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


_ACCEPTED = "the official cifar-10-python.tar.gz (or its extracted folder), or an image-folder tree or tarball train/<class>/*, test/<class>/* of 32x32 PNG/JPEG"


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
            {name: (lambda data=by_base[name]: data) for name in batch_names}, source, progress
        ), "official (pickled batches)"
    return _read_image_folder([(name, lambda data=data: data) for name, data in contents.items()], source, progress)


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

    _ALLOWED = {
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
                f"{source}: {split}/ has no images of class {', '.join(CLASSES[m] for m in missing)}; every class needs train and test images"
            )
        images = np.empty((len(chosen), *IMAGE_SHAPE), dtype=np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's notice about TorchCodec
            for i, (_, _, name, read) in enumerate(chosen):
                try:
                    image = decode(read())
                except (RuntimeError, OSError, ValueError) as exc:
                    raise UsageError(
                        f"{source}: {name}: cannot decode the image ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})"
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


USER_IMAGES = "PNG or JPEG image files of any size (resized to 32x32, converted to RGB)"
MAX_IMAGE_BYTES = 64 * 2**20  # a photo is a few megabytes; anything this big is the wrong file


def read_image(path: Path) -> torch.Tensor:
    """A user's own image as CIFAR-10's images are: 3 x 32 x 32 uint8 RGB (grey and alpha converted).

    The shorter side is resized to 32 (antialiased) and the centre cropped to a square, as torchvision's
    evaluation transforms do, so a photo keeps its proportions. For `hpo predict`; a file that is not a
    readable image is a FieldError naming it and the accepted files.
    """
    import torch
    from torchvision.transforms.v2 import functional as TF

    from hpo.objectives import FieldError, read_input_file

    size = IMAGE_SHAPE[1]
    data = read_input_file(path, accepted=USER_IMAGES, max_bytes=MAX_IMAGE_BYTES)
    try:
        image = torch.as_tensor(_image_decoder()(data))
    except Exception:
        raise FieldError(str(path), f"not an image hpo can decode; accepted: {USER_IMAGES}") from None
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = TF.to_dtype(image, torch.uint8, scale=True)
    image = TF.resize(image, [size], antialias=True)
    return TF.center_crop(image, [size, size]).contiguous()


def _image_decoder() -> Callable[[bytes], np.ndarray]:
    """PNG/JPEG bytes -> 3 x H x W uint8. torchvision's libjpeg-turbo/libpng decoder is about 3x faster
    than Pillow; 0.29 marks it deprecated in favour of TorchCodec, so Pillow takes over once it is gone."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        from PIL import Image

        def decode_with_pillow(data: bytes) -> np.ndarray:
            with Image.open(io.BytesIO(data)) as image:
                return np.asarray(image.convert("RGB")).transpose(2, 0, 1)

        return decode_with_pillow

    def decode(data: bytes) -> np.ndarray:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB).numpy()

    return decode


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


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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
