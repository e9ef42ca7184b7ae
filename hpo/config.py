"""The study file: a pydantic model of the contract and a loader that turns mistakes into one-line errors.

No torch or optuna here: `hpo validate` and every worker start with this module, and it must stay fast.
Checks that need Optuna (sampler and pruner keyword arguments) live in :mod:`hpo.optuna_factories`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpo.errors import UsageError
from hpo.vocabulary import BACKBONES, CHOICES, OBJECTIVE_SPECS

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patient")
DIRECTIONS = ("minimize", "maximize")
BOSTON_FEATURES = (
    "CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT",
)  # fmt: skip

Scalar = Union[bool, int, float, str, None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Conditional(_Strict):
    # parameter -> the values of a categorical parameter for which this one exists
    when: dict[str, list[Scalar]] | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class FloatParam(_Conditional):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_numeric_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Conditional):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_numeric_range(self.low, self.high, self.log, self.step)
        return self


class CategoricalParam(_Conditional):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _unique(cls, value: list[Scalar]) -> list[Scalar]:
        if len({repr(v) for v in value}) != len(value):
            raise ValueError("choices must not repeat a value")
        return value


def _check_numeric_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low={low}")
    if log and step is not None:
        raise ValueError("log and step cannot be used together (Optuna samples a log range continuously)")


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class SamplerConfig(BaseModel):
    """`type` picks the Optuna sampler; every other key is passed to its constructor."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2"] = "tpe"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PrunerConfig(BaseModel):
    """`type` picks the Optuna pruner; every other key is passed to its constructor.

    `patient` wraps another pruner given as `wrapped: {type: ...}`.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal[
        "none", "median", "percentile", "successive_halving", "hyperband", "wilcoxon", "patient"
    ] = "none"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(_Strict):
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    subset: float = Field(default=1.0, gt=0, le=1)
    split_seed: int = 0
    drop_features: list[str] = Field(default_factory=list)
    path: str | None = None

    @model_validator(mode="after")
    def _check_fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave rows for training (sum below 1)")
        return self


class EvaluationConfig(_Strict):
    top_k: int = Field(default=5, ge=1)
    retrain_seeds: int = Field(default=0, ge=0)
    ensemble: Literal["greedy", "mean", "none"] = "greedy"
    checkpoints: Literal["all", "top_k", "none"] = "top_k"


class ExecutionConfig(_Strict):
    """How trials are run and survived: heartbeats, retries and the failure guard."""

    heartbeat_interval: int = Field(default=30, ge=1)
    grace_period: int | None = Field(default=None, ge=2)
    max_retry: int = Field(default=1, ge=0)
    max_consecutive_failures: int = Field(default=5, ge=1)
    nan_policy: Literal["prune", "fail"] = "prune"
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)


class StudyConfig(_Strict):
    name: str = Field(min_length=1, max_length=200)
    objective: str
    metric: str | list[str] | None = None
    direction: Literal["minimize", "maximize"] | list[Literal["minimize", "maximize"]] | None = None
    seed: int = 0
    n_trials: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    storage: str | None = None
    tracking_uri: str | None = None
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    params: dict[str, Param] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @field_validator("name")
    @classmethod
    def _name_chars(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("use letters, digits, '.', '_' and '-' (starting with a letter or digit)")
        return value

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, value: str) -> str:
        if value not in OBJECTIVE_SPECS:
            raise ValueError(f"unknown objective {value!r}{_suggest(value, OBJECTIVE_SPECS)}; accepted: {', '.join(OBJECTIVE_SPECS)}")
        return value

    @model_validator(mode="after")
    def _check_against_objective(self) -> StudyConfig:
        spec = OBJECTIVE_SPECS[self.objective]
        metrics = self.metrics
        for m in metrics:
            if m not in spec.metrics:
                raise _FieldError("metric", f"unknown metric {m!r} for objective {self.objective}{_suggest(m, spec.metrics)}; accepted: {', '.join(spec.metrics)}")
        if len(set(metrics)) != len(metrics):
            raise _FieldError("metric", "a metric is listed twice")
        if self.direction is not None:
            directions = [self.direction] if isinstance(self.direction, str) else list(self.direction)
            if len(directions) != len(metrics):
                raise _FieldError("direction", f"{len(directions)} direction(s) for {len(metrics)} metric(s); give one of minimize|maximize per metric")
        if len(metrics) > 1 and self.pruner.type != "none":
            raise _FieldError("pruner.type", "Optuna cannot prune multi-objective studies; use type: none")
        for where, names in (("params", self.params), ("fixed", self.fixed)):
            for name in names:
                if name not in spec.hyperparameters:
                    raise _FieldError(f"{where}.{name}", f"objective {self.objective} does not understand {name!r}{_suggest(name, spec.hyperparameters)}; it understands: {', '.join(sorted(spec.hyperparameters))}")
        both = set(self.params) & set(self.fixed)
        if both:
            name = sorted(both)[0]
            raise _FieldError(f"fixed.{name}", "is also in params; a hyperparameter is either searched or fixed")
        self._check_choices(spec.models)
        self._check_conditions()
        for feature in self.data.drop_features:
            if self.objective == "boston" and feature not in BOSTON_FEATURES:
                raise _FieldError("data.drop_features", f"unknown feature {feature!r}; accepted: {', '.join(BOSTON_FEATURES)}")
        return self

    def _check_choices(self, models: tuple[str, ...]) -> None:
        accepted = {**CHOICES, "model": models}
        for name, values in accepted.items():
            if name in self.fixed:
                given: list[Any] = [self.fixed[name]]
                where = f"fixed.{name}"
            elif isinstance(self.params.get(name), CategoricalParam):
                given = list(self.params[name].choices)  # type: ignore[union-attr]
                where = f"params.{name}.choices"
            else:
                if name in self.params:
                    raise _FieldError(f"params.{name}.type", f"must be categorical; accepted values: {', '.join(map(str, values))}")
                continue
            for value in given:
                if value not in values:
                    raise _FieldError(where, f"unknown value {value!r}{_suggest(str(value), [str(v) for v in values])}; accepted: {', '.join(map(str, values))}")

    def _check_conditions(self) -> None:
        for name, param in self.params.items():
            for parent, values in (param.when or {}).items():
                where = f"params.{name}.when.{parent}"
                if parent == name:
                    raise _FieldError(where, "a parameter cannot depend on itself")
                if parent not in self.params:
                    raise _FieldError(where, f"names no parameter in params; accepted: {', '.join(sorted(set(self.params) - {name})) or 'none'}")
                target = self.params[parent]
                if not isinstance(target, CategoricalParam):
                    raise _FieldError(where, f"{parent!r} is {target.type}; `when` can only name a categorical parameter")
                for value in values:
                    if value not in target.choices:
                        raise _FieldError(where, f"{value!r} is not a choice of {parent}; accepted: {', '.join(map(str, target.choices))}")
        self.parameter_order()  # raises on cycles

    @property
    def metrics(self) -> list[str]:
        if self.metric is None:
            return [OBJECTIVE_SPECS[self.objective].default_metric]
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def directions(self) -> list[str]:
        if self.direction is None:
            spec = OBJECTIVE_SPECS[self.objective]
            return [spec.metrics[m] for m in self.metrics]
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


class _FieldError(ValueError):
    """A model-level check that knows which field is wrong, so the message can name it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


def _suggest(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


_PARAM_KINDS = ("float", "int", "categorical")


def _format_error(error: dict[str, Any], model: type[BaseModel]) -> str:
    """One line for the first pydantic error: the dotted field, what is wrong and what is accepted."""
    loc = [str(p) for p in error["loc"]]
    # Drop discriminator tags pydantic inserts into the location of union members.
    if len(loc) > 2 and loc[0] == "params" and loc[2] in _PARAM_KINDS:
        del loc[2]  # the discriminator tag pydantic puts into the location of a union member
    kind = error["type"]
    field = ".".join(loc)
    if kind == "extra_forbidden":
        parent = ".".join(loc[:-1])
        accepted = _accepted_keys(model, loc[:-1])
        hint = _suggest(loc[-1], accepted)
        where = f"{parent}: " if parent else ""
        return f"{where}unknown key {loc[-1]!r}{hint}; accepted: {', '.join(accepted)}"
    if kind == "union_tag_not_found":
        return f"{field}.type: required; accepted: {', '.join(_PARAM_KINDS)}"
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag", "")
        return f"{field}.type: unknown kind {tag!r}{_suggest(str(tag), _PARAM_KINDS)}; accepted: {', '.join(_PARAM_KINDS)}"
    if kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", ""))
        options = re.findall(r"'([^']*)'", expected)
        value = error.get("input")
        return f"{field}: unknown value {value!r}{_suggest(str(value), options)}; accepted: {', '.join(options)}"
    if kind == "missing":
        return f"{field}: required field is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if re.match(r"^[\w.\-]+: ", message) and kind == "value_error" and not field:
        return message  # a _FieldError already names its field
    if kind == "value_error" and re.match(r"^(params|fixed|metric|direction|pruner|data)[\w.\-]*: ", message):
        return message
    value = error.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    return f"{field or 'study'}: {message}{shown}"


def _accepted_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the sub-model at `loc`, for the 'accepted' part of an unknown-key error."""
    current: Any = model
    path = list(loc)
    if path and path[0] == "params" and len(path) == 2:
        return sorted(set(FloatParam.model_fields) | set(IntParam.model_fields) | set(CategoricalParam.model_fields))
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        current = field.annotation
    fields = getattr(current, "model_fields", None) or model.model_fields
    return list(fields)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice, which plain YAML silently lets the last win."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_study(data: Any, *, source: str = "study") -> StudyConfig:
    """Validate already-parsed YAML data; raise :class:`UsageError` with one line naming the field."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: the study file must be a mapping of keys (name, objective, params, ...), got {type(data).__name__}")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{source}: {_format_error(exc.errors()[0], StudyConfig)}") from None
    except _FieldError as exc:
        raise UsageError(f"{source}: {exc}") from None


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file. Every problem becomes a one-line :class:`UsageError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: study file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a YAML study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the study file ({exc.__class__.__name__}: {exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{path}{where}: malformed YAML: {problem}") from None
    return parse_study(data, source=str(path))


def study_to_yaml(config: StudyConfig) -> str:
    """The resolved study as YAML, for `hpo validate` and the parent run's artifact."""
    return yaml.safe_dump(config.resolved(), sort_keys=False)


__all__ = [
    "BACKBONES",
    "CategoricalParam",
    "DataConfig",
    "EvaluationConfig",
    "ExecutionConfig",
    "FloatParam",
    "IntParam",
    "PrunerConfig",
    "SamplerConfig",
    "StudyConfig",
    "load_study",
    "parse_study",
    "study_to_yaml",
]
