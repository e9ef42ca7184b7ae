"""Batch sweeps: a Slurm job array, a Kubernetes Job and nightly CronJob, a crontab line and systemd timer.

Every target runs the worker command of :func:`worker_argv`, the one `hpo run --workers N` spawns
locally, so a scheduled sweep behaves like a local one: the workers share the study storage, the
budget is global and a killed worker's trial is re-queued. Nothing here writes a credential: a URL
with a password is refused, and secrets come from the environment, ~/.pgpass or a Kubernetes Secret.

Modules: `_commands` (the worker and create commands), `_plan` (a sweep's plan, its options and
warnings), `_render` (a plan as a target's files), one module per target: `_slurm`, `_kubernetes`, `_cron`.
"""

from hpo.operations.schedule._commands import (
    CONTAINER_STUDY_FILE,
    DEFAULT_IMAGE,
    DEFAULT_SECRET,
    STOP_GRACE_SECONDS,
    TARGETS,
    create_argv,
    worker_argv,
)
from hpo.operations.schedule._cron import cron_entries
from hpo.operations.schedule._kubernetes import kubernetes_manifests
from hpo.operations.schedule._plan import (
    SweepPlan,
    objective_warning,
    parse_duration,
    plan_sweep,
    proxy_notes,
    shared_storage_warning,
)
from hpo.operations.schedule._render import render
from hpo.operations.schedule._slurm import slurm_script

__all__ = [
    "CONTAINER_STUDY_FILE",
    "DEFAULT_IMAGE",
    "DEFAULT_SECRET",
    "STOP_GRACE_SECONDS",
    "TARGETS",
    "SweepPlan",
    "create_argv",
    "cron_entries",
    "kubernetes_manifests",
    "objective_warning",
    "parse_duration",
    "plan_sweep",
    "proxy_notes",
    "render",
    "shared_storage_warning",
    "slurm_script",
    "worker_argv",
]
