"""The checks of a whole study against its objective, run once the file's shape is valid.

Each raises a FieldError naming the field, which the loader turns into the one-line message. They
read the objective's declaration (metrics, hyperparameter table, cv support), never train anything.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hpo.config._space import CategoricalParam, FloatParam, in_space, space_text
from hpo.config._wording import short, suggest
from hpo.objectives._table import FieldError, HyperparameterTable, Rule

if TYPE_CHECKING:
    from hpo.config._schema import StudyConfig
    from hpo.objectives._protocol import Objective


def check_plain_kwargs(kwargs: dict[str, Any], *, prefix: str = "") -> None:
    """Values must be plain YAML data (what an Optuna class can take and MLflow can store)."""
    for key, value in kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            raise FieldError(
                f"{prefix}{key}", f"expected numbers, strings, true/false, lists or mappings (got {short(value)})"
            ) from None


def check_against_objective(config: StudyConfig, objective: Objective) -> None:
    """Metrics, directions, pruning, params/fixed and the objective's own checks, in the order users fix them."""
    metrics = config.metrics
    declared = objective.metrics
    for m in metrics:
        if declared and m not in declared:
            raise FieldError(
                "metric",
                f"unknown metric {m!r} for objective {objective.name}{suggest(m, declared)}; "
                f"accepted: {', '.join(declared)}",
            )
    if len(set(metrics)) != len(metrics):
        raise FieldError("metric", "a metric is listed twice")
    _check_directions(config, objective)
    if len(metrics) > 1 and config.pruner.type != "none":
        raise FieldError("pruner.type", "Optuna cannot prune multi-objective studies; use type: none")
    both = set(config.params) & set(config.fixed)
    if both:
        name = sorted(both)[0]
        raise FieldError(f"fixed.{name}", "is also in params; a hyperparameter is either searched or fixed")
    check_plain_kwargs(config.fixed, prefix="fixed.")
    if config.data.cross_validated and objective.cv_rows is None:
        raise FieldError(
            "data.cv_folds",
            f"objective {objective.name} does not support cross-validation (it declares no cv_rows); "
            "use 1 or leave it out",
        )
    if objective.hyperparameters is not None:
        _check_table(config, objective.hyperparameters, objective.name)
    _check_conditions(config)
    _check_enqueue(config)
    if config.evaluation.tta is not None:
        refusal = tta_refusal(config, objective, config.evaluation.tta)
        if refusal is not None:
            raise FieldError("evaluation.tta", refusal)
    if objective.validate is not None:
        objective.validate(config)


def tta_refusal(config: StudyConfig, objective: Objective, mode: str) -> str | None:
    """Why `hpo evaluate` cannot predict with test-time augmentation `mode` (`evaluation.tta`, `--tta`),
    or None; ``none`` always can (each model as it was validated)."""
    if mode == "none":
        return None
    offered = tuple(objective.test_time_augmentations)
    if not offered:
        return f"objective {objective.name} offers no test-time augmentation; accepted: none"
    if mode not in offered:
        return f"unknown test-time augmentation {short(mode)}; accepted: {', '.join(('none', *offered))}"
    if config.data.cross_validated:
        return (
            "the study is cross-validated (data.cv_folds): its out-of-fold validation predictions cannot be "
            "recomputed with test-time augmentation; accepted: none"
        )
    return None


def _check_directions(config: StudyConfig, objective: Objective) -> None:
    metrics = config.metrics
    if config.direction is not None:
        directions = [config.direction] if isinstance(config.direction, str) else list(config.direction)
        if len(directions) != len(metrics):
            raise FieldError(
                "direction",
                f"{len(directions)} direction(s) for {len(metrics)} metric(s); "
                "give one of minimize|maximize per metric",
            )
        return
    unknown = [m for m in metrics if m not in objective.metrics]
    if unknown:
        raise FieldError(
            "direction",
            f"objective {objective.name} does not declare the direction of {unknown[0]!r}; "
            "give direction: minimize or maximize",
        )


def _check_table(config: StudyConfig, table: HyperparameterTable, objective: str) -> None:
    """Names, values and ranges against the objective's hyperparameter table."""
    for where, names in (("params", config.params), ("fixed", config.fixed)):
        for name in names:
            if name not in table:
                raise FieldError(
                    f"{where}.{name}",
                    f"objective {objective} does not understand {name!r}{suggest(name, table.names)}; "
                    f"it understands: {', '.join(sorted(table.names))}",
                )
    for name, value in config.fixed.items():
        rule = table[name].rule
        if not rule.accepts(value):
            raise FieldError(f"fixed.{name}", rejection(value, rule))
    for name, param in config.params.items():
        _check_range(name, param, table[name].rule)
    models = _possible_models(config, table)
    for where, names in (("params", config.params), ("fixed", config.fixed)):
        for name in names:
            users = table[name].applies_to
            if users is not None and models and not models.intersection(users):
                raise FieldError(
                    f"{where}.{name}",
                    f"is used by model {', '.join(sorted(users))} only, "
                    f"and this study's model is {', '.join(sorted(models))}; remove it",
                )


def _check_range(name: str, param: Any, rule: Rule) -> None:
    where = f"params.{name}"
    if isinstance(param, CategoricalParam):
        for value in param.choices:
            if not rule.accepts(value):
                raise FieldError(f"{where}.choices", rejection(value, rule))
    elif rule.kind == "choice":
        raise FieldError(f"{where}.type", f"must be categorical; accepted values: {', '.join(map(str, rule.choices))}")
    elif rule.kind in ("bool", "str"):
        raise FieldError(f"{where}.type", f"{name} takes {rule.describe()}; use type: categorical with choices")
    elif rule.kind == "int" and isinstance(param, FloatParam):
        raise FieldError(f"{where}.type", f"{name} takes {rule.describe()}; use type: int")
    else:
        for bound in ("low", "high"):
            value = getattr(param, bound)
            if not rule.accepts(value):
                raise FieldError(f"{where}.{bound}", f"{short(value)} is not {rule.describe()}")


def _possible_models(config: StudyConfig, table: HyperparameterTable) -> set[str]:
    """The values `model` may take in this study (empty when the table has no `model`)."""
    if "model" not in table:
        return set()
    if "model" in config.fixed:
        return {str(config.fixed["model"])}
    param = config.params.get("model")
    if isinstance(param, CategoricalParam):
        return {str(c) for c in param.choices} | ({str(table["model"].default)} if param.when else set())
    return {str(table["model"].default)}


def _check_conditions(config: StudyConfig) -> None:
    """Every `when` names another categorical parameter and its choices, without cycles."""
    for name, param in config.params.items():
        for parent, values in (param.when or {}).items():
            where = f"params.{name}.when.{parent}"
            if parent == name:
                raise FieldError(where, "a parameter cannot depend on itself")
            if parent not in config.params:
                others = ", ".join(sorted(set(config.params) - {name}))
                raise FieldError(where, f"names no parameter in params; accepted: {others or 'none'}")
            target = config.params[parent]
            if not isinstance(target, CategoricalParam):
                raise FieldError(where, f"{parent!r} is {target.type}; `when` can only name a categorical parameter")
            for value in values:
                if value not in target.choices:
                    raise FieldError(
                        where, f"{value!r} is not a choice of {parent}; accepted: {', '.join(map(str, target.choices))}"
                    )
    config.parameter_order()  # raises on cycles


def _check_enqueue(config: StudyConfig) -> None:
    """Every warm-start configuration must be a point of the search space, or Optuna would try a
    trial the study cannot otherwise produce (and compare it with the rest)."""
    if config.n_trials is not None and len(config.enqueue) > config.n_trials:
        raise FieldError(
            "enqueue", f"{len(config.enqueue)} configurations for n_trials: {config.n_trials}; list at most n_trials"
        )
    for index, entry in enumerate(config.enqueue):
        for name, value in entry.items():
            where = f"enqueue.{index}.{name}"
            param = config.params.get(name)
            if param is None:
                reason = (
                    "it is in fixed, which every trial uses already"
                    if name in config.fixed
                    else f"accepted: {', '.join(config.params) or 'none (params is empty)'}"
                )
                raise FieldError(where, f"{name!r} is not searched in params{suggest(name, config.params)}; {reason}")
            if not in_space(param, value):
                raise FieldError(where, f"{short(value)} is outside the search space; accepted: {space_text(param)}")
            for parent, values in (param.when or {}).items():
                if parent in entry and entry[parent] not in values:
                    raise FieldError(
                        where,
                        f"exists only when {parent} is {' or '.join(map(str, values))}, "
                        f"and this configuration sets {parent}: {entry[parent]}",
                    )


def rejection(value: Any, rule: Rule) -> str:
    """Why a table rule refuses `value`: the accepted choices (with a suggestion) or the rule in words."""
    if rule.kind == "choice":
        choices = [str(v) for v in rule.choices]
        return f"unknown value {value!r}{suggest(str(value), choices)}; accepted: {', '.join(choices)}"
    return f"{short(value)} is not {rule.describe()}"
