"""Reading studies back: the best trials by one ranking query agree with ranking every trial."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpo.running.results import best_trials
from hpo.running.storage import open_storage

VALUES = [3.0, -math.inf, 2.0, math.inf, 2.0, 7.5, -1.0, 2.0, 0.5, math.inf]


def _fill(url: str, direction: str) -> optuna.Study:
    """A study with finite, infinite and tied values, plus pruned, failed and running trials that never rank."""
    study = optuna.create_study(study_name=f"ranked-{direction}", storage=open_storage(url), direction=direction)
    dist = {"x": FloatDistribution(0, 1)}
    for i, value in enumerate(VALUES):
        study.add_trial(create_trial(params={"x": i / 20}, distributions=dist, value=value))
        if i % 3 == 0:
            study.add_trial(
                create_trial(
                    params={"x": 0.9}, distributions=dist, state=TrialState.PRUNED, intermediate_values={1: -100.0}
                )
            )
    study.add_trial(create_trial(params={"x": 0.5}, distributions=dist, state=TrialState.FAIL))
    study.enqueue_trial({"x": 0.25})
    study.ask()  # a RUNNING trial
    return study


def _ranked_in_python(study: optuna.Study, k: int) -> list[int]:
    done = study.get_trials(states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return [t.number for t in sorted(done, key=lambda t: (sign * t.value, t.number))][:k]


def _numbers(trials: list[FrozenTrial]) -> list[int]:
    return [t.number for t in trials]


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_best_trials_on_sqlite_match_a_full_ranking(tmp_path: Path, direction: str) -> None:
    # The query must order -inf < finite < +inf the way Optuna does, break ties by trial number,
    # ignore trials that are not COMPLETE, and return whole trials (params, values, attributes).
    study = _fill(f"sqlite:///{tmp_path / 'ranked.db'}", direction)
    for k in (1, 3, 5, len(VALUES), len(VALUES) + 5):
        best = best_trials(study, k)
        assert _numbers(best) == _ranked_in_python(study, k)
    top = best_trials(study, 1)[0]
    assert top.state == TrialState.COMPLETE and "x" in top.params
    assert top.value == (math.inf if direction == "maximize" else -math.inf)


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_best_trials_on_postgresql_match_a_full_ranking(pg_url: Callable[[str], str], driver: str) -> None:
    # The same query on PostgreSQL, where the enum columns and NULL values of infinities are the server's;
    # with psycopg 3 (what a plain postgresql:// URL uses) too, whose typed parameters an enum column
    # refused when the query named the columns without their types.
    url = pg_url("ranked").replace("postgresql+psycopg2://", f"postgresql+{driver}://")
    study = _fill(url, "minimize")
    assert _numbers(best_trials(study, 5)) == _ranked_in_python(study, 5)


def test_best_trials_in_memory_rank_every_trial() -> None:
    # Storages without SQL (in-memory) still rank correctly, by loading every trial.
    study = optuna.create_study(direction="minimize")
    for value in VALUES:
        study.add_trial(create_trial(params={"x": 0.1}, distributions={"x": FloatDistribution(0, 1)}, value=value))
    assert _numbers(best_trials(study, 4)) == _ranked_in_python(study, 4)


def test_a_read_command_reads_what_optunas_own_storage_reads(tmp_path: Path) -> None:
    # A SQLite store at Optuna's head revision is opened without Optuna's version manager (no alembic
    # import): the study, its trials and the best ones must read back exactly as through RDBStorage.
    from optuna.storages import RDBStorage

    from hpo.running.results import open_existing
    from hpo.running.storage import _ReadingStorage

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    _fill(url, "minimize")
    fast, full = open_existing(url), RDBStorage(url, skip_table_creation=True)
    assert isinstance(fast, _ReadingStorage)
    ours = optuna.load_study(study_name="ranked-minimize", storage=fast)
    theirs = optuna.load_study(study_name="ranked-minimize", storage=full)
    assert ours.get_trials() == theirs.get_trials() and ours.directions == theirs.directions
    assert [t.number for t in best_trials(ours, 5)] == [t.number for t in best_trials(theirs, 5)]
    assert fast.get_current_version() == full.get_head_version()  # the manager is built when asked


def test_a_read_command_on_postgresql_reads_what_optunas_own_storage_reads(pg_url: Callable[[str], str]) -> None:
    # On a database server the revision is asked on the reading storage's own engine: at Optuna's head
    # the study reads back exactly as through RDBStorage; a database without Optuna's schema is still
    # refused as holding no study (the same error as before the fast path).
    from optuna.storages import RDBStorage

    from hpo.errors import UsageError
    from hpo.running.results import open_existing
    from hpo.running.storage import _ReadingStorage

    url = pg_url("reading")
    _fill(url, "maximize")
    fast, full = open_existing(url), RDBStorage(url, skip_table_creation=True)
    assert isinstance(fast, _ReadingStorage)
    ours = optuna.load_study(study_name="ranked-maximize", storage=fast)
    theirs = optuna.load_study(study_name="ranked-maximize", storage=full)
    assert ours.get_trials() == theirs.get_trials()
    assert [t.number for t in best_trials(ours, 5)] == [t.number for t in best_trials(theirs, 5)]
    with pytest.raises(UsageError, match="holds no hpo study"):
        open_existing(pg_url("empty"))


def test_a_store_without_optunas_revision_stamp_is_opened_by_optuna(tmp_path: Path) -> None:
    # Optuna stamps an unstamped schema when it opens it; that store keeps going through RDBStorage.
    import sqlite3

    from hpo.running.results import open_existing
    from hpo.running.storage import _ReadingStorage

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    _fill(url, "minimize")
    with sqlite3.connect(tmp_path / "hpo.db") as conn:
        conn.execute("DELETE FROM alembic_version")
    storage = open_existing(url)
    assert not isinstance(storage, _ReadingStorage)
    assert len(optuna.load_study(study_name="ranked-minimize", storage=storage).get_trials()) == 16
