"""Objectives are plain functions, registered in a plain dict by the name a study file uses."""

from __future__ import annotations

from collections.abc import Callable

from hpo.config import StudyConfig
from hpo.objectives import boston
from hpo.objectives._context import TrialContext, TrialOutcome

Objective = Callable[[TrialContext], TrialOutcome]

OBJECTIVES: dict[str, Objective] = {
    "boston": boston.objective,
}

# Checks that run before a study writes anything: the data is there and readable.
PREFLIGHT: dict[str, Callable[[StudyConfig], None]] = {
    "boston": boston.preflight,
}

__all__ = ["OBJECTIVES", "PREFLIGHT", "Objective", "TrialContext", "TrialOutcome"]
