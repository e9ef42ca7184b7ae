"""Large studies: how `hpo status`, `best`, `report`, `reconcile` and the sampler's ask grow with the trial count.

One study is created by hpo itself (`StudyRunner`: the stored config, metric names, data fingerprint and
the MLflow parent run, exactly as `hpo run` leaves them) from studies/boston-mlp.yaml's search space (14
hyperparameters, conditional ones included, TPE multivariate as the file sets it), with 30 epochs and no
cross-validation so that curves stay 30 points long. It is then filled up to each size (100, 1,000,
10,000 trials) without training:

- the trials are written as `Study.add_trials` stores them, a thousand per transaction into the tables
  of Optuna's RDB schema (its SQLAlchemy models; `add_trials` itself takes 100 ms a trial): params
  drawn at random from the search space (Optuna's RandomSampler through hpo's own `suggest`), about
  55% PRUNED at a Hyperband rung, 40% COMPLETE, 5% FAIL, a decreasing
  `val_rmse` curve as intermediate values, the `mlflow_run_id` and `hpo.seed` user attributes;
- each trial's closed MLflow child run, with the tags, params, per-epoch `train_loss`/`val_loss`/
  `val_rmse` and summary metrics hpo's `Tracker` logs, is written a thousand runs per transaction
  into MLflow's own tables (its SQLAlchemy models): through the API that is about 30 round trips a
  trial, and a 10,000-trial fill would take an hour on a busy 2-core machine.

At each size every command runs as a real `python -m hpo` process (so its figure includes Python's
start-up and imports: the fixed cost, shown by the 100-trial row), and the sampler's ask is timed in
this process on the stored study (`study.ask()` plus the search space's suggestions, as the runner asks;
each asked trial is told FAIL, so a size holds a few more trials than its name).

The Optuna storage and the MLflow store are two fresh PostgreSQL databases (created here, dropped at
the end; `--postgres`), or SQLite files in a temporary folder with `--sqlite` or when PostgreSQL does not
answer (a note says so).

    python benchmarks/large_study.py               # 100, 1,000, 10,000 trials on PostgreSQL (~15 min on 2 cores)
    python benchmarks/large_study.py --quick               # 100 trials, seconds
    python benchmarks/large_study.py --sizes 100,1000 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report
from _postgres import drop_databases, postgres_reason

EPOCHS = 30
RUNGS = (10, 20)  # where Hyperband (min_resource 10, reduction 3) stops the trials it prunes, roughly
COMMANDS = ("status", "best", "report", "reconcile")
FAIL_REASON = "ValueError: the loss became NaN at epoch 0 (simulated)"
GOALS = {"status": 2.0, "best": 0.5, "report": 60.0}  # seconds at 10,000 trials (issue 15)


def study_file(work: Path, name: str) -> Path:
    """studies/boston-mlp.yaml under another name, 30 epochs, one validation split (no cv_folds)."""
    import yaml

    data = yaml.safe_load((_report.REPO / "studies" / "boston-mlp.yaml").read_text())
    data["name"] = name
    data["n_trials"] = 1_000_000
    data["fixed"]["epochs"] = EPOCHS
    data["data"].pop("cv_folds", None)
    data["evaluation"] = {"top_k": 5, "retrain_seeds": 0, "ensemble": "none", "checkpoints": "none"}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _curve(final: float, length: int, rng: random.Random) -> list[float]:
    """A noisy learning curve falling from about 3x `final` towards it over `length` epochs."""
    return [final * (1 + 2 * math.exp(-epoch / 6)) * (1 + rng.gauss(0, 0.02)) for epoch in range(length)]


def draw_trials(config: Any, start: int, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` trials' params (random, through the search space's own `suggest`), states and curves."""
    import optuna

    from hpo.running.search_space import suggest

    sampler = optuna.samplers.RandomSampler(seed=seed + start)
    draft = optuna.create_study(sampler=sampler)
    rng = random.Random(seed * 7919 + start)
    out = []
    for number in range(start, start + count):
        trial = draft.ask()
        params = suggest(trial, config)
        quality = (
            abs(math.log10(params["lr"]) + 2.5) + 0.3 * abs(math.log2(params["width"] / 64)) + 0.5 * params["dropout"]
        )
        final = 2.4 + quality + abs(rng.gauss(0, 0.4))
        roll = rng.random()
        state = "FAIL" if roll < 0.05 else "PRUNED" if roll < 0.60 else "COMPLETE"
        length = 0 if state == "FAIL" else rng.choice(RUNGS) if state == "PRUNED" else EPOCHS
        out.append(
            {
                "number": number,
                "params": params,
                "distributions": dict(trial.distributions),
                "state": state,
                "curve": _curve(final, length, rng),
                "seed": seed * 1_000_003 + number,
            }
        )
        draft.tell(trial, state=optuna.trial.TrialState.FAIL)  # the draft study only draws params
    return out


def _run_rows(
    drawn: dict[str, Any],
    *,
    parent: str,
    study_name: str,
    config: Any,
    run_id: str,
    experiment_id: str,
    artifact_root: str,
    now: int,
) -> dict[str, list[dict[str, Any]]]:
    """The rows MLflow's store holds for one closed trial run, as the runner's `Tracker` would leave them:
    tags, every hyperparameter as a param, the epochs' curves (step = epoch) and the summary metrics."""
    from hpo.running.tracking import STATE_TO_STATUS

    number, state, curve = drawn["number"], drawn["state"], drawn["curve"]
    tags = {
        "mlflow.parentRunId": parent,
        "mlflow.runName": f"trial-{number:04d}",
        "hpo.role": "trial",
        "optuna.study_name": study_name,
        "optuna.trial_number": str(number),
        "optuna.state": state,
        "hpo.seed": str(drawn["seed"]),
    }
    if state == "FAIL":
        tags["hpo.failure_reason"] = FAIL_REASON
        tags["mlflow.note.content"] = f"FAIL: {FAIL_REASON}"
    metrics = [
        (key, value, epoch)
        for epoch, v in enumerate(curve)
        for key, value in (("train_loss", v * 0.8), ("val_loss", v * v), ("val_rmse", v))
    ]
    if curve:
        best_epoch = min(range(len(curve)), key=curve.__getitem__)
        metrics += [
            ("best_val_rmse", curve[best_epoch], 0),
            ("best_epoch", float(best_epoch), 0),
            ("train_seconds", 0.05 * len(curve), 0),
            ("n_params", 4000.0, 0),
        ]
    latest: dict[str, tuple[float, int]] = {}
    for key, value, step in metrics:
        if key not in latest or step >= latest[key][1]:
            latest[key] = (value, step)
    return {
        "runs": [
            {
                "run_uuid": run_id,
                "name": f"trial-{number:04d}",
                "source_type": "LOCAL",
                "source_name": "",
                "entry_point_name": "",
                "user_id": "hpo",
                "status": STATE_TO_STATUS[state],
                "start_time": now,
                "end_time": now + 50 * len(curve),
                "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"{artifact_root}/{run_id}/artifacts",
                "experiment_id": int(experiment_id),
            }
        ],
        "tags": [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()],
        "params": [
            {"key": k, "value": str(v), "run_uuid": run_id} for k, v in {**config.fixed, **drawn["params"]}.items()
        ],
        "metrics": [
            {"key": k, "value": v, "timestamp": now, "step": step, "is_nan": False, "run_uuid": run_id}
            for k, v, step in metrics
        ],
        "latest_metrics": [
            {"key": k, "value": v, "timestamp": now, "step": step, "is_nan": False, "run_uuid": run_id}
            for k, (v, step) in latest.items()
        ],
    }


def log_runs(tracker: Any, parent: str, study_name: str, config: Any, drawn: list[dict[str, Any]]) -> list[str]:
    """Write the trials' closed MLflow runs in one transaction per batch, into the tables of MLflow's own
    schema (its SQLAlchemy models): the per-run API costs about 30 round trips a trial, 10,000 trials an hour."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag

    experiment = tracker.client.get_experiment(tracker.experiment_id)
    now = int(time.time() * 1000)
    rows: dict[str, list[dict[str, Any]]] = {"runs": [], "tags": [], "params": [], "metrics": [], "latest_metrics": []}
    run_ids = []
    for d in drawn:
        run_id = uuid.uuid4().hex
        run_ids.append(run_id)
        for table, part in _run_rows(
            d,
            parent=parent,
            study_name=study_name,
            config=config,
            run_id=run_id,
            experiment_id=experiment.experiment_id,
            artifact_root=experiment.artifact_location,
            now=now,
        ).items():
            rows[table].extend(part)
    engine = sqlalchemy.create_engine(tracker.tracking_uri)
    try:
        with engine.begin() as conn:
            for model in (SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric):
                conn.execute(sqlalchemy.insert(model.__table__), rows[model.__tablename__])
    finally:
        engine.dispose()
    return run_ids


def add_trials(storage: Any, study_id: int, drawn: list[dict[str, Any]], run_ids: list[str]) -> None:
    """The finished trials in one transaction, into the tables of Optuna's RDB schema (its SQLAlchemy models),
    as `Study.add_trials` would store them: that call costs about 100 ms a trial (a transaction each, and one
    insert per intermediate value), 20 minutes for 10,000 trials on a busy machine."""
    import datetime as dt
    import json

    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    from hpo.running.runner import REASON_ATTR, RUN_ID_ATTR, SEED_ATTR

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # Optuna stores naive UTC datetimes
    trial_rows = [
        {
            "number": d["number"],
            "study_id": study_id,
            "state": TrialState[d["state"]],
            "datetime_start": now - dt.timedelta(seconds=0.05 * len(d["curve"]) + 0.1),
            "datetime_complete": now,
        }
        for d in drawn
    ]
    with storage.engine.begin() as conn:
        conn.execute(sqlalchemy.insert(models.TrialModel.__table__), trial_rows)
        trials = models.TrialModel.__table__
        numbers = [d["number"] for d in drawn]
        ids = dict(
            conn.execute(
                sqlalchemy.select(trials.c.number, trials.c.trial_id).where(
                    trials.c.study_id == study_id, trials.c.number.between(min(numbers), max(numbers))
                )
            ).all()
        )
        params, values, intermediate, attrs = [], [], [], []
        for d, run_id in zip(drawn, run_ids):
            trial_id = ids[d["number"]]
            for name, value in d["params"].items():
                dist = d["distributions"][name]
                params.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": dist.to_internal_repr(value),
                        "distribution_json": distribution_to_json(dist),
                    }
                )
            if d["state"] == "COMPLETE":
                values.append(
                    {
                        "trial_id": trial_id,
                        "objective": 0,
                        "value": min(d["curve"]),
                        "value_type": models.TrialValueModel.TrialValueType.FINITE,
                    }
                )
            for step, value in enumerate(d["curve"]):
                intermediate.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": value,
                        "intermediate_value_type": models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE,
                    }
                )
            user = {
                RUN_ID_ATTR: run_id,
                SEED_ATTR: d["seed"],
                **({REASON_ATTR: FAIL_REASON} if d["state"] == "FAIL" else {}),
            }
            attrs += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in user.items()]
        for model, rows in (
            (models.TrialParamModel, params),
            (models.TrialValueModel, values),
            (models.TrialIntermediateValueModel, intermediate),
            (models.TrialUserAttributeModel, attrs),
        ):
            if rows:
                conn.execute(sqlalchemy.insert(model.__table__), rows)


def fill(runner: Any, config: Any, target: int, *, seed: int) -> float:
    """Add trials (and their MLflow runs) until the study holds `target` hpo-made trials; seconds taken."""
    started = time.perf_counter()
    have = len([t for t in runner.study.get_trials(deepcopy=False) if "hpo.bench_asked" not in t.user_attrs])
    chunk = 1000
    while have < target:
        drawn = draw_trials(config, have, min(chunk, target - have), seed)
        run_ids = log_runs(runner.tracker, runner.parent_run_id, runner.study_name, config, drawn)
        logged = time.perf_counter()
        add_trials(runner.storage, runner.study._study_id, drawn, run_ids)
        have += len(drawn)
        print(
            f"  filled {have} trials ({time.perf_counter() - started:.0f} s; last batch: Optuna "
            f"{time.perf_counter() - logged:.0f} s)",
            file=sys.stderr,
        )
    return time.perf_counter() - started


def time_command(args: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one `python -m hpo ARGS` process (its output discarded; a failure stops the benchmark)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hpo", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"hpo {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def ask_seconds(runner: Any, config: Any, asks: int) -> float:
    """Median seconds of the runner's ask (sampler + the search space's suggestions) on the stored study."""
    import optuna

    from hpo.running.samplers import build_sampler
    from hpo.running.search_space import suggest

    study = optuna.load_study(study_name=runner.study_name, storage=runner.storage, sampler=build_sampler(config))
    times = []
    for _ in range(asks):
        started = time.perf_counter()
        trial = study.ask()
        suggest(trial, config)
        times.append(time.perf_counter() - started)
        trial.set_user_attr("hpo.bench_asked", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 trials only (seconds)")
    parser.add_argument("--sizes", default=None, help="comma-separated trial counts (default 100,1000,10000)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite files instead of PostgreSQL")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432", help="server URL without a database"
    )
    parser.add_argument("--asks", type=int, default=5, help="asks timed per size (median reported)")
    parser.add_argument(
        "--history-window",
        type=int,
        default=1000,
        help="also time the ask with sampler.history_window set to this (0: skip)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="folder for SQLite files and reports (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ("100" if args.quick else "100,1000,10000")).split(",")]

    import optuna

    from hpo.config import load_study
    from hpo.config.settings import resolve_settings
    from hpo.running.databases import ensure_database
    from hpo.running.runner import BUDGET_ATTR, StudyRunner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tag = uuid.uuid4().hex[:8]
    name = f"large-{tag}"
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        work = Path(
            args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-large-study-"))
        ).resolve()
        work.mkdir(parents=True, exist_ok=True)
        reason = None if args.sqlite else postgres_reason(args.postgres)
        if args.sqlite or reason is not None:
            if reason:
                notes.append(f"SQLite files instead of PostgreSQL: {reason}")
            storage, tracking = f"sqlite:///{work / f'hpo-{tag}.db'}", f"sqlite:///{work / f'mlflow-{tag}.db'}"
            backend = "sqlite"
        else:
            storage, tracking = f"{args.postgres}/hpo_large_optuna_{tag}", f"{args.postgres}/hpo_large_mlflow_{tag}"
            stack.callback(drop_databases, args.postgres, [storage.rsplit("/", 1)[1], tracking.rsplit("/", 1)[1]])
            for url in (storage, tracking):
                ensure_database(url)
            backend = "postgresql"
        path = study_file(work, name)
        config = load_study(path)
        runner = StudyRunner(config, resolve_settings(storage_flag=storage, tracking_flag=tracking), source=str(path))
        runner.study.set_user_attr(BUDGET_ATTR, {"n_trials": config.n_trials, "timeout": None, "deadline": None})
        stack.callback(runner.storage.engine.dispose)  # no connection left to hold a database being dropped
        env = {**os.environ, "HPO_STORAGE": storage, "MLFLOW_TRACKING_URI": tracking, "HPO_PROGRESS": "plain"}
        for size in sizes:
            fill_seconds = fill(runner, config, size, seed=args.seed)
            row: dict[str, Any] = {"trials": size, "fill s": fill_seconds}
            for command in COMMANDS:
                extra = ["--out", str(work / f"report-{size}")] if command == "report" else []
                row[f"{command} s"] = time_command([command, name, *extra], env, work)
            row["ask s"] = ask_seconds(runner, config, args.asks)
            if args.history_window:
                windowed = config.sampler.model_copy(update={"history_window": args.history_window})
                row["ask window s"] = ask_seconds(runner, config.model_copy(update={"sampler": windowed}), args.asks)
            rows.append(row)
            print(
                f"{size} trials: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "trials"), file=sys.stderr
            )
        info = _report.machine()
    base = rows[0]
    for row in rows:
        for key in [k for k in row if k.endswith(" s") and k != "fill s"]:
            row[key.replace(" s", f" x{base['trials']}")] = row[key] / base[key]
    payload = {
        "command": _report.command_line(argv),
        "backend": backend,
        "machine": info,
        "rows": rows,
        "notes": notes,
        "history_window": args.history_window or None,
    }
    print(section(payload, argv))
    _report.save(args.json, payload)
    return payload


def section(payload: dict[str, Any], argv: Sequence[str] | None) -> str:
    rows = payload["rows"]
    columns = [
        "trials",
        *(f"{c} s" for c in COMMANDS),
        "ask s",
        *(["ask window s"] if "ask window s" in rows[0] else []),
    ]
    ratios = ["trials", *(k for k in rows[0] if " x" in k)]
    last = rows[-1]
    verdicts = [f"`hpo {c}` {last[f'{c} s']:.2f} s (goal < {goal:g} s at 10,000)" for c, goal in GOALS.items()]
    lines = [
        _report.header("Large studies", argv, payload["machine"]),
        f"Backend: {payload['backend']}. Each command is a fresh `python -m hpo` process (start-up and imports "
        "included); "
        f"`ask s` is the median of the runner's ask (TPE multivariate, the study file's sampler) in one process; "
        f"`ask window s` the same with `sampler.history_window: {payload.get('history_window')}`.",
        "",
        _report.table(rows, columns),
        f"Growth relative to the first size (x1 = {rows[0]['trials']} trials):",
        "",
        _report.table(rows, ratios),
        f"At {last['trials']:,} trials: "
        + "; ".join(verdicts)
        + f"; ask {last['ask s'] * 1000:.0f} ms"
        + (f", {last['ask window s'] * 1000:.0f} ms with the history window." if "ask window s" in last else "."),
        *(f"\nNote: {n}" for n in payload["notes"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
