"""A plan as the files of its target."""

from __future__ import annotations

from collections.abc import Callable

from hpo.errors import UsageError
from hpo.operations.schedule._commands import TARGETS
from hpo.operations.schedule._cron import cron_entries
from hpo.operations.schedule._kubernetes import kubernetes_manifests
from hpo.operations.schedule._plan import SweepPlan
from hpo.operations.schedule._slurm import slurm_script


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
