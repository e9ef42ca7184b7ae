"""Slurm: a job array of workers."""

from __future__ import annotations

import shlex

from hpo.operations.schedule._commands import STOP_GRACE_SECONDS, create_argv, worker_argv
from hpo.operations.schedule._plan import SweepPlan, proxy_notes


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
        f'export OMP_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-{plan.cpus}}}"'
        f' HPO_THREADS="${{SLURM_CPUS_PER_TASK:-{plan.cpus}}}"',
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
