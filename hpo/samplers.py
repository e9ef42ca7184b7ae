"""Samplers and pruners by name: Optuna's own classes, with study-file keyword arguments checked up front."""

from __future__ import annotations

import inspect
from typing import Any

import optuna

from hpo.config import CategoricalParam, FloatParam, IntParam, PrunerConfig, SamplerConfig, StudyConfig
from hpo.errors import UsageError

SAMPLER_CLASSES: dict[str, str] = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
}
PRUNER_CLASSES: dict[str, str] = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "wilcoxon": "WilcoxonPruner",
    "patient": "PatientPruner",
}
# Arguments hpo fills in itself, so a study file may not set them.
_MANAGED = {"seed", "search_space", "wrapped_pruner"}


def _construct(cls: type, kwargs: dict[str, Any], *, field: str, managed: dict[str, Any] | None = None) -> Any:
    """Instantiate `cls` with the study file's `kwargs` (checked by name) plus hpo's `managed` ones."""
    accepted = [p for p in inspect.signature(cls).parameters if p not in _MANAGED and p not in ("self", "args", "kwargs")]
    for key in kwargs:
        if key not in accepted:
            raise UsageError(f"{field}.{key}: {cls.__name__} has no such argument; accepted: {', '.join(accepted) or 'none'}")
    try:
        return cls(**kwargs, **(managed or {}))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{field}: {cls.__name__} refused the arguments: {exc}") from None


def build_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The sampler the study file names, seeded with the study seed."""
    sampler_config: SamplerConfig = config.sampler
    cls = getattr(optuna.samplers, SAMPLER_CLASSES[sampler_config.type])
    kwargs = sampler_config.kwargs
    for key in _MANAGED & set(kwargs):
        raise UsageError(f"sampler.{key}: set by hpo (use the top-level `seed` and `params`), remove it")
    managed: dict[str, Any] = {}
    if sampler_config.type == "grid":
        managed["search_space"] = grid_search_space(config)
    if "seed" in inspect.signature(cls).parameters:
        managed["seed"] = config.seed
    return _construct(cls, kwargs, field="sampler", managed=managed)


def grid_search_space(config: StudyConfig) -> dict[str, list[Any]]:
    """Every parameter as an explicit list of values, which is what GridSampler needs."""
    space: dict[str, list[Any]] = {}
    for name, param in config.params.items():
        if isinstance(param, CategoricalParam):
            space[name] = list(param.choices)
        elif isinstance(param, IntParam):
            space[name] = list(range(param.low, param.high + 1, param.step or 1))
        elif isinstance(param, FloatParam) and param.step is not None:
            n = int(round((param.high - param.low) / param.step))
            space[name] = [round(param.low + i * param.step, 12) for i in range(n + 1)]
        else:
            raise UsageError(f"params.{name}: the grid sampler needs a step (or categorical choices) for float parameters")
    return space


def build_pruner(pruner_config: PrunerConfig, *, field: str = "pruner") -> optuna.pruners.BasePruner:
    """The pruner the study file names; `patient` wraps the one given under `wrapped`."""
    cls = getattr(optuna.pruners, PRUNER_CLASSES[pruner_config.type])
    kwargs = pruner_config.kwargs
    if pruner_config.type == "patient":
        wrapped = kwargs.pop("wrapped", None) or {"type": "median"}
        if not isinstance(wrapped, dict):
            raise UsageError(f"{field}.wrapped: expected a pruner such as {{type: median}}")
        try:
            inner = PrunerConfig.model_validate(wrapped)
        except Exception:  # pydantic's ValidationError: report the accepted types
            raise UsageError(f"{field}.wrapped.type: accepted: {', '.join(PRUNER_CLASSES)}") from None
        kwargs["wrapped_pruner"] = build_pruner(inner, field=f"{field}.wrapped")
        kwargs.setdefault("patience", 3)
        inner_pruner = kwargs.pop("wrapped_pruner")
        return _construct(cls, kwargs, field=field, managed={"wrapped_pruner": inner_pruner})
    return _construct(cls, kwargs, field=field)
