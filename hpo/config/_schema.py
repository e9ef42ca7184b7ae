"""The study file's schema: pydantic models of every section, and StudyConfig, the validated study.

Field shapes, bounds and defaults live here; the checks against the objective are in
:mod:`hpo.config._rules`, the wording of pydantic's errors in :mod:`hpo.config._errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

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

from hpo.config._errors import explain_first
from hpo.config._names import study_name_problem
from hpo.config._rules import check_against_objective, check_plain_kwargs
from hpo.config._space import FloatParam, Param, Scalar, StrictModel, in_space, refuse_flags
from hpo.config._vocabulary import WINDOWED_SAMPLERS, PrunerName, SamplerName
from hpo.errors import UsageError
from hpo.objectives._data import MAX_SEED, DataConfig
from hpo.objectives._table import FieldError

if TYPE_CHECKING:
    from hpo.objectives._loader import LoadedObjective


class _OptunaChoice(BaseModel):
    """A `type` naming an Optuna class plus the plain keyword arguments for its constructor."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _plain_kwargs(self) -> Any:
        check_plain_kwargs(self.model_extra or {})
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SamplerConfig(_OptunaChoice):
    """`type` picks the Optuna sampler; every other key but `history_window` is passed to its constructor."""

    type: SamplerName = Field(
        default="tpe", description="the Optuna sampler; every other key is passed to its constructor"
    )
    history_window: int | None = Field(
        default=None,
        ge=1,
        description="tpe, gp: fit the sampler to the most recent this many finished trials only, so an ask "
        "stays as fast at 10,000 trials as at this many (null: every trial)",
    )

    @model_validator(mode="after")
    def _window_for_model_based(self) -> Any:
        if self.history_window is not None and self.type not in WINDOWED_SAMPLERS:
            raise FieldError(
                "sampler.history_window",
                f"applies to the samplers that model the trials so far ({', '.join(WINDOWED_SAMPLERS)}), "
                f"not {self.type}; remove it",
            )
        return self


class PrunerConfig(_OptunaChoice):
    """`type` picks the Optuna pruner; every other key is passed to its constructor.

    `patient` wraps another pruner given as `wrapped: {type: ...}`.
    """

    type: PrunerName = Field(
        default="none", description="the Optuna pruner; every other key is passed to its constructor"
    )


class EvaluationConfig(StrictModel):
    top_k: int = Field(default=5, ge=1, le=1000, description="how many of the best trials `hpo evaluate` tests")
    retrain_seeds: int = Field(
        default=0, ge=0, le=100, description="extra seeds each of the top trials is retrained with"
    )
    ensemble: Literal["greedy", "mean", "none"] = Field(default="greedy", description="how the top models are combined")
    checkpoints: Literal["all", "top_k", "none"] = Field(
        default="top_k", description="which trials keep their weights as MLflow artifacts"
    )
    tta: str | None = Field(
        default=None,
        min_length=1,
        description="test-time augmentation every tested model predicts with, validation predictions recomputed "
        "with it (the objective's modes: CIFAR-10 flip, flip_translate); null: each model as it was validated",
    )


PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)


class ExecutionConfig(StrictModel):
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
        description="auto: bf16 autocast on a GPU that has it, else fp16 with a gradient scaler; on the CPU "
        "bf16 where it has bf16 kernels and the objective allows it (CIFAR-10), else fp32",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the model before training (pays off on GPUs for trials of more than a few epochs)",
    )
    trials_per_device: int = Field(
        default=1,
        ge=1,
        le=64,
        description="`hpo run` without --workers starts this many workers per GPU (or on the CPU), "
        "each running one trial at a time",
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


class StudyConfig(StrictModel):
    name: str = Field(min_length=1, max_length=200, description="Optuna study name and MLflow experiment name")
    objective: str = Field(
        description=f"what a trial trains: {_objective_forms()} (relative to the study file) "
        "| an hpo.objectives entry point"
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
        description="configurations tried first (warm start): searched name -> value, "
        "each value one the search could sample",
    )
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="what `hpo evaluate` does")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="how trials run and survive failures"
    )

    # The study file's folder: a file-path objective is relative to it. Not part of the stored study.
    _base_dir: str | None = PrivateAttr(default=None)

    @field_validator("seed", "n_trials", "timeout", mode="before")
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        return refuse_flags(value)

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
        except FieldError as exc:
            raise FieldError("", exc.message) from None
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
            field, message = explain_first(exc.errors(), value, model)
            raise FieldError(field, message) from None

    @model_validator(mode="after")
    def _check_against_objective(self, info: ValidationInfo) -> StudyConfig:
        self._base_dir = _base_dir(info)
        check_against_objective(self, self.load_objective().objective)
        return self

    def warm_start(self) -> list[dict[str, Any]]:
        """The `enqueue:` configurations as Optuna expects them (a float parameter's whole numbers as floats)."""
        return [
            {
                name: float(value)
                if isinstance(self.params[name], FloatParam) and isinstance(value, (int, float))
                else value
                for name, value in entry.items()
            }
            for entry in self.enqueue
        ]

    def may_take(self, name: str, value: Any) -> bool:
        """Whether a trial may train with hyperparameter `name` set to `value` (fixed, a choice, or in a range)."""
        if name in self.fixed:
            return bool(self.fixed[name] == value) and type(self.fixed[name]) is type(value)
        param = self.params.get(name)
        return param is not None and in_space(param, value)

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
        except FieldError as exc:
            raise UsageError(str(exc)) from None

    @property
    def metrics(self) -> list[str]:
        if self.metric is None:
            default = self.load_objective().objective.metric
            if default is None:
                raise FieldError(
                    "metric",
                    f"objective {self.objective} declares no metrics; "
                    "name the one its function returns (and give direction)",
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
                raise FieldError(f"params.{name}.when", "conditions form a cycle")
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
