"""Study commands: run, create, worker, validate, status, best, reconcile."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hpo.cli._app import StorageOption, TrackingOption, app, command
from hpo.config import StudyConfig, check_study_name, load_study, study_to_yaml
from hpo.config.settings import Settings, redact, resolve_settings
from hpo.errors import HpoError, UsageError

JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def _settings(
    config: StudyConfig, storage: str | None, tracking_uri: str | None, *, source: Path | None = None
) -> Settings:
    return resolve_settings(
        storage_flag=storage,
        tracking_flag=tracking_uri,
        file_storage=config.storage,
        file_tracking_uri=config.tracking_uri,
        source=str(source) if source is not None else None,
    )


def _check_study(path: Path, config: StudyConfig, settings: Settings) -> None:
    """The runner's own pre-run checks (:func:`hpo.running.checks.check_study`), for every file before any
    runs; errors about the file's fields name the file."""
    from hpo.running.checks import check_study

    check_study(config, settings, source=str(path))


@command(app, "run")
def run(
    study_files: list[Path] = typer.Argument(..., help="One or more study files, run one after another."),
    n_trials: int | None = typer.Option(
        None, "--n-trials", min=1, help="Global trial cap over all workers (overrides the file)."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.001, help="Stop starting trials after this many seconds."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Worker processes on this machine sharing the study (default: execution.trials_per_device per GPU, else 1).",
    ),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
    study_name: str | None = typer.Option(None, "--study-name", help="Study name (default: the file's name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Create or resume the study and run trials until the global budget is met."""
    if study_name is not None and len(study_files) > 1:
        raise UsageError("--study-name: can only be used with a single study file")
    if study_name is not None:
        check_study_name(study_name, field="--study-name")
    configs = [load_study(path) for path in study_files]  # every file is checked before any runs
    settings = [_settings(c, storage, tracking_uri, source=path) for path, c in zip(study_files, configs)]
    for path, config, setting in zip(study_files, configs, settings):
        _check_study(path, config, setting)
    rows = []
    for path, config, setting in zip(study_files, configs, settings):
        summary = _run_one(
            path,
            config,
            setting,
            n_trials=n_trials,
            timeout=timeout,
            workers=workers,
            study_name=study_name,
            quiet=quiet,
        )
        rows.append(summary)
    if len(rows) > 1 and not quiet:
        _print_table(
            "sweep summary",
            [
                {
                    "study": r["study"],
                    "complete": r["complete"],
                    "pruned": r["pruned"],
                    "failed": r["failed"],
                    "best": r["best"],
                    "seconds": round(r["seconds"], 1),
                }
                for r in rows
            ],
        )
    if any(r["complete_total"] == 0 for r in rows):
        failed = ", ".join(r["study"] for r in rows if r["complete_total"] == 0)
        raise HpoError(f"no trial completed in study {failed}; see the failure reasons with `hpo status {failed}`")


def _run_one(
    path: Path,
    config: StudyConfig,
    settings: Settings,
    *,
    n_trials: int | None,
    timeout: float | None,
    workers: int | None,
    study_name: str | None,
    quiet: bool,
) -> dict[str, Any]:
    from optuna.trial import TrialState

    from hpo.running import meta
    from hpo.running.progress import make_progress
    from hpo.running.runner import StudyRunner, default_workers

    if workers is None:
        workers = default_workers(config.execution.trials_per_device)

    started = time.monotonic()
    budget = meta.new_budget(config, n_trials=n_trials, timeout=timeout)
    progress = make_progress(quiet=quiet or workers > 1)
    runner = StudyRunner(config, settings, study_name=study_name, progress=progress, source=str(path))
    meta.set_budget(runner.study, budget)
    # Trials finished before this run; a re-queued trial waiting from an interrupted run is this run's to finish.
    before = {t.number for t in runner.study.get_trials(deepcopy=False) if t.state.is_finished()}
    codes: list[int] = []
    try:
        if workers <= 1:
            runner.run(n_trials=budget["n_trials"], timeout=meta.remaining(budget))
        else:
            codes = _spawn_workers(path, runner.study_name, settings, workers, quiet=quiet)
    except BaseException as exc:
        runner.close_study_run(stopped_by=exc)
        raise
    # Counted from the study, so that trials run by spawned workers are included.
    trials = runner.study.get_trials(deepcopy=False)
    new = [t for t in trials if t.state.is_finished() and t.number not in before]
    counts = {
        name: sum(1 for t in new if t.state == state)
        for name, state in (
            ("complete", TrialState.COMPLETE),
            ("pruned", TrialState.PRUNED),
            ("failed", TrialState.FAIL),
        )
    }
    complete_total = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    best = runner.best_text()
    if not quiet:
        typer.echo(
            f"study {runner.study_name}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed in this run; "
            f"best {best or '-'}; {complete_total} complete trials stored; MLflow: {_mlflow_where(runner, settings)}",
            err=True,
        )
    bad = [c for c in codes if c != 0]
    runner.close_study_run(stopped_by=HpoError("workers failed") if bad else None)
    if bad:
        raise HpoError(
            f"{len(bad)} of {workers} workers of study {runner.study_name} exited with an error (exit codes {bad}); see their output above"
        )
    return {
        "study": runner.study_name,
        **counts,
        "best": best,
        "complete_total": complete_total,
        "seconds": time.monotonic() - started,
    }


def _mlflow_where(runner: Any, settings: Settings) -> str:
    """The UI page of the study's runs when MLflow is a server, else the store's (redacted) URI."""
    try:
        return runner.tracker.ui_link() or redact(settings.tracking_uri)
    except Exception:
        return redact(settings.tracking_uri)


def _spawn_workers(path: Path, study_name: str, settings: Settings, workers: int, *, quiet: bool) -> list[int]:
    """Run `workers` copies of `hpo worker` (the command `hpo schedule` writes) and return their exit codes.

    Each worker gets its own GPU or share of CPU threads and its own process group, so that one
    Ctrl-C reaches each worker exactly once (forwarded from here) and every one closes its trial.
    """
    from hpo.operations.schedule import worker_argv
    from hpo.running.workers import default_workers_env

    argv = worker_argv(path, study_name=study_name, quiet=quiet, program=(sys.executable, "-m", "hpo"))
    procs: list[subprocess.Popen[bytes]] = []
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(workers):
            own = default_workers_env(index, workers)
            env = {**os.environ, "HPO_STORAGE": settings.storage, "MLFLOW_TRACKING_URI": settings.tracking_uri, **own}
            env.setdefault("HPO_PROGRESS", "plain")  # several live displays on one terminal would garble it
            if not quiet:
                where = (
                    f"GPU {own['CUDA_VISIBLE_DEVICES']}"
                    if "CUDA_VISIBLE_DEVICES" in own
                    else f"CPU, {own['HPO_THREADS']} thread(s)"
                )
                typer.echo(f"worker {index + 1}/{workers}: {where}", err=True)
            procs.append(subprocess.Popen(argv, env=env, start_new_session=True))
        codes = [proc.wait() for proc in procs]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt
    return codes


@command(app, "create")
def create(
    study_file: Path = typer.Argument(..., help="The study file."),
    n_trials: int | None = typer.Option(
        None, "--n-trials", min=1, help="Global trial cap over all workers (overrides the file)."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.001, help="Stop starting trials this many seconds after the sweep starts."
    ),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
    study_name: str | None = typer.Option(None, "--study-name", help="Study name (default: the file's name)."),
) -> None:
    """Create the study and its budget without running trials, for workers that join with `hpo worker`.

    Safe to run from every worker at once (a Kubernetes init step): an unchanged, still running
    sweep is left as it is, so its timeout keeps counting from when it started.
    """
    from hpo.running import meta
    from hpo.running.runner import StudyRunner

    config = load_study(study_file)
    settings = _settings(config, storage, tracking_uri, source=study_file)
    _check_study(study_file, config, settings)
    runner = StudyRunner(config, settings, study_name=study_name, source=str(study_file))
    budget = meta.new_budget(config, n_trials=n_trials, timeout=timeout)
    stored = runner.study.user_attrs.get(meta.BUDGET_ATTR) or {}
    same = (stored.get("n_trials"), stored.get("timeout")) == (budget["n_trials"], budget["timeout"])
    if not same or meta.deadline_passed(stored):
        meta.set_budget(runner.study, budget)
    typer.echo(
        f"study {runner.study_name} is ready in {redact(settings.storage)}; start workers with: {shlex.join(_worker_hint(study_file, runner.study_name, config))}",
        err=True,
    )


def _worker_hint(study_file: Path, study_name: str, config: StudyConfig) -> list[str]:
    from hpo.operations.schedule import worker_argv

    return worker_argv(study_file, study_name=study_name if study_name != config.name else None)


@command(app, "worker")
def worker(
    study_file: Path = typer.Argument(..., help="The study file the study was started with."),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
    study_name: str | None = typer.Option(None, "--study-name", help="Study name (default: the file's name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Join an existing study from another process or machine; never changes its config."""
    from hpo.running import meta
    from hpo.running.progress import make_progress
    from hpo.running.runner import StudyRunner

    config = load_study(study_file)
    settings = _settings(config, storage, tracking_uri, source=study_file)
    runner = StudyRunner(
        config,
        settings,
        study_name=study_name,
        progress=make_progress(quiet=quiet),
        create=False,
        source=str(study_file),
    )
    budget = meta.stored_budget(runner.study, runner.config)
    try:
        runner.run(n_trials=budget.get("n_trials"), timeout=meta.remaining(budget))
    except BaseException as exc:
        runner.close_study_run(stopped_by=exc)
        raise
    runner.close_study_run()


@command(app, "validate")
def validate(
    study_file: Path = typer.Argument(..., help="The study file to check."),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Check the file, print the resolved config and the search space; nothing is written anywhere."""
    from hpo.running.search_space import describe

    config = load_study(study_file)
    settings = _settings(config, storage, tracking_uri, source=study_file)
    _check_study(study_file, config, settings)
    resolved = study_to_yaml(config)
    typer.echo(redact(resolved))
    typer.echo(f"# storage: {redact(settings.storage)}\n# tracking_uri: {redact(settings.tracking_uri)}")
    typer.echo(f"# objective: {config.load_objective().describe()}")
    _print_table(f"search space of {config.name}", describe(config))
    typer.echo(f"{study_file}: valid", err=True)


@command(app, "status")
def status(
    study: str | None = typer.Argument(
        None, help="A study name or study file; without it, every study in the storage."
    ),
    storage: str | None = StorageOption,
    as_json: bool = JsonOption,
) -> None:
    """Studies, or one study's trials: state, value, params, duration, MLflow run id."""
    from hpo.running import results as results

    if study is None:
        settings = resolve_settings(storage_flag=storage)
        rows = results.study_summaries(settings.storage, field=settings.storage_field)
    else:
        rows = results.trials_table(results.load(results.resolve_study_ref(study, storage=storage)))
    records = _records(rows)
    if as_json:
        typer.echo(json.dumps(records, indent=2))
    else:
        _print_table("studies" if study is None else f"trials of {study}", records)


@command(app, "best")
def best(
    study: str = typer.Argument(..., help="A study name or study file."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many trials."),
    storage: str | None = StorageOption,
    as_json: bool = JsonOption,
) -> None:
    """The best trials and their params."""
    from hpo.running import results as results

    loaded = results.load(results.resolve_study_ref(study, storage=storage))
    metrics = results.study_metrics(loaded)
    rows = [results.trial_row(t, metrics) for t in results.best_trials(loaded, top_k)]
    if not rows:
        raise HpoError(f"study {loaded.study_name!r} has no complete trial yet")
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        _print_table(f"best {len(rows)} of {loaded.study_name}", rows)


@command(app, "reconcile")
def reconcile_command(
    study: str = typer.Argument(..., help="A study name or study file."),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Repair leftovers of crashes on both sides and backfill MLflow runs missing for finished trials."""
    from hpo.running import results as results
    from hpo.running.meta import stored_config
    from hpo.running.reconcile import reconcile
    from hpo.running.tracking import Tracker

    ref = results.resolve_study_ref(study, storage=storage, tracking_uri=tracking_uri)
    loaded = results.load(ref)
    config = stored_config(loaded)
    heartbeat = config.execution
    storage_obj = results.open_existing(
        ref.settings.storage,
        field=ref.settings.storage_field,
        heartbeat_interval=heartbeat.heartbeat_interval,
        grace_period=heartbeat.grace_period,
        max_retry=heartbeat.max_retry,
    )
    import optuna

    loaded = optuna.load_study(study_name=ref.name, storage=storage_obj)
    report = reconcile(loaded, Tracker(ref.settings.tracking_uri, ref.name), config)
    for line in report.lines():
        typer.echo(line)


def _records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON values: NaN (a trial's value can be NaN) becomes null."""
    import math

    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return "" if value is None else str(value)


_RICH_ROWS_AT_MOST = 200  # rich lays a table out at about 10 ms a row: 10,000 trials took minutes


def _print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A rich table on stdout; wide tables wrap rather than truncate when not on a terminal. Beyond
    a few hundred rows, plain columns, one line a row (same cells; `--json` is the form for scripts)."""
    console = Console(width=None if sys.stdout.isatty() else 200)
    if not rows:
        console.print(f"{title}: nothing yet")
        return
    if len(rows) > _RICH_ROWS_AT_MOST:
        _print_plain(title, rows)
        return
    table = Table(title=title, show_lines=False)
    for key in rows[0]:
        table.add_column(str(key), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in rows[0]))
    console.print(table)


def _print_plain(title: str, rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    cells = [[_cell(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(str(k)), *(len(line[i]) for line in cells)) for i, k in enumerate(keys)]
    lines = [title, "  ".join(str(k).ljust(w) for k, w in zip(keys, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    sys.stdout.write("\n".join(lines) + "\n")
