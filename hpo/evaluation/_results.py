"""Reading an evaluation back: the models logged, their test metrics, and the earlier evaluation of a study
(found before any data is read, so asking again never reads the test split twice)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpo.running.meta import (
    BASELINE_TAG,
    DETAIL_TAG,
    EVALUATED_AT_TAG,
    EVALUATED_ROLES,
    KIND_TAG,
    LABEL_TAG,
    RANK_TAG,
    ROLE_TAG,
    STUDY_NAME_TAG,
    SUPERSEDED_TAG,
    TRIAL_NUMBER_TAG,
)
from hpo.running.tracking import Tracker

FAMILY_PREFIX = "best_"
HIGHER_IS_BETTER = ("test_acc", "test_macro_f1", "test_r2")


@dataclass
class ModelResult:
    """One evaluated model as logged: what it is, its MLflow run and its metrics."""

    label: str
    kind: str
    run_id: str
    metrics: dict[str, float]
    trial_number: int | None = None
    rank: int | None = None
    detail: str = ""
    baseline: str | None = None  # the baseline it stands for (e.g. linear_regression, or best_<model> per model family)


@dataclass
class EvaluationResult:
    study_name: str
    existing: bool  # True: nothing was read, these are the results of an earlier evaluation
    results: list[ModelResult]
    evaluated_at: str | None = None
    registered: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    headline: list[str] = field(default_factory=list)  # the metric names worth a column

    def best(self, kind: str) -> ModelResult | None:
        ranked = [r for r in self.results if r.kind == kind]
        return min(ranked, key=lambda r: r.rank if r.rank is not None else 1_000_000) if ranked else None

    def summary(self, *, retrain_seeds: int, selection: str) -> dict[str, Any]:
        """The evaluation as `evaluation/summary.json` on the study's parent run."""
        return {
            "study": self.study_name,
            "evaluated_at": self.evaluated_at,
            "retrain_seeds": retrain_seeds,
            "selection_metric": selection,
            "models": [
                {
                    "label": r.label,
                    "kind": r.kind,
                    "run_id": r.run_id,
                    "trial_number": r.trial_number,
                    "rank": r.rank,
                    "detail": r.detail,
                    "metrics": r.metrics,
                }
                for r in self.results
            ],
            "registered": self.registered,
        }

    def family_comparison(self) -> str | None:
        """The best model of each model family (value of `model`) on the headline test metric, when the
        study tried several families: e.g. its best MLP against its best CNN."""
        found = [r for r in self.results if r.baseline and r.baseline.startswith(FAMILY_PREFIX)]
        metric = self.headline[0] if self.headline else None
        if len(found) < 2 or metric is None or any(metric not in r.metrics for r in found):
            return None
        higher = metric in HIGHER_IS_BETTER
        ranked = sorted(found, key=lambda r: -r.metrics[metric] if higher else r.metrics[metric])
        parts = " vs ".join(
            f"best {family_label(r.baseline)} (trial {r.trial_number}) {metric}={r.metrics[metric]:.4f}" for r in found
        )
        first, second = ranked[0], ranked[1]
        gap = abs(first.metrics[metric] - second.metrics[metric])
        verdict = "a tie" if gap == 0 else f"the {family_label(first.baseline)} is better by {gap:.4f}"
        return f"{parts}: {verdict}"


def family_label(baseline: str | None) -> str:
    """'best_cnn' -> 'CNN': how a model family is named in sentences."""
    return (baseline or "").removeprefix(FAMILY_PREFIX).upper()


def order(result: ModelResult) -> tuple[int, int, str]:
    return (
        {"trial": 0, "ensemble": 1, "baseline": 2}.get(result.kind, 3),
        result.rank if result.rank is not None else 0,
        result.label,
    )


def find_evaluations(tracker: Tracker, study_name: str) -> list[Any]:
    """The finished, not superseded evaluation and ensemble runs of a study (newest evaluation only)."""
    runs = []
    for role in EVALUATED_ROLES:
        runs.extend(tracker.search_runs({ROLE_TAG: role, STUDY_NAME_TAG: study_name}, status="FINISHED"))
    return [r for r in runs if r.data.tags.get(SUPERSEDED_TAG) != "true"]


def result_from_run(run: Any) -> ModelResult:
    tags = run.data.tags
    number = tags.get(TRIAL_NUMBER_TAG)
    rank = tags.get(RANK_TAG)
    return ModelResult(
        label=tags.get(LABEL_TAG, run.info.run_name or run.info.run_id),
        kind=tags.get(KIND_TAG, "trial"),
        run_id=run.info.run_id,
        metrics=dict(run.data.metrics),
        trial_number=int(number) if number is not None else None,
        rank=int(rank) if rank is not None else None,
        detail=tags.get(DETAIL_TAG, ""),
        baseline=tags.get(BASELINE_TAG),
    )


def headline_metrics(metrics: dict[str, float]) -> list[str]:
    """The test metrics a table shows: no per-class accuracies, no seed statistics."""
    order = ("test_rmse", "test_mae", "test_r2", "test_mse", "test_acc", "test_macro_f1", "test_loss")
    return [m for m in order if m in metrics]


def existing_results(tracker: Tracker, study_name: str) -> EvaluationResult | None:
    runs = find_evaluations(tracker, study_name)
    if not runs:
        return None
    results = sorted((result_from_run(r) for r in runs), key=order)
    stamp = max((r.data.tags.get(EVALUATED_AT_TAG, "") for r in runs), default="") or None
    return EvaluationResult(
        study_name, existing=True, results=results, evaluated_at=stamp, headline=headline_metrics(results[0].metrics)
    )


__all__ = [
    "EVALUATED_AT_TAG",
    "EvaluationResult",
    "ModelResult",
    "existing_results",
    "family_label",
    "find_evaluations",
    "headline_metrics",
    "order",
    "result_from_run",
]
