"""CIFAR-10 for the benchmarks: import an archive into hpo's data cache once, through hpo's own importer."""

from __future__ import annotations

import sys
from pathlib import Path

from _report import REPO

# The copy the project's build machines have; a user passes the official archive with --cifar-source.
SHARED_CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def ensure_cifar10(source: str | None) -> str | None:
    """Make CIFAR-10 available in HPO_DATA_DIR; return why not, or None when it is there.

    An explicit `source` is always imported (so a smoke test's tiny archive replaces nothing it did not
    create: it runs with its own HPO_DATA_DIR). Without one, the existing cache is used, else the shared copy.
    """
    from hpo.data import cifar10 as cifar10_data
    from hpo.errors import HpoError

    if source is None and cifar10_data.read_manifest() is not None:
        return None
    path = Path(source) if source else SHARED_CIFAR10
    if not path.exists():
        return f"no CIFAR-10 in {cifar10_data.cache_dir()} and no archive at {path} (pass --cifar-source)"
    try:
        summary = cifar10_data.import_dataset(path)
    except HpoError as exc:
        return str(exc)
    print(
        f"imported CIFAR-10 from {path} into {summary.path}: {summary.counts} images in {summary.seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return None
