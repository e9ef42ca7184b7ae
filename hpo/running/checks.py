"""The checks a study must pass before anything is written anywhere: one place, run by the runner and by
`hpo run`/`create`/`validate` for every file before the first one starts."""

from __future__ import annotations

from typing import Any

from hpo.config import StudyConfig
from hpo.config.settings import Settings, check_writable
from hpo.errors import UsageError


def check_study(config: StudyConfig, settings: Settings | None = None, *, source: str | None = None) -> tuple[Any, Any]:
    """Build the sampler and pruner, check the objective and its data (`preflight`), then that the stores
    are writable and reachable (when `settings` are given). Returns the sampler and the pruner.

    With `source` (the study file), errors about the file's fields name it.
    """
    from hpo.running.databases import check_stores
    from hpo.running.samplers import build_pruner, build_sampler

    try:
        sampler, pruner = build_sampler(config), build_pruner(config.pruner)
        config.preflight()
    except UsageError as exc:
        if source is None:
            raise
        raise UsageError(f"{source}: {exc}") from None
    if settings is not None:
        check_writable(settings)
        check_stores(settings)
    return sampler, pruner


__all__ = ["check_study"]
