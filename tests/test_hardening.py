"""Issue 16's cases that take more than one command: first starts that race or crash on SQLite, resumed
studies whose meaning changed, data changed under a study, study names, workers without a study, read
commands pointed at other files, the parent run after Ctrl-C, output folders, and doctor's deadline.

Each test says what must happen; bad input is checked for exit code 2, one or two lines naming the
file/field, and an unchanged folder."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import tiny_boston

QUICK = {"epochs": 1, "hidden_layers": 1, "batch_size": 64}


def snapshot(folder: Path) -> list[str]:
    """Every file and folder below `folder`: 'nothing written' means the same list (and, where a store
    exists already, the same studies, trials and runs, checked by each test). SQLite's -wal and -shm
    files come and go with connections (this test process keeps its own MLflow client's open)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(("-wal", "-shm")))


def mlflow_runs(folder: Path) -> list[tuple[str, str, str]]:
    """(role, status, run id) of every run in the folder's MLflow store."""
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return sorted(
        (r.data.tags.get("hpo.role", ""), r.info.status, r.info.run_id)
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
    )


def hpo(*args: Any, cwd: Path, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def one_line_refusal(result: Any, *expected: str, lines: int = 1) -> str:
    """Exit code 2, at most `lines` lines on stderr each starting 'hpo: ', containing every expected text."""
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert 1 <= len(text.splitlines()) <= lines and all(line.startswith("hpo: ") for line in text.splitlines()), text
    assert "Traceback" not in result.output
    for part in expected:
        assert part in text, f"{part!r} not in {text!r}"
    return text


# -- D: the first start on SQLite ----------------------------------------------------------------
@pytest.mark.slow
def test_two_first_starts_at_once_on_fresh_sqlite_share_one_consistent_store(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # `hpo run s.yaml & hpo run s.yaml` in empty folders: both succeed, the global budget holds, the
    # stores are complete (no half-migrated mlflow.db), and a later run resumes them. Two rounds here;
    # the 20-round loop is in the report.
    for round_number in range(2):
        folder = tmp_path / f"round-{round_number}"
        folder.mkdir()
        (folder / "s.yaml").write_text(yaml.safe_dump(tiny_boston(name="t", n_trials=3, fixed=QUICK)))
        procs = [hpo("run", "s.yaml", "-q", cwd=folder) for _ in range(2)]
        outcomes = [(proc.wait(timeout=600), proc.stderr.read() if proc.stderr else "") for proc in procs]
        assert [code for code, _ in outcomes] == [0, 0], outcomes
        again = hpo("run", "s.yaml", "-q", "--n-trials", "4", cwd=folder)
        assert again.wait(timeout=600) == 0, again.stderr.read() if again.stderr else ""
        trials = optuna.load_study(study_name="t", storage=f"sqlite:///{folder / 'hpo.db'}").trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4
        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("t")
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(r.data.tags["hpo.role"] for r in runs) == ["study"] + ["trial"] * 4
        assert not [t for t in tables(folder / "mlflow.db") if t.startswith("_alembic_tmp_")]
        assert not list(folder.glob(".*.hpo-new-*"))


@pytest.mark.slow
def test_a_first_start_killed_while_creating_the_stores_leaves_nothing_half_built(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # kill -9 while a store is being built: the schema is built in a temporary file (in the user's cache
    # for the template, beside the store for the copy) and moved into place, so the next run finds no
    # store or a complete one, and works, and removes the killed start's temporary files.
    write_study(tiny_boston(name="t", n_trials=1, fixed=QUICK), name="s.yaml")
    schemas = tmp_path / "data-cache" / "schemas"  # HPO_DATA_DIR of this test

    def building() -> list[Path]:
        return [*tmp_path.glob(".mlflow.db.hpo-new-*"), *schemas.glob(".mlflow-*.db.*")]

    proc = hpo("run", "s.yaml", "-q", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not building():
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before its MLflow store was being built"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (tmp_path / "mlflow.db").exists()  # the half-built store never took the real name
    again = hpo("run", "s.yaml", "-q", cwd=tmp_path)
    assert again.wait(timeout=600) == 0, again.stderr.read() if again.stderr else ""
    assert not building()  # the killed start's temporary files were removed


def test_new_stores_are_copied_from_a_template_built_once_per_schema_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new SQLite store is a copy of an empty schema kept in the user's cache (building MLflow's takes
    # about a second); the copy is the schema a build gives, a template at another revision or damaged
    # is built again, and an unwritable cache falls back to building in place.
    from hpo.running.databases import MLFLOW, OPTUNA, alembic_heads, prepared_database, read_sqlite
    from hpo.running.databases._prepare import schema_template
    from hpo.running.storage import _build_optuna_schema
    from hpo.running.tracking._connection import build_mlflow_schema

    built = {MLFLOW.name: build_mlflow_schema, OPTUNA.name: _build_optuna_schema}
    for schema in (MLFLOW, OPTUNA):
        head = alembic_heads(schema)[0]
        for name in ("a.db", "b.db"):
            with prepared_database(f"sqlite:///{tmp_path / name}", schema, built[schema.name], field="f"):
                pass
        template = tmp_path / "data-cache" / "schemas" / f"{schema.name}-{head}.db"
        first, second, reference = (
            read_sqlite(tmp_path / "a.db", field="f"),
            read_sqlite(tmp_path / "b.db", field="f"),
            None,
        )
        assert first is not None and second is not None and template.is_file()
        assert first.revision == second.revision == head and first.tables == second.tables
        direct = tmp_path / f"direct-{schema.name}.db"
        built[schema.name](f"sqlite:///{direct}")
        reference = read_sqlite(direct, field="f")
        assert reference is not None and first.tables == reference.tables
        for name in ("a.db", "b.db", direct.name):
            (tmp_path / name).unlink()

        with sqlite3.connect(template) as conn:  # stale: another revision
            conn.execute("UPDATE alembic_version SET version_num = 'older'")
        conn.close()
        assert schema_template(schema, built[schema.name]) == template
        assert read_sqlite(template, field="f").revision == head  # type: ignore[union-attr]
        template.write_bytes(b"not a database")  # damaged
        assert schema_template(schema, built[schema.name]) == template
        assert read_sqlite(template, field="f").revision == head  # type: ignore[union-attr]

    def refused(url: str) -> None:  # what a read-only cache folder gives (a root test cannot make one)
        raise sqlite3.OperationalError("attempt to write a readonly database")

    (tmp_path / "data-cache" / "schemas" / f"{MLFLOW.name}-{alembic_heads(MLFLOW)[0]}.db").unlink()
    assert schema_template(MLFLOW, refused) is None
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "schemas").write_text("a file where the templates' folder would go")
    monkeypatch.setenv("HPO_DATA_DIR", str(blocked))
    assert schema_template(MLFLOW, build_mlflow_schema) is None
    with prepared_database(f"sqlite:///{tmp_path / 'c.db'}", MLFLOW, build_mlflow_schema, field="f"):
        pass
    assert read_sqlite(tmp_path / "c.db", field="f").revision == alembic_heads(MLFLOW)[0]  # type: ignore[union-attr]


def _half_migrate(path: Path) -> None:
    """What a start killed during MLflow's migrations left behind: an older revision and a batch table."""
    from hpo.running.databases import MLFLOW, alembic_heads

    head, known = alembic_heads(MLFLOW)
    older = sorted(known - {head})[0]
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE _alembic_tmp_metrics (key VARCHAR(250))")
    conn.execute("UPDATE alembic_version SET version_num = ?", (older,))
    conn.commit()
    conn.close()


def test_a_half_migrated_mlflow_store_is_rebuilt_when_empty_and_refused_with_the_fix_when_not(
    cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # No runs in it: nothing to lose, it is rebuilt and the run works. With runs: exit 2, the file and
    # the fix are named, and the file is left as it was.
    from hpo.running.databases import MLFLOW, prepared_database
    from hpo.running.tracking import build_mlflow_schema

    with prepared_database(f"sqlite:///{tmp_path / 'mlflow.db'}", MLFLOW, build_mlflow_schema, field="tracking_uri"):
        pass  # an empty store, as a first start builds it (opened by no MLflow client in this process)
    _half_migrate(tmp_path / "mlflow.db")
    study = write_study(tiny_boston(name="t", n_trials=1, fixed=QUICK))
    assert cli("run", study, "-q").exit_code == 0
    assert not [t for t in tables(tmp_path / "mlflow.db") if t.startswith("_alembic_tmp_")]

    _half_migrate(tmp_path / "mlflow.db")  # now it holds the study's runs
    before = snapshot(tmp_path)
    text = one_line_refusal(
        cli("run", study, "-q", "--n-trials", "2"),
        "tracking_uri:",
        "mlflow.db",
        "half-migrated",
        "_alembic_tmp_metrics",
        "mlflow db upgrade",
    )
    assert "back it up" in text
    assert snapshot(tmp_path) == before and "_alembic_tmp_metrics" in tables(tmp_path / "mlflow.db")
    assert len(optuna.load_study(study_name="t", storage="sqlite:///hpo.db").trials) == 1


def test_a_half_built_optuna_storage_without_studies_is_rebuilt(
    cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # An Optuna schema whose creation stopped after its first tables holds no study: it is rebuilt.
    conn = sqlite3.connect(tmp_path / "hpo.db")
    conn.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name VARCHAR(512))")
    conn.execute("CREATE TABLE study_directions (study_direction_id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    assert cli("run", write_study(tiny_boston(name="t", n_trials=1, fixed=QUICK)), "-q").exit_code == 0
    assert {"trials", "version_info"} <= tables(tmp_path / "hpo.db")


# -- B/C: a resumed study must mean what it meant -------------------------------------------------
@pytest.fixture
def started_study(cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path) -> dict[str, Any]:
    """A study run once (one trial), and the study file it was started with."""
    base = tiny_boston(name="t", n_trials=1, sampler={"type": "tpe"}, fixed=QUICK)
    assert cli("run", write_study(base), "-q").exit_code == 0
    return base


def _changed(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    study = yaml.safe_load(yaml.safe_dump(base))
    study["n_trials"] = 2
    change(study)
    return study


REFUSED_CHANGES = [
    ("metric", lambda s: s.update(metric="val_mse"), "metric: val_rmse -> val_mse"),  # B
    ("direction", lambda s: s.update(metric="val_r2", direction="maximize"), "direction: minimize -> maximize"),
    (
        "search space kind",
        lambda s: s["params"].update(lr={"type": "categorical", "choices": [0.01, 0.02]}),
        "params.lr: {type: float",
    ),  # C
    ("narrowed range", lambda s: s["params"].update(width={"type": "int", "low": 8, "high": 16}), "params.width:"),
    ("log scale", lambda s: s["params"]["lr"].update(log=False), "params.lr:"),
    (
        "added parameter",
        lambda s: s["params"].update(dropout={"type": "float", "low": 0.0, "high": 0.5}),
        "params.dropout: (absent) ->",
    ),
    ("fixed value", lambda s: s["fixed"].update(epochs=2), "fixed.epochs: 1 -> 2"),
    ("data split", lambda s: s.update(data={"split_seed": 3}), "data.split_seed: 0 -> 3"),
]


@pytest.mark.parametrize(("what", "change", "shown"), REFUSED_CHANGES, ids=[c[0] for c in REFUSED_CHANGES])
def test_resuming_with_a_changed_meaning_is_refused_with_what_changed(
    what: str,
    change: Callable[[dict[str, Any]], None],
    shown: str,
    started_study: dict[str, Any],
    cli: Callable[..., Any],
    write_study: Callable[..., Path],
    tmp_path: Path,
) -> None:
    # Old and new trials would not be comparable (trial 0's val_rmse reported as val_mse, a float and a
    # categorical lr under one name): exit 2 with the diff, the study and MLflow untouched.
    path = write_study(_changed(started_study, change), name="changed.yaml")
    before, runs = snapshot(tmp_path), mlflow_runs(tmp_path)
    config = optuna.load_study(study_name="t", storage="sqlite:///hpo.db").user_attrs["hpo.config"]
    one_line_refusal(
        cli("run", path, "-q"),
        "changed.yaml: study 't'",
        "would not be comparable",
        shown,
        "start a new study",
        lines=2,
    )
    assert snapshot(tmp_path) == before and mlflow_runs(tmp_path) == runs
    stored = optuna.load_study(study_name="t", storage="sqlite:///hpo.db")
    assert len(stored.trials) == 1 and stored.user_attrs["hpo.config"] == config


def test_a_widened_range_and_a_bigger_budget_are_accepted_and_recorded(
    started_study: dict[str, Any], cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # Every stored trial lies inside a widened range: the study resumes, and the parent run carries
    # what changed and the study file as resumed.
    study = _changed(started_study, lambda s: s["params"]["lr"].update(high=0.1))
    assert cli("run", write_study(study, name="wider.yaml"), "-q").exit_code == 0
    stored = optuna.load_study(study_name="t", storage="sqlite:///hpo.db")
    assert len(stored.trials) == 2 and stored.user_attrs["hpo.config"]["params"]["lr"]["high"] == 0.1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(stored.user_attrs["hpo.mlflow_parent_run_id"])
    assert (
        "params.lr: {type: float, low: 0.001, high: 0.01, log: true} -> {type: float, low: 0.001, high: 0.1, log: true}"
        in parent.data.tags["hpo.config_changes"]
    )
    assert "n_trials: 1 -> 2" in parent.data.tags["hpo.config_changes"]
    assert any(a.path.startswith("study-resumed-") for a in client.list_artifacts(parent.info.run_id))
    assert parent.info.status == "FINISHED"


def test_a_worker_with_another_file_runs_the_stored_config_and_never_changes_it(
    started_study: dict[str, Any], cli: Callable[..., Any], write_study: Callable[..., Path]
) -> None:
    # `hpo worker` joins the study as stored (a warning says so) and leaves the stored config alone.
    stored_before = optuna.load_study(study_name="t", storage="sqlite:///hpo.db").user_attrs["hpo.config"]
    other = _changed(started_study, lambda s: s.update(metric="val_mse"))
    result = cli("worker", write_study(other, name="other.yaml"))
    assert result.exit_code == 0, result.output
    assert "the stored one is used" in result.stderr
    stored = optuna.load_study(study_name="t", storage="sqlite:///hpo.db")
    assert stored.user_attrs["hpo.config"] == stored_before
    assert len(stored.trials) == 1  # the stored budget (n_trials 1) is used up already


def test_compare_marks_only_budget_sampler_and_widened_ranges_safe() -> None:
    # The comparison is generic: whatever the field, a change of objective, metric, direction, search
    # space, fixed values or data settings is unsafe; budget, sampler, pruner, seed and execution are not.
    from hpo.running.resume import compare

    base = {
        "name": "t",
        "objective": "boston",
        "metric": "val_rmse",
        "n_trials": 1,
        "seed": 0,
        "sampler": {"type": "tpe"},
        "params": {"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True, "step": None, "when": None}},
        "execution": {"max_retry": 1},
        "storage": "sqlite:///a.db",
    }
    safe = {
        **base,
        "n_trials": 9,
        "seed": 4,
        "sampler": {"type": "random"},
        "execution": {"max_retry": 3},
        "storage": "sqlite:///b.db",
    }
    assert all(c.safe for c in compare(base, safe)) and {c.field for c in compare(base, safe)} == {
        "n_trials",
        "seed",
        "sampler.type",
        "execution.max_retry",
    }
    assert [c.field for c in compare(base, {**base, "objective": "cifar10"}) if not c.safe] == ["objective"]
    grid = {**base, "sampler": {"type": "grid"}}
    widened = {**grid, "params": {"lr": {**base["params"]["lr"], "high": 0.1}}}
    assert [c.safe for c in compare(grid, widened)] == [False]  # a grid's points would change meaning
    stepped = {**base, "params": {"w": {"type": "int", "low": 4, "high": 16, "log": False, "step": 4, "when": None}}}
    off_grid = {**stepped, "params": {"w": {**stepped["params"]["w"], "low": 2}}}
    on_grid = {**stepped, "params": {"w": {**stepped["params"]["w"], "low": 0, "high": 20}}}
    assert [c.safe for c in compare(stepped, off_grid)] == [False] and [c.safe for c in compare(stepped, on_grid)] == [
        True
    ]


# -- G: the data a study was scored on is recorded -------------------------------------------------
def _boston_csv(path: Path, *, rows: int = 40, bump: float = 0.0) -> None:
    from hpo.data.boston import read_frame

    frame = read_frame().head(rows).copy()
    frame.loc[0, "RM"] += bump
    frame.to_csv(path, index=False)


def test_a_changed_data_file_is_refused_by_evaluate_and_by_a_resumed_run(
    cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # The study records a fingerprint of its CSV; the same rows with one value changed is other data:
    # `hpo evaluate` and a resumed run name the file and refuse (exit 2), nothing is read or written.
    _boston_csv(tmp_path / "my.csv")
    study = write_study(tiny_boston(name="t", n_trials=1, fixed=QUICK, data={"path": "my.csv"}))
    assert cli("run", study, "-q").exit_code == 0
    _boston_csv(tmp_path / "my.csv", bump=0.5)
    before, runs = snapshot(tmp_path), mlflow_runs(tmp_path)
    one_line_refusal(
        cli("evaluate", "t"), "data:", "study 't' was run on my.csv sha256:", "now my.csv sha256:", "restore"
    )
    one_line_refusal(cli("run", study, "-q", "--n-trials", "2"), "data file: my.csv sha256:", lines=2)
    assert snapshot(tmp_path) == before and mlflow_runs(tmp_path) == runs
    assert len(optuna.load_study(study_name="t", storage="sqlite:///hpo.db").trials) == 1


# -- A: study names, wherever they enter ----------------------------------------------------------
# "b.yaml": read commands would take it for a study file's path, so the study could never be named again
BAD_NAMES = ["../x", "/tmp/h16-abs", "it's", "", "a b", "x" * 201, "b.yaml"]


@pytest.mark.parametrize(
    "name", BAD_NAMES, ids=["parent-folder", "absolute", "apostrophe", "empty", "space", "too-long", "file-like"]
)
@pytest.mark.parametrize("command", ["run", "create", "worker"])
def test_study_name_flag_follows_the_file_rule(
    name: str, command: str, cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # --study-name is checked like the file's `name`: no artifacts outside mlartifacts/, no MLflow filter
    # broken by a quote, and nothing written.
    study = write_study(tiny_boston(fixed=QUICK))
    before = snapshot(tmp_path)
    one_line_refusal(
        cli(command, study, "--study-name", name), "--study-name:", "is not a study name", "letters, digits"
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["status", "best", "evaluate", "report", "reconcile"])
def test_a_name_given_to_a_read_command_follows_the_rule(command: str, cli: Callable[..., Any], tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    one_line_refusal(cli(command, "it's"), "study:", "neither a study file nor a study name")
    assert snapshot(tmp_path) == before


def test_schedule_checks_the_study_name_too(cli: Callable[..., Any], write_study: Callable[..., Path]) -> None:
    one_line_refusal(cli("schedule", "cron", write_study(tiny_boston()), "--study-name", "../x"), "--study-name:")


def test_every_mlflow_filter_quotes_its_values() -> None:
    # A value with an apostrophe is searched for exactly, never spliced into the filter's syntax.
    from mlflow.utils.search_utils import SearchUtils

    from hpo.running.tracking import runs_filter

    parsed = SearchUtils.parse_search_filter(
        runs_filter({"optuna.study_name": "it's", "hpo.role": "trial"}, status="FINISHED")
    )
    assert [(p["key"], p["value"]) for p in parsed] == [
        ("optuna.study_name", "it's"),
        ("hpo.role", "trial"),
        ("status", "FINISHED"),
    ]
    with pytest.raises(ValueError):
        runs_filter({"a": "both ' and \""})


# -- K: a worker never creates what it only joins ---------------------------------------------------
def test_a_worker_for_a_missing_study_says_so_and_creates_nothing(
    cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    study = write_study(tiny_boston(name="t", n_trials=1, fixed=QUICK))
    before = snapshot(tmp_path)
    one_line_refusal(cli("worker", study), "study 't' does not exist", "hpo create")
    assert snapshot(tmp_path) == before
    # a storage that exists but holds other studies: still nothing new, no MLflow store
    assert (
        cli("run", write_study(tiny_boston(name="other", n_trials=1, fixed=QUICK), name="other.yaml"), "-q").exit_code
        == 0
    )
    (tmp_path / "mlflow.db").unlink()
    before = snapshot(tmp_path)
    one_line_refusal(cli("worker", study), "study 't' does not exist")
    assert snapshot(tmp_path) == before


# -- H: read commands on files that are not Optuna's -------------------------------------------------
def test_read_commands_never_add_tables_to_another_database(
    cli: Callable[..., Any], write_study: Callable[..., Path], tmp_path: Path
) -> None:
    # `hpo status --storage sqlite:///mlflow.db` used to add Optuna's 11 tables to the MLflow store.
    assert cli("run", write_study(tiny_boston(name="t", n_trials=1, fixed=QUICK)), "-q").exit_code == 0
    before, mlflow_tables = snapshot(tmp_path), tables(tmp_path / "mlflow.db")
    for args in (
        ("status", "--storage", "sqlite:///mlflow.db"),
        ("best", "t", "--storage", "sqlite:///mlflow.db"),
        ("status", "--storage", "sqlite:///absent.db"),
    ):
        assert cli(*args).exit_code == 2
    assert snapshot(tmp_path) == before and tables(tmp_path / "mlflow.db") == mlflow_tables


# -- O: Ctrl-C and the counts of a resumed run ------------------------------------------------------
def test_a_resumed_run_counts_a_requeued_trial_once_and_its_summaries_agree(
    cli: Callable[..., Any], write_study: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # After Ctrl-C the interrupted trial's copy waits: it is part of the budget but not done. The
    # resumed run starts at the finished count, ends at the budget, and both summary lines agree.
    study = write_study(tiny_boston(name="t", n_trials=1, fixed=QUICK))
    assert cli("run", study, "-q").exit_code == 0
    stored = optuna.load_study(study_name="t", storage="sqlite:///hpo.db")
    stored.enqueue_trial(stored.trials[0].params)  # stands for the re-queued copy of an interrupted trial
    monkeypatch.setenv("HPO_PROGRESS", "plain")
    result = cli("run", study, "--n-trials", "3")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "study t: 1/3 trials done"
    assert "3/3 done" in [line for line in lines if line.startswith("trial ")][-1]
    assert "study t: 2 complete, 0 pruned, 0 failed in " in result.stderr
    assert "study t: 2 complete, 0 pruned, 0 failed in this run" in result.stderr


# -- L: folders and addresses given on the command line ----------------------------------------------
@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("report", "t", "--out", "/proc/x"), {}, "--out: cannot write the folder /proc/x"),
        (("compare", "t", "u", "--out", "/proc/x"), {}, "--out: cannot write the folder /proc/x"),
        (("report", "t", "--out", "/etc/hostname"), {}, "--out: cannot write the folder /etc/hostname: it is a file"),
        (("data", "import", "cifar10", "x.tar.gz"), {"HPO_DATA_DIR": "/proc/x"}, "HPO_DATA_DIR: cannot write /proc/x"),
        (("data", "info"), {"HPO_DATA_DIR": "/etc/hostname"}, "HPO_DATA_DIR: '/etc/hostname' is not accepted"),
        (("server", "--host", "256.1.1.1"), {}, "--host: '256.1.1.1' is neither an IP address nor a known host name"),
        (("server", "--host", "no-such-host.invalid"), {}, "--host: 'no-such-host.invalid'"),
        (("server", "--host", "192.0.2.1"), {}, "--host: cannot listen on 192.0.2.1"),
        (("status",), {"HPO_THREADS": "0"}, "HPO_THREADS: '0' is not accepted"),
    ],
    ids=[
        "report-out",
        "compare-out",
        "out-is-a-file",
        "data-dir-unwritable",
        "data-dir-is-a-file",
        "host-not-an-address",
        "host-unknown",
        "host-not-ours",
        "env-for-any-command",
    ],
)
def test_folders_hosts_and_variables_are_refused_in_one_line(
    args: tuple[str, ...],
    env: dict[str, str],
    expected: str,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = snapshot(tmp_path)
    one_line_refusal(cli(*args), expected)
    assert snapshot(tmp_path) == before


# -- doctor: the deadline is for the network only ------------------------------------------------------
def test_doctor_never_times_out_a_local_check(tmp_path: Path) -> None:
    # SQLite files are read without a deadline: even a deadline of zero cannot make them "not answer",
    # and no local finding blames a firewall.
    from hpo.config.settings import resolve_settings
    from hpo.operations.doctor import diagnose

    settings = resolve_settings(
        storage_flag=f"sqlite:///{tmp_path / 'hpo.db'}", tracking_flag=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    report = diagnose(settings, deadline=0.0)
    assert report.ok, report.lines()
    assert not any("firewall" in line or "did not answer" in line for line in report.lines())


# -- F: every character a password may hold ------------------------------------------------------------
@pytest.mark.parametrize("special", list("/@:#?%+"))
def test_redaction_hides_a_password_with_any_character(special: str) -> None:
    # Raw (as SQLAlchemy accepts every character but "@") and percent-encoded, in a database URL, an
    # http URL, a mistyped URL and a query parameter; and, once hpo was given the URL, anywhere.
    import urllib.parse

    from hpo.config.settings import redact, remember_secrets, url_password

    password = f"Pw{special}x9{special}Q"
    encoded = urllib.parse.quote(password, safe="")
    texts = [
        f"postgresql+psycopg2://u:{encoded}@db:5432/hpo",
        f"http://u:{encoded}@mlflow:5000",
        f"postgresql//u:{encoded}@db/hpo",
        f"postgresql://db/hpo?password={encoded}",
    ]
    if special != "@":
        texts += [
            f"postgresql://u:{password}@db:5432/hpo",
            f"'sqlite' and postgresql://u:{password}@db/hpo in a message",
        ]
    for text in texts:
        assert password not in redact(text) and encoded not in redact(text), (text, redact(text))
    assert url_password(texts[0]) == password
    remember_secrets(texts[0])
    assert password not in redact(f"psycopg2 said: password {password} rejected")
