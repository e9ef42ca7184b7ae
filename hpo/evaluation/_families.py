"""The best model of each model family (e.g. CIFAR-10's MLP against its CNN), when the study tried several.

Which family a trial's model belongs to is the objective's to say, through its optional evaluation hook
``model_family(hyperparameters) -> str``; an objective without it has one family and no comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from hpo.config import StudyConfig
from hpo.evaluation._checkpoints import Member, has_checkpoint, load_member
from hpo.evaluation._logging import ModelRun, RunLog, test_metrics
from hpo.evaluation._results import FAMILY_PREFIX, ModelResult, family_label
from hpo.objectives import EvaluationHooks
from hpo.objectives._checkpoint import predictions
from hpo.running.meta import BASELINE_TAG, DETAIL_TAG, MODEL_FAMILY_TAG, TRIAL_NUMBER_TAG, TRIAL_RUN_TAG
from hpo.running.results import best_trials
from hpo.running.tracking import Tracker


def best_per_family(
    study: optuna.Study, config: StudyConfig, tracker: Tracker, members: list[Member], folder: Path
) -> dict[str, Member]:
    """The best checkpointed trial of each model family, when the study tried more than one; {} otherwise
    (and for objectives that name no families)."""
    family = getattr(config.load_objective().objective.hooks, "model_family", None)
    if family is None:
        return {}
    ranked = best_trials(study, len(study.trials))
    family_of = {t.number: str(family(config.trial_hyperparameters(t.params))) for t in ranked}
    families = set(family_of.values())
    if len(families) < 2:
        return {}
    by_number = {m.trial_number: m for m in members}
    found: dict[str, Member] = {}
    for trial in ranked:
        family = family_of[trial.number]
        if family in found:
            continue
        if trial.number in by_number:
            found[family] = by_number[trial.number]
        elif has_checkpoint(tracker, trial):
            found[family] = load_member(tracker, trial, folder / "checkpoints")
        if len(found) == len(families):
            break
    return found if len(found) >= 2 else {}


def log_family_best(
    log: RunLog,
    family_best: dict[str, Member],
    hooks: EvaluationHooks,
    logged: list[ModelResult],
    *,
    inputs: torch.Tensor,
    inputs_device: torch.Tensor,
    classes: Any,
    common_tags: dict[str, str],
) -> list[ModelResult]:
    """The best model of each family: tag their runs, evaluating whichever is not a member already."""
    extra: list[ModelResult] = []
    by_trial = {r.trial_number: r for r in logged if r.kind == "trial"}
    for family, member in family_best.items():
        tag = f"{FAMILY_PREFIX}{family}"
        label = f"best {family_label(tag)} ({member.name})"
        if member.trial_number in by_trial:
            by_trial[member.trial_number].baseline = tag
            log.tracker.set_tags(by_trial[member.trial_number].run_id, {BASELINE_TAG: tag})
            continue
        models = [model.to(inputs_device.device) for model in member.models]
        prediction = predictions(hooks, models, inputs_device, member.meta)
        metrics = test_metrics(prediction, np.asarray(log.targets), classes)
        tags = {
            **common_tags,
            BASELINE_TAG: tag,
            TRIAL_NUMBER_TAG: str(member.trial_number),
            TRIAL_RUN_TAG: member.run_id,
            MODEL_FAMILY_TAG: member.family,
            DETAIL_TAG: "best-epoch checkpoint",
        }
        run = ModelRun(
            label=label,
            kind="baseline",
            run_name=f"baseline-best-{family}",
            tags=tags,
            params={"trial_number": member.trial_number, "model": member.family},
            metrics=metrics,
            predictions=prediction,
            classes=classes,
            conv_model=models[0],
            image=inputs[0],
        )
        run_id = log.log(run)
        extra.append(
            ModelResult(label, "baseline", run_id, metrics, member.trial_number, None, "best-epoch checkpoint", tag)
        )
    return extra


__all__ = ["best_per_family", "log_family_best"]
