"""`hpo report`: one HTML page with PNG plots that says what a study found, saved and logged to MLflow.

The report reads the study (Optuna), the trial curves and the evaluation runs (MLflow); it never reads
the test split. Pictures of test images come from the runs `hpo evaluate` logged; before evaluation,
a validation image stands in.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit, safe in workers and CI

import numpy as np
import optuna
from matplotlib import pyplot as plt
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.config.writable import check_folder_writable
from hpo.errors import HpoError, UsageError
from hpo.evaluation import _plots as eval_plots
from hpo.evaluation import existing_results
from hpo.report._curves import (
    CURVE_KEYS,
    Curves,
    curve_keys,
    learning_curves_figure,
    metric_units,
    read_curves,
    squared_counterpart,
)
from hpo.report._evaluation_section import conv_section, evaluation_section
from hpo.report._html import Page, fmt
from hpo.running.meta import PARENT_RUN_ATTR, RUN_ID_ATTR, stored_config
from hpo.running.results import StudyRef, best_trials, listed_trials, load
from hpo.running.tracking import Tracker, TrackingUnavailable

MAX_PRUNED_CURVES = 15
# Importance (fANOVA), parallel coordinates and slices of more complete trials than this are drawn from a
# seeded uniform sample of them: a forest over 4,000 trials and 4,000 lines cost minutes and show no more.
MAX_PLOTTED_TRIALS = 2_000


@dataclass
class ReportResult:
    out: Path
    index: Path
    images: list[str]
    logged_to: str | None
    notes: list[str] = field(default_factory=list)


def publish(staging: Path, out: Path, *, option: str = "--out") -> None:
    """Copy a finished staging folder into `out` (so a failure never leaves a half-written report)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out, dirs_exist_ok=True)
    except OSError as exc:  # the folder changed since it was checked (or a disk filled up)
        raise UsageError(f"{option}: cannot write {out} ({exc.strerror or exc.__class__.__name__})") from None


def save_pyplot(axes: Any, path: Path, *, size: tuple[float, float] = (9, 5)) -> None:
    """Optuna's matplotlib plots return Axes (or an array of them): size and save their figure, then free it."""
    first = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    figure = first.figure
    figure.set_size_inches(*size)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def trial_curves(tracker: Tracker, trials: list[FrozenTrial], metric: str, *, companions: bool = False) -> list[Curves]:
    """The trials' losses and study metric per epoch (and the metric's companions, e.g. train_acc)."""
    keys = curve_keys(metric) if companions else (*CURVE_KEYS, metric) if metric.startswith("val_") else CURVE_KEYS
    out = []
    for t in trials:
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            out.append(read_curves(tracker, str(run_id), trial_number=t.number, state=t.state.name, keys=keys))
    return out


def build_report(ref: StudyRef, *, out: Path | None = None) -> ReportResult:
    """Write index.html and its PNGs to `out` (default ./hpo-report/<study>) and log them to the parent run."""
    out = Path(out) if out is not None else Path("hpo-report") / ref.name
    check_folder_writable(out)
    study = load(ref)
    config = stored_config(study)
    tracker = Tracker(ref.settings.tracking_uri, study.study_name)
    try:
        with tempfile.TemporaryDirectory(prefix="hpo-report-") as tmp:
            staging = Path(tmp)
            page, notes = _write_report(study, config, tracker, staging)
            (staging / "index.html").write_text(page.render(), encoding="utf-8")
            publish(staging, out)
    except TrackingUnavailable as exc:
        raise HpoError(f"report of {study.study_name!r}: {exc}") from None
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    logged_to = None
    if parent:
        try:
            tracker.log_artifacts(str(parent), out, "report")
            logged_to = str(parent)
        except TrackingUnavailable as exc:
            notes.append(f"saved locally but not logged to MLflow: {exc}")
    else:
        notes.append("the study has no MLflow parent run: the report is saved locally only")
    return ReportResult(out=out, index=out / "index.html", images=list(page.images), logged_to=logged_to, notes=notes)


def _light_study(study: optuna.Study, trials: list[FrozenTrial]) -> optuna.Study:
    """An in-memory study of `trials` (read without their curves) for Optuna's plots, which would
    otherwise load every trial's intermediate values from the storage."""
    light = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), directions=study.directions, study_name=study.study_name
    )
    light.add_trials(trials)
    return light


def _sample(study: optuna.Study, *, limit: int = MAX_PLOTTED_TRIALS) -> tuple[optuna.Study, str]:
    """`study`, or an in-memory one with a seeded uniform sample of `limit` of its complete trials, and
    the words a caption adds about it."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) <= limit:
        return study, ""
    chosen = sorted(np.random.default_rng(0).choice(len(done), size=limit, replace=False))
    return _light_study(
        study, [done[i] for i in chosen]
    ), f" (a seeded sample of {limit:,} of the {len(done):,} complete trials)"


def _write_report(study: optuna.Study, config: StudyConfig, tracker: Tracker, folder: Path) -> tuple[Page, list[str]]:
    notes: list[str] = []
    page = Page(f"hpo report: {study.study_name}")
    trials = listed_trials(study)
    plotted = _light_study(study, trials)
    counts = {s.name: sum(1 for t in trials if t.state == s) for s in TrialState}
    metrics = config.metrics
    page.heading(f"Study {study.study_name}", 1)
    page.paragraph(
        f"Objective {config.objective}; {', '.join(f'{m} ({d})' for m, d in zip(metrics, config.directions))}. "
        f"{len(trials)} trials: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed. "
        f"Sampler {config.sampler.type}, pruner {config.pruner.type}. Generated {time.strftime('%Y-%m-%d %H:%M:%S')}."
    )
    top = best_trials(study, max(config.evaluation.top_k, 5))
    if not top:
        page.paragraph("No trial has completed yet: nothing to plot.", note=True)
        return page, notes
    multi = config.is_multi_objective
    if not multi:
        page.paragraph(f"Best {metrics[0]}: {fmt(top[0].values[0])} (trial {top[0].number}).")

    _learning_curves(page, plotted, config, tracker, top, folder)
    _optuna_plots(page, plotted, config, folder, notes)
    _top_table(page, config, tracker, top)
    evaluation = existing_results(tracker, study.study_name)
    evaluation_section(page, evaluation, tracker, folder)
    conv_section(page, config, tracker, evaluation, top, folder)
    for note in notes:
        page.paragraph(f"Note: {note}", note=True)
    return page, notes


def _learning_curves(
    page: Page, study: optuna.Study, config: StudyConfig, tracker: Tracker, top: list[FrozenTrial], folder: Path
) -> None:
    metric = next((m for m in config.metrics if m.startswith("val_")), "val_loss")
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))][-MAX_PRUNED_CURVES:]
    curves = trial_curves(tracker, top[:1], metric, companions=True) + trial_curves(
        tracker, [*top[1:], *pruned], metric
    )
    page.heading("Learning curves")
    if not any(c.series for c in curves):
        page.paragraph("No per-epoch metrics in MLflow for these trials.", note=True)
        return
    units = metric_units(config)
    figure = learning_curves_figure(
        curves,
        metric,
        best=top[0].number,
        title=f"{study.study_name}: best {len(top)} and {len(pruned)} pruned trials",
        units=units,
    )
    eval_plots.save(figure, folder / "learning_curves.png")
    unit_note = f" Losses are in {units['val_loss']}." if units.get("val_loss") else ""
    page.image(
        "learning_curves.png",
        f"{metric} per epoch of the best trials (best in red) and of pruned trials "
        "(grey, dashed: stopped early by the pruner); "
        f"then the training and validation loss of trial {top[0].number} and, where logged, "
        "its training vs validation metric "
        f"and the MSE beside the RMSE.{unit_note}",
    )
    squared = squared_counterpart(metric)
    best = next((c for c in curves if c.trial_number == top[0].number), None)
    if squared is None or best is None:
        return
    best_epoch = _int(tracker.get_run(best.run_id).data.metrics.get("best_epoch"))
    value = best.at_epoch(squared, best_epoch) if best_epoch is not None else None
    if value is not None:
        unit = f" {units[squared]}" if squared in units else ""
        page.paragraph(
            f"At its best epoch ({best_epoch}), trial {top[0].number} has {squared} {fmt(value)}{unit} "
            f"({metric} {fmt(value**0.5)})."
        )


def _optuna_plots(page: Page, study: optuna.Study, config: StudyConfig, folder: Path, notes: list[str]) -> None:
    from optuna.visualization import matplotlib as ovm

    page.heading("Search")
    metrics = config.metrics
    target: dict[str, Any] = (
        {"target": lambda t: t.values[0], "target_name": metrics[0]}
        if config.is_multi_objective
        else {"target_name": metrics[0]}
    )
    sample, sampled = _sample(study)
    shown = _most_important(sample, target)
    subset = f" (the {len(shown)} most important)" if shown else ""
    plots: list[tuple[str, str, Any, tuple[float, float]]] = []
    if config.is_multi_objective:
        plots.append(
            (
                "pareto_front.png",
                f"Pareto front of {' vs '.join(metrics)}: the trade-offs no other trial beats on every objective.",
                lambda: ovm.plot_pareto_front(study, target_names=metrics),
                (8, 6),
            )
        )
        for i, name in enumerate(metrics):
            plots.append(
                (
                    f"optimization_history_{i}.png",
                    f"{name} of each trial in order.",
                    lambda i=i, name=name: ovm.plot_optimization_history(
                        study, target=lambda t: t.values[i], target_name=name
                    ),
                    (9, 5),
                )
            )
    else:
        plots.append(
            (
                "optimization_history.png",
                f"{metrics[0]} of each complete trial in order, and the best so far.",
                lambda: ovm.plot_optimization_history(study, target_name=metrics[0]),
                (9, 5),
            )
        )
    plots += [
        (
            "param_importances.png",
            f"Which hyperparameters mattered for {metrics[0]} (fANOVA importance over complete trials{sampled}).",
            lambda: ovm.plot_param_importances(sample, **target),
            (9, 5),
        ),
        (
            "parallel_coordinate.png",
            f"Each complete trial{sampled} as a line through its hyperparameters{subset}; colour is {metrics[0]}.",
            lambda: ovm.plot_parallel_coordinate(sample, params=shown, **target),
            (13, 6),
        ),
        (
            "slice.png",
            f"{metrics[0]} against each hyperparameter{subset}{sampled}; colour is the trial number.",
            lambda: ovm.plot_slice(sample, params=shown, **target),
            (3.2 * max(len(shown or sample.best_trials[0].params), 1), 4),
        ),
    ]
    for file, caption, make, size in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                axes = make()
            save_pyplot(axes, folder / file, size=size)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:
            plt.close("all")
            notes.append(
                f"{file[:-4].replace('_', ' ')} not drawn: "
                f"{str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}"
            )
            continue
        page.image(file, caption)


def _most_important(study: optuna.Study, target: dict[str, Any], *, limit: int = 6) -> list[str] | None:
    """The `limit` most important parameters, so slice and parallel plots stay readable (None: all)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = list(optuna.importance.get_param_importances(study, target=target.get("target")))
    except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
        return None
    return ranked[:limit] if len(ranked) > limit else None


def _top_table(page: Page, config: StudyConfig, tracker: Tracker, top: list[FrozenTrial]) -> None:
    page.heading("Top trials")
    names = sorted({k for t in top for k in t.params})
    rows = []
    for rank, t in enumerate(top, start=1):
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        summary = tracker.get_run(str(run_id)).data.metrics if run_id else {}
        n_params = summary.get("n_params")
        rows.append(
            [
                rank,
                t.number,
                *(t.values or []),
                int(n_params) if n_params is not None else None,
                _int(summary.get("best_epoch")),
                *(t.params.get(n) for n in names),
                run_id or "",
            ]
        )
    page.table(["rank", "trial", *config.metrics, "n_params", "best epoch", *names, "MLflow run"], rows)


def _int(value: float | None) -> int | None:
    return int(value) if value is not None and math.isfinite(value) else None
