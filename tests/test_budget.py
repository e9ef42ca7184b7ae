"""hpo.running.budget: the budget rule counted in SQL (what the budget lock is held for) gives what the
rule gives on the trials themselves, in every state a trial can be in, failures re-queued or not."""

from __future__ import annotations

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpo.running.budget import BudgetTally, queued_trial_ids
from hpo.running.storage import requeue


def test_the_tally_read_in_sql_equals_the_tally_of_the_trials(database_url: str) -> None:
    # Every state, a failure re-queued twice (its copies chain their retry histories), one failure not
    # re-queued, queued trials from enqueue: the SQL counts and the rule on the loaded trials agree.
    storage = RDBStorage(database_url)
    study = optuna.create_study(study_name="s", storage=storage)
    empty = BudgetTally.read(storage.engine, study._study_id)
    assert (empty.total, empty.used(), empty.met(0), empty.met(1)) == (0, 0, True, False)
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL):
        trial = study.ask()
        trial.suggest_float("x", -5, 5)
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # left RUNNING
    failed = study.get_trials(states=(TrialState.FAIL,))[0]
    requeue(study, failed, max_retry=3)
    copy = study.get_trials(states=(TrialState.WAITING,))[-1]
    assert study._storage.set_trial_state_values(copy._trial_id, TrialState.RUNNING)
    study.tell(copy.number, state=TrialState.FAIL)
    requeue(study, study.get_trials()[copy.number], max_retry=3)  # a copy of the copy: history [n, copy]
    study.enqueue_trial({"x": 3.0})

    trials = study.get_trials()
    read, of = BudgetTally.read(storage.engine, study._study_id), BudgetTally.of(trials)
    assert read == of
    assert read.total == len(trials)
    for finished in (False, True):
        for waiting in (False, True):
            assert read.used(finished=finished, waiting=waiting) == of.used(finished=finished, waiting=waiting)
    # COMPLETE + PRUNED + RUNNING + the failure never re-queued; the queued ones count once claimed
    assert read.used(waiting=False) == 4
    assert read.used(finished=True) == 3
    assert [read.met(n) for n in (3, 4, 5)] == [True, True, False]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert queued_trial_ids(storage.engine, study._study_id) == [t._trial_id for t in waiting]
    assert len(waiting) == 2  # the copy of the copy and the last enqueued trial
    storage.engine.dispose()
