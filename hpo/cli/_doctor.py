"""`hpo doctor`: check storage, tracking server, data cache and devices; one line per finding, with the fix."""

from __future__ import annotations

from pathlib import Path

import typer

from hpo.cli._app import StorageOption, TrackingOption, app, command
from hpo.config.settings import STORAGE_ENV, TRACKING_ENV, resolve_settings
from hpo.errors import HpoError


def _named(field: str, flag: str, env: str) -> str:
    """The built-in default is named by the ways to override it."""
    return f"{flag} (or {env})" if field in ("storage", "tracking_uri") else field


@command(app, "doctor")
def doctor(
    study_file: Path | None = typer.Argument(
        None, help="A study file: its storage, tracking URI, objective and device are checked too."
    ),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of lines."),
) -> None:
    """Check storage, tracking server, data cache and devices; say plainly what is wrong and how to fix it."""
    from hpo.config import load_study
    from hpo.operations.doctor import Sources, diagnose

    config = load_study(study_file) if study_file is not None else None
    settings = resolve_settings(
        storage_flag=storage,
        tracking_flag=tracking_uri,
        file_storage=config.storage if config else None,
        file_tracking_uri=config.tracking_uri if config else None,
        source=str(study_file) if study_file is not None else None,
    )
    # a fix names the setting to change: the flag, the variable or the study file's field
    sources = Sources(
        storage=_named(settings.storage_field, "--storage", STORAGE_ENV),
        tracking_uri=_named(settings.tracking_field, "--tracking-uri", TRACKING_ENV),
    )
    report = diagnose(settings, config=config, sources=sources)
    if as_json:
        typer.echo(report.to_json())
    else:
        for line in report.lines():
            typer.echo(line)
    if not report.ok:
        count = len(report.problems)
        raise HpoError(f"doctor found {count} problem{'s' if count > 1 else ''}")
    if not as_json:
        typer.echo("doctor: everything hpo needs is in order", err=True)
