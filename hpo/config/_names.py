"""The rule for study names: one rule wherever a name enters (the study file, --study-name, a read command)."""

from __future__ import annotations

import re

from hpo.config._wording import short
from hpo.errors import UsageError

STUDY_NAME_RULE = (
    "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 200 characters, "
    "not ending in .yaml or .yml"
)


def study_name_problem(name: str) -> str | None:
    """Why `name` cannot name a study (it becomes a folder name and an MLflow filter value), or None."""
    # A name ending like a study file would be read as a file's path by every command that takes either.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", name) or name.lower().endswith((".yaml", ".yml")):
        return f"use {STUDY_NAME_RULE}"
    return None


def check_study_name(name: str, *, field: str) -> str:
    """`name` if it is a valid study name, else a one-line UsageError naming `field`."""
    problem = study_name_problem(name)
    if problem:
        raise UsageError(f"{field}: {short(name)} is not a study name; {problem}")
    return name
