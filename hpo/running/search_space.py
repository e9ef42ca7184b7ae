"""The study file's `params` turned into `trial.suggest_*` calls, conditional parameters included."""

from __future__ import annotations

from typing import Any

import optuna

from hpo.config import CategoricalParam, FloatParam, IntParam, StudyConfig


def suggest(trial: optuna.Trial, config: StudyConfig) -> dict[str, Any]:
    """Sample every parameter whose `when` holds, parents first; return name -> value."""
    sampled: dict[str, Any] = {}
    for name in config.parameter_order():
        param = config.params[name]
        if not _condition_holds(param.when, sampled):
            continue
        if isinstance(param, CategoricalParam):
            sampled[name] = trial.suggest_categorical(name, param.choices)
        elif isinstance(param, IntParam):
            sampled[name] = trial.suggest_int(name, param.low, param.high, step=param.step or 1, log=param.log)
        elif isinstance(param, FloatParam):
            sampled[name] = trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    return sampled


def _condition_holds(when: dict[str, list[Any]] | None, sampled: dict[str, Any]) -> bool:
    return all(parent in sampled and sampled[parent] in values for parent, values in (when or {}).items())


def describe(config: StudyConfig) -> list[dict[str, Any]]:
    """One row per hyperparameter a trial trains with, for `hpo validate`'s table: the searched ones, the
    fixed ones, then the defaults of the objective's table; `accepted` is the table's rule."""
    table = config.load_objective().objective.hyperparameters
    rule = lambda name: table[name].rule.describe() if table is not None and name in table else ""
    rows = []
    for name in config.parameter_order():
        p = config.params[name]
        if isinstance(p, CategoricalParam):
            domain = ", ".join(map(str, p.choices))
        else:
            domain = f"[{p.low}, {p.high}]" + (" log" if p.log else "") + (f" step {p.step}" if p.step else "")
        when = "; ".join(f"{k} in {v}" for k, v in (p.when or {}).items())
        rows.append({"name": name, "type": p.type, "domain": domain, "when": when, "accepted": rule(name)})
    for name, value in config.fixed.items():
        rows.append({"name": name, "type": "fixed", "domain": repr(value), "when": "", "accepted": rule(name)})
    for row in table or ():
        if row.name not in config.params and row.name not in config.fixed:
            rows.append(
                {
                    "name": row.name,
                    "type": "default",
                    "domain": repr(row.default),
                    "when": "",
                    "accepted": row.rule.describe(),
                }
            )
    return rows
