"""Running a study: create or resume it, then ask, train, log and tell until the global budget is met.

The loop uses Optuna's ask-and-tell interface rather than `study.optimize` so that each trial's
MLflow run can be opened before training and closed with the trial's exact state, and so that the
budget check and the `ask` happen under one lock across workers (an exact global `n_trials`).

Each concern lives in a module of its own and is mixed into :class:`StudyRunner`: study setup
(:mod:`hpo.running.setup`), the budgeted ask (:mod:`hpo.running.budget`), one trial's training
(:mod:`hpo.running.trial`), checkpoint keeping (:mod:`hpo.running.checkpoints`); stored names, seeds
and the budget are in :mod:`hpo.running.meta`. This module is the entry the CLI uses.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import optuna
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig, check_study_name, study_to_yaml
from hpo.config.settings import Settings
from hpo.errors import HpoError, UsageError
from hpo.objectives import NonFiniteLoss, TrialResult
from hpo.running.budget import BudgetedAsk, budget_count, budget_met
from hpo.running.checkpoints import CheckpointKeeping
from hpo.running.meta import (
    BUDGET_ATTR,
    CHANGES_TAG,
    CHECKPOINT_TAG,
    CONFIG_ATTR,
    DATA_ATTR,
    DEVICE_ATTR,
    OBJECTIVE_DIR_ATTR,
    PARENT_RUN_ATTR,
    REASON_ATTR,
    RETRIED_FROM_TAG,
    RETRIED_SYSTEM_ATTR,
    RUN_ID_ATTR,
    SEED_ATTR,
    SYNCED_ATTR,
    as_stored,
    check_data_unchanged,
    sampler_seed,
    stored_budget,
    stored_config,
    trial_seed,
)
from hpo.running.progress import Progress, make_progress
from hpo.running.resume import Change
from hpo.running.search_space import suggest
from hpo.running.setup import StudySetup
from hpo.running.signals import Interrupted, StopSignals, heartbeat, will_retry
from hpo.running.storage import requeue
from hpo.running.summary import (
    RunSummary,
    best_known_text,
    best_text,
    fill_best,
    study_summary,
    summary_interval,
    summary_reason,
)
from hpo.running.tracking import Tracker, TrackingUnavailable, TrialRun
from hpo.running.trial import BadResult, EpochRecorder, TrialTraining, describe_failure, epoch_budget, summary_metrics
from hpo.running.workers import default_workers, default_workers_env, visible_gpus

logger = logging.getLogger("hpo.running.runner")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TooManyFailures(HpoError):
    """Trials keep failing in a row: stop instead of burning the whole budget."""


class StudyRunner(StudySetup, BudgetedAsk, TrialTraining, CheckpointKeeping):
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
        # Everything that can refuse bad input runs before anything is written anywhere (one place: check_study).
        self._check_config(config, settings)
        self.storage = self._open_storage(create=create)
        self._stop = StopSignals()
        self._asked_after: list[FrozenTrial] = []  # the study's trials as counted for the last ask
        self._accepted_changes: list[Change] = []
        self.study = self._open_study(create=create)
        self.tracker = Tracker(settings.tracking_uri, self.study_name)
        self.parent_run_id = self._parent_run()
        self._summary_sent = -math.inf

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
            self.study_name, total=n_trials, done=budget_count(self.study.get_trials(deepcopy=False), finished=True)
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
                            f"{consecutive_failures} trials failed in a row "
                            f"(last: {summary_reason(self.study, trial.number)}); "
                            "stopping. Fix the cause, or raise execution.max_consecutive_failures"
                        )
                    if self._grid_covered:
                        break
        finally:
            summary.seconds = time.monotonic() - started
            fill_best(summary, self.study, self.config)
            self._publish_summary(force=True)
            self.progress.finish(summary)
        return summary

    def _publish_summary(self, *, force: bool = False) -> None:
        """Show where the study stands on its parent run: after a trial ends, about once per flush interval
        for the study as a whole (:func:`summary_interval`), and always when the run stops."""
        now = time.monotonic()
        interval = summary_interval(self.tracker.flush_seconds, self._asked_after)
        if self.parent_run_id is None or (not force and now - self._summary_sent < interval):
            return
        self._summary_sent = now
        try:
            self.tracker.log_study_summary(
                self.parent_run_id, study_summary(self.study, self.config), config_yaml=study_to_yaml(self.config)
            )
        except Exception as exc:
            logger.info("study summary not updated: %s", exc)

    def close_study_run(self, *, stopped_by: BaseException | None = None) -> None:
        """Close the study's parent run when this worker is the last one out.

        FINISHED once no trial runs and none waits that the budget would still start (an `enqueue:` entry
        beyond `--n-trials` never will); after a signal KILLED, after an error FAILED, once no other
        worker's trial runs (the interrupted trial's re-queued copy waits for the next run).
        `hpo run` marks the run RUNNING again when the study is resumed.
        """
        if self.parent_run_id is None:
            return
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.RUNNING for t in trials):
            return
        n_trials = stored_budget(self.study, self.config).get("n_trials")  # the budget every worker runs to
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if stopped_by is None and waiting and not budget_met(trials, n_trials):  # a queued trial still to run
            return
        status = (
            "FINISHED" if stopped_by is None else "KILLED" if isinstance(stopped_by, KeyboardInterrupt) else "FAILED"
        )
        try:
            self.tracker.set_study_status(self.parent_run_id, status)
        except TrackingUnavailable as exc:
            self.progress.warn(f"tracking: {exc}; the study's parent run stays open (`hpo reconcile` closes it)")

    def _run_trial(self, trial: optuna.Trial, summary: RunSummary) -> TrialState:
        with heartbeat(self.storage, trial):
            system_attrs = trial._cached_frozen_trial.system_attrs  # as read when the trial was handed out
            retried_from = system_attrs.get(RETRIED_SYSTEM_ATTR)
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
            recorder = EpochRecorder(self, trial, run)
            hp = self.config.trial_hyperparameters(sampled)
            folds = self.config.data.cv_folds if self._cross_validated else 1
            self.progress.trial_started(trial.number, chosen, epochs=(epoch_budget(hp) or 0) * folds)
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
                again = will_retry(system_attrs, self.config.execution.max_retry)
                if again:  # before the failure reason is set: the copy inherits the user attributes
                    requeue(
                        self.study,
                        self.storage.get_trial(trial._trial_id),
                        max_retry=self.config.execution.max_retry,
                    )
                what = "re-queued with the same params" if again else "not re-queued (execution.max_retry reached)"
                self._finish(
                    trial,
                    recorder,
                    TrialState.FAIL,
                    summary,
                    reason=f"interrupted by {exc or 'SIGINT'} before the trial finished; {what}",
                    requeued=again,
                )
                raise Interrupted(
                    f"interrupted by {exc or 'SIGINT'}; finished trials are kept, "
                    f"trial {trial.number} was closed as FAIL and {what}; run the same command again to resume"
                ) from None
            except (UsageError, HpoError):
                self._finish(trial, recorder, TrialState.FAIL, summary, reason="invalid configuration")
                raise
            except Exception as exc:
                reason = str(exc) if isinstance(exc, BadResult) else describe_failure(exc)
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

    def _open_trial_run(
        self, trial: optuna.Trial, chosen: dict[str, Any], seed: int, retried_from: Any
    ) -> TrialRun | None:
        """Open the trial's MLflow run (on the sender thread) and wait until the trial carries its id, so a
        crashed worker's run can always be closed; epochs then go out without training waiting on them."""
        if self.parent_run_id is None:
            trial.set_user_attr(SYNCED_ATTR, False)
            return None
        extra = {RETRIED_FROM_TAG: str(retried_from)} if retried_from is not None else {}
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
            # Wait until the run exists and the trial names it: a worker killed later leaves a run others can close.
            _ = run.run_id
        except TrackingUnavailable as exc:
            self.progress.warn(f"trial {trial.number}: {exc}; `hpo reconcile` will backfill it")
            trial.set_user_attr(SYNCED_ATTR, False)
            return None
        return run

    def _finish(
        self,
        trial: optuna.Trial,
        recorder: EpochRecorder,
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
        trial), then tell Optuna: a trial Optuna sees finished has its whole curve in MLflow."""
        summary_values = summary_metrics(self.config.metrics, recorder, final=final, result=result)
        if reason:
            trial.set_user_attr(REASON_ATTR, reason)
        if recorder.run is not None:
            try:
                recorder.run.close(state=state.name, summary=summary_values, reason=reason, tags=tags)
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
            trial.number,
            state.name,
            values,
            reason=reason,
            best=best_known_text(
                self.study,
                self.config,
                self._asked_after,
                number=trial.number,
                values=values if state == TrialState.COMPLETE else None,
            ),
            requeued=requeued,
        )
        return state

    def _tell(self, trial: optuna.Trial, state: TrialState, values: list[float] | None) -> None:
        """Tell Optuna. GridSampler calls `study.stop()` once every grid point is taken, which raises
        outside `study.optimize` (after the trial is stored): honour it by ending the loop instead."""
        try:
            # Study.tell less its last step, which reads the finished trial back only to return it
            _tell_with_warning(self.study, trial, values if state == TrialState.COMPLETE else None, state=state)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise
            self._grid_covered = True

    def best_text(self) -> str | None:
        """The best trial so far in a few words (see :func:`hpo.running.summary.best_text`)."""
        return best_text(self.study, self.config)

    # -- crashed workers --------------------------------------------------------------------------
    def _close_stale_run(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial whose worker stopped beating: close its MLflow run FAILED with the reason."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            return
        if will_retry(trial.system_attrs, self.config.execution.max_retry):
            what = "re-queued with the same params"
        else:
            what = "not re-queued (execution.max_retry reached)"
        reason = f"the worker stopped sending heartbeats (killed or lost); trial {trial.number} {what}"
        try:
            self.tracker.end_trial_run(run_id, state="FAIL", reason=reason)
        except TrackingUnavailable:
            self.progress.warn(f"trial {trial.number}: its MLflow run stays open; `hpo reconcile` will close it")


__all__ = [
    "BUDGET_ATTR",
    "CHANGES_TAG",
    "CHECKPOINT_TAG",
    "CONFIG_ATTR",
    "DATA_ATTR",
    "DEVICE_ATTR",
    "FINISHED",
    "OBJECTIVE_DIR_ATTR",
    "PARENT_RUN_ATTR",
    "REASON_ATTR",
    "RUN_ID_ATTR",
    "SEED_ATTR",
    "SYNCED_ATTR",
    "BadResult",
    "Interrupted",
    "RunSummary",
    "StudyRunner",
    "TooManyFailures",
    "as_stored",
    "budget_count",
    "check_data_unchanged",
    "default_workers",
    "default_workers_env",
    "sampler_seed",
    "stored_config",
    "study_summary",
    "summary_reason",
    "trial_seed",
    "visible_gpus",
]
