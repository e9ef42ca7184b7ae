"""What hpo hands an objective for one trial (:class:`TrialContext`) and what it may hand back.

No torch here: a trial of an objective that never touches ``ctx.device`` runs without torch
being imported.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.objectives._data import DataConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from hpo.objectives._folds import Fold

ReportHook = Callable[[int, dict[str, float]], None]


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite: the optimizer diverged.

    hpo ends such a trial PRUNED or FAIL as the study's ``execution.nan_policy`` says. ``ctx.report``
    raises it for a non-finite ``train_loss``; an objective may raise it itself.
    """

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"training loss became {value} at epoch {epoch} (the optimizer diverged; try a lower lr)")
        self.epoch = epoch


class TrialContext:
    """One trial as its objective sees it.

    ``hyperparameters`` is everything the trial trains with: the table's defaults, overridden by the
    study's ``fixed`` values and then by what the sampler drew (without a table, only the last two).
    Call :meth:`report` once per epoch (or boosting stage, or fold); return the final metrics.

    ``fold`` is None for one validation split. With ``data.cv_folds: K`` (an objective that declares
    ``cv_rows``) hpo calls the objective once per fold with ``fold`` set: train on the non-test rows at
    ``fold.train``, validate on those at ``fold.val`` (positions in ``cv_rows`` order), and report
    epochs from 0 as usual; hpo makes the steps cumulative and averages the folds' results.
    """

    def __init__(
        self,
        hyperparameters: Mapping[str, Any],
        *,
        data: DataConfig | None = None,
        seed: int = 0,
        trial_number: int = 0,
        metrics: Sequence[str] = ("val_loss",),
        directions: Sequence[str] = ("minimize",),
        device: str = "auto",
        threads: int | None = None,
        data_dir: Path | None = None,
        report: ReportHook | None = None,
        resolve_device: Callable[[], torch.device] | None = None,
        fold: Fold | None = None,
        precision: str = "auto",
        compile: bool = False,
    ) -> None:
        self.hyperparameters: Mapping[str, Any] = hyperparameters
        # The study's execution.precision and execution.compile, for objectives that train with hpo's loop
        # (hpo.training.device.select_precision(ctx.precision, ctx.device); train(..., compile=ctx.compile)).
        self.precision = precision
        self.compile = compile
        self.fold = fold
        self.data = data if data is not None else DataConfig()
        self.seed = seed
        self.trial_number = trial_number
        self.metrics = list(metrics)
        self.directions = list(directions)
        self._device_name = device
        self._threads = threads
        self._data_dir = data_dir
        self._report = report
        self._resolve_device = resolve_device
        self._device: torch.device | None = None
        self._scratch: Path | None = None

    # -- what the trial is scored on ------------------------------------------------------------
    @property
    def metric(self) -> str:
        """The study's (first) metric: the value the trial is ranked and pruned by."""
        return self.metrics[0]

    @property
    def direction(self) -> str:
        """``minimize`` or ``maximize``, for :attr:`metric`."""
        return self.directions[0]

    @property
    def monitor(self) -> tuple[str, bool]:
        """The per-epoch metric that early stopping follows, and whether higher is better: the first of
        the study's metrics measured on validation each epoch (named ``val_*``), else ``val_loss``."""
        for metric, direction in zip(self.metrics, self.directions):
            if metric.startswith("val_"):
                return metric, direction == "maximize"
        return "val_loss", False

    # -- where the trial runs ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The torch device of the study's ``execution.device`` (``auto``: the first GPU, else the CPU).

        Resolved on first use, which imports torch and applies the worker's CPU thread budget.
        """
        if self._device is None:
            if self._resolve_device is not None:
                self._device = self._resolve_device()
            else:
                from hpo.training.device import pick_device

                self._device = pick_device(self._device_name, threads=self._threads)
        return self._device

    @property
    def data_dir(self) -> Path:
        """``HPO_DATA_DIR`` (default a per-user cache folder): where datasets are kept between trials."""
        if self._data_dir is None:
            from hpo.config.settings import data_dir

            self._data_dir = data_dir()
        return self._data_dir

    @property
    def scratch_dir(self) -> Path:
        """A folder of this trial's own, removed when the trial ends."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"hpo-trial-{self.trial_number}-"))
        return self._scratch

    def close(self) -> None:
        """Remove the scratch folder (hpo calls this when the trial ends)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # -- reporting ------------------------------------------------------------------------------
    def report(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Log one epoch's metrics (MLflow, ``step=epoch``) and let the pruner judge the trial.

        Raises ``optuna.TrialPruned`` when the pruner stops the trial (let it propagate: hpo closes the
        trial PRUNED and its run KILLED), and :class:`NonFiniteLoss` for a NaN/inf ``train_loss``.
        Values may be Python, NumPy or 0-d torch numbers.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise TypeError(f"report: epoch must be an integer >= 0, got {epoch!r}")
        values = {str(name): _number(name, value) for name, value in metrics.items()}
        loss = values.get("train_loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLoss(epoch, loss)
        if self._report is not None:
            self._report(epoch, values)


def _number(name: object, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"report: metric {name!r} must be a number, got {type(value).__name__}") from None


@dataclass
class TrialResult:
    """What a full objective returns: the final metrics, and what its checkpoint keeps.

    ``models`` are the trained models (torch modules; one, or one per fold) whose weights
    ``hpo evaluate`` rebuilds with the objective's ``build_model(hyperparameters, meta)``; ``meta``
    holds what that needs besides the hyperparameters (input sizes, scaling statistics), as plain
    JSON-able data; ``val_predictions`` are the validation predictions in the form
    ``to_predictions`` gives (ensemble selection weighs members by them). ``best_epoch``, when
    given, replaces the epoch hpo found best among the reports.
    """

    metrics: Mapping[str, float]
    _: KW_ONLY
    models: Sequence[Any] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    val_predictions: np.ndarray | None = None
    best_epoch: int | None = None

    @classmethod
    def of(cls, metrics: Mapping[str, float], model: Any, **kwargs: Any) -> TrialResult:
        """The usual case of one model: ``TrialResult.of(metrics, model, meta=..., val_predictions=...)``."""
        return cls(metrics, models=(model,), **kwargs)


__all__ = ["NonFiniteLoss", "ReportHook", "TrialContext", "TrialResult"]
