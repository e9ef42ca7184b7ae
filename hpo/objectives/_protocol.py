"""The two shapes of an objective, and the declaration hpo reads before anything trains.

*Minimal*: any callable ``train(ctx: TrialContext)`` returning its final metrics. *Full*: the same,
plus :class:`EvaluationHooks` (rebuild a model, the validation and test splits, outputs to
predictions) so that ``hpo evaluate`` can test it once and ensemble it. :class:`Objective` holds
either, with what a study file may say about it (metrics, hyperparameter table, data options).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from hpo.objectives._context import TrialContext, TrialResult
from hpo.objectives._data import DataConfig
from hpo.objectives._table import HyperparameterTable

if TYPE_CHECKING:
    import numpy as np

    from hpo.config import StudyConfig

Direction = Literal["minimize", "maximize"]
TrainFn = Callable[[TrialContext], Mapping[str, float] | float | TrialResult]
DIRECTIONS: tuple[str, ...] = ("minimize", "maximize")


@dataclass
class Baseline:
    """A classical model fitted beside the networks on exactly their training rows (a full objective's
    optional ``baselines`` returns these), so a network has to beat it to earn its complexity."""

    name: str  # e.g. "linear_regression": its MLflow tag
    label: str  # e.g. "linear regression": its row in tables
    estimator: Any  # fitted; .predict takes the test inputs flattened to rows
    val_predictions: np.ndarray | None  # None when validation rows were among its training rows


# A model's meta key: the test-time augmentation `hpo evaluate` tested it with (`--tta`, `evaluation.tta`), so
# that `build_model(hyperparameters, meta)` rebuilds it that way for the registered ensemble and `hpo predict`.
TTA_META_KEY = "test_time_augmentation"


@runtime_checkable
class EvaluationHooks(Protocol):
    """What a *full* objective adds, for ``hpo evaluate`` (a module of functions fits as well as an object).

    Optional besides these: ``baselines(data, *, with_validation) -> list[Baseline]``,
    ``retrain_task(data, meta, device) -> (hpo.training.Task, meta)``, the train+validation task of
    ``--retrain-seeds``, and ``read_inputs(paths, meta) -> (inputs, labels)`` for ``hpo predict``: a
    user's own files (images of any size, CSV rows, ...) as model-ready inputs like ``test_split``'s,
    with one label per input (a file, or a file's row); it raises ``FieldError(<file>, <what is wrong;
    what is accepted>)`` for a file it cannot use; ``test_time_augmentation(model, mode) -> model``
    for ``hpo evaluate --tta MODE`` and ``evaluation.tta``, the modes declared in the objective's
    ``test_time_augmentations`` (``build_model`` then honours ``meta[TTA_META_KEY]``). Outputs become
    predictions through ``to_predictions``; class names come from ``meta["classes"]`` when the objective
    keeps them there.
    """

    def build_model(self, hyperparameters: Mapping[str, Any], meta: Mapping[str, Any]) -> Any:
        """A randomly initialised model of these hyperparameters; the checkpoint's weights are loaded into it."""

    def val_split(self, data: DataConfig, meta: Mapping[str, Any]) -> tuple[Any, np.ndarray]:
        """Model-ready validation inputs and targets (ensemble selection, report pictures)."""

    def test_split(self, data: DataConfig, meta: Mapping[str, Any]) -> tuple[Any, np.ndarray]:
        """Model-ready test inputs and targets. Only ``hpo evaluate`` calls it, once, and counts the call."""

    def to_predictions(self, outputs: Any, meta: Mapping[str, Any]) -> np.ndarray:
        """Raw model outputs -> what is scored and ensembled: values (N) or class probabilities (N x C)."""


class Dataset(Protocol):
    """A dataset `hpo data fetch|import|info` and `hpo doctor` know about, declared by an objective.

    ``describe()`` returns JSON-able facts: ``dataset``, ``cached`` (bool), ``summary`` (one line),
    ``fix`` (the command that gets it, when not cached) or ``error`` (when the cache is broken).
    Optional: ``verify()``, ``fetch(*, progress)`` and ``import_data(path, *, progress)``, the last two
    returning a one-line summary of what was stored.
    """

    name: str

    def describe(self) -> dict[str, Any]: ...


class Verifiable(Protocol):
    """A :class:`Dataset` that can check its cache (``hpo data info --verify``); see :func:`offers`."""

    def verify(self) -> None: ...


class ModuleDataset:
    """A :class:`Dataset` whose functions live in a module imported on first use (keeps declarations
    free of torch): ``describe()``, and optionally ``verify()``, ``fetch(progress=)``,
    ``import_dataset(path, progress=)``."""

    def __init__(self, name: str, module: str) -> None:
        self.name = name
        self._module_name = module

    @functools.cached_property
    def _module(self) -> Any:
        return importlib.import_module(self._module_name)

    def describe(self) -> dict[str, Any]:
        return dict(self._module.describe())

    def verify(self) -> None:
        self._module.verify()

    def fetch(self, *, progress: Callable[[str, int, int], None] | None = None) -> str:
        return str(self._module.fetch(progress=progress))

    def import_data(self, path: Any, *, progress: Callable[[str, int, int], None] | None = None) -> str:
        return str(self._module.import_dataset(path, progress=progress))

    def offers(self, method: str) -> bool:
        """Whether the module has what `method` (verify, fetch or import_data) calls."""
        return callable(getattr(self._module, "import_dataset" if method == "import_data" else method, None))


def offers(dataset: Dataset, method: str) -> bool:
    """Whether a dataset can `method` (verify, fetch, import_data): `hpo data` only offers what it can."""
    check = getattr(dataset, "offers", None)
    return bool(check(method)) if callable(check) else callable(getattr(dataset, method, None))


@dataclass(frozen=True)
class Objective:
    """An objective and its declaration: what a study file may name for it and check before it runs.

    Everything but `train` is optional. Without ``metrics`` the study file must give ``metric`` and
    ``direction``; without ``hyperparameters`` the study's params reach the trial unchecked (their
    ranges are still checked as ranges). ``evaluation`` makes it a *full* objective: an object or
    module with :class:`EvaluationHooks`, or its import path ("package.module"), imported only when
    ``hpo evaluate`` or ``hpo report`` needs it, so that declaring an objective stays cheap.
    """

    train: TrainFn
    _: KW_ONLY
    name: str
    metrics: Mapping[str, Direction] = field(default_factory=dict)  # metric -> the direction it improves in
    default_metric: str | None = None  # the study metric when the file gives none (default: the first of `metrics`)
    # The unit each logged metric is in (val_mse: "k$²", train_loss: "standardized"), for plot axes.
    units: Mapping[str, str] = field(default_factory=dict)
    hyperparameters: HyperparameterTable | None = None
    data_options: type[DataConfig] = DataConfig  # a subclass adds objective-specific `data:` keys
    evaluation: EvaluationHooks | str | None = None
    # Checks a study file cannot express: raise FieldError(field, message) for a one-line error.
    validate: Callable[[StudyConfig], None] | None = None
    # Checks that read data or files (is the dataset there?), run before anything is written.
    preflight: Callable[[StudyConfig], None] | None = None
    datasets: Sequence[Dataset] = ()
    # A short hash of the data a study trains on, so `hpo evaluate` can refuse data that changed since.
    data_fingerprint: Callable[[StudyConfig], str] | None = None
    # Cross-validation support (`data.cv_folds`): the non-test rows the folds split, as their count or as
    # one class label per row (folds are then stratified), in the order `ctx.fold` positions refer to.
    cv_rows: Callable[[DataConfig], int | np.ndarray] | None = None
    # The modes the evaluation hooks' `test_time_augmentation(model, mode)` takes (`evaluation.tta`, `--tta`).
    test_time_augmentations: Sequence[str] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not callable(self.train):
            raise TypeError(f"objective {self.name!r}: train must be callable, got {type(self.train).__name__}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"objective name {self.name!r}: use letters, digits, '_', '.' and '-'")
        for metric, direction in self.metrics.items():
            if direction not in DIRECTIONS:
                raise ValueError(
                    f"objective {self.name}: metric {metric!r} has direction {direction!r}; use minimize or maximize"
                )
        if self.default_metric is not None and self.metrics and self.default_metric not in self.metrics:
            raise ValueError(f"objective {self.name}: default_metric {self.default_metric!r} is not among its metrics")
        if not (isinstance(self.data_options, type) and issubclass(self.data_options, DataConfig)):
            raise TypeError(f"objective {self.name}: data_options must be a subclass of hpo.objectives.DataConfig")

    def __call__(self, ctx: TrialContext) -> Mapping[str, float] | float | TrialResult:
        return self.train(ctx)

    @property
    def metric(self) -> str | None:
        """The metric a study uses when its file names none."""
        return self.default_metric or next(iter(self.metrics), None)

    def resolve(self, chosen: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameters a trial trains with: the table's defaults overridden by `chosen`."""
        return self.hyperparameters.resolve(chosen) if self.hyperparameters is not None else dict(chosen)

    @property
    def is_full(self) -> bool:
        return self.evaluation is not None

    @functools.cached_property
    def hooks(self) -> EvaluationHooks | None:
        """The evaluation hooks, imported now if they were given as an import path."""
        if isinstance(self.evaluation, str):
            module, _, attribute = self.evaluation.partition(":")
            loaded: Any = importlib.import_module(module)
            return getattr(loaded, attribute) if attribute else loaded
        return self.evaluation


def objective(
    train: TrainFn | None = None,
    *,
    name: str | None = None,
    metrics: Mapping[str, Direction] | None = None,
    default_metric: str | None = None,
    units: Mapping[str, str] | None = None,
    hyperparameters: HyperparameterTable | None = None,
    data_options: type[DataConfig] = DataConfig,
    evaluation: EvaluationHooks | str | None = None,
    validate: Callable[[StudyConfig], None] | None = None,
    preflight: Callable[[StudyConfig], None] | None = None,
    datasets: Sequence[Dataset] = (),
    data_fingerprint: Callable[[StudyConfig], str] | None = None,
    cv_rows: Callable[[DataConfig], Any] | None = None,
    test_time_augmentations: Sequence[str] = (),
) -> Any:
    """Declare a function as an objective: ``@objective(metrics={"val_acc": "maximize"})``.

    The result is an :class:`Objective` (still callable like the function). Bare ``@objective`` works
    too, and so does a plain undecorated function named in the study file.
    """

    def declare(fn: TrainFn) -> Objective:
        return Objective(
            fn,
            name=name or str(getattr(fn, "__name__", "objective")),
            metrics=dict(metrics or {}),
            default_metric=default_metric,
            units=dict(units or {}),
            hyperparameters=hyperparameters,
            data_options=data_options,
            evaluation=evaluation,
            validate=validate,
            preflight=preflight,
            datasets=tuple(datasets),
            data_fingerprint=data_fingerprint,
            cv_rows=cv_rows,
            test_time_augmentations=tuple(test_time_augmentations),
            description=(getattr(fn, "__doc__", None) or "").strip().split("\n")[0],
        )

    return declare(train) if train is not None else declare


__all__ = [
    "DIRECTIONS",
    "TTA_META_KEY",
    "Baseline",
    "Dataset",
    "Direction",
    "EvaluationHooks",
    "ModuleDataset",
    "Objective",
    "TrainFn",
    "objective",
    "offers",
]
