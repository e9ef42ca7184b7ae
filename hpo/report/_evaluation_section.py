"""The report's test-evaluation section: `hpo evaluate`'s results, its plots and, for convolutional models, their
filters and feature maps (from the evaluation, or from a checkpoint before the study is evaluated)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from optuna.trial import FrozenTrial

from hpo.config import StudyConfig
from hpo.evaluation import EvaluationResult
from hpo.evaluation import _plots as eval_plots
from hpo.evaluation._bootstrap import LEVEL, RESAMPLES, with_interval
from hpo.evaluation._checkpoints import has_checkpoint, load_member
from hpo.report._html import Page
from hpo.running.tracking import Tracker

EVALUATION_PLOTS = ("predicted_vs_actual.png", "residuals.png", "confusion_matrix.png", "per_class_accuracy.png")
MAX_CONV_CANDIDATES = 3  # checkpoints loaded to find a convolutional model before `hpo evaluate` ran


def evaluation_section(page: Page, evaluation: EvaluationResult | None, tracker: Tracker, folder: Path) -> None:
    page.heading("Test evaluation")
    if evaluation is None:
        page.paragraph(
            "Not evaluated yet: `hpo evaluate` reads the test split once and logs the results this section shows.",
            note=True,
        )
        return
    page.paragraph(f"Evaluated {evaluation.evaluated_at or ''} by `hpo evaluate` (the only reader of the test split).")
    headline = evaluation.headline
    columns = [f"{m} [{LEVEL:.0%} CI]" for m in headline]
    page.table(
        ["model", "kind", *columns, "detail", "MLflow run"],
        [
            [r.label, r.kind, *(with_interval(r.metrics, m) for m in headline), r.detail, r.run_id]
            for r in evaluation.results
        ],
    )
    page.paragraph(
        f"Intervals: {LEVEL:.0%} bootstrap confidence intervals over the test rows "
        f"({RESAMPLES:,} seeded resamples, the same for every model).",
        note=True,
    )
    ensemble = evaluation.best("ensemble")
    if ensemble is not None:
        page.paragraph(f"{ensemble.label} members and weights: {ensemble.detail}.")
    comparison = evaluation.family_comparison()
    if comparison:
        page.paragraph(comparison[0].upper() + comparison[1:] + ".")
    for result in (evaluation.best("trial"), ensemble):
        if result is None:
            continue
        available = set(tracker.list_artifacts(result.run_id, "plots"))
        for plot in EVALUATION_PLOTS:
            if f"plots/{plot}" in available:
                name = f"test_{result.kind}_{plot}"
                _download_to(tracker, result.run_id, f"plots/{plot}", folder / name)
                page.image(name, f"{result.label} on the test split: {plot[:-4].replace('_', ' ')}.")


def _download_to(tracker: Tracker, run_id: str, path: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = tracker.download_artifacts(run_id, path, tmp)
        shutil.copyfile(local, target)


def conv_section(
    page: Page,
    config: StudyConfig,
    tracker: Tracker,
    evaluation: EvaluationResult | None,
    top: list[FrozenTrial],
    folder: Path,
) -> None:
    """Filters and feature maps of every convolutional layer of the best convolutional model, when the
    study has one: of test image 0 as `hpo evaluate` logged them, else of a validation image."""
    if evaluation is not None:
        for result in evaluation.results:
            if f"plots/conv/{eval_plots.CONV_INDEX}" in set(tracker.list_artifacts(result.run_id, "plots/conv")):
                page.heading("What each convolutional layer learned")
                with tempfile.TemporaryDirectory() as tmp:
                    local = tracker.download_artifacts(result.run_id, "plots/conv", tmp)
                    entries = json.loads((local / eval_plots.CONV_INDEX).read_text(encoding="utf-8"))
                    for entry in entries:
                        shutil.copyfile(local / entry["file"], folder / f"conv_{entry['file']}")
                page.paragraph(
                    f"From `hpo evaluate`: {result.label} on test image 0, layer by layer; "
                    "wide layers show their first channels."
                )
                for entry in entries:
                    page.image(f"conv_{entry['file']}", f"{entry['caption']} (from `hpo evaluate`)")
                return
    if not config.load_objective().objective.is_full:
        return  # no model to look into
    with tempfile.TemporaryDirectory() as tmp:
        checkpointed = [t for t in top if has_checkpoint(tracker, t)][:MAX_CONV_CANDIDATES]
        member = next(
            (
                m
                for m in (load_member(tracker, t, Path(tmp)) for t in checkpointed)
                if eval_plots.first_conv(m.models[0]) is not None
            ),
            None,
        )
    if member is None:
        return
    images, _ = member.hooks().val_split(config.data, member.meta)
    pictures = eval_plots.conv_pictures(member.models[0], images[0], label=member.name, image_name="validation image 0")
    if not pictures:
        return
    page.heading("What each convolutional layer learned")
    for picture in pictures:
        eval_plots.save(picture.figure, folder / f"conv_{picture.file}")
    page.paragraph(
        f"{member.name} on validation image 0, layer by layer "
        "(the study is not evaluated yet, so no test image is shown); "
        "wide layers show their first channels."
    )
    for picture in pictures:
        page.image(f"conv_{picture.file}", picture.caption)
