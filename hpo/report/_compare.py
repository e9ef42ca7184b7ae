"""`hpo compare`: which of two studies found the better model, by how much, whether that is more than
noise, and why — with their learning curves side by side.

Noise is the spread a rerun could produce: the standard deviation over retrain seeds when
`hpo evaluate --retrain-seeds` measured it, else the spread of each study's top trials (a rougher
proxy that mixes hyperparameters and seeds). A gap counts as real when it exceeds twice the larger.

What the two studies did differently is read from their stored study files: every setting whose
effective value differs (a hyperparameter searched in one and fixed in the other, another range, a
different budget). When only regularization settings differ, the comparison is a controlled
experiment and the verdict puts the result down to the regularizer, or says the evidence does not
separate them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo.config.writable import check_folder_writable
from hpo.errors import HpoError, UsageError
from hpo.evaluation import _plots as eval_plots
from hpo.report._curves import metric_units, side_by_side_figure, training_counterpart
from hpo.report._differences import setting_differences
from hpo.report._facts import gather_facts
from hpo.report._html import Page
from hpo.report._report import publish
from hpo.report._verdict import _describe_regularization, verdict
from hpo.running.meta import PARENT_RUN_ATTR, stored_config
from hpo.running.results import StudyRef, load
from hpo.running.tracking import Tracker, TrackingUnavailable


@dataclass
class CompareResult:
    out: Path
    verdict: str
    images: list[str]
    logged_to: list[str]
    notes: list[str]


def compare_studies(ref_a: StudyRef, ref_b: StudyRef, *, out: Path | None = None) -> CompareResult:
    """Write verdict.md, learning_curves.png and index.html to `out`, and log them to both parent runs."""
    out = Path(out) if out is not None else Path("hpo-compare") / f"{ref_a.name}-vs-{ref_b.name}"
    check_folder_writable(out)
    studies = [load(ref_a), load(ref_b)]
    configs = [stored_config(s) for s in studies]
    if configs[0].metrics[0] != configs[1].metrics[0]:
        raise UsageError(
            f"compare: {ref_a.name} optimizes {configs[0].metrics[0]} and {ref_b.name} {configs[1].metrics[0]}; "
            "compare studies of the same metric"
        )
    same = ref_a.name == ref_b.name
    labels = [f"{ref_a.name} (A)", f"{ref_b.name} (B)"] if same else [ref_a.name, ref_b.name]
    trackers = [Tracker(r.settings.tracking_uri, s.study_name) for r, s in zip((ref_a, ref_b), studies)]
    try:
        facts = [gather_facts(s, t, label=label) for s, t, label in zip(studies, trackers, labels)]
    except TrackingUnavailable as exc:
        raise HpoError(f"compare: {exc}") from None
    differences = setting_differences(*configs)
    text = verdict(*facts, differences=differences)
    page = Page(f"hpo compare: {labels[0]} vs {labels[1]}")
    page.heading(f"{labels[0]} vs {labels[1]}", 1)
    with tempfile.TemporaryDirectory(prefix="hpo-compare-") as tmp:
        staging = Path(tmp)
        if facts[0].curves is not None and facts[1].curves is not None:
            units = metric_units(configs[0]) if configs[0].objective == configs[1].objective else {}
            figure = side_by_side_figure(
                facts[0].curves, facts[1].curves, facts[0].metric, names=(labels[0], labels[1]), units=units
            )
            eval_plots.save(figure, staging / "learning_curves.png")
            page.image(
                "learning_curves.png",
                "Best trial of each study: the study metric per epoch (top, shared scale), training vs validation "
                "loss, and "
                "training vs validation metric where the objective logs it (e.g. accuracy).",
            )
        page.heading("Verdict")
        page.preformatted(text)
        page.heading("Facts")
        rows: list[list[Any]] = [
            ["best " + facts[0].metric, facts[0].best_value, facts[1].best_value],
            ["best trial", facts[0].best_trial, facts[1].best_trial],
            ["spread of top trials (std)", facts[0].spread, facts[1].spread],
            ["test " + (facts[0].test_metric or ""), facts[0].test_value, facts[1].test_value],
            ["test, ensemble", facts[0].test_ensemble, facts[1].test_ensemble],
            ["std over retrain seeds", facts[0].seed_std, facts[1].seed_std],
            ["parameters", facts[0].n_params, facts[1].n_params],
            [
                "best epoch / epochs run",
                f"{facts[0].best_epoch} / {facts[0].epochs_run}",
                f"{facts[1].best_epoch} / {facts[1].epochs_run}",
            ],
            ["val/train loss at best epoch", facts[0].overfit_ratio, facts[1].overfit_ratio],
            ["generalization gap: val − train loss at best epoch", facts[0].loss_gap, facts[1].loss_gap],
            [
                f"generalization gap: {training_counterpart(facts[0].metric) or 'train'} vs {facts[0].metric} at best "
                "epoch",
                facts[0].score_gap,
                facts[1].score_gap,
            ],
            ["regularization", _describe_regularization(facts[0]), _describe_regularization(facts[1])],
        ]
        page.table(["", labels[0], labels[1]], rows)
        page.heading("What the study files set differently")
        if differences:
            page.table(["setting", labels[0], labels[1]], [[k, va, vb] for k, (va, vb) in differences.items()])
        else:
            page.paragraph("Nothing but their names.")
        (staging / "verdict.md").write_text(f"# {labels[0]} vs {labels[1]}\n\n{text}", encoding="utf-8")
        (staging / "index.html").write_text(page.render(), encoding="utf-8")
        publish(staging, out)
    logged_to: list[str] = []
    notes: list[str] = []
    for study, tracker in zip(studies, trackers):
        parent = study.user_attrs.get(PARENT_RUN_ATTR)
        if not parent or parent in logged_to:
            continue
        try:
            tracker.log_artifacts(str(parent), out, f"compare/{ref_a.name}-vs-{ref_b.name}")
            logged_to.append(str(parent))
        except TrackingUnavailable as exc:
            notes.append(f"not logged to the parent run of {study.study_name}: {exc}")
    return CompareResult(out=out, verdict=text, images=list(page.images), logged_to=logged_to, notes=notes)
