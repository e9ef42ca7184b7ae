"""What a comparison knows of one study (best value, noise, convergence, overfitting), from Optuna and MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import optuna

from hpo.errors import HpoError
from hpo.evaluation import existing_results
from hpo.evaluation._bootstrap import interval
from hpo.report._curves import Curves, curve_keys, read_curves, training_counterpart
from hpo.running.meta import RUN_ID_ATTR, stored_config
from hpo.running.results import best_trials
from hpo.running.tracking import Tracker

NOISE_FACTOR = 2.0


CONVERGED = 0.05  # "converged" = within 5% of the best value


OVERFIT_RATIO = 1.1  # validation loss more than 10% above training loss at the best epoch


REGULARIZERS = (
    "dropout",
    "weight_decay",
    "l1",
    "batch_norm",
    "label_smoothing",
    "augment_flip",
    "augment_vflip",
    "augment_crop",
    "augment_cutout",
    "augment_jitter",
    "augment_rotation",
    "augment_zoom",
    "augment_shear",
    "augment_noise",
)


# Settings that only regularize: a pair of studies differing in nothing else is a controlled comparison.
REGULARIZATION_SETTINGS = (*REGULARIZERS, "early_stopping_patience", "early_stopping_min_delta")


SPREAD_TOP = 5


@dataclass
class StudyFacts:
    """What the verdict weighs for one study (all from its best trial unless said otherwise)."""

    name: str
    metric: str
    maximize: bool
    best_value: float
    best_trial: int
    spread: float | None = None  # std of the top trials' values
    spread_of: int = 0
    seed_std: float | None = None  # std of the test metric over retrain seeds
    test_metric: str | None = None
    test_value: float | None = None
    test_ensemble: float | None = None
    test_interval: tuple[float, float] | None = None  # 95% bootstrap interval of test_value over the test rows
    n_params: int | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    converged_epoch: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    train_score: float | None = None  # the metric's training counterpart (e.g. train_acc) at the best epoch
    val_score: float | None = None  # the metric itself at the best epoch
    patience: int | None = None
    regularization: dict[str, object] = field(default_factory=dict)
    curves: Curves | None = None

    @property
    def noise(self) -> tuple[float | None, str]:
        if self.seed_std is not None and math.isfinite(self.seed_std):
            return self.seed_std, "std over retrain seeds"
        return self.spread, f"std of the top {self.spread_of} trials"

    @property
    def loss_gap(self) -> float | None:
        """Generalization gap at the best epoch: validation minus training loss."""
        return None if self.train_loss is None or self.val_loss is None else self.val_loss - self.train_loss

    @property
    def score_gap(self) -> float | None:
        """Generalization gap in the metric at the best epoch: how much better it is on training data."""
        if self.train_score is None or self.val_score is None:
            return None
        return self.train_score - self.val_score if self.maximize else self.val_score - self.train_score

    @property
    def overfit_ratio(self) -> float | None:
        if self.train_loss is None or self.val_loss is None or self.train_loss <= 0:
            return None
        return self.val_loss / self.train_loss


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def gather_facts(study: optuna.Study, tracker: Tracker, *, label: str | None = None) -> StudyFacts:
    config = stored_config(study)
    metric = config.metrics[0]
    maximize = config.directions[0] == "maximize"
    top = best_trials(study, SPREAD_TOP)
    if not top:
        raise HpoError(f"study {study.study_name!r} has no complete trial to compare")
    best = top[0]
    values = [t.values[0] for t in top]
    hp = config.trial_hyperparameters(best.params)
    facts = StudyFacts(
        name=label or study.study_name,
        metric=metric,
        maximize=maximize,
        best_value=float(best.values[0]),
        best_trial=best.number,
        spread=float(np.std(values, ddof=1)) if len(values) > 1 else None,
        spread_of=len(values),
        patience=int(hp.get("early_stopping_patience") or 0),
        regularization={k: hp[k] for k in REGULARIZERS if hp.get(k) not in (None, 0, 0.0, False, "none")},
    )
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        summary = tracker.get_run(str(run_id)).data.metrics
        facts.n_params = int(summary["n_params"]) if "n_params" in summary else None
        facts.best_epoch = int(summary["best_epoch"]) if "best_epoch" in summary else None
        curves = read_curves(
            tracker, str(run_id), trial_number=best.number, state=best.state.name, keys=curve_keys(metric)
        )
        facts.curves = curves
        steps, series = curves.get(metric)
        if len(steps):
            facts.epochs_run = int(steps.max()) + 1
            best_value = series.max() if maximize else series.min()
            close = np.abs(series - best_value) <= CONVERGED * max(abs(best_value), 1e-12)
            facts.converged_epoch = int(steps[np.argmax(close)])
        if facts.best_epoch is not None:
            facts.train_loss = curves.at_epoch("train_loss", facts.best_epoch)
            facts.val_loss = curves.at_epoch("val_loss", facts.best_epoch)
            counterpart = training_counterpart(metric)
            facts.train_score = curves.at_epoch(counterpart, facts.best_epoch) if counterpart else None
            facts.val_score = curves.at_epoch(metric, facts.best_epoch)
    evaluation = existing_results(tracker, study.study_name)
    if evaluation is not None and metric.startswith("val_"):
        test_metric = "test_" + metric[len("val_") :]
        facts.test_metric = test_metric
        single, ensemble = evaluation.best("trial"), evaluation.best("ensemble")
        if single is not None:
            facts.test_value = single.metrics.get(test_metric)
            facts.seed_std = single.metrics.get(f"{test_metric}_seed_std")
            facts.test_interval = interval(single.metrics, test_metric)
        if ensemble is not None:
            facts.test_ensemble = ensemble.metrics.get(test_metric)
    return facts
