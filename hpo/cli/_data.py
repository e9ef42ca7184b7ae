"""Data commands: `hpo data fetch`, `hpo data import` and `hpo data info`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from hpo.cli._app import app, command
from hpo.errors import UsageError
from hpo.settings import data_dir

data_app = typer.Typer(name="data", help="Get, import and describe datasets (in HPO_DATA_DIR).", no_args_is_help=True)
app.add_typer(data_app, name="data")

if TYPE_CHECKING:
    from hpo.data.cifar10 import ImportSummary

DATASETS = ("cifar10",)


def _check_dataset(name: str) -> None:
    if name not in DATASETS:
        raise UsageError(f"dataset: unknown dataset {name!r}; accepted: {', '.join(DATASETS)} (boston ships with hpo)")


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich bar per import stage on a terminal; silence elsewhere (cron logs, pipes)."""
    console = Console(stderr=True)
    bars = Progress(TextColumn("{task.description:<16}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=console, disable=not sys.stderr.isatty(), transient=False)
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield report


def _summary(summary: ImportSummary) -> None:
    counts = summary.counts
    typer.echo(
        f"cifar10: {counts['train']:,} training + {counts['test']:,} test images from {summary.source} "
        f"({summary.source_format}) cached in {summary.path} in {summary.seconds:.1f}s",
        err=True,
    )


@command(data_app, "fetch")
def fetch(dataset: str = typer.Argument(..., help="cifar10")) -> None:
    """Download the official archive with torchvision (needs internet) and import it."""
    from hpo.data import cifar10

    _check_dataset(dataset)
    with _progress() as progress:
        summary = cifar10.fetch(progress=progress)
    _summary(summary)


@command(data_app, "import")
def import_(
    dataset: str = typer.Argument(..., help="cifar10"),
    path: Path = typer.Argument(..., help="cifar-10-python.tar.gz or its folder, or an image-folder tree/tarball train/<class>/*, test/<class>/*."),
) -> None:
    """Decode a local copy once into the checksummed cache that studies read."""
    from hpo.data import cifar10

    _check_dataset(dataset)
    with _progress() as progress:
        summary = cifar10.import_dataset(path, progress=progress)
    _summary(summary)


@command(data_app, "info")
def info(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of lines."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash every cached file against its checksum."),
) -> None:
    """What is cached in HPO_DATA_DIR, and the command that fetches what is not."""
    from hpo.data import cifar10

    entry = cifar10.describe()
    if verify and entry["cached"]:
        cifar10.verify()
        entry["verified"] = True
    datasets = [entry, {"dataset": "boston", "cached": True, "path": "shipped with hpo (hpo/data/boston_house_prices.csv)"}]
    if as_json:
        typer.echo(json.dumps({"data_dir": str(data_dir()), "datasets": datasets}, indent=2))
        return
    typer.echo(f"data dir: {data_dir()}")
    for item in datasets:
        if item["dataset"] == "cifar10" and item["cached"]:
            checked = ", checksums verified" if item.get("verified") else ""
            typer.echo(
                f"cifar10: {item['train_images']:,} train + {item['test_images']:,} test images, {item['megabytes']} MB in {item['path']}\n"
                f"  from {item['source']} ({item['source_format']}), imported {item['imported_at']}{checked}"
            )
        elif item["dataset"] == "cifar10":
            typer.echo(f"cifar10: not cached; {item['fix']}")
        else:
            typer.echo(f"{item['dataset']}: {item['path']}")
