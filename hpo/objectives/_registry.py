"""Objectives known by name: the entry points of group ``hpo.objectives``, hpo's built-ins among them.

hpo declares its own objectives in its ``pyproject.toml`` exactly as a user's package would::

    [project.entry-points."hpo.objectives"]
    boston = "hpo.objectives.boston:objective"

A source checkout whose installed metadata predates an objective still finds hpo's own: every public
subpackage of :mod:`hpo.objectives` is registered under its name as ``hpo.objectives.<name>:objective``.
Listing the names imports nothing.
"""

from __future__ import annotations

import pkgutil
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpo.objectives._protocol import Dataset

GROUP = "hpo.objectives"


def registered() -> dict[str, str]:
    """Name -> "module:attribute" of every objective a study may name without a path."""
    import hpo.objectives as package

    found = {
        info.name: f"hpo.objectives.{info.name}:objective"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    }
    for entry in entry_points(group=GROUP):
        found.setdefault(entry.name, entry.value)  # a package cannot shadow a built-in name
    return dict(sorted(found.items()))


def datasets() -> dict[str, Dataset]:
    """Name -> dataset, of every registered objective (what `hpo data` and `hpo doctor` manage)."""
    from hpo.objectives._loader import load_objective
    from hpo.objectives._table import FieldError

    found: dict[str, Dataset] = {}
    for name in registered():
        try:
            loaded = load_objective(name)
        except FieldError:
            continue  # a broken plug-in must not hide the other objectives' data; `hpo validate` names its problem
        for dataset in loaded.objective.datasets:
            found.setdefault(dataset.name, dataset)
    return dict(sorted(found.items()))


def is_builtin(target: str) -> bool:
    """Whether a registered "module:attribute" is one of hpo's own objectives."""
    return target.startswith("hpo.objectives.")


__all__ = ["GROUP", "datasets", "is_builtin", "registered"]
