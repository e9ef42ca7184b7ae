"""The commands every target runs: one worker of a study, and the study's creation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

TARGETS = ("slurm", "k8s", "cron")


CONTAINER_STUDY_FILE = "/etc/hpo/study.yaml"


DEFAULT_IMAGE = "hpo:latest"


DEFAULT_SECRET = "hpo-credentials"


# Seconds a stopping worker gets to close its trial (it is re-queued) before it is killed.
STOP_GRACE_SECONDS = 120


def worker_argv(
    study_file: str | Path, *, study_name: str | None = None, quiet: bool = False, program: Sequence[str] = ("hpo",)
) -> list[str]:
    """The command of one worker: `hpo run --workers`, every `hpo schedule` target and the tests run this.

    The storage and tracking URIs are not arguments: they come from the environment
    (HPO_STORAGE, MLFLOW_TRACKING_URI) or the study file, so no password shows in a process list.
    """
    argv = [*program, "worker", str(study_file)]
    if study_name:
        argv += ["--study-name", study_name]
    if quiet:
        argv.append("--quiet")
    return argv


def create_argv(
    study_file: str | Path, *, study_name: str | None = None, program: Sequence[str] = ("hpo",)
) -> list[str]:
    """The init step of a sweep: create the study and its budget, run nothing."""
    argv = [*program, "create", str(study_file)]
    if study_name:
        argv += ["--study-name", study_name]
    return argv
