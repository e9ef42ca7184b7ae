"""The search space a study file declares: one float, int or categorical model per hyperparameter.

Also what "a value is in the space" means, shared by `enqueue:` checks and `StudyConfig.may_take`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scalar = bool | int | float | str | None


class StrictModel(BaseModel):
    # Unknown keys are typos; .inf and .nan in a range or budget are always mistakes.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Conditional(StrictModel):
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


def refuse_flags(value: Any) -> Any:
    """YAML's true and false are not numbers, though pydantic would read them as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


class _Numeric(_Conditional):
    @field_validator("low", "high", "step", mode="before", check_fields=False)
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        return refuse_flags(value)


class FloatParam(_Numeric):
    type: Literal["float"]
    low: float = Field(description="smallest value")
    high: float = Field(description="largest value")
    log: bool = Field(default=False, description="sample on a log scale (needs low > 0)")
    step: float | None = Field(default=None, gt=0, description="sample on a grid of this step (not with log)")

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        _check_numeric_range(self.low, self.high, log=self.log, step=self.step)
        return self


class IntParam(_Numeric):
    type: Literal["int"]
    low: int = Field(description="smallest value")
    high: int = Field(description="largest value (included)")
    log: bool = Field(default=False, description="sample on a log scale (needs low > 0)")
    step: int | None = Field(default=None, gt=0, description="sample every step-th value from low (not with log)")

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        _check_numeric_range(self.low, self.high, log=self.log, step=self.step)
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


def _check_numeric_range(low: float, high: float, *, log: bool, step: float | None) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low={low}")
    if log and step is not None:
        raise ValueError("log and step cannot be used together (Optuna samples a log range continuously)")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
# The parameter kinds by their `type:` value, for error messages that list what a parameter accepts.
PARAM_MODELS: dict[str, type[BaseModel]] = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}


def in_space(param: Any, value: Any) -> bool:
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


def space_text(param: Any) -> str:
    """The values a parameter accepts, as the end of an 'accepted: ...' message."""
    if isinstance(param, CategoricalParam):
        return ", ".join(map(str, param.choices))
    kind = "an integer" if isinstance(param, IntParam) else "a number"
    step = f" on steps of {param.step} from {param.low}" if param.step else ""
    return f"{kind} from {param.low} to {param.high}{step}"
