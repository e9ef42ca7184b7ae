"""Final evaluation: the best models tested once, their ensembles, and baselines on the same split.

May import config, objectives, data (the counted test reader), training and running; imported by report and the CLI.
"""

from hpo.evaluation._checkpoints import Member, load_member
from hpo.evaluation._ensemble import Ensemble, blend, greedy_ensemble, mean_ensemble
from hpo.evaluation._evaluate import evaluate
from hpo.evaluation._metrics import classification_metrics, confusion_matrix, regression_metrics, score, selection_score
from hpo.evaluation._predict import Prediction, Predictor, load_predictor
from hpo.evaluation._results import (
    EvaluationResult,
    ModelResult,
    existing_results,
    find_evaluations,
    headline_metrics,
)

__all__ = [
    "Ensemble",
    "EvaluationResult",
    "Member",
    "ModelResult",
    "Prediction",
    "Predictor",
    "blend",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "existing_results",
    "find_evaluations",
    "greedy_ensemble",
    "headline_metrics",
    "load_member",
    "load_predictor",
    "mean_ensemble",
    "regression_metrics",
    "score",
    "selection_score",
]
