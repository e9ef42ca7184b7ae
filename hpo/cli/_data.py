"""Data commands: `hpo data fetch`, `hpo data import` and `hpo data info`, for the datasets objectives declare."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from hpo.cli._app import app, command
from hpo.config.settings import data_dir
from hpo.errors import UsageError

data_app = typer.Typer(name="data", help="Get, import and describe datasets (in HPO_DATA_DIR).", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _dataset(name: str, method: str) -> Any:
    """The registered dataset `name`, if it offers `method` (fetch, import_data)."""
    from hpo.objectives._protocol import offers
    from hpo.objectives._registry import datasets

    known = datasets()
    able = [n for n, d in known.items() if offers(d, method)]
    verb = method.split("_")[0]
    if name in known and name not in able:
        raise UsageError(
            f"dataset: {name} has nothing to {verb} "
            f"({known[name].describe().get('summary', 'managed by its objective')})"
        )
    if name not in able:
        raise UsageError(f"dataset: unknown dataset {name!r}; accepted: {', '.join(able) or 'none'}")
    return known[name]


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich bar per import stage on a terminal; silence elsewhere (cron logs, pipes)."""
    console = Console(stderr=True)
    bars = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield report


@command(data_app, "fetch")
def fetch(dataset: str = typer.Argument(..., help="A dataset that can be downloaded, e.g. cifar10.")) -> None:
    """Download a dataset (needs internet) and import it into the cache."""
    found = _dataset(dataset, "fetch")
    with _progress() as progress:
        summary = found.fetch(progress=progress)
    typer.echo(f"{dataset}: {summary}", err=True)


@command(data_app, "import")
def import_(
    dataset: str = typer.Argument(..., help="A dataset that can be imported, e.g. cifar10."),
    path: Path = typer.Argument(
        ...,
        help="cifar10: cifar-10-python.tar.gz or its folder, "
        "or an image-folder tree/tarball train/<class>/*, test/<class>/*.",
    ),
) -> None:
    """Decode a local copy once into the checksummed cache that studies read."""
    found = _dataset(dataset, "import_data")
    with _progress() as progress:
        summary = found.import_data(path, progress=progress)
    typer.echo(f"{dataset}: {summary}", err=True)


@command(data_app, "info")
def info(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of lines."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash every cached file against its checksum."),
) -> None:
    """What is cached in HPO_DATA_DIR, and the command that fetches what is not."""
    from hpo.objectives._protocol import Verifiable, offers
    from hpo.objectives._registry import datasets

    entries = []
    for dataset in datasets().values():
        entry = dataset.describe()
        if verify and entry.get("cached") and offers(dataset, "verify"):
            cast(Verifiable, dataset).verify()
            entry["verified"] = True
        entries.append(entry)
    if as_json:
        typer.echo(json.dumps({"data_dir": str(data_dir()), "datasets": entries}, indent=2))
        return
    typer.echo(f"data dir: {data_dir()}")
    for entry in entries:
        checked = ", checksums verified" if entry.get("verified") else ""
        typer.echo(f"{entry['dataset']}: {entry.get('summary') or entry.get('path', '')}{checked}")
