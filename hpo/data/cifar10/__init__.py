"""CIFAR-10: import once into a checksummed uint8 cache, then seeded stratified splits in well under a second.

Accepted sources (``hpo data import cifar10 PATH``): the official ``cifar-10-python.tar.gz`` (pickled
batches) or its extracted folder, and an image-folder tree or tarball ``train/<class>/*``,
``test/<class>/*`` of 32x32 PNG or JPEG files. The cache under ``HPO_DATA_DIR/cifar10`` holds one
``.npy`` file per split and array (images ``N x 3 x 32 x 32`` uint8, labels uint8) and a
``manifest.json`` with each file's SHA-256, verified on every load.

Training and validation come from the training images only; the official test images have their own
reader, :func:`load_test`, which counts every call (``hpo evaluate`` alone may call it).

One job per module: the dataset's facts and its verified cache (:mod:`._cache`, numpy only), the
training/validation splits and the test reader (:mod:`._splits`), importing and fetching
(:mod:`._import`) and image decoding (:mod:`._images`). `from hpo.data import cifar10` gives them all.
"""

from hpo.data.cifar10._cache import (
    _LOADED,
    CLASSES,
    FORMAT_VERSION,
    IMAGE_SHAPE,
    IMPORT_HINT,
    MANIFEST,
    MEAN,
    NAME,
    SPLITS,
    STD,
    CorruptCache,
    _file_names,
    _load_arrays,
    _read_checked,
    cache_dir,
    describe,
    fingerprint,
    read_manifest,
    require_cached,
    verify,
)
from hpo.data.cifar10._images import MAX_IMAGE_BYTES, USER_IMAGES, read_image
from hpo.data.cifar10._import import (
    IMAGE_SUFFIXES,
    OFFICIAL_TEST_BATCH,
    OFFICIAL_TRAIN_BATCHES,
    URL_ENV,
    ImportSummary,
    ProgressFn,
    check_data_dir,
    fetch,
    import_dataset,
)
from hpo.data.cifar10._splits import Cifar10Data, Split, _indices, check, load, load_test, split_indices

__all__ = [
    "CLASSES",
    "FORMAT_VERSION",
    "IMAGE_SHAPE",
    "IMAGE_SUFFIXES",
    "IMPORT_HINT",
    "MANIFEST",
    "MAX_IMAGE_BYTES",
    "MEAN",
    "NAME",
    "OFFICIAL_TEST_BATCH",
    "OFFICIAL_TRAIN_BATCHES",
    "SPLITS",
    "STD",
    "URL_ENV",
    "USER_IMAGES",
    "_LOADED",
    "Cifar10Data",
    "CorruptCache",
    "ImportSummary",
    "ProgressFn",
    "Split",
    "_file_names",
    "_indices",
    "_load_arrays",
    "_read_checked",
    "cache_dir",
    "check",
    "check_data_dir",
    "describe",
    "fetch",
    "fingerprint",
    "import_dataset",
    "load",
    "load_test",
    "read_image",
    "read_manifest",
    "require_cached",
    "split_indices",
    "verify",
]
