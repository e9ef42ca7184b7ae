"""Combining the top models: a weighted mean of their predictions (class probabilities or values).

Greedy forward selection with replacement (Caruana et al., "Ensemble selection from libraries of
models", ICML 2004): start empty, repeatedly add the member (possibly again) that most improves the
ensemble's validation score, and keep the best ensemble seen. Its first step is the best single model,
so the result is never worse on validation than the best member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpo.evaluation._metrics import ScoreFn


@dataclass(frozen=True)
class Ensemble:
    method: str  # "greedy" or "mean"
    weights: list[float]  # one per candidate, summing to 1 (0 = not selected)
    val_score: float | None = None
    history: tuple[float, ...] = ()  # validation score after each greedy step

    @property
    def members(self) -> list[int]:
        return [i for i, w in enumerate(self.weights) if w > 0]


def blend(predictions: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the candidates' predictions (weights need not sum to 1; zeros are skipped)."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("an ensemble needs at least one member with a positive weight")
    out = np.zeros_like(np.asarray(predictions[0], np.float64))
    for p, w in zip(predictions, weights):
        if w > 0:
            out += float(w) * np.asarray(p, np.float64)
    return out / total


def mean_ensemble(
    predictions: Sequence[np.ndarray], targets: np.ndarray | None = None, score: ScoreFn | None = None
) -> Ensemble:
    """Every candidate with the same weight; scored on validation when targets and a score are given."""
    weights = [1.0 / len(predictions)] * len(predictions)
    value = score(blend(predictions, weights), targets) if score is not None and targets is not None else None
    return Ensemble("mean", weights, value)


def greedy_ensemble(
    predictions: Sequence[np.ndarray],
    targets: np.ndarray,
    score: ScoreFn,
    *,
    maximize: bool,
    rounds: int | None = None,
) -> Ensemble:
    """Caruana's forward selection with replacement on validation predictions.

    `rounds` additions are tried (default: twice the number of candidates, at least 10); the returned
    weights are those of the best ensemble seen, ties going to the smaller (earlier) ensemble.
    """
    if not predictions:
        raise ValueError("greedy selection needs at least one candidate")
    rounds = rounds if rounds is not None else max(10, 2 * len(predictions))
    better = (lambda a, b: a > b) if maximize else (lambda a, b: a < b)
    counts = np.zeros(len(predictions), dtype=np.int64)
    running = np.zeros_like(np.asarray(predictions[0], np.float64))
    best_counts, best_value = counts.copy(), None
    history: list[float] = []
    for _ in range(rounds):
        step_value, step_index = None, -1
        size = counts.sum() + 1
        for i, candidate in enumerate(predictions):
            trial = blend([running, candidate], [size - 1, 1]) if size > 1 else np.asarray(candidate, np.float64)
            value = score(trial, targets)
            if step_value is None or better(value, step_value):
                step_value, step_index = value, i
        counts[step_index] += 1
        running = blend(predictions, (counts / counts.sum()).tolist())  # the exact path the result is scored by
        value = score(running, targets)
        history.append(value)
        if best_value is None or better(value, best_value):
            best_value, best_counts = value, counts.copy()
    weights = (best_counts / best_counts.sum()).tolist()
    return Ensemble("greedy", weights, best_value, tuple(history))
