"""hpo.running.trial_cache: a read of finished trials answers as Optuna's own cache does, without loading
the trials still running; reads that include running trials are Optuna's."""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpo.running.trial_cache import FinishedTrialsCache, study_storage

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@pytest.fixture
def two_workers(database_url: str) -> Iterator[tuple[optuna.Study, optuna.Study]]:
    """One study seen by two workers: the first through FinishedTrialsCache, the other through Optuna's cache."""
    backends = [RDBStorage(database_url), RDBStorage(database_url)]
    ours = optuna.create_study(study_name="s", storage=study_storage(backends[0]))
    theirs = optuna.load_study(study_name="s", storage=backends[1])
    assert isinstance(ours._storage, FinishedTrialsCache)
    yield ours, theirs
    for backend in backends:
        backend.engine.dispose()


def _same(trials: list[FrozenTrial], expected: list[FrozenTrial]) -> None:
    assert [(t.number, t.state, t.values, t.params, t.intermediate_values, t.user_attrs) for t in trials] == [
        (t.number, t.state, t.values, t.params, t.intermediate_values, t.user_attrs) for t in expected
    ]


def _start(study: optuna.Study, x: float) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", -10, 10)
    trial.report(x, 0)
    trial.set_user_attr("x", x)
    return trial


def test_finished_trials_read_as_optunas_cache_reads_them_while_others_run_and_finish(
    two_workers: tuple[optuna.Study, optuna.Study],
) -> None:
    # Whatever the interleaving of starts and finishes across workers, a read of finished trials (any
    # subset of finished states) returns what a fresh Optuna read returns, curves and attributes included.
    ours, theirs = two_workers
    running = [_start(theirs, float(i)) for i in range(5)]  # `ours` has read nothing yet
    for states in [(TrialState.COMPLETE,), FINISHED_STATES]:
        assert ours.get_trials(deepcopy=False, states=states) == []
    theirs.tell(running[1], 1.0)
    theirs.tell(running[2], state=TrialState.PRUNED)
    _same(ours.get_trials(states=(TrialState.COMPLETE,)), theirs.get_trials(states=(TrialState.COMPLETE,)))
    later = _start(theirs, 5.0)  # created after the first read: newer than any trial it saw
    theirs.tell(running[0], state=TrialState.FAIL)
    theirs.tell(later, 0.5)
    theirs.tell(running[4], 2.0)
    fresh = optuna.load_study(study_name="s", storage=RDBStorage(theirs._storage._backend.url))
    for states in [(TrialState.COMPLETE,), (TrialState.PRUNED,), FINISHED_STATES]:
        _same(ours.get_trials(states=states), fresh.get_trials(states=states))
    # a read including running trials is whole, and fresh: the running one's latest report is there
    running[3].report(7.0, 1)
    _same(ours.get_trials(), fresh.get_trials())
    assert ours.get_trials(states=(TrialState.RUNNING,))[0].intermediate_values == {0: 3.0, 1: 7.0}
    # and finished-only reads after it still see what finishes next
    theirs.tell(running[3], 3.0)
    _same(ours.get_trials(states=(TrialState.COMPLETE,)), fresh.get_trials(states=(TrialState.COMPLETE,)))


def test_a_finished_trials_read_never_loads_a_running_trial(two_workers: tuple[optuna.Study, optuna.Study]) -> None:
    # The point of the cache: with many workers' trials running, a pruner's read of finished trials loads
    # only the trials that finished since the last read: no intermediate values of a running trial, and
    # nothing at all when none finished.
    ours, theirs = two_workers
    done = _start(theirs, 1.0)
    running = [_start(theirs, float(i)) for i in range(3)]
    theirs.tell(done, 1.0)
    loaded: list[str] = []

    def watch(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "trial_intermediate_values" in statement:
            loaded.append(statement)

    engine = ours._storage._backend.engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", watch)
    try:
        assert [t.number for t in ours.get_trials(states=(TrialState.COMPLETE,))] == [0]
        assert len(loaded) == 1  # the one finished trial's curve, in one query
        loaded.clear()
        for _ in range(3):
            assert [t.number for t in ours.get_trials(states=(TrialState.COMPLETE,))] == [0]
        assert loaded == []  # the running trials were asked for their state only
        theirs.tell(running[0], 2.0)
        assert [t.number for t in ours.get_trials(states=(TrialState.COMPLETE,))] == [0, 1]
        assert len(loaded) == 1
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", watch)
    assert running  # the others are still running


def test_only_an_rdb_is_wrapped() -> None:
    # Optuna wraps an RDB in its cache when it loads a study; hpo's cache takes that place, and only there.
    in_memory = optuna.storages.InMemoryStorage()
    assert study_storage(in_memory) is in_memory
