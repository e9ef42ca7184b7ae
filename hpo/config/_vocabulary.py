"""The names a study file may give `sampler.type` and `pruner.type`, and the Optuna class each one means.

The one place they are written: the study schema validates against them, :mod:`hpo.running.samplers`
builds the classes from them and :mod:`hpo.config.reference` documents them. The Optuna classes are
named, not imported, so that checking a study file needs no Optuna.
"""

from __future__ import annotations

from typing import Literal, get_args

SamplerName = Literal["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2"]
PrunerName = Literal["none", "median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patient"]

SAMPLER_CLASSES: dict[SamplerName, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
}
# Samplers that fit a model to the trials so far, whose ask grows with them and which a history window
# bounds; the others enumerate (grid), evolve a population (nsga2, cmaes) or ignore the past (random, qmc).
WINDOWED_SAMPLERS: tuple[SamplerName, ...] = ("tpe", "gp")
PRUNER_CLASSES: dict[PrunerName, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "wilcoxon": "WilcoxonPruner",
    "patient": "PatientPruner",
}
# Constructor arguments hpo sets itself (a study file may not): the seed per ask, the grid's search space,
# the pruner a wrapping pruner wraps.
MANAGED_ARGUMENTS = frozenset({"seed", "search_space", "wrapped_pruner"})
# mypy checks that every key above is a name; tests/test_config.py that every name has a class.
SAMPLERS: tuple[SamplerName, ...] = get_args(SamplerName)
PRUNERS: tuple[PrunerName, ...] = get_args(PrunerName)
