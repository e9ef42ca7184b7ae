"""The study file: a pydantic model of the contract and a loader that turns mistakes into one-line errors.

No torch or optuna here: `hpo validate` and every worker start with this package, and it must stay fast.
Checks that need Optuna (sampler and pruner keyword arguments) live in :mod:`hpo.running.samplers`. What a
study may say about its objective (metrics, hyperparameters, `data:` keys, its own checks) is read from
the objective's declaration (:mod:`hpo.objectives`), loaded while `objective:` is validated.

One job per module: the schema (:mod:`._schema`, with the search space in :mod:`._space` and the sampler
and pruner names in :mod:`._vocabulary`), the checks against the objective (:mod:`._rules`), pydantic's
errors in a YAML author's words (:mod:`._errors`), the safe YAML reader (:mod:`._yaml`) and the file
loader (:mod:`._file`).
"""

from typing import TYPE_CHECKING, Any

from hpo.config._names import STUDY_NAME_RULE, check_study_name, study_name_problem

if TYPE_CHECKING:
    from hpo.config._file import load_study, parse_study, study_to_yaml
    from hpo.config._schema import (
        PRECISIONS,
        EvaluationConfig,
        ExecutionConfig,
        PrecisionName,
        PrunerConfig,
        SamplerConfig,
        StudyConfig,
    )
    from hpo.config._space import CategoricalParam, FloatParam, IntParam, Param, Scalar
    from hpo.config._vocabulary import (
        MANAGED_ARGUMENTS,
        PRUNER_CLASSES,
        PRUNERS,
        SAMPLER_CLASSES,
        SAMPLERS,
        PrunerName,
        SamplerName,
    )
    from hpo.objectives._data import DataConfig

# The schema and its loader are imported on first use: pydantic, the search space and the objectives'
# declarations cost 0.2 s, which the commands that only read settings or list studies (`hpo status`) skip.
_LAZY = {
    **dict.fromkeys(("load_study", "parse_study", "study_to_yaml"), "hpo.config._file"),
    **dict.fromkeys(
        (
            "PRECISIONS",
            "EvaluationConfig",
            "ExecutionConfig",
            "PrecisionName",
            "PrunerConfig",
            "SamplerConfig",
            "StudyConfig",
        ),
        "hpo.config._schema",
    ),
    **dict.fromkeys(("CategoricalParam", "FloatParam", "IntParam", "Param", "Scalar"), "hpo.config._space"),
    **dict.fromkeys(
        ("MANAGED_ARGUMENTS", "PRUNER_CLASSES", "PRUNERS", "SAMPLER_CLASSES", "SAMPLERS", "PrunerName", "SamplerName"),
        "hpo.config._vocabulary",
    ),
    "DataConfig": "hpo.objectives._data",
}


if not TYPE_CHECKING:  # mypy reads the imports above, so that a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # looked up once
        return value


__all__ = [
    "MANAGED_ARGUMENTS",
    "PRECISIONS",
    "PRUNERS",
    "PRUNER_CLASSES",
    "SAMPLERS",
    "SAMPLER_CLASSES",
    "STUDY_NAME_RULE",
    "CategoricalParam",
    "DataConfig",
    "EvaluationConfig",
    "ExecutionConfig",
    "FloatParam",
    "IntParam",
    "Param",
    "PrecisionName",
    "PrunerConfig",
    "PrunerName",
    "SamplerConfig",
    "SamplerName",
    "Scalar",
    "StudyConfig",
    "check_study_name",
    "load_study",
    "parse_study",
    "study_name_problem",
    "study_to_yaml",
]
