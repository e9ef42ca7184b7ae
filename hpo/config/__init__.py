"""The study file: a pydantic model of the contract and a loader that turns mistakes into one-line errors.

No torch or optuna here: `hpo validate` and every worker start with this module, and it must stay fast.
Checks that need Optuna (sampler and pruner keyword arguments) live in :mod:`hpo.samplers`. What a study
may say about its objective (metrics, hyperparameters, `data:` keys, its own checks) is read from the
objective's declaration (:mod:`hpo.objectives`), loaded while `objective:` is validated.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpo.errors import UsageError
from hpo.objectives._data import MAX_SEED, DataConfig
from hpo.objectives._table import FieldError as _FieldError
from hpo.objectives._table import HyperparameterTable, Rule

if TYPE_CHECKING:
    from hpo.objectives._loader import LoadedObjective

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patient")
DIRECTIONS = ("minimize", "maximize")

Scalar = Union[bool, int, float, str, None]
STUDY_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 200 characters"


def study_name_problem(name: str) -> str | None:
    """Why `name` cannot name a study (it becomes a folder name and an MLflow filter value), or None.

    One rule wherever a name enters: the study file, --study-name, a name given to a read command.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", name):
        return f"use {STUDY_NAME_RULE}"
    return None


def check_study_name(name: str, *, field: str) -> str:
    """`name` if it is a valid study name, else a one-line UsageError naming `field`."""
    problem = study_name_problem(name)
    if problem:
        raise UsageError(f"{field}: {_short(name)} is not a study name; {problem}")
    return name


class _Strict(BaseModel):
    # Unknown keys are typos; .inf and .nan in a range or budget are always mistakes.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Conditional(_Strict):
    when: dict[str, list[Scalar]] | None = Field(
        default=None,
        description="sample this parameter only when a categorical parameter takes one of the listed values",
    )

    @field_validator("when", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class FloatParam(_Conditional):
    type: Literal["float"]
    low: float = Field(description="smallest value")
    high: float = Field(description="largest value")
    log: bool = Field(default=False, description="sample on a log scale (needs low > 0)")
    step: float | None = Field(default=None, gt=0, description="sample on a grid of this step (not with log)")

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_numeric_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Conditional):
    type: Literal["int"]
    low: int = Field(description="smallest value")
    high: int = Field(description="largest value (included)")
    log: bool = Field(default=False, description="sample on a log scale (needs low > 0)")
    step: int | None = Field(default=None, gt=0, description="sample every step-th value from low (not with log)")

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_numeric_range(self.low, self.high, self.log, self.step)
        return self


class CategoricalParam(_Conditional):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(description="the values to choose from: numbers, strings, true/false")

    @field_validator("choices")
    @classmethod
    def _unique(cls, value: list[Scalar]) -> list[Scalar]:
        if not value:
            raise ValueError("needs at least one choice, e.g. choices: [adam, sgd]")
        if len({repr(v) for v in value}) != len(value):
            raise ValueError(f"choices must not repeat a value (got {value!r})")
        return value


def _check_numeric_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low={low}")
    if log and step is not None:
        raise ValueError("log and step cannot be used together (Optuna samples a log range continuously)")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_plain_kwargs(kwargs: dict[str, Any]) -> None:
    """Constructor arguments must be plain YAML data (what an Optuna class can take and MLflow can store)."""
    for key, value in kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            raise _FieldError(
                str(key), f"expected numbers, strings, true/false, lists or mappings (got {_short(value)})"
            ) from None


class SamplerConfig(BaseModel):
    """`type` picks the Optuna sampler; every other key is passed to its constructor."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2"] = Field(
        default="tpe", description="the Optuna sampler; every other key is passed to its constructor"
    )

    @model_validator(mode="after")
    def _plain_kwargs(self) -> Any:
        _check_plain_kwargs(self.model_extra or {})
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PrunerConfig(BaseModel):
    """`type` picks the Optuna pruner; every other key is passed to its constructor.

    `patient` wraps another pruner given as `wrapped: {type: ...}`.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["none", "median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patient"] = Field(
        default="none", description="the Optuna pruner; every other key is passed to its constructor"
    )

    @model_validator(mode="after")
    def _plain_kwargs(self) -> Any:
        _check_plain_kwargs(self.model_extra or {})
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EvaluationConfig(_Strict):
    top_k: int = Field(default=5, ge=1, le=1000, description="how many of the best trials `hpo evaluate` tests")
    retrain_seeds: int = Field(
        default=0, ge=0, le=100, description="extra seeds each of the top trials is retrained with"
    )
    ensemble: Literal["greedy", "mean", "none"] = Field(default="greedy", description="how the top models are combined")
    checkpoints: Literal["all", "top_k", "none"] = Field(
        default="top_k", description="which trials keep their weights as MLflow artifacts"
    )


PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)


class ExecutionConfig(_Strict):
    """How trials are run and survived: heartbeats, retries and the failure guard."""

    heartbeat_interval: int = Field(
        default=30, ge=1, le=86_400, description="seconds between a running trial's heartbeats"
    )
    grace_period: int | None = Field(
        default=None,
        ge=2,
        le=7 * 86_400,
        description="seconds without a heartbeat before a trial counts as dead (null: 2 x heartbeat_interval)",
    )
    max_retry: int = Field(
        default=1, ge=0, le=100, description="times a dead worker's trial is re-queued with the same params"
    )
    max_consecutive_failures: int = Field(
        default=5, ge=1, le=1_000_000, description="stop the study (exit 1) after this many failed trials in a row"
    )
    nan_policy: Literal["prune", "fail"] = Field(
        default="prune", description="a NaN/inf training loss ends the trial PRUNED or FAIL"
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(
        default=None, ge=1, le=4096, description="CPU threads per worker (null: the cores shared among local workers)"
    )
    precision: PrecisionName = Field(
        default="auto",
        description="auto: bf16 autocast on a GPU that has it, else fp16 with a gradient scaler; fp32 on the CPU (bf16 there on request)",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the model before training (pays off on GPUs for trials of more than a few epochs)",
    )
    trials_per_device: int = Field(
        default=1,
        ge=1,
        le=64,
        description="`hpo run` without --workers starts this many workers per GPU (or on the CPU), each running one trial at a time",
    )


def _objective_forms() -> str:
    from hpo.objectives._registry import is_builtin, registered

    return " | ".join(
        [
            *(name for name, target in registered().items() if is_builtin(target)),
            "package.module:name",
            "path/to/file.py:name",
        ]
    )


class StudyConfig(_Strict):
    name: str = Field(min_length=1, max_length=200, description="Optuna study name and MLflow experiment name")
    objective: str = Field(
        description=f"what a trial trains: {_objective_forms()} (relative to the study file) | an hpo.objectives entry point"
    )
    metric: str | list[str] | None = Field(
        default=None,
        description="the objective's metric, or a list for multi-objective (null: the objective's default)",
    )
    direction: Literal["minimize", "maximize"] | list[Literal["minimize", "maximize"]] | None = Field(
        default=None, description="one per metric (null: each metric's natural direction)"
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="sampler seed; each trial's seed derives from it and the trial number"
    )
    n_trials: int | None = Field(
        default=None, ge=1, description="trial cap over all workers (null: until timeout or Ctrl-C)"
    )
    timeout: float | None = Field(default=None, gt=0, description="seconds after which a run starts no new trial")
    storage: str | None = Field(
        default=None, description="Optuna storage URL (null: HPO_STORAGE, else sqlite:///hpo.db)"
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI (null: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
    )
    sampler: SamplerConfig = Field(
        default_factory=SamplerConfig, description="the Optuna sampler and its keyword arguments"
    )
    pruner: PrunerConfig = Field(
        default_factory=PrunerConfig, description="the Optuna pruner and its keyword arguments"
    )
    # Validated with the objective's own data options (a DataConfig subclass) and dumped with its fields.
    data: SerializeAsAny[DataConfig] = Field(
        default_factory=DataConfig,
        validate_default=True,
        description="splits and data options (an objective may add its own)",
    )
    params: dict[str, Param] = Field(
        default_factory=dict, description="the search space: hyperparameter name -> float | int | categorical"
    )
    fixed: dict[str, Any] = Field(default_factory=dict, description="hyperparameters not searched (logged like params)")
    enqueue: list[dict[str, Scalar]] = Field(
        default_factory=list,
        description="configurations tried first (warm start): searched name -> value, each value one the search could sample",
    )
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="what `hpo evaluate` does")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="how trials run and survive failures"
    )

    # The study file's folder: a file-path objective is relative to it. Not part of the stored study.
    _base_dir: str | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        problem = study_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("objective")
    @classmethod
    def _loadable_objective(cls, value: str, info: ValidationInfo) -> str:
        from hpo.objectives._loader import load_objective

        try:
            load_objective(value, base_dir=_base_dir(info))
        except _FieldError as exc:
            raise _FieldError("", exc.message) from None
        return value

    @field_validator("data", mode="before")
    @classmethod
    def _objective_data(cls, value: Any, info: ValidationInfo) -> Any:
        """The `data:` mapping as the objective's data options (generic ones without an objective)."""
        model: type[DataConfig] = DataConfig
        if "objective" in info.data:
            from hpo.objectives._loader import load_objective

            model = load_objective(info.data["objective"], base_dir=_base_dir(info)).objective.data_options
        if isinstance(value, model):
            return value
        if isinstance(value, DataConfig):
            value = value.model_dump(
                exclude_unset=True
            )  # an unset field takes the objective's default (Boston: cv_folds 5)
        try:
            return model.model_validate(value if value is not None else {})
        except ValidationError as exc:
            field, message = _explain_first(exc.errors(), value, model)
            raise _FieldError(field, message) from None

    @model_validator(mode="after")
    def _check_against_objective(self, info: ValidationInfo) -> StudyConfig:
        self._base_dir = _base_dir(info)
        loaded = self.load_objective()
        objective = loaded.objective
        metrics = self.metrics
        declared = objective.metrics
        for m in metrics:
            if declared and m not in declared:
                raise _FieldError(
                    "metric",
                    f"unknown metric {m!r} for objective {objective.name}{_suggest(m, declared)}; accepted: {', '.join(declared)}",
                )
        if len(set(metrics)) != len(metrics):
            raise _FieldError("metric", "a metric is listed twice")
        if self.direction is not None:
            directions = [self.direction] if isinstance(self.direction, str) else list(self.direction)
            if len(directions) != len(metrics):
                raise _FieldError(
                    "direction",
                    f"{len(directions)} direction(s) for {len(metrics)} metric(s); give one of minimize|maximize per metric",
                )
        else:
            unknown = [m for m in metrics if m not in declared]
            if unknown:
                raise _FieldError(
                    "direction",
                    f"objective {objective.name} does not declare the direction of {unknown[0]!r}; give direction: minimize or maximize",
                )
        if len(metrics) > 1 and self.pruner.type != "none":
            raise _FieldError("pruner.type", "Optuna cannot prune multi-objective studies; use type: none")
        both = set(self.params) & set(self.fixed)
        if both:
            name = sorted(both)[0]
            raise _FieldError(f"fixed.{name}", "is also in params; a hyperparameter is either searched or fixed")
        for name, value in self.fixed.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError, RecursionError):
                raise _FieldError(
                    f"fixed.{name}", f"expected numbers, strings, true/false, lists or mappings (got {_short(value)})"
                ) from None
        if self.data.cross_validated and objective.cv_rows is None:
            raise _FieldError(
                "data.cv_folds",
                f"objective {objective.name} does not support cross-validation (it declares no cv_rows); use 1 or leave it out",
            )
        if objective.hyperparameters is not None:
            self._check_table(objective.hyperparameters, objective.name)
        self._check_conditions()
        self._check_enqueue()
        if objective.validate is not None:
            objective.validate(self)
        return self

    def _check_table(self, table: HyperparameterTable, objective: str) -> None:
        """Names, values and ranges against the objective's hyperparameter table."""
        for where, names in (("params", self.params), ("fixed", self.fixed)):
            for name in names:
                if name not in table:
                    raise _FieldError(
                        f"{where}.{name}",
                        f"objective {objective} does not understand {name!r}{_suggest(name, table.names)}; it understands: {', '.join(sorted(table.names))}",
                    )
        for name, value in self.fixed.items():
            rule = table[name].rule
            if not rule.accepts(value):
                raise _FieldError(f"fixed.{name}", _rejection(value, rule))
        for name, param in self.params.items():
            self._check_range(name, param, table[name].rule)
        models = self._possible_models(table)
        for where, names in (("params", self.params), ("fixed", self.fixed)):
            for name in names:
                users = table[name].applies_to
                if users is not None and models and not models & users:
                    raise _FieldError(
                        f"{where}.{name}",
                        f"is used by model {', '.join(sorted(users))} only, and this study's model is {', '.join(sorted(models))}; remove it",
                    )

    def _check_enqueue(self) -> None:
        """Every warm-start configuration must be a point of the search space, or Optuna would try a
        trial the study cannot otherwise produce (and compare it with the rest)."""
        if self.n_trials is not None and len(self.enqueue) > self.n_trials:
            raise _FieldError(
                "enqueue", f"{len(self.enqueue)} configurations for n_trials: {self.n_trials}; list at most n_trials"
            )
        for index, entry in enumerate(self.enqueue):
            for name, value in entry.items():
                where = f"enqueue.{index}.{name}"
                param = self.params.get(name)
                if param is None:
                    reason = (
                        "it is in fixed, which every trial uses already"
                        if name in self.fixed
                        else f"accepted: {', '.join(self.params) or 'none (params is empty)'}"
                    )
                    raise _FieldError(
                        where, f"{name!r} is not searched in params{_suggest(name, self.params)}; {reason}"
                    )
                if not _in_space(param, value):
                    raise _FieldError(
                        where, f"{_short(value)} is outside the search space; accepted: {_space_text(param)}"
                    )
                for parent, values in (param.when or {}).items():
                    if parent in entry and entry[parent] not in values:
                        raise _FieldError(
                            where,
                            f"exists only when {parent} is {' or '.join(map(str, values))}, and this configuration sets {parent}: {entry[parent]}",
                        )

    def warm_start(self) -> list[dict[str, Any]]:
        """The `enqueue:` configurations as Optuna expects them (a float parameter's whole numbers as floats)."""
        return [
            {
                name: float(value) if isinstance(self.params[name], FloatParam) else value
                for name, value in entry.items()
            }
            for entry in self.enqueue
        ]

    def may_take(self, name: str, value: Any) -> bool:
        """Whether a trial may train with hyperparameter `name` set to `value` (fixed, a choice, or in a range)."""
        if name in self.fixed:
            return bool(self.fixed[name] == value) and type(self.fixed[name]) is type(value)
        param = self.params.get(name)
        return param is not None and _in_space(param, value)

    def _check_range(self, name: str, param: Any, rule: Rule) -> None:
        where = f"params.{name}"
        if isinstance(param, CategoricalParam):
            for value in param.choices:
                if not rule.accepts(value):
                    raise _FieldError(f"{where}.choices", _rejection(value, rule))
        elif rule.kind == "choice":
            raise _FieldError(
                f"{where}.type", f"must be categorical; accepted values: {', '.join(map(str, rule.choices))}"
            )
        elif rule.kind in ("bool", "str"):
            raise _FieldError(f"{where}.type", f"{name} takes {rule.describe()}; use type: categorical with choices")
        elif rule.kind == "int" and isinstance(param, FloatParam):
            raise _FieldError(f"{where}.type", f"{name} takes {rule.describe()}; use type: int")
        else:
            for bound in ("low", "high"):
                value = getattr(param, bound)
                if not rule.accepts(value):
                    raise _FieldError(f"{where}.{bound}", f"{_short(value)} is not {rule.describe()}")

    def _possible_models(self, table: HyperparameterTable) -> set[str]:
        """The values `model` may take in this study (empty when the table has no `model`)."""
        if "model" not in table:
            return set()
        if "model" in self.fixed:
            return {str(self.fixed["model"])}
        param = self.params.get("model")
        if isinstance(param, CategoricalParam):
            return {str(c) for c in param.choices} | ({str(table["model"].default)} if param.when else set())
        return {str(table["model"].default)}

    def _check_conditions(self) -> None:
        for name, param in self.params.items():
            for parent, values in (param.when or {}).items():
                where = f"params.{name}.when.{parent}"
                if parent == name:
                    raise _FieldError(where, "a parameter cannot depend on itself")
                if parent not in self.params:
                    raise _FieldError(
                        where,
                        f"names no parameter in params; accepted: {', '.join(sorted(set(self.params) - {name})) or 'none'}",
                    )
                target = self.params[parent]
                if not isinstance(target, CategoricalParam):
                    raise _FieldError(
                        where, f"{parent!r} is {target.type}; `when` can only name a categorical parameter"
                    )
                for value in values:
                    if value not in target.choices:
                        raise _FieldError(
                            where,
                            f"{value!r} is not a choice of {parent}; accepted: {', '.join(map(str, target.choices))}",
                        )
        self.parameter_order()  # raises on cycles

    def load_objective(self) -> LoadedObjective:
        """The objective this study names, loaded (once per process) from where the study file says."""
        from hpo.objectives._loader import load_objective

        return load_objective(self.objective, base_dir=self._base_dir)

    @property
    def base_dir(self) -> str | None:
        """The study file's folder, which a relative file-path objective is taken from."""
        return self._base_dir

    def trial_hyperparameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """What a trial with these sampled `params` trains with: table defaults < fixed < sampled."""
        return self.load_objective().objective.resolve({**self.fixed, **params})

    def data_fingerprint(self) -> str | None:
        """The objective's fingerprint of the data this study is scored on, if it offers one."""
        fingerprint = self.load_objective().objective.data_fingerprint
        return str(fingerprint(self)) if fingerprint is not None else None

    def preflight(self) -> None:
        """The objective's checks of data and files (run before anything is written); UsageError if they fail."""
        check = self.load_objective().objective.preflight
        if check is None:
            return
        try:
            check(self)
        except _FieldError as exc:
            raise UsageError(str(exc)) from None

    @property
    def metrics(self) -> list[str]:
        if self.metric is None:
            default = self.load_objective().objective.metric
            if default is None:
                raise _FieldError(
                    "metric",
                    f"objective {self.objective} declares no metrics; name the one its function returns (and give direction)",
                )
            return [default]
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def directions(self) -> list[str]:
        if self.direction is None:
            declared = self.load_objective().objective.metrics
            return [declared[m] for m in self.metrics]
        return [self.direction] if isinstance(self.direction, str) else list(self.direction)

    @property
    def is_multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def parameter_order(self) -> list[str]:
        """Names of `params` ordered so that each comes after the parameters its `when` names."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise _FieldError(f"params.{name}.when", "conditions form a cycle")
            visiting.add(name)
            for parent in self.params[name].when or {}:
                visit(parent)
            visiting.discard(name)
            order.append(name)

        for name in self.params:
            visit(name)
        return order

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in, as plain data (what `hpo validate` prints)."""
        data = self.model_dump(mode="json", exclude_none=False)
        data["metric"] = self.metrics if self.is_multi_objective else self.metrics[0]
        data["direction"] = self.directions if self.is_multi_objective else self.directions[0]
        return data


def _base_dir(info: ValidationInfo) -> str | None:
    """The study file's folder, passed by :func:`parse_study` as validation context."""
    return (info.context or {}).get("base_dir")


def _in_space(param: Any, value: Any) -> bool:
    """Whether the search space of one parameter contains `value` (a choice, or in range and on its step)."""
    if isinstance(param, CategoricalParam):
        return any(choice == value and type(choice) is type(value) for choice in param.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not param.low <= value <= param.high:
        return False
    if isinstance(param, IntParam):
        return isinstance(value, int) and (value - param.low) % (param.step or 1) == 0
    return param.step is None or math.isclose(
        (value - param.low) / param.step, round((value - param.low) / param.step), abs_tol=1e-9
    )


def _space_text(param: Any) -> str:
    if isinstance(param, CategoricalParam):
        return ", ".join(map(str, param.choices))
    kind = "an integer" if isinstance(param, IntParam) else "a number"
    step = f" on steps of {param.step} from {param.low}" if param.step else ""
    return f"{kind} from {param.low} to {param.high}{step}"


def _rejection(value: Any, rule: Rule) -> str:
    if rule.kind == "choice":
        return f"unknown value {value!r}{_suggest(str(value), [str(v) for v in rule.choices])}; accepted: {', '.join(map(str, rule.choices))}"
    return f"{_short(value)} is not {rule.describe()}"


def _suggest(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _short(value: Any, limit: int = 60) -> str:
    """`repr` of a value from the file, cut to fit an error line."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a nested {type(value).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PARAM_MODELS: dict[str, type[BaseModel]] = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}
_PARAM_KINDS = tuple(_PARAM_MODELS)

# pydantic's error types that only say "wrong type", in words a YAML author uses.
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number (not .inf or .nan)",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "none_required": "null",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _path_in_file(loc: tuple[Any, ...], data: Any, *, keep_last: bool) -> list[str]:
    """The part of pydantic's error location that is a place in the file.

    pydantic inserts union member labels ('str', "literal['minimize','maximize']", the parameter
    kind) into locations; those are not keys of the YAML, so they are dropped by walking the data.
    """
    path: list[str] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(str(part))
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(str(part))
        elif keep_last and i == len(loc) - 1:
            path.append(str(part))
    return path


def _node(data: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _location(error: dict[str, Any], data: Any) -> list[str]:
    return _path_in_file(tuple(error["loc"]), data, keep_last=error["type"] == "missing")


def _describe(errors: list[dict[str, Any]], data: Any) -> str:
    """One line for a failed validation: the first problem by field, with a count of the others."""
    where = _location(errors[0], data)
    others = {tuple(_location(e, data)) for e in errors} - {tuple(where)}
    field, message = _explain_first(errors, data, StudyConfig)
    line = f"{field}: {message}" if field else message
    if others:
        line += f" (and {len(others)} more problem{'s' if len(others) > 1 else ''} after this one)"
    return line


def _explain_first(errors: list[dict[str, Any]], data: Any, model: type[BaseModel]) -> tuple[str, str]:
    """(field, message) of the first problem pydantic found in `data`, validated as `model`."""
    where = _location(errors[0], data)
    return _explain([e for e in errors if _location(e, data) == where], where, data, model)


def _explain(errors: list[dict[str, Any]], where: list[str], data: Any, model: type[BaseModel]) -> tuple[str, str]:
    """(field, message) for the errors pydantic raised at one place (several when a union failed)."""
    field = ".".join(where)
    error = next((e for e in errors if e["type"] not in _EXPECTED), errors[0])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    got = f" (got {_short(value)})"
    if kind == "extra_forbidden":
        parent = where[:-1]
        accepted = _accepted_keys(parent, data, model)
        present = _node(data, parent)
        missing = [k for k in accepted if not (isinstance(present, dict) and k in present)]
        hint = _suggest(where[-1], missing) or _suggest(where[-1], accepted)
        listed = f"; accepted: {', '.join(accepted)}" if accepted else ""
        return ".".join(parent), f"unknown key {where[-1]!r}{hint}{listed}"
    if kind == "union_tag_not_found":
        return field, f"a parameter needs `type`; accepted: {', '.join(_PARAM_KINDS)}"
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag", ""))
        return (
            f"{field}.type",
            f"unknown kind {tag!r}{_suggest(tag, _PARAM_KINDS)}; accepted: {', '.join(_PARAM_KINDS)}",
        )
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        also = " (or a list of them)" if any(e["type"] == "list_type" for e in errors) else ""
        return (
            field,
            f"unknown value {_short(value)}{_suggest(str(value), options)}; accepted: {', '.join(options)}{also}",
        )
    if kind == "missing":
        return field, "required field is missing"
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, _FieldError):
            return ".".join([*where, cause.field] if cause.field else where), cause.message
        message = str(cause) if cause is not None else error["msg"].removeprefix("Value error, ")
        return field, message + ("" if _short(value) in message or isinstance(value, (dict, list)) else got)
    if kind in _BOUNDS:
        both = _field_range(where, model)
        if both:
            return field, f"must be {both}{got}"
        bound = next(iter(ctx.values()), "")
        return field, f"must be {_BOUNDS[kind]} {bound}{got}"
    if kind in ("too_short", "string_too_short"):
        return field, "must not be empty"
    if kind == "string_too_long":
        return field, f"must be at most {ctx.get('max_length')} characters"
    if kind in _EXPECTED:
        expected = list(dict.fromkeys(_EXPECTED.get(e["type"], "") for e in errors if e["type"] in _EXPECTED))
        if len(expected) > 3:
            text = "a single value (a number, a string, true or false)"
        else:
            text = " or ".join(expected)
        return field, f"expected {text}{got}"
    return field, f"{error['msg']}{got}"


def _field_range(where: list[str], model: type[BaseModel]) -> str | None:
    """'in [low, high]' for a field bounded on both sides (so the error names the whole accepted range)."""
    current: Any = model
    field = None
    for part in where:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        current = field.annotation
    if field is None:
        return None
    bounds = {
        name: getattr(m, name)
        for m in field.metadata
        for name in ("ge", "gt", "le", "lt")
        if getattr(m, name, None) is not None
    }
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low is None or high is None:
        return None
    return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"


def _accepted_keys(parent: list[str], data: Any, model: type[BaseModel]) -> list[str]:
    """Field names of the part of the study file at `parent`, for the 'accepted' list of an unknown key."""
    if not parent:
        return list(model.model_fields)
    if model is StudyConfig and parent[0] == "params" and len(parent) == 2:
        node = _node(data, parent)
        kind = node.get("type") if isinstance(node, dict) else None
        param_model = _PARAM_MODELS.get(kind) if isinstance(kind, str) else None
        if param_model is not None:
            return list(param_model.model_fields)
        return sorted({name for m in _PARAM_MODELS.values() for name in m.model_fields})
    if len(parent) == 1:
        field = model.model_fields.get(parent[0])
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return list(annotation.model_fields)
    return []


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice, which plain YAML silently lets the last win."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            repeated = key in seen
        except TypeError:  # a list or mapping used as a key: valid YAML, never a study-file key
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain word, not a list or mapping", key_node.start_mark
            ) from None
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_MAX_VALUES = 50_000
MAX_FILE_BYTES = 1_000_000  # the shipped studies are under 2 kB; a long `enqueue` list fits easily
MAX_NESTING = 32  # the study file nests 4 levels (params.lr.when.optimizer); room for `patient` pruners


def _beyond_caps(text: str) -> str | None:
    """Why `text` is too big or too deeply nested to parse, judged without parsing it (or None).

    Items are counted by their separators (commas, line breaks, "- "), nesting by open brackets and by
    indentation; quoted text can only make the counts higher, never hide a large file.
    """
    if len(text) > MAX_FILE_BYTES:
        return f"the study file has {len(text):,} characters; a study file may have at most {MAX_FILE_BYTES:,}"
    items = text.count(",") + text.count("\n") + text.count("- ")
    if items > _MAX_VALUES:
        return f"the study file holds about {items:,} values; a study file may hold at most {_MAX_VALUES:,}"
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    indent = max((len(line) - len(line.lstrip(" -")) for line in text.splitlines()), default=0)
    if deepest > MAX_NESTING or indent > 2 * MAX_NESTING * 4:
        return f"malformed YAML: nested more than {MAX_NESTING} levels deep (a study file nests a few levels, e.g. params.NAME.when)"
    return None


def _too_large(data: Any) -> bool:
    """True if the data, with YAML aliases expanded, holds more than _MAX_VALUES values.

    Aliases let a few lines expand exponentially ("billion laughs") or refer to themselves; counting
    with a budget stops early either way, before validation or an error message walks the structure.
    """
    budget = _MAX_VALUES
    stack = [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)
    return False


def _one_line(message: str) -> str:
    """A key or value holding a line break (valid YAML) must not split the error over lines."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def parse_study(data: Any, *, source: str = "study", base_dir: str | Path | None = None) -> StudyConfig:
    """Validate already-parsed YAML data; raise :class:`UsageError` with one line naming the field.

    `base_dir` is the study file's folder: a file-path objective is relative to it (default: the
    current folder).
    """
    if not isinstance(data, dict):
        raise UsageError(
            f"{source}: the study file must be a mapping of keys (name, objective, params, ...), got {_short(data)}"
        )
    if _too_large(data):
        raise UsageError(
            f"{source}: the study file holds more than {_MAX_VALUES} values once its YAML aliases are expanded (or an alias contains itself)"
        )
    try:
        context = {"base_dir": str(Path(base_dir).resolve())} if base_dir is not None else None
        return StudyConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise UsageError(_one_line(f"{source}: {_describe(exc.errors(), data)}")) from None
    except _FieldError as exc:
        raise UsageError(_one_line(f"{source}: {exc}")) from None
    except RecursionError:
        raise UsageError(f"{source}: the study file nests too deeply") from None


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file. Every problem becomes a one-line :class:`UsageError`."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(
                f"{path}: the study file is {path.stat().st_size:,} bytes; a study file may have at most {MAX_FILE_BYTES:,}"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: study file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a YAML study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the study file ({exc.__class__.__name__}: {exc})") from None
    return parse_study(_parse_yaml(text, source=str(path)), source=str(path), base_dir=path.parent)


def _parse_yaml(text: str, *, source: str) -> Any:
    """YAML text -> data, or a UsageError naming the line and column of the first problem.

    Size and nesting are capped before parsing: PyYAML needs minutes and gigabytes for a few megabytes
    of list items, and recurses once per level of nesting.
    """
    problem = _beyond_caps(text)
    if problem:
        raise UsageError(f"{source}: {problem}")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = (
            f"{problem} ({context})"
            if context and mark is not None and mark is getattr(exc, "problem_mark", None)
            else problem
        )
        raise UsageError(f"{source}{where}: malformed YAML: {detail}") from None
    except RecursionError:
        raise UsageError(f"{source}: malformed YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp PyYAML recognises but cannot build
        raise UsageError(f"{source}: malformed YAML: {exc}") from None


def study_to_yaml(config: StudyConfig) -> str:
    """The resolved study as YAML, for `hpo validate` and the parent run's artifact."""
    return yaml.safe_dump(config.resolved(), sort_keys=False)


__all__ = [
    "CategoricalParam",
    "DataConfig",
    "EvaluationConfig",
    "ExecutionConfig",
    "FloatParam",
    "IntParam",
    "PrunerConfig",
    "SamplerConfig",
    "StudyConfig",
    "check_study_name",
    "load_study",
    "parse_study",
    "study_to_yaml",
]
