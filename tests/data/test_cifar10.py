"""CIFAR-10 import, cache and splits, on tiny generated data (image folders and the official pickles)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpo.config import DataConfig
from hpo.data import TEST_SPLIT_READS, cifar10
from hpo.errors import UsageError
from tests.conftest import (
    free_port,
    make_cifar10_arrays,
    tar_folder,
    write_cifar10_image_folder,
    write_cifar10_official,
)


def _cached(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = cifar10._file_names(split)
    return np.load(cifar10.cache_dir() / images), np.load(cifar10.cache_dir() / labels)


def test_import_png_tarball_keeps_every_pixel_and_label(cli: Any, tmp_path: Path) -> None:
    # A PNG image-folder tarball must import losslessly: counts, labels (from the class folders, in
    # CIFAR-10's class order) and pixels exactly as generated, with each file's SHA-256 in the manifest.
    arrays = make_cifar10_arrays(train_per_class=4, test_per_class=2)
    tree = write_cifar10_image_folder(tmp_path / "src" / "CIFAR-10-images", arrays)
    archive = tar_folder(tmp_path / "src", tmp_path / "cifar10-png.tar.gz")  # one extra folder level on purpose
    result = cli("data", "import", "cifar10", archive)
    assert result.exit_code == 0, result.output
    assert "40 training + 20 test images" in result.output
    assert tree.exists()
    for split in ("train", "test"):
        images, labels = _cached(split)
        np.testing.assert_array_equal(images, arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])
    manifest = json.loads((cifar10.cache_dir() / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((cifar10.cache_dir() / name).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["splits"]["train"]["per_class"] == [4] * 10
    assert manifest["source_format"] == "image folder (PNG)"

    info = cli("data", "info", "--json")
    assert info.exit_code == 0, info.output
    entry = next(d for d in json.loads(info.stdout)["datasets"] if d["dataset"] == "cifar10")
    assert (entry["dataset"], entry["cached"], entry["train_images"], entry["test_images"]) == ("cifar10", True, 40, 20)


def test_import_jpeg_folder_tree(cli: Any, tmp_path: Path) -> None:
    # A folder tree of JPEG files (as ../shared/datasets/cifar10-jpeg.tar.gz unpacks) imports with the
    # right labels; JPEG is lossy, so pixels only match closely.
    arrays = make_cifar10_arrays(train_per_class=3, test_per_class=1)
    tree = write_cifar10_image_folder(tmp_path / "jpeg", arrays, suffix=".jpg")
    result = cli("data", "import", "cifar10", tree)
    assert result.exit_code == 0, result.output
    images, labels = _cached("train")
    np.testing.assert_array_equal(labels, arrays["train"][1])
    assert np.abs(images.astype(int) - arrays["train"][0].astype(int)).max() <= 8
    assert cifar10.describe()["source_format"] == "image folder (JPEG)"


def test_import_official_archive_and_its_folder(cli: Any, tmp_path: Path) -> None:
    # The official cifar-10-python.tar.gz (pickled batches) and its extracted folder give the same cache.
    arrays = make_cifar10_arrays(train_per_class=5, test_per_class=2)
    batches = write_cifar10_official(tmp_path / "official", arrays)
    archive = tar_folder(tmp_path / "official", tmp_path / "cifar-10-python.tar.gz")
    assert cli("data", "import", "cifar10", archive).exit_code == 0
    first = cifar10.describe()["sha256"]
    images, labels = _cached("train")
    assert images.shape == (50, 3, 32, 32) and np.bincount(labels).tolist() == [5] * 10
    # Each cached image keeps its own label: the red channel encodes the class.
    np.testing.assert_array_equal(images[:, 0, 0, 0], labels * 25 + 5)
    test_images, test_labels = _cached("test")
    np.testing.assert_array_equal(test_images, arrays["test"][0])
    np.testing.assert_array_equal(test_labels, arrays["test"][1])
    assert cifar10.describe()["source_format"] == "official (pickled batches)"

    assert cli("data", "import", "cifar10", batches).exit_code == 0
    assert cifar10.describe()["sha256"] == first


def test_corrupt_cache_is_named(cli: Any, tiny_cifar10: Any) -> None:
    # A cached file that no longer matches its checksum is refused with its path and the fix.
    tiny_cifar10(train_per_class=4)
    cifar10._LOADED.clear()
    damaged = cifar10.cache_dir() / "train_images.npy"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=r"train_images\.npy.*corrupt.*hpo data import cifar10"):
        cifar10.load(DataConfig())
    result = cli("data", "info", "--verify")
    assert result.exit_code == 2
    assert str(damaged) in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("layout", ["not-an-archive", "unknown-class", "wrong-size"])
def test_bad_sources_are_one_line_errors(cli: Any, tmp_path: Path, layout: str) -> None:
    # Anything that is not CIFAR-10 fails with exit 2, one line naming the file, and no cache written.
    if layout == "not-an-archive":
        source = tmp_path / "notes.txt"
        source.write_text("hello")
        expected = "accepted:"
    elif layout == "unknown-class":
        source = write_cifar10_image_folder(tmp_path / "src", make_cifar10_arrays(train_per_class=1, test_per_class=1))
        shutil.move(source / "train" / "cat", source / "train" / "kitten")
        expected = "kitten"
    else:
        from PIL import Image

        source = write_cifar10_image_folder(tmp_path / "src", make_cifar10_arrays(train_per_class=1, test_per_class=1))
        Image.new("RGB", (64, 64)).save(source / "train" / "cat" / "0000.png")
        expected = "0000.png is 64x64"
    result = cli("data", "import", "cifar10", source)
    assert result.exit_code == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not cifar10.cache_dir().exists()


def test_fetch_failure_is_one_line(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a reachable server `hpo data fetch` fails (exit 1) with one line that says what to do instead.
    monkeypatch.setenv(cifar10.URL_ENV, f"http://127.0.0.1:{free_port()}/cifar-10-python.tar.gz")
    result = cli("data", "fetch", "cifar10")
    assert result.exit_code == 1
    assert "cannot download CIFAR-10" in result.stderr and "hpo data import cifar10" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not cifar10.cache_dir().exists()


def test_info_without_data_names_the_fix(cli: Any) -> None:
    result = cli("data", "info")
    assert result.exit_code == 0
    assert "cifar10: not cached" in result.stdout and "hpo data import cifar10" in result.stdout


def test_hpo_data_offers_what_the_objectives_datasets_can_do(cli: Any, tmp_path: Path) -> None:
    # `hpo data` asks the datasets the objectives declare: boston ships with hpo (nothing to import or
    # fetch), an unknown name lists the ones that can; each is exit 2 with one line.
    info = cli("data", "info")
    assert "boston: shipped with hpo" in info.stdout
    for args, expect in (
        (("import", "boston", str(tmp_path)), "dataset: boston has nothing to import (shipped with hpo"),
        (("fetch", "mnist"), "dataset: unknown dataset 'mnist'; accepted: cifar10"),
    ):
        result = cli("data", *args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
        assert expect in result.stderr, result.stderr


# -- splits ---------------------------------------------------------------------------------------
def test_validation_is_a_stratified_seeded_tenth_of_training() -> None:
    # 50,000 training labels give exactly 5,000 validation images, 500 per class, disjoint from training;
    # the same split seed gives the same split, another seed another.
    labels = np.repeat(np.arange(10), 5000)
    train, val = cifar10.split_indices(labels, val_fraction=0.1, subset=1.0, seed=0)
    assert len(val) == 5000 and len(train) == 45000
    assert np.bincount(labels[val]).tolist() == [500] * 10
    assert not set(train) & set(val) and len(set(train) | set(val)) == 50000
    again_train, again_val = cifar10.split_indices(labels, val_fraction=0.1, subset=1.0, seed=0)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    _, other_val = cifar10.split_indices(labels, val_fraction=0.1, subset=1.0, seed=1)
    assert set(other_val) != set(val)


def test_subset_is_stratified_nested_and_leaves_validation_alone() -> None:
    # data.subset trains on that fraction of every class; validation does not move; smaller subsets
    # are inside larger ones (so multi-fidelity runs compare like with like).
    labels = np.repeat(np.arange(10), 100)
    full_train, val = cifar10.split_indices(labels, val_fraction=0.1, subset=1.0, seed=3)
    small_train, small_val = cifar10.split_indices(labels, val_fraction=0.1, subset=0.2, seed=3)
    half_train, _ = cifar10.split_indices(labels, val_fraction=0.1, subset=0.5, seed=3)
    np.testing.assert_array_equal(val, small_val)
    assert np.bincount(labels[small_train]).tolist() == [18] * 10
    assert set(small_train) <= set(half_train) <= set(full_train)


def test_load_reads_training_images_only_and_test_reader_is_counted(tiny_cifar10: Any) -> None:
    # Studies load train/validation without touching the test split; load_test is counted every time.
    arrays = tiny_cifar10(train_per_class=11, test_per_class=2)
    before = TEST_SPLIT_READS["cifar10"]
    data = cifar10.load(DataConfig(subset=0.5))
    assert TEST_SPLIT_READS["cifar10"] == before
    assert (len(data.train), len(data.val)) == (50, 10)
    assert np.bincount(data.val.labels.numpy()).tolist() == [1] * 10
    train_ids = set(map(tuple, data.train.images[:, :, 0, 0].numpy().tolist()))  # (red, green, blue) identify an image
    val_ids = set(map(tuple, data.val.images[:, :, 0, 0].numpy().tolist()))
    assert not train_ids & val_ids
    test = cifar10.load_test()
    assert TEST_SPLIT_READS["cifar10"] == before + 1
    np.testing.assert_array_equal(test.images.numpy(), arrays["test"][0])


def test_the_split_is_kept_on_the_device_once_per_process_and_reused(tiny_cifar10: Any) -> None:
    # Trials of one worker share the split it put on its device: the same tensors come back for the
    # same data options, equal to a fresh load; other options (here a subset) make a new entry.
    tiny_cifar10(train_per_class=10, test_per_class=2)
    first = cifar10.load(DataConfig(), device="cpu")
    again = cifar10.load(DataConfig(), device="cpu")
    assert again.train.images is first.train.images and again.val.labels is first.val.labels
    fresh = cifar10.load(DataConfig())
    assert fresh.train.images is not first.train.images
    assert np.array_equal(fresh.train.images.numpy(), first.train.images.numpy()) and np.array_equal(
        fresh.val.labels.numpy(), first.val.labels.numpy()
    )
    smaller = cifar10.load(DataConfig(subset=0.5), device="cpu")
    assert (
        len(smaller.train) < len(first.train)
        and cifar10.load(DataConfig(subset=0.5), device="cpu").train.images is smaller.train.images
    )
