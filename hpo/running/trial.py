"""One trial's training: the objective called once, or once per fold, with its epochs recorded as they come.

The per-epoch callback logs to MLflow (sent in the background), reports to Optuna and prunes; the
objective's return becomes the trial's final metrics, or a BadResult that names what is wrong.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from hpo.config import StudyConfig
from hpo.config.settings import redact
from hpo.objectives import LoadedObjective, TrialContext, TrialResult
from hpo.objectives._folds import CV_FOLDS_METRIC, FOLD_PREFIX, STD_SUFFIX, Fold, combine, fold_step, make_folds
from hpo.running.meta import DEVICE_ATTR, SYNCED_ATTR
from hpo.running.tracking import TrackingUnavailable, TrialRun
from hpo.running.workers import WorkerDevice

if TYPE_CHECKING:
    import torch

    from hpo.running.runner import StudyRunner


class BadResult(Exception):
    """The objective returned something that is not its final metrics: the trial FAILs with this reason."""


class TrialTraining:
    """Calling the objective for one trial (a mixin of StudyRunner)."""

    config: StudyConfig
    objective: LoadedObjective
    _device: WorkerDevice

    def _train(
        self, trial: optuna.Trial, hp: dict[str, Any], seed: int, recorder: EpochRecorder
    ) -> tuple[dict[str, float], TrialResult | None]:
        """Run the objective; its final metrics (each study metric among them) and its result, if a full one.

        With ``data.cv_folds: K`` the objective runs once per fold (see :mod:`hpo.objectives._folds`).
        """
        data = self.config.data
        cv_rows = self.objective.objective.cv_rows
        if not self._cross_validated or cv_rows is None:
            returned = self._call(trial, hp, seed, recorder)
            recorder.finished = time.monotonic()
            return self._final_metrics(returned), returned if isinstance(returned, TrialResult) else None
        rows = cv_rows(data)
        folds = make_folds(data, rows)
        span = epoch_budget(hp)
        results: list[Any] = []
        for fold in folds:
            offset = recorder.last_epoch + 1

            def report(epoch: int, metrics: dict[str, float], fold: Fold = fold, offset: int = offset) -> None:
                recorder.fold_text = f"epoch {epoch} of fold {fold.index + 1}/{fold.count}"
                recorder(fold_step(fold, epoch, span=span, offset=offset), metrics)

            returned = self._call(trial, hp, seed, report, fold=fold)
            fold_metrics = self._final_metrics(returned)
            results.append(returned if isinstance(returned, TrialResult) else fold_metrics)
            recorder.fold_finished(fold, {k: v for k, v in fold_metrics.items() if self._spread_worth_logging(k)})
        recorder.finished = time.monotonic()
        n_rows = int(rows) if isinstance(rows, (int, np.integer)) else len(rows)
        metrics, result, _ = combine(
            results,
            folds,
            n_rows=n_rows,
            spread=[m for m in self.config.metrics + list(recorder.reported) if self._spread_worth_logging(m)],
        )
        metrics[CV_FOLDS_METRIC] = float(len(folds))
        return metrics, result

    @property
    def _cross_validated(self) -> bool:
        """Whether trials run once per fold: the study asks for folds and the objective can split its rows."""
        return self.config.data.cross_validated and self.objective.objective.cv_rows is not None

    def _spread_worth_logging(self, metric: str) -> bool:
        """Per-fold values and spread are logged for the study's metrics and the validation scores."""
        return metric in self.config.metrics or metric.startswith("val_")

    def _call(
        self,
        trial: optuna.Trial,
        hp: dict[str, Any],
        seed: int,
        report: Callable[[int, dict[str, float]], None],
        *,
        fold: Fold | None = None,
    ) -> Any:
        """One call of the objective (one fold, or the whole trial), with a context of its own."""
        execution = self.config.execution
        recorded = False

        def record_device() -> None:
            """Once per trial (fold 0): where it trains, for `hpo status` (torch is imported by then)."""
            nonlocal recorded
            if not recorded and (fold is None or fold.index == 0):
                trial.set_user_attr(DEVICE_ATTR, self._device.describe())
            recorded = True

        def resolve_device() -> torch.device:
            # The first trial of a worker imports torch inside the objective: its ctx.device is where we learn it.
            device = self._device.resolve()
            record_device()
            return device

        ctx = TrialContext(
            hp,
            data=self.config.data,
            seed=seed,
            trial_number=trial.number,
            metrics=self.config.metrics,
            directions=self.config.directions,
            device=execution.device,
            threads=execution.threads,
            report=report,
            resolve_device=resolve_device,
            fold=fold,
            precision=execution.precision,
            compile=execution.compile,
        )
        if "torch" in sys.modules:
            self._device.resolve()  # an objective that imports torch gets the worker's CPU thread budget
            record_device()
        seed_everything(seed)
        try:
            return self.objective.objective(ctx)
        finally:
            ctx.close()

    def _final_metrics(self, returned: Any) -> dict[str, float]:
        """What the objective returned, as metric -> float; BadResult names what is missing or wrong."""
        metrics = self.config.metrics
        if isinstance(returned, TrialResult):
            returned = returned.metrics
        if isinstance(returned, (int, float)) and not isinstance(returned, bool) and len(metrics) == 1:
            returned = {metrics[0]: returned}
        if not isinstance(returned, Mapping):
            raise BadResult(
                f"the objective returned {_short_type(returned)}; it must return its final metrics, "
                f"a dict with {', '.join(map(repr, metrics))}"
            )
        missing = [m for m in metrics if m not in returned]
        if missing:
            given = ", ".join(map(str, returned)) or "nothing"
            raise BadResult(
                f"the objective returned no {missing[0]!r} (it returned: {given}); "
                f"return the study's metric {', '.join(map(repr, metrics))}"
            )
        final: dict[str, float] = {}
        for name, value in returned.items():
            try:
                final[str(name)] = float(value)
            except (TypeError, ValueError):
                raise BadResult(
                    f"the objective returned {_short_type(value)} for metric {name!r}; metrics are numbers"
                ) from None
        return final


class EpochRecorder:
    """The per-epoch callback: log to MLflow (sent in the background), report to Optuna, prune when told."""

    def __init__(self, runner: StudyRunner, trial: optuna.Trial, run: TrialRun | None) -> None:
        self.runner = runner
        self.trial = trial
        self.run = run  # None once MLflow stopped answering: the trial goes on untracked
        self.metric = runner.config.metrics[0]
        self.maximize = runner.config.directions[0] == "maximize"
        # Optuna prunes one metric: the study's, whenever the objective measures it per epoch.
        self.report = not runner.config.is_multi_objective
        # Optuna needs every epoch only to prune. Without a pruner an epoch is reported every few seconds
        # (a sign of life and a coarse curve), or every epoch while MLflow is not recording the trial
        # (`hpo reconcile` backfills from them): on a sub-second Boston trial a database write per
        # epoch costs about as much as the epoch's training.
        self.every_epoch = not isinstance(runner.study.pruner, optuna.pruners.NopPruner)
        self.last_report = -math.inf
        self.best: dict[str, float] = {}
        self.best_epoch: int | None = None
        self.last_epoch = -1  # the last step reported: the epoch, or with cross-validation the cumulative epoch
        self.fold_text = ""  # with cross-validation, where in which fold the last step was
        self.reported: set[str] = set()  # every metric name reported per epoch
        self.started = self.finished = time.monotonic()

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        with self.runner._stop.shielded():
            self._record(epoch, metrics)

    def fold_finished(self, fold: Fold, metrics: dict[str, float]) -> None:
        """A finished fold's final metrics, as ``fold_<metric>`` at step = fold index (sent with the epochs)."""
        if self.run is None:
            return
        try:
            self.run.log_epoch(fold.index, {f"{FOLD_PREFIX}{k}": v for k, v in metrics.items() if math.isfinite(v)})
        except TrackingUnavailable as exc:
            self.runner.progress.warn(f"trial {self.trial.number}: {exc}; `hpo reconcile` will backfill it")
            self.run = None
            self.trial.set_user_attr(SYNCED_ATTR, False)

    def _record(self, epoch: int, metrics: dict[str, float]) -> None:
        self.last_epoch = epoch
        self.finished = time.monotonic()
        self.reported.update(metrics)
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            current = self.best.get(self.metric)
            if current is None or (value > current if self.maximize else value < current):
                self.best, self.best_epoch = dict(metrics), epoch
        if self.run is not None:
            try:
                self.run.log_epoch(epoch, metrics)
            except TrackingUnavailable as exc:
                self.runner.progress.warn(f"trial {self.trial.number}: {exc}; `hpo reconcile` will backfill it")
                self.run = None
                self.trial.set_user_attr(SYNCED_ATTR, False)
        self.runner.progress.epoch(self.trial.number, epoch, metrics)
        if self.report and value is not None and math.isfinite(value):
            now = time.monotonic()
            if self.every_epoch or self.run is None or now - self.last_report >= self.runner.tracker.flush_seconds:
                self.last_report = now
                self.trial.report(value, epoch)
                if self.every_epoch and self.trial.should_prune():
                    raise optuna.TrialPruned()


def summary_metrics(
    metric_names: list[str],
    recorder: EpochRecorder,
    *,
    final: dict[str, float] | None,
    result: TrialResult | None,
) -> dict[str, float]:
    """A finished trial's summary metrics: ``best_<metric>`` for each study metric measured per epoch (for an
    objective that reports nothing, its final value), ``best_epoch``, and ``n_params``/``train_seconds`` (the
    objective's own when it returns them; the wall time of its call otherwise)."""
    reported = recorder.reported
    metrics = final if final is not None else recorder.best
    summary = {f"best_{m}": metrics[m] for m in metric_names if m in metrics and (m in reported or not reported)}
    best_epoch = result.best_epoch if result is not None and result.best_epoch is not None else recorder.best_epoch
    if best_epoch is not None:
        summary["best_epoch"] = best_epoch
    if final is not None or best_epoch is not None:
        summary["train_seconds"] = recorder.finished - recorder.started
    for name in ("n_params", "train_seconds"):
        if final is not None and name in final:
            summary[name] = final[name]
    if final is not None:  # cross-validation: the spread over folds, and how many
        summary.update({k: v for k, v in final.items() if k.endswith(STD_SUFFIX) or k == CV_FOLDS_METRIC})
    return summary


def epoch_budget(hp: dict[str, Any]) -> int | None:
    """The trial's `epochs` hyperparameter when it has a whole-number one (progress and fold steps use it)."""
    epochs = hp.get("epochs")
    return (
        int(epochs)
        if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and float(epochs).is_integer()
        else None
    )


def seed_everything(seed: int) -> None:
    """The trial's seed for Python's and NumPy's global generators, and torch's when the objective uses torch
    (an objective that seeds its own generators is unaffected)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _short_type(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}" if len(text) <= 60 else f"a {type(value).__name__}"


def describe_failure(exc: BaseException) -> str:
    torch = sys.modules.get("torch")  # only an objective that imported torch can run out of CUDA memory
    if (torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)) or "out of memory" in str(exc).lower():
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return f"out of memory: {first} (try a smaller batch_size or width)"
    text = str(exc).strip().splitlines()
    return redact(f"{exc.__class__.__name__}: {text[0] if text else ''}")[:1000]


__all__ = ["BadResult", "EpochRecorder", "TrialTraining", "describe_failure", "epoch_budget", "summary_metrics"]
