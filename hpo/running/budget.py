"""The global trial budget: exact over all workers, counted and claimed under one lock.

`n_trials` counts finished and running trials of every worker; a failure that was re-queued counts
once (its copy). Once the budget is met one worker lingers while others' trials still run, to re-run
any whose worker dies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.config.settings import Settings
from hpo.running.grpc_storage import GrpcStorage, budget_refused
from hpo.running.meta import sampler_seed
from hpo.running.samplers import build_sampler
from hpo.running.signals import StopSignals
from hpo.running.storage import budget_lock, try_lock


def budget_count(trials: list[FrozenTrial], *, finished: bool = False, waiting: bool = True) -> int:
    """Trials that use up the budget: finished, under way or queued, except failures already re-queued
    (with `finished`, only the finished ones; without `waiting`, not the queued ones)."""
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    counted: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
    if not finished:
        counted += (TrialState.RUNNING, TrialState.WAITING) if waiting else (TrialState.RUNNING,)
    return sum(1 for t in trials if t.state in counted or (t.state == TrialState.FAIL and t.number not in retried))


def budget_met(trials: list[FrozenTrial], n_trials: int | None) -> bool:
    """No trial may start: the trials started (queued ones not yet) fill `n_trials`. A queued trial
    starts only within the budget, so `--n-trials 1` runs one of two `enqueue:` entries; a failure's
    re-queued copy still runs, since the failure it replaces no longer counts."""
    return n_trials is not None and budget_count(trials, waiting=False) >= n_trials


class BudgetedAsk:
    """The runner's ask: Optuna's `Study.ask` in two halves, the claim under the budget lock (a StudyRunner mixin)."""

    config: StudyConfig
    settings: Settings
    study_name: str
    study: optuna.Study
    storage: RDBStorage | GrpcStorage
    _stop: StopSignals
    _asked_after: list[FrozenTrial]
    _next_stale_check = -math.inf  # when stale trials are next looked for (time.monotonic)

    def _ask_within_budget(self, n_trials: int | None) -> optuna.Trial | None:
        """Fail (and re-queue) trials of dead workers, then ask for a trial if the budget allows one.

        Only counting and claiming the trial's row happen under the budget lock; the sampler (TPE reads
        every trial, tens of milliseconds in a long study) runs after it is released, so many workers
        do not queue behind each other's sampling. This is `Study.ask` in two halves.
        """
        self._fail_stale_trials()
        with budget_lock(self.settings.storage, self.study_name):
            trials = self.study.get_trials(deepcopy=False)
            self._asked_after = trials
            if budget_met(trials, n_trials):
                return None
            trial_id = self._claim_waiting(trials)
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

    def _fail_stale_trials(self) -> None:
        """Fail (and re-queue) trials whose worker stopped beating, at most once a heartbeat interval: a
        trial turns stale only after a grace period of several intervals, and the check is a query."""
        now = time.monotonic()
        if now < self._next_stale_check:
            return
        optuna.storages.fail_stale_trials(self.study)
        self._next_stale_check = now + (self.storage.get_heartbeat_interval() or 0)

    def _claim_waiting(self, trials: list[FrozenTrial]) -> int | None:
        """The first queued trial this worker could turn RUNNING, from the trials just read (Optuna's
        `_pop_waiting_trial_id` reads them all again); None when none waits."""
        storage = self.study._storage
        for trial in trials:
            if trial.state != TrialState.WAITING:
                continue
            try:
                # False, or an error, when another worker took it first (the lock is hpo's, not every writer's)
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

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


__all__ = ["BudgetedAsk", "budget_count", "budget_met"]
