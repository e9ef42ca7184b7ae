"""A sweep's plan: what `hpo schedule` was asked for, checked, and the warnings that go with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hpo.config import StudyConfig, check_study_name
from hpo.config.settings import redact, sqlite_path, url_password
from hpo.errors import UsageError
from hpo.operations.schedule._commands import DEFAULT_IMAGE, DEFAULT_SECRET


@dataclass(frozen=True)
class SweepPlan:
    """What a scheduled sweep runs and on what; built by :func:`plan_sweep`, which checks it."""

    study_file: Path  # absolute
    config: StudyConfig
    study_name: str
    workers: int = 4
    gpus: int | None = None  # per worker (slurm, k8s) or GPUs of the machine (cron); None: the target's default
    cpus: int = 4  # per worker
    time_limit: int | None = None  # seconds
    image: str = DEFAULT_IMAGE
    storage: str | None = None  # from --storage only; the study file's own is read by hpo itself
    tracking_uri: str | None = None
    at: tuple[int, int] = (2, 0)  # nightly start, hour and minute
    secret: str = DEFAULT_SECRET


def plan_sweep(
    study_file: Path,
    config: StudyConfig,
    *,
    study_name: str | None = None,
    workers: int = 4,
    gpus: int | None = None,
    cpus: int = 4,
    time_limit: str | None = None,
    image: str = DEFAULT_IMAGE,
    storage: str | None = None,
    tracking_uri: str | None = None,
    at: str = "02:00",
    secret: str = DEFAULT_SECRET,
) -> SweepPlan:
    """Check the options (no password anywhere, well-formed times) and resolve the study file's path."""
    from hpo.config.settings import check_storage_url, check_tracking_uri

    for option, value in (("--storage", storage), ("--tracking-uri", tracking_uri)):
        if value is not None and _has_password(value):
            raise UsageError(
                f"{option}: {redact(value)} contains a password, which would be written into the script; "
                "pass the URL without it and give the password to the workers through the environment "
                "(PGPASSWORD or ~/.pgpass for PostgreSQL, MLFLOW_TRACKING_PASSWORD for MLflow) or a Kubernetes Secret"
            )
    if storage is not None:
        check_storage_url(storage, field="--storage")
    if tracking_uri is not None:
        check_tracking_uri(tracking_uri, field="--tracking-uri")
    if workers < 1:
        raise UsageError(f"--workers: must be at least 1, got {workers}")
    if not image.strip() or any(c.isspace() for c in image):
        raise UsageError(
            f"--image: {image!r} is not a container image reference; e.g. hpo:latest or ghcr.io/org/hpo:1.0"
        )
    if not _K8S_NAME.fullmatch(secret):
        raise UsageError(
            f"--secret: {secret!r} is not a Kubernetes object name; accepted: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 253 characters"
        )
    if study_name is not None:
        check_study_name(study_name, field="--study-name")
    return SweepPlan(
        study_file=study_file.resolve(),
        config=config,
        study_name=study_name if study_name is not None else config.name,
        workers=workers,
        gpus=gpus,
        cpus=cpus,
        time_limit=parse_duration(time_limit) if time_limit else None,
        image=image,
        storage=storage,
        tracking_uri=tracking_uri,
        at=_parse_at(at),
        secret=secret,
    )


# A Kubernetes object name (RFC 1123 subdomain): what `kubectl` accepts for a Secret.
_K8S_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _objective_file_beside(plan: SweepPlan) -> Path | None:
    """The study's objective file when it sits beside the study file (the k8s ConfigMap can carry it)."""
    loaded = plan.config.load_objective()
    path = Path(loaded.origin)
    return path if loaded.kind == "file" and path.parent == plan.study_file.parent else None


def objective_warning(target: str, plan: SweepPlan) -> str | None:
    """Workers load the objective as `hpo run` does: say what must be where they run, unless it travels along."""
    loaded = plan.config.load_objective()
    if loaded.kind == "built-in":
        return None
    if loaded.kind == "file":
        if target == "k8s" and _objective_file_beside(plan) is not None:
            return None
        where = (
            "in the image, at the same place relative to the study file"
            if target == "k8s"
            else "on a path every node mounts"
        )
        return (
            f"objective {plan.config.objective} is the file {loaded.origin}:"
            f" the workers need it {where} (or make it an installed package)"
        )
    place = "in the image" if target == "k8s" else "where they run"
    return f"objective {plan.config.objective} is imported by the workers: its package must be installed {place}"


def shared_storage_warning(target: str, plan: SweepPlan) -> str | None:
    """Workers on several machines need a database server; say so when the storage is a local file."""
    if target == "cron":
        return None
    storage = plan.storage or plan.config.storage
    if storage is not None and sqlite_path(storage) is not None:
        return (
            f"storage {redact(storage)} is a SQLite file:"
            " workers on several nodes need a shared database server such as PostgreSQL (--storage)"
        )
    return None


def proxy_notes(plan: SweepPlan) -> list[str]:
    """Comment lines for a sweep whose storage is a gRPC storage proxy: what must run before its workers."""
    from hpo.config.settings import grpc_address, is_grpc_url

    storage = plan.storage or plan.config.storage
    if storage is None or not is_grpc_url(storage):
        return [
            "# Many workers (dozens): point them at a gRPC storage proxy instead,"
            ' --storage grpc://HOST:13000 (README, "Many workers").'
        ]
    host, port = grpc_address(storage)
    return [
        f"# The workers reach the study database only through the gRPC storage proxy at {host}:{port}; it must be",
        "# running before they start, on a host they reach:"
        f" `hpo server --host 0.0.0.0 --grpc-port {port} --storage postgresql://USER@DBHOST/DB`",
        "# (it also serves MLflow). Only the proxy connects to the database,"
        " with a few connections however many workers.",
    ]


_DURATION = re.compile(r"^(?:(?P<n>\d+)(?P<unit>[smhd])|(?:(?P<d>\d+)-)?(?P<h>\d+):(?P<m>\d{2})(?::(?P<s>\d{2}))?)$")


def parse_duration(text: str) -> int:
    """`90m`, `4h`, `1d`, `3600s`, `HH:MM[:SS]` or `D-HH:MM[:SS]` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(
            f"--time-limit: cannot read {text!r}; accepted: 90m, 4h, 1d, 3600s, HH:MM[:SS] or D-HH:MM[:SS]"
        )
    if match["n"]:
        seconds = int(match["n"]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match["unit"]]
    else:
        seconds = int(match["d"] or 0) * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + int(match["s"] or 0)
    if seconds <= 0:
        raise UsageError(f"--time-limit: must be positive, got {text!r}")
    return seconds


def _parse_at(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise UsageError(f"--at: cannot read {text!r}; accepted: a time of day HH:MM such as 02:00")
    return int(match[1]), int(match[2])


def _has_password(url: str) -> bool:
    """As the URL's own parser reads it, or as `redact` would hide it (a malformed URL's)."""
    return url_password(url) is not None or redact(url) != url
