"""What a shared server costs per trial: `hpo run` on the embedded SQLite files versus PostgreSQL + `hpo server`.

The same study file (default studies/boston-quick.yaml, same seed, so the same trials) runs as a real
`hpo run` process on each backend, alternating SQLite / PostgreSQL+server round after round so that a
busy machine slows both alike:

- `sqlite`: Optuna storage and MLflow store in SQLite files of a fresh folder (the defaults).
- `postgres+server`: Optuna storage in one PostgreSQL database, MLflow over HTTP to a real `hpo server`
  whose backend store is another database of the same PostgreSQL (both created by hpo).

Per trial: `wall` = the process's wall time / trials; `training` = the trials' `train_seconds` (hpo's
training loop, read back from MLflow); `non-training` = wall - training, i.e. process start-up,
storage, tracking, checkpoints, sampling; `in-trial` = Optuna's trial duration - train_seconds (the
MLflow run, per-epoch logging, heartbeats and checkpoint upload around training). The PostgreSQL
server's own start-up is not counted.

    python benchmarks/storage_overhead.py --rounds 2 [--postgres postgresql+psycopg2://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

BACKENDS = ("sqlite", "postgres+server")


def run_study(study_file: Path, name: str, env: dict[str, str], cwd: Path) -> float:
    """One `hpo run` process; its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "run", str(study_file), "--study-name", name, "--quiet"],
        env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"hpo run failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds


def trial_times(storage: str, tracking_uri: str, name: str) -> tuple[int, float, float]:
    """(trials, Σ Optuna trial durations, Σ train_seconds from the trials' MLflow runs)."""
    import optuna
    from mlflow import MlflowClient

    study = optuna.load_study(study_name=name, storage=storage)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    durations = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    client = MlflowClient(tracking_uri=tracking_uri)
    train = 0.0
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        train += float(run.data.metrics.get("train_seconds", 0.0))
    return len(trials), durations, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(_report.REPO / "studies" / "boston-quick.yaml"))
    parser.add_argument("--rounds", type=int, default=2, help="runs per backend, alternating")
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432", help="server URL without a database")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from hpo.server import ServerConfig, TrackingServer
    from hpo.storage import ensure_database

    tag = uuid.uuid4().hex[:8]
    pg_storage, pg_backend = f"{args.postgres}/hpo_bench_optuna_{tag}", f"{args.postgres}/hpo_bench_mlflow_{tag}"
    ensure_database(pg_storage)
    work = Path(tempfile.mkdtemp(prefix="hpo-storage-overhead-"))
    with open(work / "server.log", "w") as log:
        server = TrackingServer(ServerConfig(backend_store_uri=pg_backend, port=_free_port(), artifacts_destination=str(work / "artifacts")), log=log)
        try:
            server.start()
            backends = {
                "sqlite": {"HPO_STORAGE": f"sqlite:///{work / 'hpo.db'}", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"},
                "postgres+server": {"HPO_STORAGE": pg_storage, "MLFLOW_TRACKING_URI": server.config.url},
            }
            samples: dict[str, list[dict[str, float]]] = {b: [] for b in BACKENDS}
            for round_ in range(args.rounds):
                for backend in BACKENDS if round_ % 2 == 0 else tuple(reversed(BACKENDS)):
                    env = {**backends[backend], "HPO_PROGRESS": "plain"}
                    name = f"bench-{backend.replace('+', '-')}-{round_}"
                    wall = run_study(Path(args.study), name, env, work)
                    n, durations, train = trial_times(env["HPO_STORAGE"], env["MLFLOW_TRACKING_URI"], name)
                    samples[backend].append({"trials": n, "wall": wall / n, "training": train / n, "non_training": (wall - train) / n, "in_trial": (durations - train) / n})
                    print(f"round {round_} {backend}: {n} trials, {wall:.1f}s", file=sys.stderr)
        finally:
            server.stop()
    rows = []
    for backend in BACKENDS:
        got = samples[backend]
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
    extra = rows[1]["non-training s/trial"] - rows[0]["non-training s/trial"]
    info = _report.machine()
    print(_report.header("Storage overhead: SQLite vs PostgreSQL + MLflow server", argv, info))
    print(_report.table(rows))
    print(f"PostgreSQL + server costs {extra:+.2f} s per trial of non-training time compared with SQLite (medians over {args.rounds} runs each).")
    _report.save(args.json, {"machine": info, "rows": rows, "samples": samples})
    _drop(args.postgres, [pg_storage.rsplit("/", 1)[1], pg_backend.rsplit("/", 1)[1]])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drop(server_url: str, names: list[str]) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in names:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


if __name__ == "__main__":
    main()
