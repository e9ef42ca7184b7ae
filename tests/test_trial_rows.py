"""hpo.running.trial_rows: trials read as plain rows are the trials Optuna's ORM builds, field for field,
for every kind of param, value, curve point and attribute; missing trials and studies raise as Optuna's do;
the one-statement heartbeat is the row Optuna's stale check reads."""

from __future__ import annotations

import math
import time

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from hpo.running.trial_rows import LeanRDBStorage


def _fill(storage: RDBStorage) -> optuna.Study:
    """Two objectives, every distribution, curves with nan and infinities, JSON attributes, every state."""
    study = optuna.create_study(study_name="s", storage=storage, directions=["minimize", "maximize"])
    study.enqueue_trial({"lr": 0.01})
    for i, state in enumerate([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.suggest_float("drop", 0.0, 0.5, step=0.1)
        trial.suggest_int("width", 8, 256, log=True)
        trial.suggest_int("depth", 1, 9, step=2)
        trial.suggest_categorical("act", ["relu", "gelu", None, 3])
        for step, value in enumerate([1.5, math.nan, math.inf, -math.inf, -2.0][: i + 2]):
            study._storage.set_trial_intermediate_value(trial._trial_id, step, value)
        trial.set_user_attr("info", {"i": i, "list": [1, "a", None], "f": 0.5})
        trial.set_user_attr("name", f"t{i}")
        study._storage.set_trial_system_attr(trial._trial_id, "fixed:x", [i, i])
        values = [float(i), math.inf if i == 3 else -float(i)] if state == TrialState.COMPLETE else None
        study.tell(trial, values, state=state)
    running = study.ask()
    running.suggest_float("lr", 1e-4, 1.0, log=True)
    study.enqueue_trial({"lr": 0.5}, user_attrs={"queued": True})
    return study


def _fields(trial: FrozenTrial) -> str:
    """Every field, as text: nan compares equal to nan, and a dict's order (the database's) does not count."""
    fields = {k: sorted(v.items(), key=repr) if isinstance(v, dict) else v for k, v in vars(trial).items()}
    return repr(sorted(fields.items()))


def test_trials_read_as_rows_equal_optunas_trials(database_url: str) -> None:
    # Optuna's storage and the lean one read the same database: every way of reading a trial gives the
    # same trials, in the same order.
    optunas = RDBStorage(database_url)
    study = _fill(optunas)
    lean = LeanRDBStorage(database_url)
    expected = optunas.get_all_trials(study._study_id)
    assert len(expected) == 6 and {t.state for t in expected} == set(TrialState)
    assert list(map(_fields, lean.get_all_trials(study._study_id))) == list(map(_fields, expected))
    for trial in expected:
        assert _fields(lean.get_trial(trial._trial_id)) == _fields(trial)
    for states in [(TrialState.COMPLETE,), (TrialState.RUNNING, TrialState.WAITING), ()]:
        assert list(map(_fields, lean.get_all_trials(study._study_id, states=states))) == list(
            map(_fields, optunas.get_all_trials(study._study_id, states=states))
        )
    ids = [t._trial_id for t in expected]
    for included, newer_than in [({ids[1], ids[4]}, ids[4]), (set(), ids[3]), ({ids[0]}, -1), (set(ids), ids[-1])]:
        assert list(map(_fields, lean._get_trials(study._study_id, None, included, newer_than))) == list(
            map(_fields, optunas._get_trials(study._study_id, None, included, newer_than))
        )
    # a study loaded on the lean storage behaves as Optuna's
    loaded = optuna.load_study(study_name="s", storage=lean)
    assert list(map(_fields, loaded.best_trials)) == list(map(_fields, study.best_trials))
    for storage in (optunas, lean):
        storage.engine.dispose()


def test_a_missing_trial_or_study_raises_keyerror_as_optunas(database_url: str) -> None:
    # Optuna's callers (the caches, load_study) rely on KeyError for "no such trial/study".
    lean = LeanRDBStorage(database_url)
    study = optuna.create_study(study_name="s", storage=lean)
    with pytest.raises(KeyError):
        lean.get_trial(12345)
    with pytest.raises(KeyError):
        lean.get_all_trials(study._study_id + 1)
    assert lean.get_all_trials(study._study_id) == []
    lean.engine.dispose()


def _beats(storage: RDBStorage) -> list[tuple[int, object]]:
    beats = models.TrialHeartbeatModel.__table__
    with storage.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sqlalchemy.select(beats.c.trial_id, beats.c.heartbeat))]


def test_the_one_statement_heartbeat_and_stale_check_agree_with_optunas(database_url: str) -> None:
    # A trial's first beat inserts its row, later beats move the row's time forward (one row per trial);
    # Optuna's own stale check then finds the trial whose beats stopped past the grace period, never the
    # one that kept beating.
    # The lean stale check answers as Optuna's on the same rows (a trial that never beat is not stale, a
    # finished one neither).
    lean = LeanRDBStorage(database_url, heartbeat_interval=1, grace_period=1)
    optunas = RDBStorage(database_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=lean)
    beating, stopped, _never_beat, finished = (lean.create_new_trial(study._study_id) for _ in range(4))
    for trial_id in (beating, stopped, finished):
        lean.record_heartbeat(trial_id)
    lean.set_trial_state_values(finished, TrialState.FAIL)
    first = dict(_beats(lean))
    assert sorted(first) == [beating, stopped, finished]
    assert optunas._get_stale_trial_ids(study._study_id) == lean._get_stale_trial_ids(study._study_id) == []
    time.sleep(2.2)  # past the grace period, and past a whole second (SQLite's clock has seconds)
    lean.record_heartbeat(beating)
    later = dict(_beats(lean))
    assert len(later) == 3 and later[beating] > first[beating] and later[stopped] == first[stopped]
    assert optunas._get_stale_trial_ids(study._study_id) == lean._get_stale_trial_ids(study._study_id) == [stopped]
    for storage in (optunas, lean):
        storage.engine.dispose()
