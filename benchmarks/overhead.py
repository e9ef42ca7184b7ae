"""What hpo costs on top of training: the same trials run bare, with Optuna + MLflowCallback, and with hpo.

Every way trains with the very same function (the objective's `objective(ctx)`, i.e. hpo's training
loop on the same data, model, epochs and seed), so the differences are framework costs only: storage
writes, MLflow runs and metrics, checkpoints, heartbeats, sampling. Ways run in one process in the
order A/B/C/A/B/C..., so that a busy shared machine slows all of them alike; ratios are taken within
a round.

- A `bare`: a plain loop over the configurations, no Optuna, no MLflow.
- B `optuna+mlflow`: the usual hand-written setup: an Optuna study on SQLite (SQLite's default
  rollback journal, as outside hpo), trials enqueued,
  `optuna_integration.MLflowCallback` with `track_in_mlflow()`, `mlflow.log_metrics(..., step=epoch)`
  and `trial.report` every epoch.
- C `hpo`: `hpo.running.runner.StudyRunner` (what `hpo run` calls) on SQLite storage and an SQLite MLflow
  store, with the configurations enqueued into the study, default settings otherwise (heartbeats,
  top-k checkpoints, buffered metrics, SQLite in WAL mode).
- With `--journal-variant`, D `hpo (rollback journal)`: hpo with HPO_SQLITE_WAL=0 on boston-short, to
  show what write-ahead logging saves.

Non-training time per trial = (wall time of the way - time spent inside the objective excluding its
per-epoch callback) / trials; the same in CPU seconds of this process, which a busy machine disturbs
less (but which leaves out waiting for the disk). Run `python benchmarks/overhead.py --quick` on 2 CPU
cores, or without `--quick` on a GPU machine (more rounds and configurations). A CIFAR-10 group is added
when its objective is registered and the data can be imported (`--cifar-source`, else the cached copy,
else the project's shared archive).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data
import _report

WAYS = ("bare", "optuna+mlflow", "hpo")
# With --journal-variant: hpo again with HPO_SQLITE_WAL=0, i.e. SQLite's default rollback journal, on files
# of its own: what hpo cost before it switched its SQLite files to write-ahead logging (boston-short only).
JOURNAL_WAY = "hpo (rollback journal)"


@dataclass(frozen=True)
class Trial:
    """One fixed trial configuration: the hyperparameters that vary between trials of a group."""

    params: dict[str, Any]


@dataclass(frozen=True)
class Group:
    """Trials of one objective run as one study per way and round."""

    name: str
    objective: str
    metric: str
    direction: str
    fixed: dict[str, Any]
    trials: list[Trial]
    data: dict[str, Any] = field(default_factory=dict)


# The search space every group's trials are enqueued into; it holds every value used below.
SPACE: dict[str, dict[str, Any]] = {
    "hidden_layers": {"type": "int", "low": 1, "high": 4},
    "width": {"type": "int", "low": 8, "high": 1024, "log": True},
    "epochs": {"type": "int", "low": 1, "high": 2000},
    "batch_size": {"type": "categorical", "choices": [8, 16, 32, 64, 128, 256]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}


# The bare loop calls the objective once per trial: Boston is measured on one validation split (its
# default, 5-fold cross-validation, would train each trial five times in hpo's way only).
ONE_SPLIT = {"cv_folds": 1}


def boston_short(n: int) -> Group:
    """Sub-second Boston trials (1 CPU thread): the case where per-trial costs show most."""
    shapes = [(1, 32, 20, 64), (2, 64, 30, 32), (1, 16, 40, 64), (2, 32, 25, 32), (3, 64, 20, 64), (1, 64, 30, 128)]
    trials = []
    for i in range(n):
        layers, width, epochs, batch = shapes[i % len(shapes)]
        trials.append(
            Trial(
                {
                    "hidden_layers": layers,
                    "width": width,
                    "epochs": epochs,
                    "batch_size": batch,
                    "lr": [3e-3, 1e-2][i % 2],
                    "optimizer": ["adam", "sgd"][i % 2],
                }
            )
        )
    return Group(
        "boston-short", "boston", "val_rmse", "minimize", {"early_stopping_patience": 0}, trials, data=ONE_SPLIT
    )


def boston_long(n: int, epochs: int) -> Group:
    """Boston trials of about a minute each on one CPU thread (4x512 MLP, batch 16)."""
    trials = [
        Trial({"hidden_layers": 4, "width": 512, "epochs": epochs, "batch_size": 16, "lr": 1e-3, "optimizer": "adam"})
        for _ in range(n)
    ]
    return Group(
        "boston-long", "boston", "val_rmse", "minimize", {"early_stopping_patience": 0}, trials, data=ONE_SPLIT
    )


def cifar_group(n: int, epochs: int, subset: float, source: str | None) -> Group | None:
    """A small CIFAR-10 CNN configuration, when the objective is registered and the data can be imported."""
    from hpo.objectives import registered

    if "cifar10" not in registered():
        return None
    why = _data.ensure_cifar10(source)
    if why is not None:
        print(f"cifar10-cnn skipped: {why}", file=sys.stderr)
        return None
    trials = [
        Trial({"width": 128, "epochs": epochs, "batch_size": 128, "lr": 1e-3, "optimizer": "adam"}) for _ in range(n)
    ]
    fixed = {"model": "cnn", "early_stopping_patience": 0, "filters": 32, "conv_blocks": 3, "hidden_layers": 1}
    return Group("cifar10-cnn", "cifar10", "val_acc", "maximize", fixed, trials, data={"subset": subset})


# -- timing the objective --------------------------------------------------------------------------
class Clock:
    """Time spent inside the objective and inside its per-epoch callback (framework work).

    CPU time is the training thread's own: work that hpo's background threads (the MLflow sender,
    heartbeats) do while the objective trains counts as framework CPU, not training CPU."""

    def __init__(self) -> None:
        self.objective = self.callback = 0.0  # wall seconds
        self.objective_cpu = self.callback_cpu = 0.0  # CPU seconds of this process
        self.values: list[float] = []

    @property
    def training(self) -> float:
        return self.objective - self.callback

    @property
    def training_cpu(self) -> float:
        return self.objective_cpu - self.callback_cpu

    def wrap_objective(self, fn: Callable[[Any], Any], metric: str) -> Callable[[Any], Any]:
        def timed(ctx: Any) -> Any:
            inner = ctx.report

            def report(epoch: int, metrics: dict[str, float]) -> None:
                t, c = time.perf_counter(), time.thread_time()
                try:
                    inner(epoch, metrics)
                finally:
                    self.callback += time.perf_counter() - t
                    self.callback_cpu += time.thread_time() - c

            ctx.report = report
            t, c = time.perf_counter(), time.thread_time()
            try:
                result = fn(ctx)
            finally:
                self.objective += time.perf_counter() - t
                self.objective_cpu += time.thread_time() - c
            self.values.append(result.metrics[metric])
            return result

        return timed


def _context(
    group: Group, params: dict[str, Any], seed: int, device: Any, on_epoch: Callable[[int, dict[str, float]], None]
) -> Any:
    from hpo.objectives import TrialContext, load_objective

    objective = load_objective(group.objective).objective
    return TrialContext(
        objective.resolve({**group.fixed, **params}),
        data=objective.data_options(**group.data),
        metrics=[group.metric],
        directions=[group.direction],
        seed=seed,
        report=on_epoch,
        resolve_device=lambda: device,
    )


# -- the three ways ----------------------------------------------------------------------------------
def run_bare(group: Group, *, device: Any, clock: Clock) -> None:
    from hpo.objectives import load_objective
    from hpo.running.runner import trial_seed

    objective = clock.wrap_objective(load_objective(group.objective).objective.train, group.metric)
    for number, trial in enumerate(group.trials):
        objective(_context(group, trial.params, trial_seed(0, number), device, lambda epoch, metrics: None))


def suggest_by_hand(trial: Any, names: set[str]) -> dict[str, Any]:
    """What a hand-written Optuna objective does: one suggest call per hyperparameter it searches."""
    calls: dict[str, Callable[[], Any]] = {
        "hidden_layers": lambda: trial.suggest_int("hidden_layers", 1, 4),
        "width": lambda: trial.suggest_int("width", 8, 1024, log=True),
        "epochs": lambda: trial.suggest_int("epochs", 1, 2000),
        "batch_size": lambda: trial.suggest_categorical("batch_size", [8, 16, 32, 64, 128, 256]),
        "lr": lambda: trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "optimizer": lambda: trial.suggest_categorical("optimizer", ["adam", "sgd"]),
    }
    return {name: call() for name, call in calls.items() if name in names}


def run_optuna_mlflow(group: Group, study_name: str, workdir: Path, *, device: Any, clock: Clock) -> None:
    import mlflow
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    from hpo.objectives import load_objective
    from hpo.running.runner import trial_seed

    callback = MLflowCallback(tracking_uri=f"sqlite:///{workdir / 'mlflow-b.db'}", metric_name=group.metric)
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{workdir / 'optuna-b.db'}",
        direction=group.direction,
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    for trial in group.trials:
        study.enqueue_trial(trial.params)
    objective_fn = clock.wrap_objective(load_objective(group.objective).objective.train, group.metric)
    searched = {name for t in group.trials for name in t.params}

    @callback.track_in_mlflow()
    def objective(trial: optuna.Trial) -> float:
        params = suggest_by_hand(trial, searched)
        mlflow.log_params(group.fixed)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            trial.report(metrics[group.metric], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        outcome = objective_fn(_context(group, params, trial_seed(0, trial.number), device, on_epoch))
        return float(outcome.metrics[group.metric])

    study.optimize(objective, n_trials=len(group.trials), callbacks=[callback])


def hpo_runner(
    group: Group,
    study_name: str,
    workdir: Path,
    *,
    threads: int | None,
    journal: bool = False,
    tracking_uri: str | None = None,
) -> Any:
    """A StudyRunner as `hpo run` builds it, with the group's trials enqueued."""
    from hpo.config import parse_study
    from hpo.config.settings import Settings
    from hpo.running.runner import StudyRunner

    study = {
        "name": study_name,
        "objective": group.objective,
        "metric": group.metric,
        "direction": group.direction,
        "seed": 0,
        "n_trials": len(group.trials),
        "data": group.data,
        "params": {k: v for k, v in SPACE.items() if any(k in t.params for t in group.trials)},
        "fixed": group.fixed,
        "execution": {"threads": threads} if threads else {},
    }
    storage, tracking = (
        (workdir / "hpo-journal.db", workdir / "mlflow-journal.db")
        if journal
        else (workdir / "hpo.db", workdir / "mlflow.db")
    )
    settings = Settings(
        storage=f"sqlite:///{storage}", tracking_uri=tracking_uri or f"sqlite:///{tracking}", data_dir=workdir
    )
    runner = StudyRunner(parse_study(study, source="overhead benchmark"), settings)
    for trial in group.trials:
        runner.study.enqueue_trial(trial.params)
    return runner


def run_hpo(runner: Any, *, clock: Clock) -> None:
    import dataclasses

    loaded = runner.objective
    timed = dataclasses.replace(
        loaded.objective, train=clock.wrap_objective(loaded.objective.train, runner.config.metrics[0])
    )
    runner.objective = dataclasses.replace(loaded, objective=timed)
    try:
        runner.run()
    finally:
        runner.objective = loaded


class StepTimer:
    """Wall time in each bookkeeping step of hpo's trial loop, by wrapping the methods that do them.

    The steps are those of `StudyRunner` (what `hpo run` calls); the wrappers add microseconds. Used
    with --phases to say where hpo's non-training time goes, per trial.
    """

    def __init__(self) -> None:
        import optuna

        from hpo.running import runner, tracking

        self.steps: list[tuple[Any, str, str]] = [
            (runner.StudyRunner, "_ask_within_budget", "ask: count the budget under the lock, study.ask"),
            (runner, "suggest", "sample the parameters (a storage write each)"),
            (optuna.Trial, "set_user_attr", "trial attributes (seed; the MLflow run id is set by the sender)"),
            (tracking.Tracker, "open_trial_run", "open the MLflow run (handed to the sender thread)"),
            (runner.EpochRecorder, "__call__", "per-epoch callback (queue metrics, progress, report)"),
            (runner.StudyRunner, "_checkpoint", "checkpoint (only trials entering the top k)"),
            (
                tracking.TrialRun,
                "close",
                "close the MLflow run (wait for the sender: last epochs + summary in one log_batch, set_terminated)",
            ),
            (runner.StudyRunner, "_tell", "tell Optuna"),
        ]
        self.seconds: dict[str, float] = {label: 0.0 for _, _, label in self.steps}
        self.trials = 0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in self.steps]
        for (owner, name, label), (_, _, original) in zip(self.steps, originals):
            setattr(owner, name, self._timed(original, label))
        try:
            yield
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)

    def _timed(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)  # background work: the training loop does not wait for it
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        return timed

    def rows(self, non_training_ms: float) -> list[dict[str, Any]]:
        rows = [{"step": label, "ms/trial": 1000 * s / self.trials} for label, s in self.seconds.items()]
        rows.append(
            {
                "step": "everything else (progress, heartbeats, loop)",
                "ms/trial": non_training_ms - sum(r["ms/trial"] for r in rows),
            }
        )
        return rows


# -- measurement -----------------------------------------------------------------------------------
def measure(
    group: Group,
    way: str,
    label: str,
    workdir: Path,
    *,
    device: Any,
    threads: int | None,
    profile: cProfile.Profile | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Run the group one way; wall and CPU seconds, and how much of them the objective spent training."""
    # The hand-written setup gets SQLite's defaults, as it would outside hpo: hpo.running.storage switches every
    # SQLite connection of this process to WAL unless HPO_SQLITE_WAL=0, read whenever a connection opens.
    with _sqlite_wal(way not in ("optuna+mlflow", JOURNAL_WAY)):
        return _measure(
            group, way, label, workdir, device=device, threads=threads, profile=profile, tracking_uri=tracking_uri
        )


@contextlib.contextmanager
def _sqlite_wal(enabled: bool) -> Iterator[None]:
    previous = os.environ.get("HPO_SQLITE_WAL")
    os.environ["HPO_SQLITE_WAL"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["HPO_SQLITE_WAL"]
        else:
            os.environ["HPO_SQLITE_WAL"] = previous


def _measure(
    group: Group,
    way: str,
    label: str,
    workdir: Path,
    *,
    device: Any,
    threads: int | None,
    profile: cProfile.Profile | None,
    tracking_uri: str | None,
) -> dict[str, Any]:
    clock = Clock()
    setup = 0.0
    journal = way == JOURNAL_WAY
    if way in ("hpo", JOURNAL_WAY):
        started = time.perf_counter()
        runner = hpo_runner(
            group,
            f"{label}-{'hpo-journal' if journal else 'hpo'}",
            workdir,
            threads=threads,
            journal=journal,
            tracking_uri=tracking_uri,
        )
        setup = time.perf_counter() - started
    started, started_cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    try:
        if way == "bare":
            run_bare(group, device=device, clock=clock)
        elif way == "optuna+mlflow":
            run_optuna_mlflow(group, f"{label}-optuna", workdir, device=device, clock=clock)
        else:
            run_hpo(runner, clock=clock)
    finally:
        if profile is not None:
            profile.disable()
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    n = len(group.trials)
    return {
        "group": group.name,
        "way": way,
        "trials": n,
        "wall_s": wall,
        "training_s": clock.training,
        "callback_s": clock.callback,
        "overhead_ms_per_trial": 1000 * (wall - clock.training) / n,
        "cpu_s": cpu,
        "training_cpu_s": clock.training_cpu,
        "overhead_cpu_ms_per_trial": 1000 * (cpu - clock.training_cpu) / n,
        "setup_s": setup,
        "values": clock.values,
    }


def import_seconds() -> float | None:
    """A fresh interpreter importing what `hpo run` imports: paid once per `hpo run` command."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import hpo.cli, hpo.running.runner"], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"could not time the imports of hpo.cli: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return time.perf_counter() - started


def ways_of(group: Group, ways: Sequence[str]) -> Sequence[str]:
    """The rollback-journal variant runs on the sub-second trials only, where storage costs show."""
    return ways if group.name == "boston-short" else [w for w in ways if w != JOURNAL_WAY]


def summarize(records: list[dict[str, Any]], ways: Sequence[str]) -> list[dict[str, Any]]:
    """Per group and way: medians over rounds of overhead per trial and of the wall-time ratio to bare."""
    rows = []
    for group in dict.fromkeys(r["group"] for r in records):
        rounds = sorted({r["round"] for r in records if r["group"] == group})
        bare = {r["round"]: r for r in records if r["group"] == group and r["way"] == "bare"}
        for way in ways:
            mine = [r for r in records if r["group"] == group and r["way"] == way]
            if not mine:
                continue
            ratios = [r["wall_s"] / bare[r["round"]]["wall_s"] for r in mine if r["round"] in bare]
            rows.append(
                {
                    "group": group,
                    "way": way,
                    "rounds": len(rounds),
                    "trials/round": mine[0]["trials"],
                    "median wall s": statistics.median(r["wall_s"] for r in mine),
                    "median training s/trial": statistics.median(r["training_s"] / r["trials"] for r in mine),
                    "non-training ms/trial (median)": statistics.median(r["overhead_ms_per_trial"] for r in mine),
                    "non-training ms/trial (min)": min(r["overhead_ms_per_trial"] for r in mine),
                    "non-training CPU ms/trial (median)": statistics.median(
                        r["overhead_cpu_ms_per_trial"] for r in mine
                    ),
                    # Within one way's own run, so not disturbed by the load changing between ways:
                    "non-training % of wall (median)": statistics.median(
                        100 * (1 - r["training_s"] / r["wall_s"]) for r in mine
                    ),
                    "wall / bare (median)": statistics.median(ratios) if ratios else None,
                    "wall / bare (per round)": " ".join(f"{x:.3f}" for x in ratios),
                }
            )
    return rows


def check_same_training(records: list[dict[str, Any]]) -> float:
    """The three ways train identically (same seeds): the largest difference in the metric proves it."""
    worst = 0.0
    by_key: dict[tuple[str, int], list[list[float]]] = {}
    for r in records:
        by_key.setdefault((r["group"], r["round"]), []).append(r["values"])
    for runs in by_key.values():
        for values in runs[1:]:
            for a, b in zip(runs[0], values):
                worst = max(worst, abs(a - b))
    return worst


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 CPU cores: 2 rounds, 8 short trials and 1 long (about 1 min) trial per round",
    )
    parser.add_argument("--rounds", type=int, help="A/B/C rounds (default: 2 quick, 3 full)")
    parser.add_argument(
        "--groups", default=None, help="comma list of boston-short, boston-long, cifar10-cnn (default: all that exist)"
    )
    parser.add_argument("--short-trials", type=int, help="trials in boston-short (default 8 quick, 20 full)")
    parser.add_argument("--long-trials", type=int, help="trials in boston-long (default 1 quick, 2 full)")
    parser.add_argument(
        "--long-epochs",
        type=int,
        default=450,
        help="epochs of a boston-long trial (450: about a minute on one CPU thread)",
    )
    parser.add_argument("--cifar-epochs", type=int, default=3)
    parser.add_argument(
        "--cifar-subset", type=float, help="fraction of CIFAR-10 training images (default 0.1 quick, 1.0 full)"
    )
    parser.add_argument(
        "--cifar-source",
        help="CIFAR-10 archive to import into HPO_DATA_DIR (default: the cached copy, else the shared one)",
    )
    parser.add_argument(
        "--skip-import-timing", action="store_true", help="do not time a fresh interpreter importing hpo"
    )
    parser.add_argument("--max-epochs", type=int, help="cap every trial's epochs (for smoke tests)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads for every way (default 1 with --quick: a shared 2-core box)"
    )
    parser.add_argument(
        "--ways",
        default=None,
        help=f"comma list of {', '.join(WAYS)} (default: all; bare is always run, as the reference)",
    )
    parser.add_argument(
        "--journal-variant",
        action="store_true",
        help=f"add a fourth way to boston-short, {JOURNAL_WAY!r}: hpo with HPO_SQLITE_WAL=0",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="time each bookkeeping step of hpo's boston-short trials and print where the non-training time goes",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile hpo's short group in the last round and print where the non-training time goes",
    )
    parser.add_argument(
        "--hpo-tracking-uri",
        help="the hpo way logs to this MLflow tracking server (e.g. a running `hpo server`) "
        "instead of an SQLite file of its own",
    )
    parser.add_argument("--workdir", help="folder for the SQLite files (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import optuna
    import torch

    from hpo.training.device import pick_device

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # both Optuna ways log alike: not at all
    warnings.filterwarnings("ignore", message="MLflowCallback has been deprecated", category=FutureWarning)
    quick = args.quick
    ways = (*WAYS, JOURNAL_WAY) if args.journal_variant else WAYS
    if args.ways:
        unknown = set(args.ways.split(",")) - set(WAYS)
        if unknown:
            parser.error(f"--ways: unknown {', '.join(sorted(unknown))}; accepted: {', '.join(WAYS)}")
        ways = tuple(
            w
            for w in ways
            if w == "bare" or w in args.ways.split(",") or (w == JOURNAL_WAY and "hpo" in args.ways.split(","))
        )
    rounds = args.rounds or (2 if quick else 3)
    threads = args.threads or (1 if quick else None)
    device = pick_device("auto", threads=threads)
    groups: list[Group] = [
        boston_short(args.short_trials or (8 if quick else 20)),
        boston_long(args.long_trials or (1 if quick else 2), args.long_epochs),
    ]
    wanted = set(args.groups.split(",")) if args.groups else None
    if wanted is None or "cifar10-cnn" in wanted:
        cifar = cifar_group(
            1 if quick else 5, args.cifar_epochs, args.cifar_subset or (0.1 if quick else 1.0), args.cifar_source
        )
        if cifar is not None:
            groups.append(cifar)
    if wanted is not None:
        groups = [g for g in groups if g.name in wanted]
    if args.max_epochs:
        groups = [
            Group(
                g.name,
                g.objective,
                g.metric,
                g.direction,
                g.fixed,
                [Trial({**t.params, "epochs": min(t.params["epochs"], args.max_epochs)}) for t in g.trials],
                g.data,
            )
            for g in groups
        ]

    with tempfile.TemporaryDirectory(prefix="hpo-overhead-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        # Warm-up (not counted): first-call costs of torch, the database files and their migrations.
        for group in groups:
            warm = Group(
                group.name,
                group.objective,
                group.metric,
                group.direction,
                group.fixed,
                [Trial({**group.trials[0].params, "epochs": 1})],
                group.data,
            )
            for way in ways_of(group, ways):
                measure(
                    warm,
                    way,
                    f"warmup-{group.name}",
                    workdir,
                    device=device,
                    threads=threads,
                    tracking_uri=args.hpo_tracking_uri,
                )
        records: list[dict[str, Any]] = []
        profile = cProfile.Profile() if args.profile else None
        phases = StepTimer() if args.phases else None
        phase_overhead: list[float] = []
        for round_ in range(rounds):
            for group in groups:
                for way in ways_of(group, ways):
                    use_profile = (
                        profile if (way == "hpo" and round_ == rounds - 1 and group.name == "boston-short") else None
                    )
                    timed = phases is not None and way == "hpo" and group.name == "boston-short"
                    with phases.timing() if timed else contextlib.nullcontext():  # type: ignore[union-attr]
                        record = measure(
                            group,
                            way,
                            f"r{round_}-{group.name}",
                            workdir,
                            device=device,
                            threads=threads,
                            profile=use_profile,
                            tracking_uri=args.hpo_tracking_uri,
                        )
                    if timed:
                        phases.trials += record["trials"]  # type: ignore[union-attr]
                        phase_overhead.append(record["overhead_ms_per_trial"] * record["trials"])
                    record["round"] = round_
                    records.append(record)
                    print(
                        f"round {round_} {group.name:13s} {way:16s} wall {record['wall_s']:8.2f}s  non-training "
                        f"{record['overhead_ms_per_trial']:8.1f} ms/trial "
                        f"({record['overhead_cpu_ms_per_trial']:.1f} CPU ms)",
                        file=sys.stderr,
                        flush=True,
                    )
        sizes = {p.name: p.stat().st_size for p in workdir.glob("*.db")}

    startup = None if args.skip_import_timing else import_seconds()
    rows = summarize(records, ways)
    setup = [r["setup_s"] for r in records if r["way"] == "hpo"]
    info = _report.machine()
    lines = [
        _report.header("Overhead: bare loop vs Optuna + MLflowCallback vs hpo", argv, info),
        f"Torch threads: {torch.get_num_threads()}; device: {device}. All ways train with the same objective "
        "function and seeds "
        f"(largest difference in the final metric between ways: {check_same_training(records):.2g}).",
        "",
        _report.table(rows, [c for c in rows[0] if c != "rounds"]),
        "One-off costs per `hpo run`: interpreter + imports "
        f"{'not measured' if startup is None else f'{startup:.2f} s'}; StudyRunner setup (storage, study, MLflow "
        "parent run) "
        f"median {statistics.median(setup):.3f} s per study. Database sizes after the run: "
        + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(sizes.items())),
        "",
    ]
    phase_rows = None
    if phases is not None and phases.trials:
        phase_rows = phases.rows(sum(phase_overhead) / phases.trials)
        lines += [
            f"Where hpo's non-training time goes on boston-short ({phases.trials} trials over all rounds):",
            "",
            _report.table(phase_rows),
        ]
    if profile is not None:
        lines += [
            "Where hpo's time goes in the profiled boston-short round (cumulative seconds, top entries):",
            "",
            "```",
            profile_text(profile),
            "```",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    payload = {
        "machine": info,
        "command": _report.command_line(argv),
        "records": records,
        "summary": rows,
        "import_seconds": startup,
        "setup_seconds": setup,
        "phases": phase_rows,
    }
    _report.save(args.json, payload)
    return payload


def profile_text(profile: cProfile.Profile, limit: int = 30) -> str:
    """hpo's own functions by cumulative time: which step of a trial the non-training time is in."""
    stream = io.StringIO()
    stats = pstats.Stats(profile, stream=stream)
    stats.sort_stats("cumulative").print_stats(r"/hpo/running/", limit)
    lines = [ln for ln in stream.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join(ln.replace(str(_report.REPO) + "/", "") for ln in lines[start:])


if __name__ == "__main__":
    main()
