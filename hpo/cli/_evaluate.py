"""Result commands: evaluate (the once-only test evaluation), report and compare."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hpo.cli._app import StorageOption, TrackingOption, app, command


class EnsembleMethod(str, Enum):
    greedy = "greedy"
    mean = "mean"
    none = "none"


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)


@command(app, "evaluate")
def evaluate(
    study: str = typer.Argument(..., help="Study name, or its study file."),
    top_k: int | None = typer.Option(
        None, "--top-k", min=1, help="How many of the best trials to evaluate (default: evaluation.top_k)."
    ),
    ensemble: EnsembleMethod | None = typer.Option(
        None, "--ensemble", help="How to combine them (default: evaluation.ensemble)."
    ),
    retrain_seeds: int | None = typer.Option(
        None,
        "--retrain-seeds",
        min=0,
        help="Retrain each on train+validation over N seeds first (default: evaluation.retrain_seeds).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Evaluate again although test results exist (reads the test split again)."
    ),
    tta: str | None = typer.Option(
        None,
        "--tta",
        help="Test-time augmentation for every model, e.g. flip or flip_translate (CIFAR-10); "
        "validation predictions are recomputed with it (default: evaluation.tta).",
    ),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Final test evaluation of the best model(s), ensembles and baselines, logged to MLflow.
    Reads the test split once."""
    from hpo.evaluation import evaluate as run_evaluation
    from hpo.running.study_ref import resolve_study_ref

    ref = resolve_study_ref(study, storage=storage, tracking_uri=tracking_uri)
    console = _console()
    result = run_evaluation(
        ref,
        top_k=top_k,
        ensemble=ensemble.value if ensemble is not None else None,
        retrain_seeds_count=retrain_seeds,
        force=force,
        tta=tta,
        say=lambda message: console.print(message, highlight=False),
    )
    if result.existing:
        console.print(
            f"test results for study {result.study_name} already exist (evaluated {result.evaluated_at or 'earlier'}); "
            "the test split was not read again. Use --force to evaluate again.",
            highlight=False,
        )
    table = Table(title=f"test results: {result.study_name}")
    from hpo.evaluation._bootstrap import LEVEL, with_interval

    level = f"{LEVEL:.0%}"
    for column in ("model", "kind", *(f"{m} [{level} CI]" for m in result.headline), "run id", "detail"):
        table.add_column(column, overflow="fold")
    for r in result.results:
        table.add_row(r.label, r.kind, *(with_interval(r.metrics, m) for m in result.headline), r.run_id, r.detail)
    console.print(table)
    comparison = result.family_comparison()
    if comparison:
        console.print(comparison, highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    for name, uri in result.registered.items():
        console.print(f"registered model {name}: {uri}", highlight=False)


@command(app, "report")
def report(
    study: str = typer.Argument(..., help="Study name, or its study file."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: ./hpo-report/<study>)."),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
) -> None:
    """An HTML page with PNG plots of the study (and its test evaluation, if any), saved and logged to MLflow."""
    from hpo.report import build_report
    from hpo.running.study_ref import resolve_study_ref

    ref = resolve_study_ref(study, storage=storage, tracking_uri=tracking_uri)
    result = build_report(ref, out=out)
    console = _console()
    console.print(f"report: {result.index} ({len(result.images)} images)", highlight=False)
    if result.logged_to:
        console.print(f"logged to MLflow run {result.logged_to} under report/", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)


@command(app, "compare")
def compare(
    study_a: str = typer.Argument(..., help="First study (name or study file)."),
    study_b: str = typer.Argument(..., help="Second study (name or study file)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: ./hpo-compare/<A>-vs-<B>)."),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Side-by-side learning curves and a written verdict: which study's model did better, by how much, and why."""
    from hpo.report import compare_studies
    from hpo.running.study_ref import resolve_study_ref

    refs = [resolve_study_ref(s, storage=storage, tracking_uri=tracking_uri) for s in (study_a, study_b)]
    result = compare_studies(refs[0], refs[1], out=out)
    console = _console()
    console.print(result.verdict, highlight=False, markup=False)
    console.print(
        f"saved to {result.out}; logged to MLflow run(s) {', '.join(result.logged_to) or 'none'}", highlight=False
    )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
