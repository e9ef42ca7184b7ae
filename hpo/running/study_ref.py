"""Which study a command means: a study name, or the path of a study file (whose name and stores are used)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpo.config import STUDY_NAME_RULE, study_name_problem
from hpo.config.settings import Settings, resolve_settings
from hpo.errors import UsageError

if TYPE_CHECKING:
    from hpo.config import StudyConfig


@dataclass
class StudyRef:
    """A study named on the command line: by name, or by the path of its study file."""

    name: str
    settings: Settings
    config: StudyConfig | None


def resolve_study_ref(study: str, *, storage: str | None = None, tracking_uri: str | None = None) -> StudyRef:
    """`study` may be a study file (its name and storage are used) or a study name (which must follow the rule)."""
    config = None
    if study.endswith((".yaml", ".yml")) or Path(study).is_file():
        from hpo.config import load_study  # the schema's import (0.2 s) only for a file

        config = load_study(study)
        name = config.name
    else:
        if study_name_problem(study):
            raise UsageError(f"study: {study!r} is neither a study file nor a study name ({STUDY_NAME_RULE})")
        name = study
    settings = resolve_settings(
        storage_flag=storage,
        tracking_flag=tracking_uri,
        file_storage=config.storage if config else None,
        file_tracking_uri=config.tracking_uri if config else None,
        source=study if config else None,
    )
    return StudyRef(name=name, settings=settings, config=config)


__all__ = ["StudyRef", "resolve_study_ref"]
