"""`hpo best` without Optuna: rows read straight from Optuna's tables equal the rows read through Optuna."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpo.running.best_query import best_rows
from hpo.running.meta import BACKFILLED_RUNS_ATTR, DEVICE_ATTR, METRICS_ATTR, REASON_ATTR, RUN_ID_ATTR
from hpo.running.results import best_trials, study_metrics, trial_row
from hpo.running.storage import open_storage
from tests.conftest import run_hpo

DISTRIBUTIONS = {
    "width": IntDistribution(16, 512, log=True),
    "layers": IntDistribution(1, 9, step=2),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5, step=0.1),
    "optimizer": CategoricalDistribution(["adam", "sgd", None, True, 3, 0.5]),
}
VALUES = [3.0, -math.inf, 2.0, math.inf, 2.0, 7.5, -1.0, 0.5]


def _fill(url: str, direction: str, *, metrics: bool = True) -> optuna.Study:
    """Every kind of param Optuna stores (log and stepped ints and floats, categoricals of mixed types),
    infinite and tied values, the attributes a row shows, a re-queued copy, a backfilled run, and trials
    that never rank (pruned, failed, running)."""
    study = optuna.create_study(study_name=f"rows-{direction}", storage=open_storage(url), direction=direction)
    if metrics:
        study.set_user_attr(METRICS_ATTR, ["val_rmse"])
    study.set_user_attr(BACKFILLED_RUNS_ATTR, {"2": "backfilled-run"})
    choices = DISTRIBUTIONS["optimizer"].choices
    for i, value in enumerate(VALUES):
        params = {
            "width": 16 * 2 ** (i % 5),
            "layers": 1 + 2 * (i % 4),
            "lr": 10 ** -(1 + i % 4),
            "dropout": round(0.1 * (i % 6), 1),
            "optimizer": choices[i % len(choices)],
        }
        study.add_trial(
            create_trial(
                params=params,
                distributions=DISTRIBUTIONS,
                value=value,
                user_attrs={RUN_ID_ATTR: f"run-{i}", DEVICE_ATTR: "cpu", **({REASON_ATTR: "slow"} if i == 4 else {})},
                system_attrs={"failed_trial": 1, "retry_history": [1]} if i == 5 else {},
            )
        )
    study.add_trial(create_trial(params={}, distributions={}, state=TrialState.PRUNED, intermediate_values={1: 0.0}))
    study.add_trial(create_trial(params={}, distributions={}, state=TrialState.FAIL))
    study.ask()
    return study


def _through_optuna(study: optuna.Study, k: int) -> list[dict[str, object]]:
    backfilled = dict(study.user_attrs.get(BACKFILLED_RUNS_ATTR) or {})
    return [trial_row(t, study_metrics(study), backfilled=backfilled) for t in best_trials(study, k)]


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_rows_on_sqlite_equal_the_rows_read_through_optuna(tmp_path: Path, direction: str) -> None:
    # Same trials in the same order with the same params (types included: an int stays an int, a
    # categorical None or True stays itself), values, infinities, attributes and durations.
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = _fill(url, direction)
    for k in (1, 3, len(VALUES), len(VALUES) + 4):
        rows = best_rows(url, study.study_name, k=k)
        assert rows == _through_optuna(study, k)
        assert json.dumps(rows, default=str) == json.dumps(_through_optuna(study, k), default=str)
    assert best_rows(url, study.study_name, k=2)[0]["state"] == "COMPLETE"  # type: ignore[index]


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_rows_on_postgresql_equal_the_rows_read_through_optuna(pg_url: Callable[[str], str], driver: str) -> None:
    # On PostgreSQL the enum columns are the server's; psycopg 3 (a plain postgresql:// URL) too.
    url = pg_url("rows").replace("postgresql+psycopg2://", f"postgresql+{driver}://")
    study = _fill(url, "minimize", metrics=False)
    assert best_rows(url, study.study_name, k=5) == _through_optuna(study, 5)


def test_what_the_tables_cannot_answer_goes_through_optuna(tmp_path: Path) -> None:
    # None (the caller then reads through Optuna, which also words the errors) for a study that is not
    # there, several objectives, a schema revision this install does not write, and a missing file.
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    _fill(url, "minimize")
    optuna.create_study(study_name="two", storage=open_storage(url), directions=["minimize", "maximize"])
    assert best_rows(url, "nowhere", k=3) is None
    assert best_rows(url, "two", k=3) is None
    assert best_rows(f"sqlite:///{tmp_path / 'missing.db'}", "rows-minimize", k=3) is None
    with sqlite3.connect(tmp_path / "hpo.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'v0.0.0'")
    assert best_rows(url, "rows-minimize", k=3) is None


def test_hpo_best_does_not_import_optuna(tmp_path: Path) -> None:
    # The command's fixed cost: on a store at Optuna's revision `hpo best` prints the same JSON as
    # through Optuna without importing it (or numpy, or SQLAlchemy's ORM).
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = _fill(url, "minimize")
    probe = (
        "import sys, runpy; sys.argv = ['hpo', 'best', 'rows-minimize', '--json', '--storage', sys.argv[1]]\n"
        "import atexit; atexit.register(lambda: print(sorted(m for m in ('optuna', 'numpy', 'sqlalchemy.orm') "
        "if m in sys.modules), file=sys.stderr))\n"
        "runpy.run_module('hpo', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
    assert json.loads(done.stdout) == json.loads(json.dumps(_through_optuna(study, 5), default=str))
    missing = run_hpo("best", "nowhere", "--storage", url, cwd=tmp_path)
    assert missing.returncode == 2 and "study 'nowhere' not found" in missing.stderr
