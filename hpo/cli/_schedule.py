"""`hpo schedule`: print a batch-sweep script or manifest whose workers share the study storage."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from hpo.cli._app import app, command


class Target(str, Enum):
    slurm = "slurm"
    k8s = "k8s"
    cron = "cron"


@command(app, "schedule")
def schedule(
    target: Target = typer.Argument(
        ..., help="slurm: a job array; k8s: a Job and a nightly CronJob; cron: a crontab line and a systemd timer."
    ),
    study_file: Path = typer.Argument(..., help="The study file the workers run."),
    workers: int = typer.Option(
        4, "--workers", min=1, help="Workers (Slurm array tasks, Kubernetes pods, local processes for cron)."
    ),
    gpus: int | None = typer.Option(
        None,
        "--gpus",
        min=0,
        help="GPUs per worker for slurm/k8s (default 1); GPUs of the machine for cron (default: all visible).",
    ),
    cpus: int = typer.Option(4, "--cpus", min=1, help="CPU cores (and training threads) per worker."),
    time_limit: str | None = typer.Option(
        None, "--time-limit", help="Wall-clock limit of the sweep: 90m, 4h, 1d, HH:MM:SS or D-HH:MM:SS."
    ),
    image: str = typer.Option("hpo:latest", "--image", help="Container image with hpo installed (k8s)."),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Study storage URL without a password "
        "(default: the study file's, else HPO_STORAGE / a Secret at run time).",
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI without a password "
        "(default: the study file's, else MLFLOW_TRACKING_URI / a Secret at run time).",
    ),
    study_name: str | None = typer.Option(
        None,
        "--study-name",
        help="Study name (default: the file's name). "
        "Nightly sweeps start a new study each night: NAME-YYYYMMDD (cron), the Job's name (k8s).",
    ),
    at: str = typer.Option(
        "02:00", "--at", help="Time of day of the nightly sweep (k8s CronJob, cron, systemd timer)."
    ),
    secret: str = typer.Option(
        "hpo-credentials", "--secret", help="Kubernetes Secret holding the storage URL and passwords."
    ),
) -> None:
    """Print a ready batch-sweep script/manifest whose workers share the study storage."""
    from hpo.config import load_study
    from hpo.operations.schedule import objective_warning, plan_sweep, render, shared_storage_warning

    config = load_study(study_file)
    plan = plan_sweep(
        study_file,
        config,
        study_name=study_name,
        workers=workers,
        gpus=gpus,
        cpus=cpus,
        time_limit=time_limit,
        image=image,
        storage=storage,
        tracking_uri=tracking_uri,
        at=at,
        secret=secret,
    )
    text = render(target.value, plan)
    for warning in (shared_storage_warning(target.value, plan), objective_warning(target.value, plan)):
        if warning:
            typer.echo(f"hpo: warning: {warning}", err=True)
    typer.echo(text, nl=False)
