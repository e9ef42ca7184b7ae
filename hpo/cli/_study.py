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
from typing import TYPE_CHECKING, Any

import typer

from hpo.cli._app import StorageOption, TrackingOption, app, command
from hpo.cli._tables import print_table, records
from hpo.config import check_study_name
from hpo.config.settings import Settings, redact, resolve_settings
from hpo.errors import HpoError, UsageError
from hpo.running.study_ref import resolve_study_ref

if TYPE_CHECKING:  # the schema (pydantic, 0.2 s) is imported by the commands that read a study file
    from hpo.config import StudyConfig

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
        help="Worker processes on this machine sharing the study "
        "(default: execution.trials_per_device per GPU, else 1).",
    ),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
    study_name: str | None = typer.Option(None, "--study-name", help="Study name (default: the file's name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Create or resume the study and run trials until the global budget is met."""
    from hpo.config import load_study

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
        print_table(
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
    all_failed = [r for r in rows if _only_failures(r["complete"], r["pruned"], r["failed"])]
    if all_failed:  # a resumed study has earlier results, but this run's work failed
        names = ", ".join(r["study"] for r in all_failed)
        raise HpoError(
            f"every trial of this run failed in study {names}; see the failure reasons with `hpo status {names}`"
        )


def _only_failures(complete: int, pruned: int, failed: int) -> bool:
    """Trials ran and every one failed: the work failed (exit 1), whatever earlier runs stored."""
    return failed > 0 and complete == 0 and pruned == 0


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
            f"study {runner.study_name}: {counts['complete']} complete, {counts['pruned']} pruned, "
            f"{counts['failed']} failed in this run; "
            f"best {best or '-'}; {complete_total} complete trials stored; MLflow: {_mlflow_where(runner, settings)}",
            err=True,
        )
    bad = [c for c in codes if c != 0]
    runner.close_study_run(stopped_by=HpoError("workers failed") if bad else None)
    if bad:
        raise HpoError(
            f"{len(bad)} of {workers} workers of study {runner.study_name} exited with an error "
            f"(exit codes {bad}); see their output above"
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
    from hpo.config import load_study
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
        f"study {runner.study_name} is ready in {redact(settings.storage)}; "
        f"start workers with: {shlex.join(_worker_hint(study_file, runner.study_name, config))}",
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
    from hpo.config import load_study
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
        summary = runner.run(n_trials=budget.get("n_trials"), timeout=meta.remaining(budget))
    except BaseException as exc:
        runner.close_study_run(stopped_by=exc)
        raise
    runner.close_study_run()
    if _only_failures(summary.completed, summary.pruned, summary.failed):  # a scheduler must see it as failed
        raise HpoError(
            f"every trial this worker ran failed ({summary.failed}) in study {runner.study_name}; "
            f"see the failure reasons with `hpo status {runner.study_name}`"
        )


@command(app, "validate")
def validate(
    study_file: Path = typer.Argument(..., help="The study file to check."),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Check the file, print the resolved config and the search space; nothing is written anywhere."""
    from hpo.config import load_study, study_to_yaml
    from hpo.running.search_space import describe

    config = load_study(study_file)
    settings = _settings(config, storage, tracking_uri, source=study_file)
    _check_study(study_file, config, settings)
    resolved = study_to_yaml(config)
    typer.echo(redact(resolved))
    typer.echo(f"# storage: {redact(settings.storage)}\n# tracking_uri: {redact(settings.tracking_uri)}")
    typer.echo(f"# objective: {config.load_objective().describe()}")
    print_table(f"search space of {config.name}", describe(config))
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
        rows = results.trials_table(results.load(resolve_study_ref(study, storage=storage)))
    found = records(rows)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
    else:
        print_table("studies" if study is None else f"trials of {study}", found)


@command(app, "best")
def best(
    study: str = typer.Argument(..., help="A study name or study file."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many trials."),
    storage: str | None = StorageOption,
    as_json: bool = JsonOption,
) -> None:
    """The best trials and their params."""
    from hpo.running.best_query import best_rows

    ref = resolve_study_ref(study, storage=storage)
    # Straight from Optuna's tables when they are the ones this install knows; else through Optuna.
    rows = best_rows(ref.settings.storage, ref.name, k=top_k, field=ref.settings.storage_field)
    if rows is None:
        from hpo.running import results as results

        loaded = results.load(ref)
        metrics = results.study_metrics(loaded)
        backfilled = results.backfilled_runs(loaded)
        rows = [results.trial_row(t, metrics, backfilled=backfilled) for t in results.best_trials(loaded, top_k)]
    if not rows:
        raise HpoError(f"study {ref.name!r} has no complete trial yet")
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        print_table(f"best {len(rows)} of {ref.name}", rows)


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

    ref = resolve_study_ref(study, storage=storage, tracking_uri=tracking_uri)
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
