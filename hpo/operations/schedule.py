"""Batch sweeps: a Slurm job array, a Kubernetes Job and nightly CronJob, a crontab line and systemd timer.

Every target runs the worker command of :func:`worker_argv`, the one `hpo run --workers N` spawns
locally, so a scheduled sweep behaves like a local one: the workers share the study storage, the
budget is global and a killed worker's trial is re-queued. Nothing here writes a credential: a URL
with a password is refused, and secrets come from the environment, ~/.pgpass or a Kubernetes Secret.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpo.config import StudyConfig, check_study_name
from hpo.config.settings import redact, sqlite_path, url_password
from hpo.errors import UsageError

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


def render(target: str, plan: SweepPlan) -> str:
    """The script or manifest for `target` (one of TARGETS)."""
    renderers: dict[str, Callable[[SweepPlan], str]] = {
        "slurm": slurm_script,
        "k8s": kubernetes_manifests,
        "cron": cron_entries,
    }
    if target not in renderers:
        raise UsageError(f"target: unknown {target!r}; accepted: {', '.join(TARGETS)}")
    return renderers[target](plan)


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
        return f"objective {plan.config.objective} is the file {loaded.origin}: the workers need it {where} (or make it an installed package)"
    return f"objective {plan.config.objective} is imported by the workers: its package must be installed {'in the image' if target == 'k8s' else 'where they run'}"


def shared_storage_warning(target: str, plan: SweepPlan) -> str | None:
    """Workers on several machines need a database server; say so when the storage is a local file."""
    if target == "cron":
        return None
    storage = plan.storage or plan.config.storage
    if storage is not None and sqlite_path(storage) is not None:
        return f"storage {redact(storage)} is a SQLite file: workers on several nodes need a shared database server such as PostgreSQL (--storage)"
    return None


def proxy_notes(plan: SweepPlan) -> list[str]:
    """Comment lines for a sweep whose storage is a gRPC storage proxy: what must run before its workers."""
    from hpo.running.grpc_storage import grpc_address, is_grpc_url

    storage = plan.storage or plan.config.storage
    if storage is None or not is_grpc_url(storage):
        return [
            '# Many workers (dozens): point them at a gRPC storage proxy instead, --storage grpc://HOST:13000 (README, "Many workers").'
        ]
    host, port = grpc_address(storage)
    return [
        f"# The workers reach the study database only through the gRPC storage proxy at {host}:{port}; it must be",
        f"# running before they start, on a host they reach: `hpo server --host 0.0.0.0 --grpc-port {port} --storage postgresql://USER@DBHOST/DB`",
        "# (it also serves MLflow). Only the proxy connects to the database, with a few connections however many workers.",
    ]


# -- Slurm ----------------------------------------------------------------------------------------
def slurm_script(plan: SweepPlan) -> str:
    """A job array, one task per worker and one GPU per task; run with bash to create the study and submit."""
    name = plan.study_name
    gpus = 1 if plan.gpus is None else plan.gpus
    directives = [
        f"--job-name=hpo-{name}",
        f"--array=0-{plan.workers - 1}",
        "--ntasks=1",
        f"--cpus-per-task={plan.cpus}",
        *([f"--gres=gpu:{gpus}"] if gpus else []),
        *([f"--time={_slurm_time(plan.time_limit)}"] if plan.time_limit else []),
        # SIGTERM two minutes before the limit: the worker closes its trial and re-queues it.
        f"--signal=B:TERM@{STOP_GRACE_SECONDS}",
        f"--output=hpo-{name}-%A_%a.out",
    ]
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives)]
    lines += [
        "#",
        f"# hpo sweep of study {name}: {plan.workers} workers ({gpus} GPU each) sharing one study storage.",
        "# Start it from a login node with `bash THIS_FILE`: it creates the study once, then submits",
        "# itself as the job array above, whose tasks join the study with `hpo worker`.",
        "# No credential is written here: the database password comes from ~/.pgpass or PGPASSWORD,",
        "# MLflow's from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the submitting shell.",
        *proxy_notes(plan),
        "set -euo pipefail",
        *_shell_exports(plan, require=True),
        f'export OMP_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-{plan.cpus}}}" HPO_THREADS="${{SLURM_CPUS_PER_TASK:-{plan.cpus}}}"',
        'if [[ -z "${SLURM_JOB_ID:-}" ]]; then',
        f"    {shlex.join(create_argv(plan.study_file, study_name=name))}",
        '    exec sbatch "$0"',
        "fi",
        f"exec {shlex.join(worker_argv(plan.study_file, study_name=name))}",
    ]
    return "\n".join(lines) + "\n"


def _slurm_time(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def _shell_exports(plan: SweepPlan, *, require: bool) -> list[str]:
    """Export the URLs given on the command line; with `require`, insist on the environment otherwise."""
    lines = []
    for env, value, from_file, example in (
        ("HPO_STORAGE", plan.storage, plan.config.storage, "postgresql://USER@HOST:5432/DB"),
        ("MLFLOW_TRACKING_URI", plan.tracking_uri, plan.config.tracking_uri, "http://HOST:5000"),
    ):
        if value is not None:
            lines.append(f"export {env}={shlex.quote(value)}")
        elif from_file is None and require:
            lines.append(f': "${{{env}:?set {env} to the shared one, e.g. {example}}}"')
    return lines


# -- Kubernetes -----------------------------------------------------------------------------------
def kubernetes_manifests(plan: SweepPlan) -> str:
    """A ConfigMap with the study file, a Job of N workers and a CronJob starting a new study nightly."""
    if (plan.config.storage and _has_password(plan.config.storage)) or (
        plan.config.tracking_uri and _has_password(plan.config.tracking_uri)
    ):
        raise UsageError(
            f"{plan.study_file}: storage/tracking_uri contain a password, which would be copied into the ConfigMap; keep the URL without it and put the password into the Secret {plan.secret}"
        )
    slug = _k8s_name(plan.study_name)
    labels = {"app.kubernetes.io/name": "hpo", "hpo/study": slug}
    files = {Path(CONTAINER_STUDY_FILE).name: plan.study_file.read_text()}
    beside = _objective_file_beside(plan)
    if beside is not None:  # mounted next to the study file, where its relative `objective:` points
        files[beside.name] = beside.read_text()
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"hpo-{slug}-study", "labels": labels},
        "data": files,
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"hpo-{slug}", "labels": labels},
        "spec": _job_spec(plan, slug, labels, study_name=plan.study_name, extra_env=[]),
    }
    # Each night is a new study named after its Job (hpo-NAME-nightly-<minute>), so it has a budget of its own.
    nightly_env = [{"name": "HPO_STUDY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}}}]
    hour, minute = plan.at
    cron_job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"hpo-{slug}-nightly", "labels": labels},
        "spec": {
            "schedule": f"{minute} {hour} * * *",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": _job_spec(plan, slug, labels, study_name="$(HPO_STUDY_NAME)", extra_env=nightly_env),
            },
        },
    }
    gpus = 1 if plan.gpus is None else plan.gpus
    header = [
        f"# hpo sweep of study {plan.study_name} on Kubernetes: a Job of {plan.workers} workers ({gpus} GPU each)",
        "# and a CronJob that runs a new sweep every night. Every pod first creates the study (an",
        "# idempotent init step), then joins it with `hpo worker`; the workers share the study storage.",
        f"# Credentials live in the Secret {plan.secret}, never in this file:",
        f"#   kubectl create secret generic {plan.secret} \\",
        "#     --from-literal=storage='postgresql://USER:PASSWORD@HOST:5432/DB' \\",
        "#     --from-literal=tracking-uri='http://mlflow:5000'",
        "#   (optional keys: pgpassword, mlflow-username, mlflow-password)",
        *proxy_notes(plan),
        "# Then: kubectl apply -f THIS_FILE",
    ]
    body = yaml.dump_all(
        [config_map, job, cron_job], Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=200
    )
    return "\n".join(header) + "\n" + body


class _ManifestDumper(yaml.SafeDumper):
    """Plain YAML as people write manifests: no anchors, multi-line text (the study file) as a block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ManifestDumper.add_representer(str, _represent_str)


def _job_spec(
    plan: SweepPlan, slug: str, labels: dict[str, str], *, study_name: str, extra_env: list[dict[str, Any]]
) -> dict[str, Any]:
    gpus = 1 if plan.gpus is None else plan.gpus
    env = (
        extra_env
        + _k8s_env(plan)
        + [{"name": "HPO_THREADS", "value": str(plan.cpus)}, {"name": "OMP_NUM_THREADS", "value": str(plan.cpus)}]
    )
    resources: dict[str, Any] = {"requests": {"cpu": str(plan.cpus)}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": gpus}
    mounts = [{"name": "study", "mountPath": str(Path(CONTAINER_STUDY_FILE).parent), "readOnly": True}]
    container = {"image": plan.image, "env": env, "resources": resources, "volumeMounts": mounts}
    spec: dict[str, Any] = {
        # No `completions`: a work queue. Workers leave when the study's budget is used up.
        "parallelism": plan.workers,
        "backoffLimit": 2 * plan.workers,
        "ttlSecondsAfterFinished": 7 * 86400,
    }
    if plan.time_limit:
        spec["activeDeadlineSeconds"] = plan.time_limit
    spec["template"] = {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
            "initContainers": [
                {
                    "name": "create-study",
                    "command": create_argv(CONTAINER_STUDY_FILE, study_name=study_name),
                    **container,
                }
            ],
            "containers": [
                {"name": "worker", "command": worker_argv(CONTAINER_STUDY_FILE, study_name=study_name), **container}
            ],
            "volumes": [{"name": "study", "configMap": {"name": f"hpo-{slug}-study"}}],
        },
    }
    return spec


def _k8s_env(plan: SweepPlan) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    for name, value, from_file, key in (
        ("HPO_STORAGE", plan.storage, plan.config.storage, "storage"),
        ("MLFLOW_TRACKING_URI", plan.tracking_uri, plan.config.tracking_uri, "tracking-uri"),
    ):
        if value is not None:
            env.append({"name": name, "value": value})
        elif from_file is None:
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": plan.secret, "key": key}}})
    for name, key in (
        ("PGPASSWORD", "pgpassword"),
        ("MLFLOW_TRACKING_USERNAME", "mlflow-username"),
        ("MLFLOW_TRACKING_PASSWORD", "mlflow-password"),
    ):
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": plan.secret, "key": key, "optional": True}}})
    return env


def _k8s_name(study_name: str) -> str:
    """A DNS-1123 label from a study name, short enough for `hpo-NAME-nightly-<minute>` Job names."""
    slug = re.sub(r"[^a-z0-9-]+", "-", study_name.lower()).strip("-")
    return slug[:30].rstrip("-") or "study"


# -- cron and systemd -----------------------------------------------------------------------------
def cron_entries(plan: SweepPlan) -> str:
    """A crontab line and, as an alternative, a systemd service and timer: a new study every night."""
    name = plan.study_name
    hour, minute = plan.at
    workdir = plan.study_file.parent
    log = workdir / f"hpo-{name}.log"
    command = _nightly_command(plan)
    pairs = _cron_env_pairs(plan)
    prefix = ["env", *(f"{k}={v}" for k, v in pairs)] if pairs else []
    if plan.time_limit:
        # SIGTERM at the limit: the workers close and re-queue their trials; killed if still there later.
        prefix += ["timeout", "--signal=TERM", f"--kill-after={STOP_GRACE_SECONDS}", str(plan.time_limit)]
    crontab_command = f"{shlex.join(prefix)} {command}" if prefix else command
    crontab = (
        f"{minute} {hour} * * * cd {shlex.quote(str(workdir))} && {crontab_command} >> {shlex.quote(str(log))} 2>&1"
    )
    crontab = crontab.replace("%", r"\%")  # a bare % ends the command in a crontab

    unit = f"hpo-{_k8s_name(name)}"
    service = [
        "[Unit]",
        f"Description=hpo nightly sweep of study {name}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={_systemd_escape(str(workdir))}",
        *(f'Environment="{_systemd_escape(f"{k}={v}")}"' for k, v in _cron_env_pairs(plan)),
        f"EnvironmentFile=-/etc/hpo/{unit}.env",
        f'ExecStart=/bin/sh -c "{_systemd_escape("exec " + command)}"',
        # Only hpo run itself gets SIGTERM; it forwards one signal to each worker, which closes its trial.
        "KillMode=mixed",
        f"TimeoutStartSec={plan.time_limit or 'infinity'}",
        f"TimeoutStopSec={STOP_GRACE_SECONDS}",
    ]
    timer = [
        "[Unit]",
        f"Description=Nightly hpo sweep of study {name}",
        "",
        "[Timer]",
        f"OnCalendar=*-*-* {hour:02d}:{minute:02d}:00",
        "Persistent=true",
        f"Unit={unit}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    return (
        "\n".join(
            [
                f"# hpo nightly sweep of study {name}: each night a new study {name}-YYYYMMDD, {plan.workers} workers on this machine.",
                "# No credential is written here: PostgreSQL reads ~/.pgpass, MLflow ~/.mlflow/credentials;",
                f"# with systemd, secrets may also go in /etc/hpo/{unit}.env (mode 600).",
                "# --- crontab (crontab -e) ---",
                crontab,
                f"# --- /etc/systemd/system/{unit}.service ---",
                *service,
                f"# --- /etc/systemd/system/{unit}.timer ---",
                *timer,
                f"# --- enable: systemctl daemon-reload && systemctl enable --now {unit}.timer ---",
            ]
        )
        + "\n"
    )


def _hpo_program() -> list[str]:
    """hpo as an absolute path: cron and systemd start with a bare PATH."""
    script = Path(sys.executable).with_name("hpo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpo"]


def _nightly_command(plan: SweepPlan) -> str:
    """`hpo run` of tonight's study, as shell text (the date is the shell's)."""
    argv = [*_hpo_program(), "run", str(plan.study_file), "--workers", str(plan.workers), "--quiet"]
    return f'{shlex.join(argv)} --study-name "{plan.study_name}-$(date +%Y%m%d)"'


def _cron_env_pairs(plan: SweepPlan) -> list[tuple[str, str]]:
    pairs = [
        (k, v) for k, v in (("HPO_STORAGE", plan.storage), ("MLFLOW_TRACKING_URI", plan.tracking_uri)) if v is not None
    ]
    if plan.gpus is not None:
        pairs.append(("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(plan.gpus))))
    return pairs


def _systemd_escape(text: str) -> str:
    """Escape for a double-quoted systemd value: backslashes and quotes, then specifiers and variables."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")


# -- options --------------------------------------------------------------------------------------
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
