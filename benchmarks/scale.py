"""Many workers on one study: throughput, latencies, connections and invariants, direct RDB vs gRPC proxy.

Everything is real and on loopback: two fresh PostgreSQL databases (created here, dropped at the end),
one `hpo server` (MLflow tracking server, plus Optuna's gRPC storage proxy with `--grpc-port`), one
study per run created with `hpo create`, and N `hpo worker` processes (benchmarks/_scale_worker.py: the
real command with stopwatches) running a torch-free objective plug-in that sleeps a drawn time per
epoch and reports every epoch (benchmarks/_simulated_objective.py), so CPU is not the limit and what
is measured is hpo's bookkeeping. Each run's study has `n_trials = N x --trials-per-worker`.

Paths: `direct` = every worker opens the PostgreSQL database itself; `grpc` = workers use
`grpc://127.0.0.1:PORT`, the proxy `hpo server --grpc-port` runs in front of the same database;
`optuna` = the floor: N processes of a hand-written Optuna loop (benchmarks/_optuna_loop_worker.py) on the
direct database with the same sampler, pruner, heartbeat, retry and simulated training, no hpo and no MLflow
(its budget is Optuna's `MaxTrialsCallback`, which may overshoot: reported, as any broken invariant).
Tracking (`--tracking`): `server` = workers log to `hpo server` over HTTP; `database` = workers are given
MLflow's PostgreSQL database as their tracking URI and write its tables themselves (the server still serves
the UI from the same database).

Per run: completed trials/s in the steady window (from the last worker's first trial to the first
worker's last, when all N are busy) against the ideal N / mean trial
work (the mean time a finished trial's objective slept); hpo's ask (stale check, budget lock, sampler)
and Optuna's tell latency p50/p99, MLflow REST request latency p50/p99, all measured inside the
workers; the peak connections to the Optuna and MLflow databases (pg_stat_activity, polled); the
workers' peak RSS, CPU per trial of the workers (with their start-up) and of the server
(MLflow and the proxy), the whole machine's busy cores in the steady window (/proc/stat) and its CPU seconds
per completed trial, whether any worker imported torch; and the invariants: the budget exact, no duplicate
trial or MLflow run, nothing left RUNNING or WAITING in Optuna or MLflow. The `kill` runs SIGKILL 3
workers mid-trial and let the others finish: the killed trials must end FAIL, re-queued and re-run.

    python benchmarks/scale.py --quick                           # N=4, short trials: direct, and grpc with 3 killed
    python benchmarks/scale.py --workers 1,8,16,32 --trial-seconds 2     # the BENCHMARKS.md figures
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report
from _postgres import create_databases, drop_databases, postgres_reason

HERE = Path(__file__).resolve().parent
PATHS = ("direct", "grpc", "optuna")
PROXY_APP = "hpo-grpc-proxy"  # application_name of the proxy's database connections


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N=4, 0.6-second trials, 3 per worker: a direct run and a grpc run with 3 workers killed",
    )
    parser.add_argument("--workers", default="1,8,16,32", help="comma-separated worker counts (default 1,8,16,32)")
    parser.add_argument(
        "--paths",
        default="direct,grpc",
        help="comma-separated: direct, grpc, optuna (a bare Optuna loop: the floor; default direct,grpc)",
    )
    parser.add_argument(
        "--trial-seconds", type=float, default=2.0, help="mean seconds a trial's objective sleeps (default 2)"
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs (reports) per trial (default 4)")
    parser.add_argument("--trials-per-worker", type=int, default=8, help="n_trials = N x this (default 8)")
    parser.add_argument(
        "--kill",
        default=None,
        help="PATH:N runs that SIGKILL 3 workers mid-trial, comma-separated, or none (default: each path at the "
        "largest N)",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=1,
        help="seconds between heartbeats in runs that kill no worker (default 1; hpo's own default is 30); "
        "kill runs always beat every second, so that a killed worker's trial is found within seconds",
    )
    parser.add_argument(
        "--tracking",
        default="server",
        choices=("server", "database"),
        help="where workers log runs: `hpo server` over HTTP (default), or MLflow's PostgreSQL database itself",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="MLflow server worker processes (hpo server --workers; default 1, hpo's default)",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=600,
        help="seconds one run may take before its workers are stopped (default 600)",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432",
        help="server URL without a database (trust auth)",
    )
    parser.add_argument(
        "--workdir", help="folder for study files, logs and worker timings (default: a temporary folder, removed)"
    )
    parser.add_argument("--json", default=str(HERE / "results" / "scale.json"), help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.paths, args.trial_seconds, args.epochs, args.trials_per_worker = "4", "direct", 0.6, 2, 3
        args.kill = args.kill or "grpc:4"
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not counts or min(counts) < 1 or any(p not in PATHS for p in paths):
        parser.error(f"--workers: positive integers; --paths: any of {', '.join(PATHS)}")
    if args.kill == "none":
        kills = []
    elif args.kill:
        kills = [(k.split(":")[0], int(k.split(":")[1])) for k in args.kill.split(",")]
    else:
        kills = [(p, max(counts)) for p in paths]
    if any(n < 4 for _, n in kills):
        parser.error("--kill: N must be at least 4 (3 workers are killed, one must remain)")

    reason = postgres_reason(args.postgres)
    if reason is not None:
        raise SystemExit(f"scale.py needs PostgreSQL: {reason}")
    tag = uuid.uuid4().hex[:8]
    optuna_db, mlflow_db = f"hpo_scale_optuna_{tag}", f"hpo_scale_mlflow_{tag}"
    rows: list[dict[str, Any]] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a stopped benchmark cleans up as after Ctrl-C
    try:
        with contextlib.ExitStack() as stack:
            work = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-scale-"))).resolve()
            work.mkdir(parents=True, exist_ok=True)
            stack.callback(drop_databases, args.postgres, [optuna_db, mlflow_db])  # runs last: after the server stopped
            create_databases(args.postgres, [optuna_db, mlflow_db])
            direct_url = f"{args.postgres}/{optuna_db}"
            server = stack.enter_context(
                HpoServer(
                    work,
                    f"{args.postgres}/{mlflow_db}",
                    f"{direct_url}?application_name={PROXY_APP}",
                    workers=args.server_workers,
                )
            )
            urls = {"direct": direct_url, "grpc": server.grpc_url, "optuna": direct_url}
            plan = [(path, n, False) for n in counts for path in paths] + [(path, n, True) for path, n in kills]
            for path, n, kill in plan:
                run = Run(
                    args,
                    work,
                    path=path,
                    workers=n,
                    kill=kill,
                    tag=tag,
                    storage=urls[path],
                    direct_url=direct_url,
                    tracking_uri=server.url if args.tracking == "server" else f"{args.postgres}/{mlflow_db}",
                    postgres=args.postgres,
                )
                row = run.execute((optuna_db, mlflow_db), server)
                rows.append(row)
                print(
                    f"{path} N={n}{' kill' if kill else ''}: {row['trials/s']:.2f} trials/s = "
                    f"{row['% of ideal']:.0f}% of ideal; invariants "
                    f"{'ok' if row['invariants ok'] else 'BROKEN: ' + row['problems']}",
                    file=sys.stderr,
                )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _publish(args, argv, rows)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class HpoServer:
    """`hpo server --grpc-port` as a subprocess in its own process group: MLflow, and the proxy in front of
    Optuna's database."""

    def __init__(self, work: Path, backend: str, storage: str, *, workers: int = 1) -> None:
        self.port, self.grpc_port = _free_port(), _free_port()
        self.url, self.grpc_url = f"http://127.0.0.1:{self.port}", f"grpc://127.0.0.1:{self.grpc_port}"
        self.log = work / "server.log"
        argv = [
            sys.executable,
            "-m",
            "hpo",
            "server",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            "--artifacts-destination",
            str(work / "artifacts"),
            "--workers",
            str(workers),
        ]
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend, "HPO_STORAGE": storage}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def __enter__(self) -> HpoServer:
        try:
            self._wait_until_up(deadline=time.monotonic() + 180)
        except BaseException:  # not up in time, or the benchmark stopped meanwhile: the server goes too
            self.__exit__()
            raise
        return self

    def _wait_until_up(self, *, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"hpo server exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            time.sleep(0.5)
        raise SystemExit(f"hpo server did not answer within 180 s: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        _stop_group(self.process, grace=30)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's process tree: hpo server (with the gRPC proxy) and MLflow's
        server and its workers (MLflow runs in a process group of its own, so the tree is followed, not the group).

        Only live processes count: run it before and after a run, while the server is up.
        """
        ticks = os.sysconf("SC_CLK_TCK")
        parent: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                parent[pid], cpu[pid] = (
                    int(fields[1]),
                    (int(fields[11]) + int(fields[12])) / ticks,
                )  # ppid, utime + stime
        tree, frontier = {self.process.pid}, [self.process.pid]
        while frontier:
            children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
            tree.update(children)
            frontier = children
        return sum(cpu.get(pid, 0.0) for pid in tree)


@contextlib.contextmanager
def _bounded_mlflow_requests(*, timeout_s: int = 60, retries: int = 2) -> Iterator[None]:
    """MLflow's client waits 120 s a request and retries 7 times: bound the checks' own requests (in this
    process only; the workers started later must not inherit it)."""
    values = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Run:
    """One study run by N workers on one path; `execute` returns its row."""

    def __init__(
        self,
        args: argparse.Namespace,
        work: Path,
        *,
        path: str,
        workers: int,
        kill: bool,
        tag: str,
        storage: str,
        direct_url: str,
        tracking_uri: str,
        postgres: str,
    ) -> None:
        self.args, self.path, self.n, self.kill = args, path, workers, kill
        self.bare = path == "optuna"  # the hand-written Optuna loop: no hpo command, no MLflow
        self.name = f"scale-{path}-{workers}{'-kill' if kill else ''}-{tag}"
        self.dir = work / self.name
        self.dir.mkdir()
        self.n_trials = workers * args.trials_per_worker
        self.storage, self.direct_url, self.tracking_uri, self.postgres = storage, direct_url, tracking_uri, postgres
        self.env = {
            **os.environ,
            "HPO_STORAGE": storage,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "HPO_SCALE_DIR": str(self.dir),
            "HPO_PROGRESS": "none",
            "HPO_THREADS": "1",
        }
        self.study_file = self.dir / "study.yaml"
        self.cpu = MachineCpu()
        self.heartbeat = 1 if kill else args.heartbeat
        heartbeat = self.heartbeat
        self.study_file.write_text(_study_yaml(self.name, self.n_trials, args.trial_seconds, args.epochs, heartbeat))

    def execute(self, databases: tuple[str, str], server: HpoServer) -> dict[str, Any]:
        self._create_study()
        procs: list[subprocess.Popen[bytes]] = []
        peaks = {"optuna": 0, "mlflow": 0}
        server_cpu = server.cpu_seconds()
        killed: list[int] = []
        try:
            started = time.time()
            for index in range(self.n):
                with (self.dir / f"worker-{index}.log").open("w") as log:
                    argv = self._worker_argv(index)
                    procs.append(
                        subprocess.Popen(
                            argv,
                            env=self.env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            start_new_session=True,
                        )
                    )
            with _Connections(self.postgres, databases, include_proxy=self.path == "grpc") as connections:
                while any(p.poll() is None for p in procs):
                    if time.time() - started > self.args.run_timeout:
                        raise SystemExit(
                            f"{self.name}: workers still running after {self.args.run_timeout:.0f} s; stopped (see "
                            f"{self.dir})"
                        )
                    for key, value in connections.count().items():
                        peaks[key] = max(peaks[key], value)
                    if self.kill and not killed:
                        killed = self._kill_three(procs)
                    self.cpu.sample()
                    time.sleep(0.2)
            wall = time.time() - started
            server_cpu = server.cpu_seconds() - server_cpu
        finally:
            for proc in procs:
                _stop_group(proc, grace=10)
        codes = [p.returncode for p in procs]
        return self._row(wall, peaks, killed, codes, server_cpu)

    def _create_study(self) -> None:
        if self.bare:
            import optuna

            storage = optuna.storages.RDBStorage(self.storage)
            try:
                optuna.create_study(study_name=self.name, storage=storage, direction="minimize")
            finally:
                storage.engine.dispose()
            return
        created = subprocess.run(
            [sys.executable, "-m", "hpo", "create", str(self.study_file)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if created.returncode != 0:
            raise SystemExit(f"hpo create failed ({created.returncode}): {created.stderr[-2000:]}")

    def _worker_argv(self, index: int) -> list[str]:
        out = str(self.dir / f"worker-{index}.json")
        if self.bare:
            numbers = [self.n_trials, self.args.trial_seconds, self.args.epochs, self.heartbeat, index]
            return [
                sys.executable,
                str(HERE / "_optuna_loop_worker.py"),
                out,
                self.storage,
                self.name,
                *map(str, numbers),
            ]
        return [sys.executable, str(HERE / "_scale_worker.py"), out, "worker", str(self.study_file), "--quiet"]

    def _kill_three(self, procs: list[subprocess.Popen[bytes]]) -> list[int]:
        """SIGKILL three workers that are inside a trial (started, its last epoch not yet reported), once N
        trials have started."""
        progress = _objective_log(self.dir)
        if len({(r["pid"], r["trial"]) for r in progress}) < self.n:
            return []
        last: dict[int, dict[str, Any]] = {}
        for record in progress:
            last[record["pid"]] = record
        busy = [p for p in procs if p.poll() is None and p.pid in last and not last[p.pid]["done"]]
        if len(busy) < 3:
            return []
        for proc in busy[:3]:
            os.killpg(proc.pid, signal.SIGKILL)
        return [last[p.pid]["trial"] for p in busy[:3]]

    def _row(
        self, wall: float, peaks: dict[str, int], killed: list[int], codes: list[int | None], server_cpu: float
    ) -> dict[str, Any]:
        import optuna
        from mlflow import MlflowClient

        storage = optuna.storages.RDBStorage(self.direct_url)
        try:
            trials = optuna.load_study(study_name=self.name, storage=storage).get_trials(deepcopy=False)
        finally:
            storage.engine.dispose()  # nothing may hold the database that is dropped at the end
        runs: list[Any] = []
        if not self.bare:
            client = MlflowClient(tracking_uri=self.tracking_uri)
            with _bounded_mlflow_requests():  # a server that stopped answering fails this run, not the benchmark
                experiment = client.get_experiment_by_name(self.name)
                runs = client.search_runs([experiment.experiment_id], max_results=50_000) if experiment else []
        problems = check_invariants(trials, runs, n_trials=self.n_trials, killed=killed, tracked=not self.bare)
        if self.kill and not killed:
            problems.append(
                "no moment with 3 workers mid-trial was found: nothing was killed (more --trials-per-worker)"
            )
        timings = _worker_timings(self.dir)
        throughput, ideal, (begin, end) = steady_throughput(trials, _objective_log(self.dir), self.n)
        busy = self.cpu.busy_cores(begin, end)
        survivors = [c for c in codes if c != -signal.SIGKILL]
        if any(c != 0 for c in survivors):
            problems.append(f"worker exit codes {codes}")
        return {
            "path": self.path,
            "tracking": "none" if self.bare else self.args.tracking,
            "workers": self.n,
            "kill": self.kill,
            "n_trials": self.n_trials,
            "wall s": wall,
            "trials/s": throughput,
            "ideal trials/s": ideal,
            "% of ideal": 100 * throughput / ideal if ideal else float("nan"),
            "steady window s": end - begin,
            # every process on the machine (workers, PostgreSQL, the server): what bounds N on few cores
            "machine CPU busy (cores)": busy,
            "machine CPU s/trial": busy / throughput if throughput else float("nan"),
            "ask p50 ms": _pct(timings["ask"], 50),
            "ask p99 ms": _pct(timings["ask"], 99),
            "tell p50 ms": _pct(timings["tell"], 50),
            "tell p99 ms": _pct(timings["tell"], 99),
            "mlflow p50 ms": _pct(timings["mlflow"], 50),
            "mlflow p99 ms": _pct(timings["mlflow"], 99),
            # where a trial's time goes besides the objective: blocking seconds per finished trial
            "ask s/trial": sum(timings["ask"]) / max(len(timings["tell"]), 1),
            "tell s/trial": sum(timings["tell"]) / max(len(timings["tell"]), 1),
            "mlflow s/trial": sum(timings["mlflow"]) / max(len(timings["tell"]), 1),
            "mlflow requests/trial": len(timings["mlflow"]) / max(len(timings["tell"]), 1),
            "peak optuna db conns": peaks["optuna"],
            "peak mlflow db conns": peaks["mlflow"],
            "worker CPU s/trial": sum(timings["cpu"]) / len(trials) if trials else float("nan"),
            "server CPU s/trial": server_cpu / len(trials) if trials else float("nan"),
            "worker RSS MB (max)": max(timings["rss"]) if timings["rss"] else float("nan"),
            "torch imported": any(timings["torch"]),
            "killed trials": killed,
            "invariants ok": not problems,
            "problems": "; ".join(problems),
        }


def _study_yaml(name: str, n_trials: int, trial_seconds: float, epochs: int, heartbeat: int) -> str:
    objective = HERE / "_simulated_objective.py"
    return f"""name: {name}
objective: {objective}:simulate
n_trials: {n_trials}
seed: 0
sampler: {{type: tpe, n_startup_trials: 10}}
pruner: {{type: median, n_startup_trials: 5, n_warmup_steps: 1}}
params:
  x: {{type: float, low: -1, high: 1}}
  y: {{type: float, low: -1, high: 1}}
fixed: {{epochs: {epochs}, trial_seconds: {trial_seconds}}}
# short heartbeats (kill runs) so that a killed worker's trial is found within seconds
execution: {{heartbeat_interval: {heartbeat}, grace_period: {3 * heartbeat}, max_retry: 1}}
"""


def check_invariants(
    trials: list[Any], runs: list[Any], *, n_trials: int, killed: list[int], tracked: bool = True
) -> list[str]:
    """What must hold after any run, killed workers or not; each broken one as a sentence (the MLflow runs'
    only when the run was `tracked`)."""
    from optuna.trial import TrialState

    from hpo.running.runner import RUN_ID_ATTR, budget_count

    problems = []
    if budget_count(trials, finished=True) != n_trials:
        problems.append(f"budget: {budget_count(trials, finished=True)} trials count towards n_trials={n_trials}")
    left = [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    if left:
        problems.append(f"trials left RUNNING/WAITING: {left}")
    numbers = [t.number for t in trials]
    if len(numbers) != len(set(numbers)):
        problems.append("duplicate trial numbers")
    by_number = {t.number: t for t in trials}
    for number in killed:
        trial = by_number.get(number)
        if trial is None or trial.state != TrialState.FAIL:
            problems.append(f"killed trial {number} is {trial.state.name if trial else 'missing'}, not FAIL")
        elif not any(t.system_attrs.get("failed_trial") == number and t.state.is_finished() for t in trials):
            problems.append(f"killed trial {number} was not re-run")
    if not tracked:
        return problems
    run_ids = [t.user_attrs.get(RUN_ID_ATTR) for t in trials if t.user_attrs.get(RUN_ID_ATTR)]
    if len(run_ids) != len(set(run_ids)):
        problems.append("two trials share an MLflow run")
    trial_runs = [r for r in runs if r.data.tags.get("hpo.role") == "trial"]
    tagged = [r.data.tags.get("optuna.trial_number") for r in trial_runs]
    if len(tagged) != len(set(tagged)):
        problems.append("duplicate MLflow runs for one trial")
    if len(trial_runs) != len(trials):
        problems.append(f"{len(trial_runs)} MLflow trial runs for {len(trials)} trials")
    open_runs = [
        r.data.tags.get("optuna.trial_number", r.data.tags.get("hpo.role")) for r in runs if r.info.status == "RUNNING"
    ]
    if open_runs:
        problems.append(f"MLflow runs left RUNNING: {open_runs}")
    return problems


def steady_throughput(
    trials: list[Any], progress: list[dict[str, Any]], n: int
) -> tuple[float, float, tuple[float, float]]:
    """(completed trials/s while all N workers are busy, the ideal N / mean objective time of a finished trial,
    that window's (begin, end) in epoch seconds).

    The window opens when the last worker starts its first trial and closes when the first worker that
    finishes normally ends its last one (a killed worker's end is not counted), from the objective's log:
    32 workers importing MLflow at once on 2 cores start ~40 s apart, so the N-th trial started is not the
    moment every worker is busy. Too few trials for such a window (the budget spent before every worker
    started): from the N-th trial started to the (n_trials - N)-th finished, or the whole run.
    """
    finished = [t for t in trials if t.state.is_finished() and t.datetime_start and t.datetime_complete]
    if not finished:
        return float("nan"), float("nan"), (float("nan"), float("nan"))
    starts = sorted(t.datetime_start.timestamp() for t in finished)
    ends = sorted(t.datetime_complete.timestamp() for t in finished)
    first: dict[int, float] = {}
    last: dict[int, dict[str, Any]] = {}
    for record in progress:
        if record["epoch"] == -1:
            first.setdefault(record["pid"], record["t"])
        last[record["pid"]] = record
    closing = [r["t"] for r in last.values() if r["done"]]
    begin, end = (max(first.values()), min(closing)) if len(first) == n and closing else (0.0, 0.0)
    if end <= begin:
        begin = starts[min(n, len(starts)) - 1]
        end = ends[max(len(ends) - n, 0) - 1] if len(ends) > n else ends[-1]
    if end <= begin:
        begin, end = starts[0], ends[-1]
    done = sum(1 for e in ends if begin < e <= end)
    slept: dict[int, float] = {}
    for record in progress:
        slept[record["trial"]] = slept.get(record["trial"], 0.0) + record["slept"]
    work = [slept[t.number] for t in finished if t.number in slept and t.state.name in ("COMPLETE", "PRUNED")]
    mean_work = statistics.fmean(work) if work else float("nan")
    return done / (end - begin), n / mean_work, (begin, end)


class MachineCpu:
    """The machine's busy CPU over time, from /proc/stat (Linux; elsewhere every figure is nan)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (time, busy CPU seconds since boot)
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def sample(self) -> None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return
        # user, nice, system, idle, iowait, irq, softirq, steal: all but idle and iowait are busy
        ticks = [int(f) for f in fields[:8]]
        self.samples.append((time.time(), (sum(ticks) - ticks[3] - ticks[4]) / self.tick))

    def busy_cores(self, begin: float, end: float) -> float:
        """Mean cores busy between `begin` and `end` (the first and last samples inside the window)."""
        inside = [s for s in self.samples if begin <= s[0] <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


class _Connections:
    """Counts the connections to the Optuna and MLflow databases (the poller's own excluded)."""

    def __init__(self, postgres: str, databases: tuple[str, str], *, include_proxy: bool) -> None:
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(f"{postgres}/postgres", poolclass=sqlalchemy.pool.NullPool)
        self.databases, self.include_proxy = databases, include_proxy
        self.conn: Any = None

    def __enter__(self) -> _Connections:
        self.conn = self.engine.connect()
        return self

    def count(self) -> dict[str, int]:
        import sqlalchemy

        query = sqlalchemy.text(
            "SELECT datname, count(*) FROM pg_stat_activity WHERE datname IN (:a, :b) AND pid <> pg_backend_pid() "
            "AND (:proxy OR coalesce(application_name, '') <> :app) GROUP BY datname"
        )
        found = dict(
            self.conn.execute(
                query, {"a": self.databases[0], "b": self.databases[1], "proxy": self.include_proxy, "app": PROXY_APP}
            ).all()
        )
        self.conn.rollback()
        return {"optuna": int(found.get(self.databases[0], 0)), "mlflow": int(found.get(self.databases[1], 0))}

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.engine.dispose()


def _objective_log(folder: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(folder.glob("objective-*.jsonl")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by SIGKILL
                records.append(json.loads(line))
    return records


def _worker_timings(folder: Path) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {"ask": [], "tell": [], "mlflow": [], "rss": [], "torch": [], "cpu": []}
    for path in folder.glob("worker-*.json"):
        data = json.loads(path.read_text())
        for key in ("ask", "tell", "mlflow"):
            merged[key] += data[key]
        merged["rss"].append(data["max_rss_mb"])
        merged["torch"].append(data["torch_imported"])
        merged["cpu"].append(data["cpu_seconds"])
    return merged


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _publish(args: argparse.Namespace, argv: Sequence[str] | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    info = _report.machine()
    logged = "`hpo server` over HTTP" if args.tracking == "server" else "the MLflow database by the workers themselves"
    print(_report.header("Many workers: direct PostgreSQL vs gRPC storage proxy", argv, info))
    print(
        f"Each run: N real `hpo worker` processes on one study of N x {args.trials_per_worker} trials; the "
        "objective sleeps "
        f"{args.trial_seconds} s per trial on average over {args.epochs} epochs (drawn per epoch in [0.8, 1.2] x), "
        "TPE + median pruning, "
        f"heartbeats every {args.heartbeat} s (every 1 s in kill runs); runs logged to {logged}; "
        f"one `hpo server` with {args.server_workers} MLflow "
        "worker process(es) and the gRPC proxy (8 threads). `% of ideal` = completed trials/s while all N workers "
        "are busy (`steady window s`: from the last worker's first trial to the first worker's last) / (N / mean "
        "objective time of a finished trial). "
        "Latencies are measured inside the workers (`s/trial`: the time a worker waited on it per trial it told, "
        "start-up requests included); "
        "connections are the peak seen in pg_stat_activity; worker CPU per trial includes the workers' start-up; "
        "`machine CPU` is every process's (workers, PostgreSQL, server) in the steady window, from /proc/stat: "
        "busy cores near the machine's count mean CPU bounds the run. The `optuna` path is a hand-written Optuna "
        "loop with no hpo and no MLflow (its budget is Optuna's MaxTrialsCallback).\n"
    )
    columns = [c for c in rows[0] if c not in ("kill", "problems")] if rows else None
    print(_report.table([{**r, "path": r["path"] + (" (3 killed)" if r["kill"] else "")} for r in rows], columns))
    broken = [r for r in rows if not r["invariants ok"]]
    for row in broken:
        print(f"- {row['path']} N={row['workers']}: {row['problems']}")
    if not broken:
        print("Invariants held in every run: budget exact, no duplicate trial or MLflow run, nothing left RUNNING.")
    payload = {
        "machine": info,
        "command": _report.command_line(argv),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "rows": rows,
    }
    _report.save(args.json, payload)
    return payload


def _stop_group(proc: subprocess.Popen[Any], *, grace: float) -> None:
    """SIGTERM the process's group, SIGKILL it after `grace` seconds; never leaves an orphan behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
