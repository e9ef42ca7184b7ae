"""What a shared server costs per trial: `hpo run` on the embedded SQLite files versus PostgreSQL + `hpo server`.

The same study file (default studies/boston-quick.yaml, same seed, so the same trials) runs as a real
`hpo run` process on each backend, alternating SQLite / PostgreSQL+server round after round so that a
busy machine slows both alike:

- `sqlite`: Optuna storage and MLflow store in SQLite files of a fresh folder (the defaults).
- `postgres+server`: Optuna storage in one PostgreSQL database, MLflow over HTTP to a real `hpo server`
  whose backend store is another database of the same PostgreSQL (both created by hpo, dropped at the end).
  Left out, with a note, when that PostgreSQL cannot be reached.

Per trial: `wall` = the process's wall time / trials; `training` = the trials' `train_seconds` (hpo's
training loop, read back from MLflow); `non-training` = wall - training, i.e. process start-up,
storage, tracking, checkpoints, sampling; `in-trial` = Optuna's trial duration - train_seconds (the
MLflow run, per-epoch logging, heartbeats and checkpoint upload around training). The PostgreSQL
server's own start-up is not counted.

    python benchmarks/storage_overhead.py --quick          # 1 round per backend, a few minutes on 2 cores
    python benchmarks/storage_overhead.py --rounds 2 [--postgres postgresql+psycopg2://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import contextlib
import os
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

BACKENDS = ("sqlite", "postgres+server")


def run_study(study_file: Path, name: str, env: dict[str, str], cwd: Path, n_trials: int | None = None) -> float:
    """One `hpo run` process; its wall time in seconds."""
    cap = ["--n-trials", str(n_trials)] if n_trials else []
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "run", str(study_file), "--study-name", name, "--quiet", *cap],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"hpo run failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds


def trial_times(storage: str, tracking_uri: str, name: str) -> tuple[int, float, float]:
    """(trials, Σ Optuna trial durations, Σ train_seconds from the trials' MLflow runs)."""
    import optuna
    from mlflow import MlflowClient

    rdb = optuna.storages.RDBStorage(storage)
    try:
        study = optuna.load_study(study_name=name, storage=rdb)
        trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    finally:
        rdb.engine.dispose()  # no connection left behind to hold the database that is dropped at the end
    durations = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    client = MlflowClient(tracking_uri=tracking_uri)
    train = 0.0
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        train += float(run.data.metrics.get("train_seconds", 0.0))
    return len(trials), durations, train


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 CPU cores: 1 round per backend")
    parser.add_argument(
        "--study", default=str(_report.REPO / "studies" / "boston-quick.yaml"), help="study file every run uses"
    )
    parser.add_argument("--rounds", type=int, help="runs per backend, alternating (default 1 quick, 2 full)")
    parser.add_argument("--n-trials", type=int, help="override the study file's trial cap (for smoke tests)")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432", help="server URL without a database"
    )
    parser.add_argument(
        "--workdir", help="folder for the SQLite files, artifacts and server log (default: a temporary folder)"
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from hpo.operations.server import ServerConfig, TrackingServer
    from hpo.running.databases import ensure_database

    rounds = args.rounds or (1 if args.quick else 2)
    tag = uuid.uuid4().hex[:8]  # fresh study and database names, so a reused --workdir resumes nothing
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        work = Path(
            args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-storage-overhead-"))
        ).resolve()
        work.mkdir(parents=True, exist_ok=True)
        backends = {
            "sqlite": {
                "HPO_STORAGE": f"sqlite:///{work / f'hpo-{tag}.db'}",
                "MLFLOW_TRACKING_URI": f"sqlite:///{work / f'mlflow-{tag}.db'}",
            }
        }
        reason = postgres_reason(args.postgres)
        if reason is None:
            pg_storage, pg_backend = (
                f"{args.postgres}/hpo_bench_optuna_{tag}",
                f"{args.postgres}/hpo_bench_mlflow_{tag}",
            )
            stack.callback(
                drop_databases, args.postgres, [pg_storage.rsplit("/", 1)[1], pg_backend.rsplit("/", 1)[1]]
            )  # after the server stops
            ensure_database(pg_storage)
            log = stack.enter_context(open(work / f"server-{tag}.log", "w"))
            server = stack.enter_context(
                TrackingServer(
                    ServerConfig(
                        backend_store_uri=pg_backend,
                        port=_free_port(),
                        artifacts_destination=str(work / f"artifacts-{tag}"),
                    ),
                    log=log,
                )
            )
            backends["postgres+server"] = {"HPO_STORAGE": pg_storage, "MLFLOW_TRACKING_URI": server.config.url}
        else:
            notes.append(f"PostgreSQL + server skipped, SQLite only: {reason}")
        samples: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
        for round_ in range(rounds):
            for backend in list(backends) if round_ % 2 == 0 else list(reversed(backends)):
                env = {**backends[backend], "HPO_PROGRESS": "plain"}
                name = f"bench-{backend.replace('+', '-')}-{round_}-{tag}"
                wall = run_study(Path(args.study).resolve(), name, env, work, args.n_trials)  # runs in `work`
                n, durations, train = trial_times(env["HPO_STORAGE"], env["MLFLOW_TRACKING_URI"], name)
                if n == 0:
                    raise SystemExit(f"hpo run finished no trial of {name} on {backend}")
                samples[backend].append(
                    {
                        "trials": n,
                        "wall": wall / n,
                        "training": train / n,
                        "non_training": (wall - train) / n,
                        "in_trial": (durations - train) / n,
                    }
                )
                print(f"round {round_} {backend}: {n} trials, {wall:.1f}s", file=sys.stderr)
    rows = []
    for backend, got in samples.items():
        rows.append(
            {
                "backend": backend,
                "runs": len(got),
                "trials/run": got[0]["trials"],
                "wall s/trial": statistics.median(s["wall"] for s in got),
                "training s/trial": statistics.median(s["training"] for s in got),
                "non-training s/trial": statistics.median(s["non_training"] for s in got),
                "in-trial overhead s/trial": statistics.median(s["in_trial"] for s in got),
            }
        )
    info = _report.machine()
    print(_report.header("Storage overhead: SQLite vs PostgreSQL + MLflow server", argv, info))
    print(_report.table(rows))
    if len(rows) == len(BACKENDS):
        extra = rows[1]["non-training s/trial"] - rows[0]["non-training s/trial"]
        print(
            f"PostgreSQL + server costs {extra:+.2f} s per trial of non-training time compared with SQLite (medians "
            f"over {rounds} runs each)."
        )
    else:
        print(f"SQLite only (medians over {rounds} runs): no comparison with PostgreSQL + server in this run.")
    for note in notes:
        print(f"- {note}")
    payload = {
        "machine": info,
        "command": _report.command_line(argv),
        "study": args.study,
        "rounds": rounds,
        "rows": rows,
        "samples": samples,
        "notes": notes,
    }
    _report.save(args.json, payload)
    return payload


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
