"""Optuna's trial cache over an RDB, which reads the trials still running only when they are asked for.

Optuna caches a study's finished trials, but to learn which running ones have finished it loads every
running trial whole (params, curves, attributes) on each read. The median pruner asks for the finished
trials at every report: with 32 workers that was 32 running trials loaded through the ORM per epoch per
worker, more than half of a worker's CPU. Here a read of finished trials only first asks the database
which of the trials it has not seen finished are finished now (two columns, no ORM), and loads just those.
A read that includes running trials (the sampler's, with TPE's constant liar) is Optuna's own.
"""

from __future__ import annotations

import copy
from collections.abc import Container

import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage, _CachedStorage
from optuna.storages._cached_storage import _StudyInfo
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState


class FinishedTrialsCache(_CachedStorage):
    """Optuna's `_CachedStorage`, whose reads of finished trials leave the running ones unread."""

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if states is None or any(s in states for s in TrialState if not s.is_finished()):
            return super().get_all_trials(study_id, deepcopy, states)
        self._read_finished_trials(study_id)
        with self._lock:
            trials = sorted(
                (t for t in self._studies[study_id].trials.values() if t.state in states), key=lambda t: t.number
            )
        return copy.deepcopy(trials) if deepcopy else trials

    def _read_finished_trials(self, study_id: int) -> None:
        """Bring the cache's finished trials up to date, keeping Optuna's bookkeeping: every trial newer than
        `last_finished_trial_id` that is not finished is in `unfinished_trial_ids` (read whole later)."""
        with self._lock:
            study = self._studies.setdefault(study_id, _StudyInfo())
            table = models.TrialModel.__table__
            newer = table.c.trial_id > study.last_finished_trial_id
            if study.unfinished_trial_ids:
                newer = newer | table.c.trial_id.in_(sorted(study.unfinished_trial_ids))
            with self._backend.engine.connect() as conn:
                rows = conn.execute(
                    sqlalchemy.select(table.c.trial_id, table.c.state).where(table.c.study_id == study_id, newer)
                ).all()
            if not rows:
                return
            finished = {trial_id for trial_id, state in rows if state.is_finished()}
            study.unfinished_trial_ids.update(trial_id for trial_id, _ in rows if trial_id not in finished)
            if not finished:
                return
            # the newly finished trials, whole; and any trial created since the query above
            trials = self._backend._get_trials(
                study_id, states=None, included_trial_ids=finished, trial_id_greater_than=max(r[0] for r in rows)
            )
            self._add_trials_to_cache(study_id, trials)
            for trial in trials:
                if trial.state.is_finished():
                    study.last_finished_trial_id = max(study.last_finished_trial_id, trial._trial_id)
                    study.unfinished_trial_ids.discard(trial._trial_id)
                else:
                    study.unfinished_trial_ids.add(trial._trial_id)


def study_storage(storage: BaseStorage) -> BaseStorage:
    """The storage a study is loaded with: an RDB behind :class:`FinishedTrialsCache` (Optuna would wrap it
    in its own cache), any other storage as it is."""
    return FinishedTrialsCache(storage) if isinstance(storage, RDBStorage) else storage


__all__ = ["FinishedTrialsCache", "study_storage"]
