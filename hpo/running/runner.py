"""Running a study: create or resume it, then ask, train, log and tell until the global budget is met.

The loop uses Optuna's ask-and-tell interface rather than `study.optimize` so that each trial's
MLflow run can be opened before training and closed with the trial's exact state, and so that the
budget check and the `ask` happen under one lock across workers (an exact global `n_trials`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig, check_study_name, parse_study, study_to_yaml
from hpo.config.settings import Settings, check_writable, redact
from hpo.errors import HpoError, UsageError
from hpo.objectives import NonFiniteLoss, TrialContext, TrialResult
from hpo.objectives._checkpoint import Checkpoint
from hpo.objectives._folds import CV_FOLDS_METRIC, FOLD_PREFIX, STD_SUFFIX, Fold, combine, fold_step, make_folds
from hpo.operations.databases import check_stores
from hpo.running.grpc_storage import budget_refused
from hpo.running.progress import Progress, make_progress
from hpo.running.resume import Change, compare, describe_refusal
from hpo.running.samplers import build_pruner, build_sampler
from hpo.running.search_space import suggest
from hpo.running.storage import MissingStorage, budget_lock, open_storage, try_lock
from hpo.running.tracking import StudySummary, Tracker, TrackingUnavailable, TrialRun

logger = logging.getLogger("hpo.running.runner")

CONFIG_ATTR = "hpo.config"
BUDGET_ATTR = "hpo.budget"  # {n_trials, timeout, deadline}: the sweep's global budget, set by `hpo run` / `hpo create`
OBJECTIVE_DIR_ATTR = "hpo.objective_dir"  # the study file's folder: a relative file-path objective is found from it
PARENT_RUN_ATTR = "hpo.mlflow_parent_run_id"
RUN_ID_ATTR = "mlflow_run_id"
SEED_ATTR = "hpo.seed"
SYNCED_ATTR = "hpo.mlflow_synced"
REASON_ATTR = "hpo.failure_reason"
CHECKPOINT_TAG = "hpo.checkpoint"
CHANGES_TAG = "hpo.config_changes"
DATA_ATTR = "hpo.data_fingerprint"
DEVICE_ATTR = "hpo.device"  # e.g. "cuda:0 (physical GPU 1, NVIDIA A100), pid 4242": shown by `hpo status`
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the current trial is closed cleanly and re-queued, then the run stops (exit code 130)."""


class TooManyFailures(HpoError):
    """Trials keep failing in a row: stop instead of burning the whole budget."""


class BadResult(Exception):
    """The objective returned something that is not its final metrics: the trial FAILs with this reason."""


def trial_seed(study_seed: int, trial_number: int) -> int:
    """Each trial's seed derives from the study seed and the trial number: reproducible, distinct."""
    return (study_seed * 1_000_003 + trial_number) % (2**31 - 1)


def sampler_seed(study_seed: int, trial_number: int) -> int:
    """The sampler's seed for the ask that creates trial `trial_number`.

    One sampler seeded once per process would make every worker (and every resumed run) propose
    the same sequence again; seeding per trial number keeps workers apart and a sequential re-run
    identical. Kept apart from `trial_seed` so sampling and training draw unrelated streams.
    """
    return int(np.random.SeedSequence([study_seed % 2**32, trial_number, 0x5A]).generate_state(1)[0])


@dataclass
class RunSummary:
    study_name: str
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: Any = None
    best_trial: int | None = None
    seconds: float = 0.0


class StudyRunner:
    """One worker's view of a study: its storage, tracker and trial loop."""

    def __init__(
        self,
        config: StudyConfig,
        settings: Settings,
        *,
        study_name: str | None = None,
        progress: Progress | None = None,
        create: bool = True,
        source: str | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.study_name = check_study_name(study_name, field="--study-name") if study_name is not None else config.name
        self.progress = progress or make_progress(quiet=True)
        self.source = source or "study file"
        # Everything that can refuse bad input runs before anything is written anywhere.
        self._check_config(config)
        check_writable(settings)
        check_stores(settings)
        self.storage = self._open_storage(create=create)
        self._stop = _StopSignals()
        self._asked_after: list[FrozenTrial] = []  # the study's trials as counted for the last ask
        self._accepted_changes: list[Change] = []
        self.study = self._open_study(create=create)
        self.tracker = Tracker(settings.tracking_uri, self.study_name)
        self.parent_run_id = self._parent_run()
        self._summary_sent = -math.inf

    def _check_config(self, config: StudyConfig) -> None:
        """Build the sampler and pruner, load the objective and check its data: the checks a config must pass."""
        self._sampler, self._pruner = build_sampler(config), build_pruner(config.pruner)
        self.objective = config.load_objective()
        self._device: Any = None
        if config.execution.device not in ("auto", "cpu"):
            self._resolve_device()  # a GPU asked for must be there; auto and cpu need no check (nor torch)
        config.preflight()

    def _open_storage(self, *, create: bool) -> optuna.storages.BaseStorage:
        execution = self.config.execution
        try:
            return open_storage(
                self.settings.storage,
                heartbeat_interval=execution.heartbeat_interval,
                grace_period=execution.grace_period,
                max_retry=execution.max_retry,
                on_stale=self._close_stale_run,
                create=create,
                field=self.settings.storage_field,
            )
        except MissingStorage:
            raise self._no_such_study() from None

    def _no_such_study(self) -> UsageError:
        return UsageError(
            f"study {self.study_name!r} does not exist in {redact(self.settings.storage)}; create it with `hpo create` or `hpo run`"
        )

    # -- study and parent run ---------------------------------------------------------------------
    def _open_study(self, *, create: bool) -> optuna.Study:
        """Load the study, or create it; a resumed study must still mean what it meant (:mod:`hpo.resume`)."""
        if not create:
            try:
                study = optuna.load_study(
                    study_name=self.study_name, storage=self.storage, sampler=self._sampler, pruner=self._pruner
                )
            except KeyError:
                raise self._no_such_study() from None
            return self._join(study)
        # Many workers may create the same study at once (a Kubernetes Job's init containers).
        with budget_lock(self.settings.storage, self.study_name + "/create"):
            try:
                study = optuna.load_study(
                    study_name=self.study_name, storage=self.storage, sampler=self._sampler, pruner=self._pruner
                )
            except KeyError:
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=self.storage,
                    sampler=self._sampler,
                    pruner=self._pruner,
                    directions=self.config.directions,
                )
                study.set_user_attr(CONFIG_ATTR, _plain(self.config))
                if self.config.base_dir:
                    study.set_user_attr(OBJECTIVE_DIR_ATTR, self.config.base_dir)
                study.set_user_attr("hpo.metrics", self.config.metrics)
                fingerprint = self.config.data_fingerprint()
                if fingerprint is not None:
                    study.set_user_attr(DATA_ATTR, fingerprint)
            else:
                self._resume(study)
            for params in self.config.warm_start():  # under the lock, so concurrent starts queue each once
                study.enqueue_trial(params, skip_if_exists=True)
            if (
                study.metric_names != self.config.metrics
            ):  # every Optuna client (optuna-dashboard) shows val_rmse, not "Objective 0"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(list(self.config.metrics))
        return study

    def _resume(self, study: optuna.Study) -> None:
        """Refuse a study file whose changes would make old and new trials incomparable; keep the safe ones."""
        changes = self._changes(study, self.config)
        refused = [c for c in changes if not c.safe]
        if refused:
            raise UsageError(
                f"{self.source}: study {self.study_name!r} in {redact(self.settings.storage)} was started with other settings, and its trials "
                f"would not be comparable with new ones: {describe_refusal(refused)}\n"
                f"hpo: start a new study instead (another `name:` or --study-name), or put those settings back"
            )
        if changes:
            self._accepted_changes = changes
            study.set_user_attr(CONFIG_ATTR, _plain(self.config))
        if self.config.base_dir and study.user_attrs.get(OBJECTIVE_DIR_ATTR) != self.config.base_dir:
            study.set_user_attr(OBJECTIVE_DIR_ATTR, self.config.base_dir)
        if DATA_ATTR not in study.user_attrs:  # a study from before hpo recorded its data
            fingerprint = self.config.data_fingerprint()
            if fingerprint is not None:
                study.set_user_attr(DATA_ATTR, fingerprint)

    def _join(self, study: optuna.Study) -> optuna.Study:
        """A worker runs the study as it was stored, whatever its own file says, and never changes it."""
        stored = study.user_attrs.get(CONFIG_ATTR)
        if stored is not None and stored != _plain(self.config):
            self.progress.warn(
                f"{self.source} differs from the config study {self.study_name!r} was started with; the stored one is used"
            )
            file_execution = self.config.execution
            self.config = stored_config(study)
            self._check_config(self.config)
            if self.config.execution != file_execution:  # heartbeats and retries as the study was started with
                self.storage = self._open_storage(create=False)
            study = optuna.load_study(
                study_name=self.study_name, storage=self.storage, sampler=self._sampler, pruner=self._pruner
            )
        refused = [c for c in self._changes(study, self.config) if c.field == "data file"]
        if refused:
            raise UsageError(
                f"study {self.study_name!r} was run on other data than this worker has: {describe_refusal(refused)}; give every worker the same data"
            )
        return study

    def _changes(self, study: optuna.Study, config: StudyConfig) -> list[Change]:
        """What differs between the stored study and `config`: settings, directions and the data's fingerprint."""
        stored = study.user_attrs.get(CONFIG_ATTR)
        changes: list[Change] = []
        if stored is not None:
            try:  # resolved again, so that a field added since the study started shows as its default
                stored = _plain(parse_study(as_stored(stored), source="stored study"))
            except UsageError:
                pass
            changes = compare(stored, _plain(config))
        directions = [d.name.lower() for d in study.directions]
        if directions != config.directions and not any(c.field == "direction" for c in changes):
            changes.append(Change("direction", directions, config.directions, safe=False))
        before, after = study.user_attrs.get(DATA_ATTR), config.data_fingerprint()
        if before is not None and after is not None and before != after:
            changes.append(Change("data file", before, after, safe=False))
        return changes

    def _parent_run(self) -> str | None:
        """The study's parent run, created once: the id is kept in the study so every worker finds it.

        A resumed study's run is marked RUNNING again, and the changes the study file made are recorded on it.
        """
        try:
            existing = self.study.user_attrs.get(PARENT_RUN_ATTR) or self.tracker.find_study_run(self.study_name)
            if existing:
                self.study.set_user_attr(PARENT_RUN_ATTR, existing)
                self.tracker.set_study_status(str(existing), "RUNNING")
                self._record_changes(str(existing))
                self._set_runs_view()
                return str(existing)
            with budget_lock(self.settings.storage, self.study_name + "/parent"):
                existing = optuna.load_study(study_name=self.study_name, storage=self.storage).user_attrs.get(
                    PARENT_RUN_ATTR
                )
                if existing:
                    run_id = str(existing)
                else:
                    run_id = self.tracker.create_study_run(
                        self.study_name,
                        config_yaml=study_to_yaml(self.config),
                        tags={
                            "hpo.objective": self.config.objective,
                            "hpo.objective_source": self.objective.resolved,
                            "hpo.running.storage": redact(self.settings.storage),
                        },
                    )
                    self.study.set_user_attr(PARENT_RUN_ATTR, run_id)
            self._set_runs_view()
            return run_id
        except TrackingUnavailable as exc:
            self.progress.warn(f"tracking: {exc}; trials go on and `hpo reconcile` will backfill MLflow")
            return None

    def _record_changes(self, run_id: str) -> None:
        """A resumed study's accepted changes: a tag with the latest ones and the study file as resumed."""
        if not self._accepted_changes:
            return
        stamp = time.strftime("%Y%m%dT%H%M%S")
        text = "; ".join(c.text() for c in self._accepted_changes)
        self.tracker.set_tags(run_id, {CHANGES_TAG: f"{stamp}: {text}"[:5000]})
        self.tracker.log_text(run_id, study_to_yaml(self.config), f"study-resumed-{stamp}.yaml")
        self.progress.warn(f"resuming study {self.study_name!r} with changed settings: {text}")

    def _set_runs_view(self) -> None:
        """The MLflow UI view that links open: the study's metrics and searched params, best trial first."""
        metric = self.config.metrics[0]
        sort_by = (
            None if self.config.is_multi_objective else (f"best_{metric}" if metric.startswith("val_") else metric)
        )
        self.tracker.set_runs_view(
            metrics=list(self.config.metrics),
            params=list(self.config.params),
            sort_by=sort_by,
            ascending=self.config.directions[0] == "minimize",
        )

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, *, n_trials: int | None = None, timeout: float | None = None) -> RunSummary:
        """Run trials until the global budget (n_trials over all workers, timeout for this run) is met."""
        n_trials = n_trials if n_trials is not None else self.config.n_trials
        timeout = timeout if timeout is not None else self.config.timeout
        summary = RunSummary(self.study_name)
        started = time.monotonic()

        def expired() -> bool:
            return timeout is not None and time.monotonic() - started >= timeout

        consecutive_failures = 0
        self._grid_covered = False
        # Progress counts finished trials: a re-queued trial waiting to run is part of the budget, not done.
        self.progress.start(
            self.study_name, total=n_trials, done=self._counted(self.study.get_trials(deepcopy=False), finished=True)
        )
        try:
            with self._stop:
                while True:
                    self._stop.check()
                    if expired():
                        break
                    trial = self._ask_within_budget(n_trials) or self._wait_for_running(n_trials, expired)
                    if trial is None:
                        self._stop.check()  # a stop asked for while waiting
                        break
                    state = self._run_trial(trial, summary)
                    consecutive_failures = consecutive_failures + 1 if state == TrialState.FAIL else 0
                    if consecutive_failures >= self.config.execution.max_consecutive_failures:
                        raise TooManyFailures(
                            f"{consecutive_failures} trials failed in a row (last: {summary_reason(self.study, trial.number)}); "
                            "stopping. Fix the cause, or raise execution.max_consecutive_failures"
                        )
                    if self._grid_covered:
                        break
        finally:
            summary.seconds = time.monotonic() - started
            self._fill_best(summary)
            self._publish_summary(force=True)
            self.progress.finish(summary)
        return summary

    def _publish_summary(self, *, force: bool = False) -> None:
        """Show where the study stands on its parent run: after a trial ends, at most once per flush
        interval (one request, not one per epoch or trial), and always when the run stops."""
        now = time.monotonic()
        if self.parent_run_id is None or (not force and now - self._summary_sent < self.tracker.flush_seconds):
            return
        self._summary_sent = now
        try:
            self.tracker.log_study_summary(
                self.parent_run_id, study_summary(self.study, self.config), config_yaml=study_to_yaml(self.config)
            )
        except Exception as exc:
            logger.info("study summary not updated: %s", exc)

    def _counted(self, trials: list[FrozenTrial], *, finished: bool = False) -> int:
        return budget_count(trials, finished=finished)

    def _ask_within_budget(self, n_trials: int | None) -> optuna.Trial | None:
        """Fail (and re-queue) trials of dead workers, then ask for a trial if the budget allows one.

        Only counting and claiming the trial's row happen under the budget lock; the sampler (TPE reads
        every trial, tens of milliseconds in a long study) runs after it is released, so many workers
        do not queue behind each other's sampling. This is `Study.ask` in two halves.
        """
        optuna.storages.fail_stale_trials(self.study)
        with budget_lock(self.settings.storage, self.study_name):
            trials = self.study.get_trials(deepcopy=False)
            self._asked_after = trials
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if n_trials is not None and self._counted(trials) >= n_trials and not waiting:
                return None
            trial_id = self.study._pop_waiting_trial_id() if waiting else None
            if trial_id is None:
                try:
                    # through the study's storage (Optuna's cache over an RDB), which must know the new trial
                    trial_id = self.study._storage.create_new_trial(self.study._study_id)
                except KeyError as exc:
                    if budget_refused(exc):  # hpo's gRPC proxy: another worker took the last trial
                        return None
                    raise
            if self.storage.get_heartbeat_interval():
                self.storage.record_heartbeat(trial_id)  # alive from the first moment, not the first beat
        # Without the lock another worker may add a trial meanwhile, so the seed comes from the count
        # taken under it (the new trial's number when none was waiting). GridSampler keeps its seeded
        # shuffle of the grid: the grid_id of a trial must mean the same point in every worker.
        if self.config.sampler.type != "grid":
            self.study.sampler = build_sampler(
                self.config.model_copy(update={"seed": sampler_seed(self.config.seed, len(trials))})
            )
        self.study._thread_local.cached_all_trials = None  # as Study.ask: the sampler reads the storage afresh
        return optuna.Trial(self.study, trial_id)

    def _wait_for_running(self, n_trials: int | None, expired: Callable[[], bool]) -> optuna.Trial | None:
        """The budget is used up but other workers' trials still run: one worker stays to re-run any that die.

        A killed worker's trial turns FAIL and is re-queued only when someone notices its heartbeat is
        older than the grace period; without this the last such trial would stay RUNNING. The other
        workers (which fail to take the lock) leave at once.
        """
        interval = self.storage.get_heartbeat_interval()
        if not interval or not self._running():
            return None
        with try_lock(self.settings.storage, self.study_name + "/linger") as taken:
            if not taken:
                return None
            while self._running() and not expired():
                if self._stop.wait(interval):
                    return None
                trial = self._ask_within_budget(n_trials)
                if trial is not None:
                    return trial
        return None

    def _running(self) -> bool:
        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def close_study_run(self, *, stopped_by: BaseException | None = None) -> None:
        """Close the study's parent run when this worker is the last one out.

        FINISHED once no trial runs or waits; after a signal KILLED, after an error FAILED, once no
        other worker's trial runs (the interrupted trial's re-queued copy waits for the next run).
        `hpo run` marks the run RUNNING again when the study is resumed.
        """
        if self.parent_run_id is None:
            return
        busy = (TrialState.RUNNING,) if stopped_by is not None else (TrialState.RUNNING, TrialState.WAITING)
        if self.study.get_trials(deepcopy=False, states=busy):
            return
        status = (
            "FINISHED" if stopped_by is None else "KILLED" if isinstance(stopped_by, KeyboardInterrupt) else "FAILED"
        )
        try:
            self.tracker.set_study_status(self.parent_run_id, status)
        except TrackingUnavailable as exc:
            self.progress.warn(f"tracking: {exc}; the study's parent run stays open (`hpo reconcile` closes it)")

    def _run_trial(self, trial: optuna.Trial, summary: RunSummary) -> TrialState:
        with _heartbeat(self.storage, trial):
            system_attrs = self.storage.get_trial_system_attrs(trial._trial_id)
            retried_from = system_attrs.get("failed_trial")
            if retried_from is not None:
                # A re-queued copy inherits the failed trial's user attributes; its own come below.
                for attr in (RUN_ID_ATTR, REASON_ATTR, SYNCED_ATTR):
                    if attr in trial.user_attrs:
                        trial.set_user_attr(attr, None)
            sampled = suggest(trial, self.config)
            chosen = {**self.config.fixed, **sampled}
            # A retry repeats the trial it replaces: the same params and the same seed.
            seed = trial_seed(self.config.seed, trial.number if retried_from is None else int(retried_from))
            trial.set_user_attr(SEED_ATTR, seed)
            run = self._open_trial_run(trial, chosen, seed, retried_from)
            recorder = _EpochRecorder(self, trial, run)
            hp = self.config.trial_hyperparameters(sampled)
            folds = self.config.data.cv_folds if self._cross_validated else 1
            self.progress.trial_started(trial.number, chosen, epochs=(_epoch_budget(hp) or 0) * folds)
            try:
                with self._stop.training():
                    metrics, result = self._train(trial, hp, seed, recorder)
            except optuna.TrialPruned:
                where = (
                    f"{recorder.fold_text} (step {recorder.last_epoch})"
                    if recorder.fold_text
                    else f"epoch {recorder.last_epoch}"
                )
                return self._finish(trial, recorder, TrialState.PRUNED, summary, reason=f"pruned at {where}")
            except NonFiniteLoss as exc:
                state = TrialState.PRUNED if self.config.execution.nan_policy == "prune" else TrialState.FAIL
                return self._finish(trial, recorder, state, summary, reason=str(exc))
            except KeyboardInterrupt as exc:
                requeue = _will_retry(system_attrs, self.config.execution.max_retry)
                if requeue:  # before the failure reason is set: the copy inherits the user attributes
                    RetryHeartbeatStaleTrialCallback(max_retry=self.config.execution.max_retry)(
                        self.study, self.storage.get_trial(trial._trial_id)
                    )
                what = "re-queued with the same params" if requeue else "not re-queued (execution.max_retry reached)"
                self._finish(
                    trial,
                    recorder,
                    TrialState.FAIL,
                    summary,
                    reason=f"interrupted by {exc or 'SIGINT'} before the trial finished; {what}",
                    requeued=requeue,
                )
                raise Interrupted(
                    f"interrupted by {exc or 'SIGINT'}; finished trials are kept, trial {trial.number} was closed as FAIL and {what}; run the same command again to resume"
                ) from None
            except (UsageError, HpoError):
                self._finish(trial, recorder, TrialState.FAIL, summary, reason="invalid configuration")
                raise
            except Exception as exc:
                reason = str(exc) if isinstance(exc, BadResult) else _describe_failure(exc)
                logger.debug("trial %d failed", trial.number, exc_info=True)
                return self._finish(trial, recorder, TrialState.FAIL, summary, reason=reason)
            values = [metrics[m] for m in self.config.metrics]
            if not all(math.isfinite(v) for v in values):
                return self._finish(
                    trial, recorder, TrialState.FAIL, summary, reason=f"non-finite objective value {values}"
                )
            tags = self._checkpoint(trial, recorder.run, hp, metrics, result, values)
            return self._finish(
                trial, recorder, TrialState.COMPLETE, summary, values=values, final=metrics, result=result, tags=tags
            )

    def _resolve_device(self) -> Any:
        """The torch device of execution.device, resolved once per worker (this imports torch)."""
        if self._device is None:
            from hpo.training.device import pick_device

            self._device = pick_device(self.config.execution.device, threads=self.config.execution.threads)
        return self._device

    def _device_text(self) -> str:
        """This worker's device as `hpo status` shows it: which physical GPU (CUDA_VISIBLE_DEVICES), or
        the CPU and its threads, and the worker's process id (trials sharing a GPU have different ones)."""
        import torch

        device = self._resolve_device()
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
            physical = visible[index] if index < len(visible) else str(index)
            where = f"cuda:{index} (GPU {physical}, {torch.cuda.get_device_name(index)})"
        else:
            where = f"{device} ({torch.get_num_threads()} threads)"
        return f"{where}, pid {os.getpid()}"

    def _train(
        self, trial: optuna.Trial, hp: dict[str, Any], seed: int, recorder: _EpochRecorder
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
        span = _epoch_budget(hp)
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
            resolve_device=self._resolve_device,
            fold=fold,
            precision=execution.precision,
            compile=execution.compile,
        )
        if "torch" in sys.modules:
            self._resolve_device()  # an objective that imports torch gets the worker's CPU thread budget
            if fold is None or fold.index == 0:
                trial.set_user_attr(DEVICE_ATTR, self._device_text())
        _seed_everything(seed)
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
                f"the objective returned {_short_type(returned)}; it must return its final metrics, a dict with {', '.join(map(repr, metrics))}"
            )
        missing = [m for m in metrics if m not in returned]
        if missing:
            given = ", ".join(map(str, returned)) or "nothing"
            raise BadResult(
                f"the objective returned no {missing[0]!r} (it returned: {given}); return the study's metric {', '.join(map(repr, metrics))}"
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

    def _open_trial_run(
        self, trial: optuna.Trial, chosen: dict[str, Any], seed: int, retried_from: Any
    ) -> TrialRun | None:
        """Open the trial's MLflow run (on the sender thread) and wait until the trial carries its id, so a
        crashed worker's run can always be closed; epochs then go out without training waiting on them."""
        if self.parent_run_id is None:
            trial.set_user_attr(SYNCED_ATTR, False)
            return None
        extra = {"hpo.retried_from": str(retried_from)} if retried_from is not None else {}
        run = self.tracker.open_trial_run(
            parent_run_id=self.parent_run_id,
            study_name=self.study_name,
            trial_number=trial.number,
            seed=seed,
            params=chosen,
            extra_tags=extra,
            on_open=lambda run_id: trial.set_user_attr(RUN_ID_ATTR, run_id),
        )
        try:
            run.run_id  # wait until the run exists and the trial names it: a worker killed later leaves a run others can close
        except TrackingUnavailable as exc:
            self.progress.warn(f"trial {trial.number}: {exc}; `hpo reconcile` will backfill it")
            trial.set_user_attr(SYNCED_ATTR, False)
            return None
        return run

    def _finish(
        self,
        trial: optuna.Trial,
        recorder: _EpochRecorder,
        state: TrialState,
        summary: RunSummary,
        *,
        values: list[float] | None = None,
        final: dict[str, float] | None = None,
        result: TrialResult | None = None,
        reason: str | None = None,
        tags: dict[str, str] | None = None,
        requeued: bool = False,
    ) -> TrialState:
        """Complete the MLflow run first (every epoch sent, then closed; its success is recorded on the
        trial), then tell Optuna: a trial Optuna sees finished has its whole curve in MLflow.

        Summary metrics: ``best_<metric>`` for each study metric measured per epoch (for an objective that
        reports nothing, its final value), ``best_epoch``, and ``n_params``/``train_seconds`` (the
        objective's own when it returns them; the wall time of its call otherwise).
        """
        reported = recorder.reported
        metrics = final if final is not None else recorder.best
        summary_metrics = {
            f"best_{m}": metrics[m] for m in self.config.metrics if m in metrics and (m in reported or not reported)
        }
        best_epoch = result.best_epoch if result is not None and result.best_epoch is not None else recorder.best_epoch
        if best_epoch is not None:
            summary_metrics["best_epoch"] = best_epoch
        if final is not None or best_epoch is not None:
            summary_metrics["train_seconds"] = recorder.finished - recorder.started
        for name in ("n_params", "train_seconds"):
            if final is not None and name in final:
                summary_metrics[name] = final[name]
        if final is not None:  # cross-validation: the spread over folds, and how many
            summary_metrics.update({k: v for k, v in final.items() if k.endswith(STD_SUFFIX) or k == CV_FOLDS_METRIC})
        if reason:
            trial.set_user_attr(REASON_ATTR, reason)
        if recorder.run is not None:
            try:
                recorder.run.close(state=state.name, summary=summary_metrics, reason=reason, tags=tags)
            except TrackingUnavailable as exc:
                self.progress.warn(f"trial {trial.number}: {exc}; `hpo reconcile` will close its run")
                trial.set_user_attr(SYNCED_ATTR, False)
        self._tell(trial, state, values)
        self._publish_summary()
        if state == TrialState.COMPLETE:
            summary.completed += 1
        elif state == TrialState.PRUNED:
            summary.pruned += 1
        else:
            summary.failed += 1
        self.progress.trial_finished(
            trial.number, state.name, values, reason=reason, best=self._best_text(), requeued=requeued
        )
        return state

    def _tell(self, trial: optuna.Trial, state: TrialState, values: list[float] | None) -> None:
        """Tell Optuna. GridSampler calls `study.stop()` once every grid point is taken, which raises
        outside `study.optimize` (after the trial is stored): honour it by ending the loop instead."""
        try:
            self.study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise
            self._grid_covered = True

    def _best_text(self) -> str | None:
        try:
            if self.config.is_multi_objective:
                return f"{len(self.study.best_trials)} on the Pareto front"
            best = self.study.best_trial
            return f"{self.config.metrics[0]}={best.value:.4g} (trial {best.number})"
        except ValueError:
            return None

    def _fill_best(self, summary: RunSummary) -> None:
        try:
            if self.config.is_multi_objective:
                summary.best_value = [t.values for t in self.study.best_trials]
            else:
                summary.best_value = self.study.best_value
                summary.best_trial = self.study.best_trial.number
        except ValueError:
            pass

    # -- checkpoints ------------------------------------------------------------------------------
    def _checkpoint(
        self,
        trial: optuna.Trial,
        run: TrialRun | None,
        hp: dict[str, Any],
        metrics: dict[str, float],
        result: TrialResult | None,
        values: list[float],
    ) -> dict[str, str]:
        """Keep a full objective's best-epoch weights and validation predictions, as the checkpoint policy says.

        Returns the tags for the trial's run, which go out with its closing batch.
        """
        policy = self.config.evaluation.checkpoints
        if (
            run is None
            or policy == "none"
            or result is None
            or not result.models
            or not self.objective.objective.is_full
        ):
            return {}
        # The trials seen when this one was asked for: a later finish elsewhere only makes this trial look
        # better than it is, so at worst one checkpoint too many is kept until the next top-k entry.
        done = [t for t in self._asked_after if t.state == TrialState.COMPLETE]
        if policy == "top_k" and self._better_count(done, values[0]) >= self.config.evaluation.top_k:
            return {}
        checkpoint = Checkpoint.of(
            result.models,
            objective=self.objective.resolved,
            hyperparameters=hp,
            meta=result.meta,
            val_predictions=result.val_predictions,
            metrics=metrics,
        )
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.save(Path(tmp))
            try:
                self.tracker.log_artifacts(run.run_id, Path(tmp), "checkpoint")
            except TrackingUnavailable as exc:
                self.progress.warn(f"trial {trial.number}: checkpoint not saved: {exc}")
                return {}
        if policy == "top_k":
            self._drop_checkpoints_outside_top_k(done, values[0])
        return {CHECKPOINT_TAG: "kept"}

    def _better_count(self, trials: list[FrozenTrial], value: float) -> int:
        maximize = self.config.directions[0] == "maximize"
        return sum(1 for t in trials if (t.values[0] > value if maximize else t.values[0] < value))

    def _drop_checkpoints_outside_top_k(self, done: list[FrozenTrial], value: float) -> None:
        """Delete kept checkpoints that have fallen out of the top k, bounding disk use.

        One query finds the runs that still hold a checkpoint (about k of them, however long the
        study). Only finished trials are judged: a checkpoint another worker is closing right now is
        not in `done` yet and is left alone.
        """
        k = self.config.evaluation.top_k
        if len(done) < k:
            return  # fewer than k finished trials: nothing has fallen out yet
        ranked = sorted(done, key=lambda t: -t.values[0] if self.config.directions[0] == "maximize" else t.values[0])
        keep = {t.user_attrs.get(RUN_ID_ATTR) for t in ranked[: k - 1]}  # the new trial takes the k-th place
        worse = {t.user_attrs.get(RUN_ID_ATTR) for t in ranked[k - 1 :] if self._better_count([t], value) == 0}
        try:
            for run in self.tracker.search_runs({CHECKPOINT_TAG: "kept"}):
                run_id = run.info.run_id
                if run_id in worse and run_id not in keep:
                    self.tracker.delete_artifacts(run_id, "checkpoint", artifact_uri=run.info.artifact_uri)
                    self.tracker.set_tags(run_id, {CHECKPOINT_TAG: "deleted"})
        except TrackingUnavailable:
            return

    # -- crashed workers --------------------------------------------------------------------------
    def _close_stale_run(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose worker stopped beating: close its MLflow run FAILED with the reason."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            return
        if _will_retry(trial.system_attrs, self.config.execution.max_retry):
            what = "re-queued with the same params"
        else:
            what = "not re-queued (execution.max_retry reached)"
        reason = f"the worker stopped sending heartbeats (killed or lost); trial {trial.number} {what}"
        try:
            self.tracker.end_trial_run(run_id, state="FAIL", reason=reason)
        except TrackingUnavailable:
            self.progress.warn(f"trial {trial.number}: its MLflow run stays open; `hpo reconcile` will close it")


def budget_count(trials: list[FrozenTrial], *, finished: bool = False) -> int:
    """Trials that use up the budget: finished or under way, except failures already re-queued
    (with `finished`, only the finished ones)."""
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    counted = (TrialState.COMPLETE, TrialState.PRUNED) + (() if finished else (TrialState.RUNNING, TrialState.WAITING))
    return sum(1 for t in trials if t.state in counted or (t.state == TrialState.FAIL and t.number not in retried))


def study_summary(study: optuna.Study, config: StudyConfig) -> StudySummary:
    """Counts by state and the best trial (single-objective) or the Pareto front's size, from Optuna."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    result = StudySummary(study.study_name, counts)
    if config.is_multi_objective:
        result.pareto_size = len(study.best_trials) if counts.get("COMPLETE") else 0
        return result
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if complete:
        sign = -1 if config.directions[0] == "maximize" else 1
        best = min(complete, key=lambda t: (sign * t.values[0], t.number))
        result.best_values, result.best_trial, result.best_params = (
            {config.metrics[0]: float(best.values[0])},
            best.number,
            dict(best.params),
        )
    return result


def summary_reason(study: optuna.Study, number: int) -> str:
    trial = study.trials[number]
    return str(trial.user_attrs.get(REASON_ATTR, "no reason recorded"))


class _EpochRecorder:
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


def _epoch_budget(hp: dict[str, Any]) -> int | None:
    """The trial's `epochs` hyperparameter when it has a whole-number one (progress and fold steps use it)."""
    epochs = hp.get("epochs")
    return (
        int(epochs)
        if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and float(epochs).is_integer()
        else None
    )


def _seed_everything(seed: int) -> None:
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


def _describe_failure(exc: BaseException) -> str:
    torch = sys.modules.get("torch")  # only an objective that imported torch can run out of CUDA memory
    if (torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)) or "out of memory" in str(exc).lower():
        return f"out of memory: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__} (try a smaller batch_size or width)"
    text = str(exc).strip().splitlines()
    return redact(f"{exc.__class__.__name__}: {text[0] if text else ''}")[:1000]


@contextmanager
def _heartbeat(storage: Any, trial: optuna.Trial) -> Iterator[None]:
    """Beat for the trial while it trains, so a killed worker's trial is recognised as stale."""
    interval = storage.get_heartbeat_interval()
    if not interval:
        yield
        return
    stop = threading.Event()
    trial_id = trial._trial_id  # Optuna keeps the storage id private; the heartbeat API needs it

    def beat() -> None:
        # The first beat was recorded when the trial was asked for; a second one now would only contend
        # with the trial's own first writes for the database.
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:
                logger.debug("heartbeat failed", exc_info=True)

    thread = threading.Thread(target=beat, name=f"hpo-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _will_retry(system_attrs: dict[str, Any], max_retry: int) -> bool:
    """Whether RetryHeartbeatStaleTrialCallback(max_retry) re-queues a trial with these attributes."""
    return max_retry > len(system_attrs.get("retry_history", []))


class _StopSignals:
    """SIGINT and SIGTERM (Ctrl-C, batch schedulers, `docker stop`, preemption) stop a worker cleanly.

    While a trial trains, the first signal abandons it at once: its run is closed FAILED and it is
    re-queued. Anywhere else the stop waits for the bookkeeping under way (asking, telling, closing
    a run), so nothing is left RUNNING in Optuna or MLflow. A second signal stops at once.
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._armed = False
        self._name = "SIGINT"
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        again = self._requested.is_set()
        self._name = signal.Signals(signum).name
        self._requested.set()
        if self._armed or again:
            self._armed = False
            raise Interrupted(self._name)

    def check(self) -> None:
        """Raise Interrupted if a stop was asked for."""
        if self._requested.is_set():
            raise Interrupted(self._name)

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early (True) when a stop is asked for."""
        return self._requested.wait(seconds)

    @contextmanager
    def training(self) -> Iterator[None]:
        """The part of a trial a signal may cut short."""
        self.check()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A part of training a signal must not cut: a write to the storage or to MLflow, which an
        exception in mid-flight can leave holding a database lock. The stop happens right after."""
        armed, self._armed = self._armed, False
        try:
            yield
        finally:
            self._armed = armed
        if armed:
            self.check()


def _plain(config: StudyConfig) -> dict[str, Any]:
    """The resolved config as stored in the study: plain JSON data, credentials redacted."""
    return json.loads(redact(json.dumps(config.resolved())))


def check_data_unchanged(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse (exit 2) when the data a study was scored on has changed since: its file is named."""
    stored, now = study.user_attrs.get(DATA_ATTR), config.data_fingerprint()
    if stored is not None and now is not None and stored != now:
        raise UsageError(
            f"data: study {study.study_name!r} was run on {stored}, but the data is now {now}; restore the data the study was run on"
        )


def stored_config(study: optuna.Study) -> StudyConfig:
    """The study file a study was started with, as kept in its user attributes."""
    data = study.user_attrs.get(CONFIG_ATTR)
    if data is None:
        raise UsageError(f"study {study.study_name!r} was not created by hpo (no stored study file)")
    return parse_study(
        as_stored(data), source=f"study {study.study_name!r}", base_dir=study.user_attrs.get(OBJECTIVE_DIR_ATTR)
    )


def as_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A stored study file with what an older hpo meant by a field it did not have yet: a study stored
    before `data.cv_folds` existed was scored on one validation split (not on the objective's default)."""
    section = data.get("data")
    if isinstance(section, dict) and "cv_folds" not in section:
        return {**data, "data": {**section, "cv_folds": 1}}
    return data


def visible_gpus() -> list[str]:
    """The GPUs local workers may use (CUDA_VISIBLE_DEVICES, else every one torch sees)."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in visible.split(",") if g] if visible else [str(i) for i in range(torch.cuda.device_count())]


def default_workers(trials_per_device: int) -> int:
    """`hpo run`'s worker count without --workers: execution.trials_per_device per GPU, or on the CPU."""
    return trials_per_device * max(1, len(visible_gpus())) if trials_per_device > 1 else 1


def default_workers_env(index: int, workers: int) -> dict[str, str]:
    """Environment for local worker `index` of `workers`: a GPU (round robin, so workers beyond the GPU
    count share them), or its share of CPU threads."""
    env: dict[str, str] = {}
    gpus = visible_gpus()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    env.update(HPO_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return env
