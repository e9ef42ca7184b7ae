"""Where a study stands: counts by state and its best trial, for the progress display, the parent run and `hpo run`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.running.meta import REASON_ATTR
from hpo.running.tracking import StudySummary


@dataclass
class RunSummary:
    study_name: str
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: Any = None
    best_trial: int | None = None
    seconds: float = 0.0


def study_summary(study: optuna.Study, config: StudyConfig) -> StudySummary:
    """Counts by state and the best trial (single-objective) or the Pareto front's size, from Optuna."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    result = StudySummary(study.study_name, counts)
    if config.is_multi_objective:
        result.pareto_size = len(study.best_trials) if counts.get("COMPLETE") else 0
        return result
    complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE and t.values}
    if complete:
        best = complete[_best(config, [(t.values[0], n) for n, t in complete.items()])[1]]
        result.best_values, result.best_trial, result.best_params = (
            {config.metrics[0]: float(best.values[0])},
            best.number,
            dict(best.params),
        )
    return result


def summary_interval(flush_seconds: float, trials: list[FrozenTrial]) -> float:
    """Seconds a worker waits between two summaries of the study on its parent run: with N trials running
    (N busy workers, as of the last ask) each waits N flush intervals, so the study as a whole is summarised
    about once per interval. Every worker sending one per interval was six a second from 32 workers, each a
    read of every trial and a write."""
    return flush_seconds * max(1, sum(t.state == TrialState.RUNNING for t in trials))


def summary_reason(study: optuna.Study, number: int) -> str:
    trial = study.trials[number]
    return str(trial.user_attrs.get(REASON_ATTR, "no reason recorded"))


def best_text(study: optuna.Study, config: StudyConfig) -> str | None:
    """The best trial in a few words (`val_rmse=2.95 (trial 4)`), or the Pareto front's size; None before any."""
    try:
        if config.is_multi_objective:
            return f"{len(study.best_trials)} on the Pareto front"
        best = study.best_trial
        return _best_words(config, best.values[0], best.number)
    except ValueError:
        return None


def best_known_text(
    study: optuna.Study, config: StudyConfig, trials: list[FrozenTrial], *, number: int, values: list[float] | None
) -> str | None:
    """:func:`best_text` from trials already read and trial `number`'s `values` (None unless it completed),
    without a query: what a worker shows after each trial (another worker's trial finished since the
    read shows after this worker's next one). The Pareto front is counted by Optuna."""
    if config.is_multi_objective:
        return best_text(study, config)
    known = [(t.values[0], t.number) for t in trials if t.state == TrialState.COMPLETE and t.values]
    if values:
        known.append((values[0], number))
    if not known:
        return None
    return _best_words(config, *_best(config, known))


def _best(config: StudyConfig, known: list[tuple[float, int]]) -> tuple[float, int]:
    """The best (value, trial number) by the study's first direction; of equals, the first trial."""
    sign = -1 if config.directions[0] == "maximize" else 1
    return min(known, key=lambda k: (sign * k[0], k[1]))


def _best_words(config: StudyConfig, value: float, number: int) -> str:
    return f"{config.metrics[0]}={value:.4g} (trial {number})"


def fill_best(summary: RunSummary, study: optuna.Study, config: StudyConfig) -> None:
    """The study's best value(s) and trial, on a run's summary."""
    try:
        if config.is_multi_objective:
            summary.best_value = [t.values for t in study.best_trials]
        else:
            summary.best_value = study.best_value
            summary.best_trial = study.best_trial.number
    except ValueError:
        pass


__all__ = [
    "RunSummary",
    "best_known_text",
    "best_text",
    "fill_best",
    "study_summary",
    "summary_interval",
    "summary_reason",
]
