"""Tracking throughput and queries on SQLite and PostgreSQL: hpo's tracking layer against plain MLflow calls.

1. Metric points logged per second: `hpo.running.tracking.Tracker.log_epoch` (buffered, sent with `log_batch`
   every few seconds and at `flush`) and the same with a flush after every epoch, against one
   `mlflow.log_metric` call per value (the common hand-written pattern), each into a fresh run.
   Ways and backends are interleaved, repeated, and reported as medians.
2. Picking the best 5 of N runs (N = 2,000 by default): hpo's path (`hpo best`: open the Optuna
   storage, load the study, `hpo.running.results.best_trials`) on a study of N finished trials, against MLflow
   `search_runs(order_by=["metrics.val_rmse ASC"], max_results=5)` over N runs in one experiment.

PostgreSQL: scratch databases on 127.0.0.1:5432 (user postgres, trust auth), created and dropped here.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report

PG = {
    "host": os.environ.get("HPO_BENCH_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("HPO_BENCH_PG_PORT", "5432")),
    "user": os.environ.get("HPO_BENCH_PG_USER", "postgres"),
}
EPOCH_METRICS = ("train_loss", "val_loss", "val_rmse", "val_mae", "val_r2", "lr", "epoch_seconds", "samples_per_second")


# -- backends ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres_databases(labels: Sequence[str]) -> Iterator[dict[str, str]]:
    """Fresh scratch databases, one per label, dropped on the way out."""
    import psycopg2

    names = {label: f"hpo_bench_{label}_{uuid.uuid4().hex[:8]}" for label in labels}
    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    conn.autocommit = True
    try:
        for name in names.values():
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        yield {
            label: f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
            for label, name in names.items()
        }
    finally:
        for name in names.values():
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def postgres_reason() -> str | None:
    try:
        import psycopg2

        psycopg2.connect(dbname="postgres", connect_timeout=3, **PG).close()
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG['host']}:{PG['port']} ({exc.__class__.__name__})"


# -- 1. metric throughput ---------------------------------------------------------------------------------
def epoch_metrics(epoch: int) -> dict[str, float]:
    return {name: 1.0 / (epoch + 1) + i for i, name in enumerate(EPOCH_METRICS)}


def log_with_tracker(tracker: Any, parent: str, epochs: int, *, flush_each_epoch: bool) -> tuple[int, float]:
    run_id = tracker.start_trial_run(
        parent_run_id=parent, study_name="bench", trial_number=0, seed=0, params={"width": 64}
    )
    started = time.perf_counter()
    for epoch in range(epochs):
        tracker.log_epoch(run_id, epoch, epoch_metrics(epoch))
        if flush_each_epoch:
            tracker.flush(run_id)
    tracker.flush(run_id)
    seconds = time.perf_counter() - started
    tracker.end_trial_run(run_id, state="COMPLETE")
    return epochs * len(EPOCH_METRICS), seconds


def log_per_value(uri: str, experiment_id: str, epochs: int, max_seconds: float) -> tuple[int, float]:
    """One `mlflow.log_metric` per value, as a hand-written loop does; stops after `max_seconds`."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    points = 0
    with mlflow.start_run(experiment_id=experiment_id):
        started = time.perf_counter()
        for epoch in range(epochs):
            for name, value in epoch_metrics(epoch).items():
                mlflow.log_metric(name, value, step=epoch)
                points += 1
            if time.perf_counter() - started > max_seconds:
                break
        seconds = time.perf_counter() - started
    return points, seconds


def throughput(uris: dict[str, str], *, epochs: int, per_value_seconds: float, repeats: int) -> list[dict[str, Any]]:
    from hpo.running.tracking import Tracker

    records = []
    setups = {}
    for backend, uri in uris.items():
        tracker = Tracker(uri, "bench-throughput")
        parent = tracker.create_study_run("bench", config_yaml="name: bench\n")
        setups[backend] = (tracker, parent)
        log_per_value(uri, tracker.experiment_id, 1, 1.0)  # warm-up: the fluent client and its store
    ways: list[tuple[str, Callable[[str, str], tuple[int, float]]]] = [
        (
            "hpo Tracker.log_epoch (buffered, flush at end)",
            lambda b, u: log_with_tracker(*setups[b], epochs, flush_each_epoch=False),
        ),
        (
            "hpo Tracker.log_epoch + flush every epoch",
            lambda b, u: log_with_tracker(*setups[b], epochs, flush_each_epoch=True),
        ),
        (
            "mlflow.log_metric per value",
            lambda b, u: log_per_value(u, setups[b][0].experiment_id, epochs, per_value_seconds),
        ),
    ]
    for repeat in range(repeats):
        for backend, uri in uris.items():
            for way, fn in ways:
                points, seconds = fn(backend, uri)
                records.append(
                    {
                        "repeat": repeat,
                        "backend": backend,
                        "way": way,
                        "points": points,
                        "seconds": seconds,
                        "points_per_s": points / seconds,
                    }
                )
                print(
                    f"{backend:10s} {way:48s} {points:6d} points in {seconds:7.3f} s = {points / seconds:10.0f}/s",
                    file=sys.stderr,
                    flush=True,
                )
    rows = []
    for backend in uris:
        base = None
        for way, _ in ways:
            mine = [r for r in records if r["backend"] == backend and r["way"] == way]
            rate = statistics.median(r["points_per_s"] for r in mine)
            if way.startswith("mlflow"):
                base = rate
            rows.append(
                {
                    "backend": backend,
                    "way": way,
                    "points per run": mine[0]["points"],
                    "points/s (median)": rate,
                    "runs": len(mine),
                }
            )
        for row in rows:
            if row["backend"] == backend and base:
                row["x mlflow.log_metric"] = row["points/s (median)"] / base
    return rows


# -- 2. best 5 of N ---------------------------------------------------------------------------------------
def fill_optuna(url: str, name: str, n: int) -> None:
    """A study of n finished trials (bulk-inserted: the insert is setup, not what is measured)."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    study = optuna.create_study(study_name=name, storage=url, direction="minimize")
    study.set_user_attr("hpo.metrics", ["val_rmse"])
    rng = random.Random(0)
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "width": IntDistribution(16, 512, log=True)}
    trials = [
        optuna.trial.create_trial(
            params={"lr": 10 ** rng.uniform(-4, -1), "width": rng.randint(16, 512)},
            distributions=dists,
            value=rng.uniform(2.0, 10.0),
            user_attrs={"mlflow_run_id": uuid.uuid4().hex},
        )
        for _ in range(n)
    ]
    for start in range(0, n, 500):
        study.add_trials(trials[start : start + 500])


def fill_mlflow(uri: str, name: str, n: int) -> str:
    """An experiment of n finished runs with a val_rmse metric and two params, through MlflowClient."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    experiment_id = client.create_experiment(name)
    rng = random.Random(0)
    for i in range(n):
        run = client.create_run(experiment_id, tags={"hpo.role": "trial", "optuna.trial_number": str(i)})
        stamp = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("val_rmse", rng.uniform(2.0, 10.0), stamp, 0)],
            params=[Param("lr", str(rng.random())), Param("width", str(rng.randint(16, 512)))],
            synchronous=True,
        )
        client.set_terminated(run.info.run_id)
    return experiment_id


def best_via_hpo(url: str, name: str, k: int) -> tuple[float, list[float]]:
    """What `hpo best NAME --top-k k` does after its imports: open the storage, load, rank."""
    import optuna

    from hpo.running.results import best_trials
    from hpo.running.storage import open_storage

    started = time.perf_counter()
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    best = best_trials(study, k)
    seconds = time.perf_counter() - started
    study._storage._backend.engine.dispose()  # type: ignore[attr-defined]
    return seconds, [t.value for t in best]


def best_via_mlflow(uri: str, experiment_id: str, k: int) -> tuple[float, list[float]]:
    from mlflow import MlflowClient

    started = time.perf_counter()
    runs = MlflowClient(uri).search_runs([experiment_id], order_by=["metrics.val_rmse ASC"], max_results=k)
    seconds = time.perf_counter() - started
    return seconds, [r.data.metrics["val_rmse"] for r in runs]


def best_of_n(
    storages: dict[str, str], trackings: dict[str, str], *, n: int, k: int, repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for backend in storages:
        started = time.perf_counter()
        fill_optuna(storages[backend], "bench-best", n)
        optuna_fill = time.perf_counter() - started
        started = time.perf_counter()
        experiment_id = fill_mlflow(trackings[backend], "bench-best", n)
        mlflow_fill = time.perf_counter() - started
        print(
            f"{backend}: {n} Optuna trials inserted in {optuna_fill:.1f} s, {n} MLflow runs in {mlflow_fill:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        times: dict[str, list[float]] = {"hpo best (Optuna storage)": [], "MLflow search_runs order_by": []}
        answers = {}
        best_via_mlflow(trackings[backend], experiment_id, k)  # warm-up: MLflow's store for this URI
        for _ in range(repeats):
            seconds, answers["hpo"] = best_via_hpo(storages[backend], "bench-best", k)
            times["hpo best (Optuna storage)"].append(seconds)
            seconds, answers["mlflow"] = best_via_mlflow(trackings[backend], experiment_id, k)
            times["MLflow search_runs order_by"].append(seconds)
        for way, values in times.items():
            rows.append(
                {
                    "backend": backend,
                    "way": way,
                    "runs": n,
                    "k": k,
                    "seconds (median)": statistics.median(values),
                    "seconds (min)": min(values),
                    "repeats": len(values),
                    "write N runs s": optuna_fill if way.startswith("hpo") else mlflow_fill,
                }
            )
        assert all(math.isfinite(v) for v in answers["hpo"] + answers["mlflow"])
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 CPU cores: 3 repeats of 300-epoch runs, best 5 of 2,000"
    )
    parser.add_argument(
        "--epochs", type=int, help=f"epochs per run, {len(EPOCH_METRICS)} metrics each (default 300 quick, 1000 full)"
    )
    parser.add_argument(
        "--per-value-seconds", type=float, default=20.0, help="cap on each mlflow.log_metric-per-value run"
    )
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3 quick, 5 full)")
    parser.add_argument("--runs", type=int, default=2000, help="N for the best-5-of-N query")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list of sqlite, postgresql")
    parser.add_argument("--workdir", help="folder for the SQLite files (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quick = args.quick
    epochs = args.epochs or (300 if quick else 1000)
    repeats = args.repeats or (3 if quick else 5)
    backends = args.backends.split(",")
    notes = []
    with contextlib.ExitStack() as stack:
        workdir = Path(
            args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-tracking-"))
        ).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        storages: dict[str, str] = {}
        trackings: dict[str, str] = {}
        if "sqlite" in backends:
            storages["sqlite"] = f"sqlite:///{workdir / 'optuna.db'}"
            trackings["sqlite"] = f"sqlite:///{workdir / 'mlflow.db'}"
        if "postgresql" in backends:
            reason = postgres_reason()
            if reason is None:
                pg = stack.enter_context(postgres_databases(["optuna", "mlflow"]))
                storages["postgresql"], trackings["postgresql"] = pg["optuna"], pg["mlflow"]
            else:
                notes.append(f"PostgreSQL skipped: {reason}")
        rate_rows = throughput(trackings, epochs=epochs, per_value_seconds=args.per_value_seconds, repeats=repeats)
        best_rows = best_of_n(storages, trackings, n=args.runs, k=args.top_k, repeats=repeats)
        import mlflow

        mlflow.set_tracking_uri(None)  # leave no fluent tracking URI behind (it is exported to the environment)

    info = _report.machine()
    text = "\n".join(
        [
            _report.header("Tracking: metric throughput and best-k queries, SQLite and PostgreSQL", argv, info),
            f"Metric points logged per second ({epochs} epochs x {len(EPOCH_METRICS)} metrics per run; the "
            f"per-value way stops after {args.per_value_seconds:g} s; medians of {repeats} interleaved repeats):",
            "",
            _report.table(rate_rows),
            f"Time to pick the best {args.top_k} of {args.runs} runs (cold: a new storage object each time; medians "
            f"of {repeats}):",
            "",
            _report.table(best_rows),
            *(f"- {n}" for n in notes),
            "",
        ]
    )
    print(text)
    payload = {
        "machine": info,
        "command": _report.command_line(argv),
        "throughput": rate_rows,
        "best_of_n": best_rows,
        "notes": notes,
    }
    _report.save(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
