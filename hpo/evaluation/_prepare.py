"""Everything `hpo evaluate` decides before the test split is read: which checkpoints, the ensemble (chosen on
validation predictions), the baselines, the retrained variants and the best model of each family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from hpo.config import StudyConfig
from hpo.config._rules import tta_refusal
from hpo.errors import HpoError, UsageError
from hpo.evaluation._checkpoints import Member, has_checkpoint, load_member
from hpo.evaluation._ensemble import Ensemble, greedy_ensemble, mean_ensemble
from hpo.evaluation._families import best_per_family
from hpo.evaluation._metrics import is_classification, selection_score
from hpo.evaluation._retrain import retrain, retrain_seeds
from hpo.objectives import TTA_META_KEY, Baseline, EvaluationHooks
from hpo.objectives._checkpoint import predictions
from hpo.running.meta import stored_seed
from hpo.running.results import best_trials
from hpo.running.tracking import Tracker

Say = Callable[[str], None]


@dataclass
class Prepared:
    """Everything decided before the test split is read."""

    config: StudyConfig
    hooks: EvaluationHooks
    members: list[Member]
    # per member, one variant per retrain seed (or the checkpoint itself): its models (one per fold) and meta
    variants: list[list[tuple[list[torch.nn.Module], dict[str, Any]]]]
    ensemble: Ensemble | None
    selection: str
    val_scores: list[float]  # per ensemble candidate: the members, then the pooled baselines
    val_targets: np.ndarray | None
    baselines: list[Baseline]
    pooled: list[Baseline]  # baselines that were ensemble candidates too (after the members, in the weights)
    family_best: dict[str, Member]
    seeds: int
    tta: str | None = None  # the test-time augmentation every model was tested with, when evaluate applied one


def prepare(
    study: optuna.Study,
    config: StudyConfig,
    tracker: Tracker,
    folder: Path,
    *,
    top_k: int,
    method: str,
    seeds: int,
    device: torch.device,
    notes: list[str],
    say: Say,
    tta: str | None = None,
) -> Prepared:
    augment = _tta_hook(config, tta)  # refused before any checkpoint is downloaded
    ranked = best_trials(study, len(study.trials))
    if not ranked:
        raise HpoError(f"study {study.study_name!r} has no complete trial to evaluate")
    chosen: list[optuna.trial.FrozenTrial] = []
    for trial in ranked:
        if len(chosen) == top_k:
            break
        if has_checkpoint(tracker, trial):
            chosen.append(trial)
    if not chosen:
        raise HpoError(
            f"no complete trial of study {study.study_name!r} has a checkpoint in MLflow "
            f"(evaluation.checkpoints: {config.evaluation.checkpoints})"
        )
    if len(chosen) < top_k:
        notes.append(
            f"only {len(chosen)} of the top {top_k} trials have checkpoints "
            f"(the study keeps evaluation.top_k={config.evaluation.top_k})"
        )
    say(f"loading {len(chosen)} checkpoint(s): trials {', '.join(str(t.number) for t in chosen)}")
    members = [load_member(tracker, t, folder / "checkpoints") for t in chosen]
    hooks = members[0].hooks()
    if augment is not None:
        say(f"test-time augmentation {tta}: recomputing the validation predictions")
        for member in members:
            member.models = [augment(model.to(device), tta) for model in member.models]
            val_inputs = hooks.val_split(config.data, member.meta)[0]
            member.recomputed_val_predictions = predictions(hooks, member.models, val_inputs, member.meta)
        notes.append(f"test-time augmentation: {tta} (validation predictions recomputed with it)")
    classification = is_classification(members[0].val_predictions)
    val_metric = next((m for m in config.metrics if m.startswith("val_")), config.metrics[0])
    selection, score_fn, maximize = selection_score(val_metric, classification=classification)

    val_targets = np.asarray(hooks.val_split(config.data, members[0].meta)[1])
    val_scores = (
        [score_fn(np.asarray(m.val_predictions, np.float64), val_targets) for m in members]
        if val_targets is not None
        else []
    )

    fit_baselines = getattr(hooks, "baselines", None)
    baselines: list[Baseline] = (
        fit_baselines(config.data, with_validation=bool(seeds)) if fit_baselines is not None else []
    )
    # Cross-validated, a baseline's validation predictions are out of fold on the trials' own folds: it may
    # then join the greedy ensemble, which so is never worse on those rows than the best thing tried.
    pooled = [b for b in baselines if method == "greedy" and _poolable(config, b, members[0].val_predictions)]
    candidates = [m.val_predictions for m in members] + [np.asarray(b.val_predictions, np.float64) for b in pooled]
    val_scores += [score_fn(c, val_targets) for c in candidates[len(members) :]] if val_targets is not None else []

    chosen_ensemble: Ensemble | None = None
    if method != "none" and len(candidates) < 2:
        notes.append("one member only: no ensemble")
    elif method == "greedy":
        chosen_ensemble = greedy_ensemble(candidates, val_targets, score_fn, maximize=maximize)
    elif method == "mean":
        chosen_ensemble = mean_ensemble(
            [m.val_predictions for m in members], val_targets, score_fn if val_targets is not None else None
        )

    variants: list[list[tuple[list[torch.nn.Module], dict[str, Any]]]] = []
    for member in members:
        if seeds:
            say(f"retraining {member.name} on train+validation with {seeds} seed(s)")
            trial_seed_value = stored_seed(study.trials[member.trial_number], config)
            retrained = retrain(member, config.data, seeds=retrain_seeds(trial_seed_value, seeds), device=device)
            variants.append(
                [([augment(model, tta) if augment is not None else model], meta) for model, meta in retrained]
            )
        else:
            variants.append([([model.to(device) for model in member.models], member.meta)])
        if augment is not None:  # the files the registered models rebuild from say how they were tested
            variants[-1] = [(models, {**meta, TTA_META_KEY: tta}) for models, meta in variants[-1]]

    family_best = best_per_family(study, config, tracker, members, folder)
    return Prepared(
        config,
        hooks,
        members,
        variants,
        chosen_ensemble,
        selection,
        val_scores,
        val_targets,
        baselines,
        pooled,
        family_best,
        seeds,
        tta if augment is not None else None,
    )


def _tta_hook(config: StudyConfig, tta: str | None) -> Any:
    """The objective's `test_time_augmentation` hook when `tta` asks for one, else None; a UsageError
    naming `--tta` for a mode the objective does not offer (a study file's `evaluation.tta` was checked
    when the file was loaded)."""
    if tta is None or tta == "none":
        return None
    objective = config.load_objective().objective
    refusal = tta_refusal(config, objective, tta)
    if refusal is not None:
        raise UsageError(f"--tta: {refusal}")
    hook = getattr(objective.hooks, "test_time_augmentation", None)
    if hook is None:
        raise HpoError(
            f"objective {config.objective} offers test-time augmentation but its evaluation hooks have no "
            "test_time_augmentation(model, mode)"
        )
    return hook


def _poolable(config: StudyConfig, baseline: Baseline, member_predictions: np.ndarray) -> bool:
    """A baseline may join the ensemble when its validation predictions are out of fold on the trials'
    folds and cover the same rows as the members'."""
    if not config.data.cross_validated or baseline.val_predictions is None:
        return False
    return np.shape(baseline.val_predictions) == np.shape(member_predictions)


__all__ = ["Prepared", "Say", "prepare"]
