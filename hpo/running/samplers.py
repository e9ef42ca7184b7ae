"""Samplers and pruners by name: Optuna's own classes, with study-file keyword arguments checked up front."""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import optuna

from hpo.config import (  # the sampler and pruner names are config's vocabulary
    MANAGED_ARGUMENTS,
    PRUNER_CLASSES,
    SAMPLER_CLASSES,
    CategoricalParam,
    FloatParam,
    IntParam,
    PrunerConfig,
    SamplerConfig,
    StudyConfig,
)
from hpo.errors import UsageError
from hpo.running.history_window import HistoryWindowSampler

# Arguments hpo fills in itself, so a study file may not set them.


def _construct(cls: type, kwargs: dict[str, Any], *, field: str, managed: dict[str, Any] | None = None) -> Any:
    """Instantiate `cls` with the study file's `kwargs` (checked by name and type) plus hpo's `managed` ones."""
    accepted = [
        p
        for p in inspect.signature(cls).parameters
        if p not in MANAGED_ARGUMENTS and p not in ("self", "args", "kwargs")
    ]
    for key in kwargs:
        if key not in accepted:
            raise UsageError(
                f"{field}.{key}: {cls.__name__} has no such argument; accepted: {', '.join(accepted) or 'none'}"
            )
    annotations = _annotations(cls)
    for key, value in kwargs.items():
        if key in annotations and not _fits(annotations[key], value):
            raise UsageError(f"{field}.{key}: {cls.__name__} takes {_type_text(annotations[key])} (got {value!r})")
    try:
        return cls(**kwargs, **(managed or {}))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{field}: {cls.__name__} refused the arguments: {exc}") from None


def _annotations(cls: type) -> dict[str, Any]:
    """The constructor's parameter types; Optuna writes them as strings, some naming types it imports only
    for type checkers, so each is resolved on its own (an unresolvable one is left to the constructor)."""
    import collections.abc
    import sys
    import typing

    import numpy

    namespace = {
        **vars(typing),
        **vars(collections.abc),
        **vars(sys.modules[cls.__module__]),
        "numpy": numpy,
        "np": numpy,
        "optuna": optuna,
    }
    namespace.update(
        FrozenTrial=optuna.trial.FrozenTrial,
        Study=optuna.Study,
        BaseSampler=optuna.samplers.BaseSampler,
        BasePruner=optuna.pruners.BasePruner,
    )
    found: dict[str, Any] = {}
    for name, parameter in inspect.signature(cls).parameters.items():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)
            except Exception:
                continue
        if annotation is not inspect.Parameter.empty:
            found[name] = annotation
    return found


def _fits(annotation: Any, value: Any) -> bool:
    """Whether a YAML value is of the type a constructor declares (strictly: '5' is not an int, 5 is a float)."""
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        return True
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError:
        return False
    return True


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "null"}


def _type_text(annotation: Any) -> str:
    """`int | None` -> 'an integer or null'; a class or callable by its plain name."""
    if "Callable" in str(annotation):
        return "a Python function, which a study file cannot give (leave it out)"
    text = re.sub(r"<class '([\w.]+)'>", r"\1", str(annotation))
    text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", text).replace("NoneType", "None")
    if text.startswith("typing.") or "[" in text:
        return text.replace("typing.", "")
    return " or ".join(_TYPE_WORDS.get(part.strip(), part.strip()) for part in text.split("|"))


def build_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The sampler the study file names, seeded with the study seed."""
    sampler_config: SamplerConfig = config.sampler
    cls = getattr(optuna.samplers, SAMPLER_CLASSES[sampler_config.type])
    kwargs = sampler_config.kwargs
    for key in MANAGED_ARGUMENTS & set(kwargs):
        raise UsageError(f"sampler.{key}: set by hpo (use the top-level `seed` and `params`), remove it")
    managed: dict[str, Any] = {}
    if sampler_config.type == "grid":
        managed["search_space"] = grid_search_space(config)
    parameters = inspect.signature(cls).parameters
    if "seed" in parameters:
        managed["seed"] = config.seed
    sampler = _construct(cls, kwargs, field="sampler", managed=managed)
    window = sampler_config.history_window
    if window is None:
        return sampler
    startup = kwargs.get("n_startup_trials", parameters["n_startup_trials"].default)
    if window < startup:
        raise UsageError(
            f"sampler.history_window: {window} is below n_startup_trials ({startup}), so the sampler would "
            "never leave its random start; use at least that many"
        )
    return HistoryWindowSampler(sampler, window=window)


MAX_GRID_POINTS = 100_000  # GridSampler holds every point in memory, and a study rarely runs more trials


def grid_size(config: StudyConfig) -> tuple[int, dict[str, int]]:
    """The number of grid points and each parameter's count, computed without building a list."""
    counts: dict[str, int] = {}
    for name, param in config.params.items():
        if isinstance(param, CategoricalParam):
            counts[name] = len(param.choices)
        elif isinstance(param, IntParam):
            counts[name] = (param.high - param.low) // (param.step or 1) + 1
        elif isinstance(param, FloatParam) and param.step is not None:
            counts[name] = _float_steps(param.low, param.high, param.step) + 1
        else:
            raise UsageError(
                f"params.{name}: the grid sampler needs a step (or categorical choices) for float parameters"
            )
    return math.prod(counts.values()), counts


def _float_steps(low: float, high: float, step: float) -> int:
    """Whole steps from low that stay within high (a float tolerance keeps 0.1 * 3 within 0.3)."""
    return math.floor((high - low) / step + 1e-9)


def grid_search_space(config: StudyConfig) -> dict[str, list[Any]]:
    """Every parameter as an explicit list of values, which is what GridSampler needs; refused (before any
    list is built) when the grid has more than MAX_GRID_POINTS points."""
    total, counts = grid_size(config)
    if total > MAX_GRID_POINTS:
        biggest = ", ".join(
            f"{name}: {count:,}" for name, count in sorted(counts.items(), key=lambda item: -item[1])[:3]
        )
        raise UsageError(
            f"sampler.type: the grid has {total:,} points ({biggest}), "
            f"more than the {MAX_GRID_POINTS:,} a grid search may have; "
            "use a coarser step, fewer choices, or another sampler (tpe, random)"
        )
    space: dict[str, list[Any]] = {}
    for name, param in config.params.items():
        if isinstance(param, CategoricalParam):
            space[name] = list(param.choices)
        elif isinstance(param, IntParam):
            space[name] = list(range(param.low, param.high + 1, param.step or 1))
        elif isinstance(param, FloatParam) and param.step is not None:
            space[name] = [
                round(param.low + i * param.step, 12)
                for i in range(_float_steps(param.low, param.high, param.step) + 1)
            ]
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
