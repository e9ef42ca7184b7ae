"""The global trial budget: exact over all workers, counted and claimed under one lock.

`n_trials` counts finished and running trials of every worker; a failure that was re-queued counts
once (its copy). Once the budget is met one worker lingers while others' trials still run, to re-run
any whose worker dies.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.config.settings import Settings
from hpo.running.grpc_storage import GrpcStorage, budget_refused
from hpo.running.meta import sampler_seed
from hpo.running.samplers import build_sampler
from hpo.running.signals import StopSignals
from hpo.running.storage import budget_lock, try_lock

RETRY_HISTORY_ATTR = "retry_history"  # the system attribute of Optuna's RetryHeartbeatStaleTrialCallback


@dataclasses.dataclass(frozen=True)
class BudgetTally:
    """What the budget rule needs of a study's trials: how many are in each state, which failed, and which
    failures were re-queued (their copy counts instead)."""

    states: Mapping[TrialState, int]
    failed: frozenset[int] = frozenset()  # trial numbers
    retried: frozenset[int] = frozenset()  # trial numbers named in some trial's retry history

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> BudgetTally:
        return cls(
            collections.Counter(t.state for t in trials),
            frozenset(t.number for t in trials if t.state == TrialState.FAIL),
            frozenset(n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)),
        )

    @classmethod
    def read(cls, engine: sqlalchemy.Engine, study_id: int) -> BudgetTally:
        """The tally from Optuna's tables in one or, once a trial failed, three small queries: what the budget
        lock is held for, so it must not load trials."""
        trials, attrs = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
        of_study = trials.c.study_id == study_id
        with engine.connect() as conn:
            states = {
                state: int(n)
                for state, n in conn.execute(
                    sqlalchemy.select(trials.c.state, sqlalchemy.func.count()).where(of_study).group_by(trials.c.state)
                )
            }
            if not states.get(TrialState.FAIL):
                return cls(states)
            failed = conn.execute(sqlalchemy.select(trials.c.number).where(of_study, trials.c.state == TrialState.FAIL))
            histories = conn.execute(
                sqlalchemy.select(attrs.c.value_json)
                .select_from(attrs.join(trials, attrs.c.trial_id == trials.c.trial_id))
                .where(of_study, attrs.c.key == RETRY_HISTORY_ATTR)
            )
            return cls(
                states,
                frozenset(int(n) for (n,) in failed),
                frozenset(int(n) for (value,) in histories for n in json.loads(value)),
            )

    @property
    def total(self) -> int:
        return sum(self.states.values())

    def used(self, *, finished: bool = False, waiting: bool = True) -> int:
        """Trials that use up the budget: finished, under way or queued, except failures already re-queued
        (with `finished`, only the finished ones; without `waiting`, not the queued ones)."""
        counted: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
        if not finished:
            counted += (TrialState.RUNNING, TrialState.WAITING) if waiting else (TrialState.RUNNING,)
        return sum(self.states.get(s, 0) for s in counted) + len(self.failed - self.retried)

    def met(self, n_trials: int | None) -> bool:
        """No trial may start: the trials started (queued ones not yet) fill `n_trials`. A queued trial
        starts only within the budget, so `--n-trials 1` runs one of two `enqueue:` entries; a failure's
        re-queued copy still runs, since the failure it replaces no longer counts."""
        return n_trials is not None and self.used(waiting=False) >= n_trials


def budget_count(trials: Sequence[FrozenTrial], *, finished: bool = False, waiting: bool = True) -> int:
    """:meth:`BudgetTally.used` of these trials."""
    return BudgetTally.of(trials).used(finished=finished, waiting=waiting)


def budget_met(trials: Sequence[FrozenTrial], n_trials: int | None) -> bool:
    """:meth:`BudgetTally.met` of these trials."""
    return BudgetTally.of(trials).met(n_trials)


def queued_trial_ids(engine: sqlalchemy.Engine, study_id: int) -> list[int]:
    """The ids of the study's WAITING trials in trial-number order (the order Optuna claims them in)."""
    trials = models.TrialModel.__table__
    query = (
        sqlalchemy.select(trials.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.WAITING)
        .order_by(trials.c.number)
    )
    with engine.connect() as conn:
        return [int(trial_id) for (trial_id,) in conn.execute(query)]


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

        The budget lock is held to count the trials (a few SQL counts) and claim or create the trial's row,
        nothing more: with many workers it is the one place they queue. The trials are read after it, once,
        for the sampler and the progress line. This is `Study.ask` in two halves.
        """
        self._fail_stale_trials()
        with budget_lock(self.settings.storage, self.study_name):
            tally, waiting = self._tally()
            if tally.met(n_trials):
                return None
            trial_id = self._claim_waiting(waiting)
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
        self._asked_after = self.study.get_trials(deepcopy=False)
        # Without the lock another worker may add a trial meanwhile, so the seed comes from the count
        # taken under it (the new trial's number when none was waiting). GridSampler keeps its seeded
        # shuffle of the grid: the grid_id of a trial must mean the same point in every worker.
        if self.config.sampler.type != "grid":
            self.study.sampler = build_sampler(
                self.config.model_copy(update={"seed": sampler_seed(self.config.seed, tally.total)})
            )
        self.study._thread_local.cached_all_trials = self._asked_after  # as Study.ask: read after the claim
        return optuna.Trial(self.study, trial_id)

    def _tally(self) -> tuple[BudgetTally, list[int]]:
        """The budget's tally and the ids of the queued trials in number order. An RDB is counted in SQL; a
        gRPC proxy answers only Optuna's storage calls, so its trials are read."""
        if isinstance(self.storage, RDBStorage):
            tally = BudgetTally.read(self.storage.engine, self.study._study_id)
            if not tally.states.get(TrialState.WAITING):
                return tally, []
            return tally, queued_trial_ids(self.storage.engine, self.study._study_id)
        trials = self.study.get_trials(deepcopy=False)
        return BudgetTally.of(trials), [t._trial_id for t in trials if t.state == TrialState.WAITING]

    def _fail_stale_trials(self) -> None:
        """Fail (and re-queue) trials whose worker stopped beating, at most once a heartbeat interval: a
        trial turns stale only after a grace period of several intervals, and the check is a query."""
        now = time.monotonic()
        if now < self._next_stale_check:
            return
        optuna.storages.fail_stale_trials(self.study)
        self._next_stale_check = now + (self.storage.get_heartbeat_interval() or 0)

    def _claim_waiting(self, waiting: list[int]) -> int | None:
        """The first of the queued trials `waiting` that this worker could turn RUNNING; None when none."""
        storage = self.study._storage
        for trial_id in waiting:
            try:
                # False, or an error, when another worker took it first (the lock is hpo's, not every writer's)
                if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    return trial_id
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


__all__ = ["BudgetTally", "BudgetedAsk", "budget_count", "budget_met", "queued_trial_ids"]
