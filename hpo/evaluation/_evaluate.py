"""`hpo evaluate`: the one honest look at the test split, for the best models, their ensemble and baselines.

Order matters and is the point of this module:

1. look for test results already logged (then show them, unless --force) — before any data is read;
2. rebuild the top-k checkpoints, choose the ensemble on *validation* predictions, fit the baselines
   and optionally retrain on train+validation — all without the test split;
3. read the test split once (the objective's `test_split`, counted in :data:`hpo.data.TEST_SPLIT_READS`);
4. log one `hpo.role=evaluation` run per model and one `hpo.role=ensemble` run, children of the
   study's parent run, with metrics, predictions and plots; register the best single model and the
   ensemble in the MLflow model registry.

The best single model is the best on validation, never the best on test: choosing by test would
turn the test split into a second validation split.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

import hpo
from hpo.config import StudyConfig
from hpo.data._test_guard import reading_test_split
from hpo.errors import HpoError, UsageError
from hpo.evaluation import _plots as plots
from hpo.evaluation._bootstrap import bootstrap_intervals
from hpo.evaluation._checkpoints import Member, has_checkpoint, load_member
from hpo.evaluation._ensemble import Ensemble, blend, greedy_ensemble, mean_ensemble
from hpo.evaluation._metrics import confusion_matrix, is_classification, score, selection_score
from hpo.evaluation._retrain import retrain, retrain_seeds
from hpo.objectives import Baseline, EvaluationHooks
from hpo.objectives._checkpoint import Checkpoint, predictions
from hpo.running.results import StudyRef, best_trials, load
from hpo.running.runner import PARENT_RUN_ATTR, SEED_ATTR, check_data_unchanged, stored_config, trial_seed
from hpo.running.tracking import Tracker, TrackingUnavailable
from hpo.training.device import pick_device

EVALUATED_ROLES = ("evaluation", "ensemble")
SUPERSEDED_TAG = "hpo.superseded"
KIND_TAG = "hpo.kind"  # trial | ensemble | baseline
LABEL_TAG = "hpo.label"
EVALUATED_AT_TAG = "hpo.evaluated_at"
MODEL_DEPENDENCIES = ("torch", "numpy", "mlflow", "optuna", "pandas", "pydantic", "pyyaml")

Say = Callable[[str], None]


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
            f"best {_family_label(r.baseline)} (trial {r.trial_number}) {metric}={r.metrics[metric]:.4f}" for r in found
        )
        first, second = ranked[0], ranked[1]
        gap = abs(first.metrics[metric] - second.metrics[metric])
        verdict = "a tie" if gap == 0 else f"the {_family_label(first.baseline)} is better by {gap:.4f}"
        return f"{parts}: {verdict}"


FAMILY_PREFIX = "best_"
HIGHER_IS_BETTER = ("test_acc", "test_macro_f1", "test_r2")


def _family_label(baseline: str | None) -> str:
    """'best_cnn' -> 'CNN': how a model family is named in sentences."""
    return (baseline or "").removeprefix(FAMILY_PREFIX).upper()


def _order(result: ModelResult) -> tuple[int, int, str]:
    return (
        {"trial": 0, "ensemble": 1, "baseline": 2}.get(result.kind, 3),
        result.rank if result.rank is not None else 0,
        result.label,
    )


def find_evaluations(tracker: Tracker, study_name: str) -> list[Any]:
    """The finished, not superseded evaluation and ensemble runs of a study (newest evaluation only)."""
    runs = []
    for role in EVALUATED_ROLES:
        runs.extend(tracker.search_runs({"hpo.role": role, "optuna.study_name": study_name}, status="FINISHED"))
    return [r for r in runs if r.data.tags.get(SUPERSEDED_TAG) != "true"]


def result_from_run(run: Any) -> ModelResult:
    tags = run.data.tags
    number = tags.get("optuna.trial_number")
    rank = tags.get("hpo.rank")
    return ModelResult(
        label=tags.get(LABEL_TAG, run.info.run_name or run.info.run_id),
        kind=tags.get(KIND_TAG, "trial"),
        run_id=run.info.run_id,
        metrics=dict(run.data.metrics),
        trial_number=int(number) if number is not None else None,
        rank=int(rank) if rank is not None else None,
        detail=tags.get("hpo.detail", ""),
        baseline=tags.get("hpo.baseline"),
    )


def headline_metrics(metrics: dict[str, float]) -> list[str]:
    """The test metrics a table shows: no per-class accuracies, no seed statistics."""
    order = ("test_rmse", "test_mae", "test_r2", "test_mse", "test_acc", "test_macro_f1", "test_loss")
    return [m for m in order if m in metrics]


def existing_results(tracker: Tracker, study_name: str) -> EvaluationResult | None:
    runs = find_evaluations(tracker, study_name)
    if not runs:
        return None
    results = sorted((result_from_run(r) for r in runs), key=_order)
    stamp = max((r.data.tags.get(EVALUATED_AT_TAG, "") for r in runs), default="") or None
    return EvaluationResult(
        study_name, existing=True, results=results, evaluated_at=stamp, headline=headline_metrics(results[0].metrics)
    )


@dataclass
class _Prepared:
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


def evaluate(
    ref: StudyRef,
    *,
    top_k: int | None = None,
    ensemble: str | None = None,
    retrain_seeds_count: int | None = None,
    force: bool = False,
    tta: str | None = None,
    say: Say = lambda message: None,
) -> EvaluationResult:
    """Evaluate the study's best models on the test split once; see the module docstring for the order.

    `tta` (e.g. ``flip``) makes every model predict with that test-time augmentation, through the
    objective's `test_time_augmentation(model, mode)` hook; their validation predictions are recomputed
    with it first, so the ensemble is chosen on what the test will see.
    """
    study = load(ref)
    config = stored_config(study)
    if not config.load_objective().objective.is_full:
        raise UsageError(
            f"objective: {config.objective} is a minimal objective: `hpo evaluate` needs its evaluation hooks "
            "(build_model, val_split, test_split, to_predictions; see the README's 'Your own model')"
        )
    check_data_unchanged(study, config)  # the test split of other data would score other rows
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if not parent:
        raise HpoError(
            f"study {study.study_name!r} has no MLflow parent run (tracking was down while it ran); run `hpo reconcile` first"
        )
    tracker = Tracker(ref.settings.tracking_uri, study.study_name)
    try:
        return _evaluate(
            study,
            config,
            tracker,
            str(parent),
            top_k=top_k,
            ensemble=ensemble,
            seeds=retrain_seeds_count,
            force=force,
            tta=tta,
            say=say,
        )
    except TrackingUnavailable as exc:
        raise HpoError(f"evaluation of {study.study_name!r} stopped: {exc}") from None


def _evaluate(
    study: optuna.Study,
    config: StudyConfig,
    tracker: Tracker,
    parent: str,
    *,
    top_k: int | None,
    ensemble: str | None,
    seeds: int | None,
    force: bool,
    say: Say,
    tta: str | None = None,
) -> EvaluationResult:
    previous = existing_results(tracker, study.study_name)  # before any data is read
    if previous is not None and not force:
        return previous

    top_k = top_k if top_k is not None else config.evaluation.top_k
    method = ensemble if ensemble is not None else config.evaluation.ensemble
    seeds = seeds if seeds is not None else config.evaluation.retrain_seeds
    if config.evaluation.checkpoints == "none":
        raise UsageError(
            f"evaluation.checkpoints: study {study.study_name!r} kept no weights (checkpoints: none); run it with checkpoints: top_k or all"
        )
    device = pick_device(config.execution.device, threads=config.execution.threads)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hpo-evaluate-") as tmp:
        folder = Path(tmp)
        prepared = _prepare(
            study,
            config,
            tracker,
            folder,
            top_k=top_k,
            method=method,
            seeds=seeds,
            device=device,
            notes=notes,
            say=say,
            tta=tta,
        )
        result = _test_and_log(study, config, tracker, parent, prepared, folder, device=device, notes=notes, say=say)
    if previous is not None:
        for old in previous.results:
            tracker.set_tags(old.run_id, {SUPERSEDED_TAG: "true"})
    result.notes = notes
    return result


def _prepare(
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
) -> _Prepared:
    augment = _tta_hook(config, tta)  # refused before any checkpoint is downloaded
    ranked = best_trials(study, len(study.trials))
    if not ranked:
        raise HpoError(f"study {study.study_name!r} has no complete trial to evaluate")
    chosen = []
    for trial in ranked:
        if len(chosen) == top_k:
            break
        if has_checkpoint(tracker, trial):
            chosen.append(trial)
    if not chosen:
        raise HpoError(
            f"no complete trial of study {study.study_name!r} has a checkpoint in MLflow (evaluation.checkpoints: {config.evaluation.checkpoints})"
        )
    if len(chosen) < top_k:
        notes.append(
            f"only {len(chosen)} of the top {top_k} trials have checkpoints (the study keeps evaluation.top_k={config.evaluation.top_k})"
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
        chosen_ensemble = greedy_ensemble(candidates, val_targets, score_fn, maximize=maximize)  # type: ignore[arg-type]
    elif method == "mean":
        chosen_ensemble = mean_ensemble(
            [m.val_predictions for m in members], val_targets, score_fn if val_targets is not None else None
        )

    variants: list[list[tuple[list[torch.nn.Module], dict[str, Any]]]] = []
    for member in members:
        if seeds:
            say(f"retraining {member.name} on train+validation with {seeds} seed(s)")
            trial_seed_value = int(
                study.trials[member.trial_number].user_attrs.get(
                    SEED_ATTR, trial_seed(config.seed, member.trial_number)
                )
            )
            retrained = retrain(member, config.data, seeds=retrain_seeds(trial_seed_value, seeds), device=device)
            variants.append(
                [([augment(model, tta) if augment is not None else model], meta) for model, meta in retrained]
            )
        else:
            variants.append([([model.to(device) for model in member.models], member.meta)])

    family_best = _best_per_family(study, config, tracker, members, folder)
    return _Prepared(
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
    )


def _tta_hook(config: StudyConfig, tta: str | None) -> Any:
    """The objective's `test_time_augmentation` hook when `tta` asks for one, else None; a UsageError
    when the objective has none or the study's validation predictions are out of fold."""
    if tta is None or tta == "none":
        return None
    hooks = config.load_objective().objective.hooks
    hook = getattr(hooks, "test_time_augmentation", None)
    if hook is None:
        raise UsageError(f"--tta: objective {config.objective} has no test_time_augmentation hook; accepted: none")
    if config.data.cross_validated:
        raise UsageError(
            "--tta: the study is cross-validated (data.cv_folds); its out-of-fold validation predictions cannot be recomputed; accepted: none"
        )
    return hook


def _poolable(config: StudyConfig, baseline: Baseline, member_predictions: np.ndarray) -> bool:
    """A baseline may join the ensemble when its validation predictions are out of fold on the trials'
    folds and cover the same rows as the members'."""
    if not config.data.cross_validated or baseline.val_predictions is None:
        return False
    return np.shape(baseline.val_predictions) == np.shape(member_predictions)


def _best_per_family(
    study: optuna.Study, config: StudyConfig, tracker: Tracker, members: list[Member], folder: Path
) -> dict[str, Member]:
    """The best checkpointed trial of each model family (each value of the `model` hyperparameter), when
    the study tried more than one; {} otherwise (and for objectives whose table has no `model`)."""
    table = config.load_objective().objective.hyperparameters
    if table is None or "model" not in table:
        return {}
    ranked = best_trials(study, len(study.trials))
    family_of = {t.number: str(config.trial_hyperparameters(t.params)["model"]) for t in ranked}
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


def _test_and_log(
    study: optuna.Study,
    config: StudyConfig,
    tracker: Tracker,
    parent: str,
    prepared: _Prepared,
    folder: Path,
    *,
    device: torch.device,
    notes: list[str],
    say: Say,
) -> EvaluationResult:
    hooks = prepared.hooks
    members = prepared.members
    say("reading the test split (the first and only time for this evaluation)")
    with reading_test_split(members[0].checkpoint.objective):
        inputs, targets = hooks.test_split(config.data, members[0].meta)
    inputs_device = inputs.to(device)
    targets = np.asarray(targets)
    classes = members[0].meta.get("classes")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    common_tags = {"optuna.study_name": study.study_name, EVALUATED_AT_TAG: stamp, "hpo.objective": config.objective}
    created: list[str] = []
    logged: list[ModelResult] = []
    try:
        member_predictions: list[np.ndarray] = []
        member_files: list[list[Path]] = []
        for rank, (member, variants) in enumerate(zip(members, prepared.variants), start=1):
            per_seed = [predictions(hooks, models, inputs_device, meta) for models, meta in variants]
            prediction = blend(per_seed, [1.0] * len(per_seed))
            member_predictions.append(prediction)
            metrics = _test_metrics(prediction, targets, classes)
            if len(per_seed) > 1:
                for name in headline_metrics(metrics):
                    values = [score(p, targets, prefix="test", classes=classes)[name] for p in per_seed]
                    metrics[f"{name}_seed_mean"], metrics[f"{name}_seed_std"] = (
                        float(np.mean(values)),
                        float(np.std(values, ddof=1)),
                    )
            for metric, value in zip(config.metrics, member.values):
                metrics[metric] = float(value)
            if prepared.val_scores:
                metrics[f"{prepared.selection}_selection"] = prepared.val_scores[rank - 1]
            files = (
                _save_models(member, variants, folder / f"models-{member.trial_number:04d}")
                if prepared.seeds
                else [member.path]
            )
            member_files.append(files)
            detail = (
                f"retrained on train+validation over {prepared.seeds} seeds"
                if prepared.seeds
                else "best-epoch checkpoint"
            )
            run_id = _log_model_run(
                tracker, parent, created, label=member.name, kind="trial", run_name=f"eval-trial-{member.trial_number:04d}",
                tags={**common_tags, "optuna.trial_number": str(member.trial_number), "hpo.rank": str(rank), "hpo.trial_run_id": member.run_id,
                      "hpo.model_family": member.family, "hpo.detail": detail},
                params={"trial_number": member.trial_number, "rank": rank, "retrain_seeds": prepared.seeds, "model": member.family},
                metrics=metrics, predictions=prediction, targets=targets, classes=classes, folder=folder,
                conv_model=variants[0][0][0], image=inputs[0],
            )  # fmt: skip
            logged.append(ModelResult(member.name, "trial", run_id, metrics, member.trial_number, rank, detail))
            say(f"{member.name}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in headline_metrics(metrics)))

        baseline_predictions = [
            np.asarray(b.estimator.predict(inputs.reshape(len(inputs), -1).numpy()), np.float64)
            for b in prepared.baselines
        ]
        pooled_predictions = [baseline_predictions[prepared.baselines.index(b)] for b in prepared.pooled]
        registered: dict[str, str] = {}
        best = members[0]
        registered[f"{study.study_name}-best"] = _register_best(
            tracker, logged[0].run_id, best, prepared.variants[0][0], inputs, study.study_name
        )

        if prepared.ensemble is not None:
            ens = prepared.ensemble
            prediction = blend(member_predictions + pooled_predictions, ens.weights)
            metrics = _test_metrics(prediction, targets, classes)
            if ens.val_score is not None:
                metrics[f"{prepared.selection}_selection"] = float(ens.val_score)
            keys: list[int | str] = [m.trial_number for m in members] + [b.name for b in prepared.pooled]
            weights = {keys[i]: round(w, 6) for i, w in enumerate(ens.weights) if w > 0}
            detail = ", ".join(
                f"trial {n}: {w:.3g}" if isinstance(n, int) else f"{n}: {w:.3g}" for n, w in weights.items()
            )
            candidate_scores = {str(k): v for k, v in zip(keys, prepared.val_scores)}
            label = f"ensemble ({ens.method})"
            run_id = _log_model_run(
                tracker, parent, created, label=label, kind="ensemble", run_name=f"ensemble-{ens.method}",
                tags={**common_tags, "hpo.ensemble_method": ens.method, "hpo.members": json.dumps(list(weights)), "hpo.detail": detail},
                params={"method": ens.method, "members": json.dumps(list(weights)), "weights": json.dumps(list(weights.values())), "candidates": len(keys)},
                metrics=metrics, predictions=prediction, targets=targets, classes=classes, folder=folder, role="ensemble",
                extra={"ensemble.json": {"method": ens.method, "weights": {str(k): v for k, v in weights.items()},
                                         "member_runs": {str(members[i].trial_number): members[i].run_id for i, w in enumerate(ens.weights[: len(members)]) if w > 0},
                                         "validation": {"metric": prepared.selection, "value": ens.val_score, "history": list(ens.history),
                                                        "members": candidate_scores}}},
            )  # fmt: skip
            name = f"{study.study_name}-ensemble"
            files = [(path, w / len(paths)) for paths, w in zip(member_files, ens.weights) if w > 0 for path in paths]
            files += [
                (_save_estimator(b, folder), w) for b, w in zip(prepared.pooled, ens.weights[len(members) :]) if w > 0
            ]
            registered[name] = _log_pyfunc(tracker, run_id, files, inputs, prediction, name, folder)
            logged.append(ModelResult(label, "ensemble", run_id, metrics, None, None, detail))
            say(f"{label}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in headline_metrics(metrics)))

        for baseline, prediction in zip(prepared.baselines, baseline_predictions):
            metrics = _test_metrics(prediction, targets, None)
            if baseline.val_predictions is not None and prepared.val_targets is not None:
                metrics.update(score(baseline.val_predictions, prepared.val_targets, prefix="val"))
            if config.data.cross_validated:
                rows = f"all non-test rows (validation out of fold, {config.data.cv_folds} folds)"
            else:
                rows = "train+validation" if prepared.seeds else "the training rows"
            detail = f"scikit-learn {baseline.estimator.__class__.__name__}, trained on {rows}"
            run_id = _log_model_run(
                tracker, parent, created, label=baseline.label, kind="baseline", run_name=f"baseline-{baseline.name}",
                tags={**common_tags, "hpo.baseline": baseline.name, "hpo.detail": detail},
                params={"baseline": baseline.name, "estimator": baseline.estimator.__class__.__name__},
                metrics=metrics, predictions=prediction, targets=targets, classes=None, folder=folder,
            )  # fmt: skip
            logged.append(ModelResult(baseline.label, "baseline", run_id, metrics, None, None, detail, baseline.name))
            say(f"{baseline.label}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in headline_metrics(metrics)))

        if prepared.family_best:
            logged.extend(
                _family_comparison(
                    tracker,
                    parent,
                    created,
                    prepared,
                    logged,
                    inputs,
                    inputs_device,
                    targets,
                    classes,
                    folder,
                    common_tags,
                )
            )

        for run_id in created:
            tracker.finish_run(run_id)
    except BaseException:
        for run_id in created:
            try:
                tracker.finish_run(run_id, "FAILED")
            except Exception:
                pass
        raise
    result = EvaluationResult(
        study.study_name,
        existing=False,
        results=sorted(logged, key=_order),
        evaluated_at=stamp,
        registered=registered,
        headline=headline_metrics(logged[0].metrics),
    )
    tracker.set_tags(parent, {EVALUATED_AT_TAG: stamp})
    tracker.log_dict(parent, _summary(result, prepared), "evaluation/summary.json")
    return result


def _family_comparison(
    tracker: Tracker,
    parent: str,
    created: list[str],
    prepared: _Prepared,
    logged: list[ModelResult],
    inputs: torch.Tensor,
    inputs_device: torch.Tensor,
    targets: np.ndarray,
    classes: Any,
    folder: Path,
    common_tags: dict[str, str],
) -> list[ModelResult]:
    """The best model of each family: tag their runs, evaluating whichever is not a member already."""
    extra: list[ModelResult] = []
    by_trial = {r.trial_number: r for r in logged if r.kind == "trial"}
    for family, member in prepared.family_best.items():
        tag = f"{FAMILY_PREFIX}{family}"
        label = f"best {_family_label(tag)} ({member.name})"
        if member.trial_number in by_trial:
            by_trial[member.trial_number].baseline = tag
            tracker.set_tags(by_trial[member.trial_number].run_id, {"hpo.baseline": tag})
            continue
        models = [model.to(inputs_device.device) for model in member.models]
        prediction = predictions(prepared.hooks, models, inputs_device, member.meta)
        metrics = _test_metrics(prediction, targets, classes)
        run_id = _log_model_run(
            tracker, parent, created, label=label, kind="baseline", run_name=f"baseline-best-{family}",
            tags={**common_tags, "hpo.baseline": tag, "optuna.trial_number": str(member.trial_number), "hpo.trial_run_id": member.run_id,
                  "hpo.model_family": member.family, "hpo.detail": "best-epoch checkpoint"},
            params={"trial_number": member.trial_number, "model": member.family},
            metrics=metrics, predictions=prediction, targets=targets, classes=classes, folder=folder, conv_model=models[0], image=inputs[0],
        )  # fmt: skip
        extra.append(
            ModelResult(label, "baseline", run_id, metrics, member.trial_number, None, "best-epoch checkpoint", tag)
        )
    return extra


def _test_metrics(prediction: np.ndarray, targets: np.ndarray, classes: Any) -> dict[str, float]:
    """Every test metric, and the bootstrap interval of each headline one (the same resamples for every model)."""
    metrics = score(prediction, targets, prefix="test", classes=classes)
    return {**metrics, **bootstrap_intervals(prediction, targets, prefix="test")}


def _save_estimator(baseline: Baseline, folder: Path) -> Path:
    """A baseline ensemble member as a file the pyfunc model loads (scikit-learn's own persistence, joblib)."""
    import joblib

    path = folder / f"baseline-{baseline.name}.joblib"
    joblib.dump(baseline.estimator, path)
    return path


def _save_models(
    member: Member, variants: list[tuple[list[torch.nn.Module], dict[str, Any]]], folder: Path
) -> list[Path]:
    """Retrained models as model files in the format `hpo run` writes (the pyfunc model loads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (models, meta) in enumerate(variants):
        path = folder / f"seed-{i}.pt"
        Checkpoint.of(models, objective=member.objective, hyperparameters=member.hyperparameters, meta=meta).save_model(
            path
        )
        paths.append(path)
    return paths


def _log_model_run(
    tracker: Tracker,
    parent: str,
    created: list[str],
    *,
    label: str,
    kind: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    predictions: np.ndarray,
    targets: np.ndarray,
    classes: Any,
    folder: Path,
    role: str = "evaluation",
    conv_model: torch.nn.Module | None = None,
    image: torch.Tensor | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Create the run (so a failure later marks it FAILED), then log its metrics, predictions and plots."""
    run_id = tracker.create_run(
        role=role, run_name=run_name, parent_run_id=parent, tags={**tags, KIND_TAG: kind, LABEL_TAG: label}
    )
    created.append(run_id)
    tracker.log_params(run_id, params)
    tracker.log_metrics(run_id, metrics)
    out = folder / "artifacts" / run_name
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    np.save(out / "predictions" / "test_predictions.npy", predictions)
    _write_predictions_csv(out / "predictions" / "test_predictions.csv", predictions, targets)
    if is_classification(predictions):
        names = list(classes) if classes is not None else [str(i) for i in range(predictions.shape[1])]
        plots.save(
            plots.confusion_matrix_figure(
                confusion_matrix(predictions, targets), names, title=f"{label}: test accuracy {metrics['test_acc']:.3f}"
            ),
            out / "plots" / "confusion_matrix.png",
        )
        per_class = {name: metrics[f"test_acc_{name}"] for name in names if f"test_acc_{name}" in metrics}
        plots.save(
            plots.per_class_accuracy(per_class, title=f"{label}: accuracy per class"),
            out / "plots" / "per_class_accuracy.png",
        )
    else:
        title = f"{label}: test RMSE {metrics['test_rmse']:.3f}, R² {metrics['test_r2']:.3f}"
        plots.save(
            plots.predicted_vs_actual(predictions, targets, title=title), out / "plots" / "predicted_vs_actual.png"
        )
        plots.save(plots.residuals(predictions, targets, title=label), out / "plots" / "residuals.png")
    if conv_model is not None and image is not None:
        plots.save_conv_pictures(
            plots.conv_pictures(conv_model.cpu(), image, label=label, image_name="test image 0"), out / "plots" / "conv"
        )
    for name, data in (extra or {}).items():
        (out / name).write_text(json.dumps(data, indent=2))
    tracker.log_artifacts(run_id, out)
    return run_id


def _write_predictions_csv(path: Path, predictions: np.ndarray, targets: np.ndarray) -> None:
    import pandas as pd

    if is_classification(predictions):
        frame = pd.DataFrame(predictions, columns=[f"p{i}" for i in range(predictions.shape[1])])
        frame.insert(0, "predicted", predictions.argmax(axis=1))
    else:
        frame = pd.DataFrame({"predicted": predictions})
    frame.insert(0, "actual", targets)
    frame.index.name = "test_index"
    frame.to_csv(path)


def _requirements() -> list[str]:
    found = []
    for name in MODEL_DEPENDENCIES:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(name)
    return found


def _code_paths() -> list[str]:
    return [str(Path(hpo.__file__).parent)]


def _register_best(
    tracker: Tracker,
    run_id: str,
    member: Member,
    trained: tuple[list[torch.nn.Module], dict[str, Any]],
    inputs: torch.Tensor,
    study_name: str,
) -> str:
    """The best single model (best on validation) with the mlflow.pytorch flavor, registered as <study>-best.

    It outputs raw model outputs; `hpo_meta.json` beside it holds what the objective's `to_predictions` needs.
    A trial of several models (one per fold) registers its first; the ensemble's pyfunc model holds them all.
    """
    models, meta = trained
    model = models[0].cpu().eval()
    sample = inputs[:5].float()
    with torch.no_grad():
        outputs = model(sample).numpy()
    tracker.log_dict(
        run_id,
        {"objective": member.objective, "hyperparameters": member.hyperparameters, "meta": meta},
        "model_meta/hpo_meta.json",
    )
    info = tracker.log_torch_model(
        run_id, model, name="model", registered_model_name=f"{study_name}-best",
        example=(sample.numpy(), outputs), code_paths=_code_paths(), pip_requirements=_requirements(),
    )  # fmt: skip
    return _registry_uri(info, f"{study_name}-best")


def _registry_uri(info: Any, name: str) -> str:
    """`models:/<name>/<version>`, the URI `hpo predict` and `mlflow.pyfunc.load_model` take (MLflow's own
    model_uri names the logged model, `models:/m-<id>`, which says nothing to a person)."""
    version = getattr(info, "registered_model_version", None)
    return f"models:/{name}/{version}" if version is not None else str(getattr(info, "model_uri", ""))


def _log_pyfunc(
    tracker: Tracker,
    run_id: str,
    files: list[tuple[Path, float]],
    inputs: torch.Tensor,
    predictions: np.ndarray,
    name: str,
    folder: Path,
) -> str:
    from hpo.evaluation._pyfunc import ENSEMBLE_FILE, EnsembleModel, member_key

    spec_path = folder / "ensemble-spec.json"
    spec_path.write_text(json.dumps({"weights": [w for _, w in files], "input_shape": list(inputs.shape[1:])}))
    artifacts = {ENSEMBLE_FILE: str(spec_path), **{member_key(i): str(path) for i, (path, _) in enumerate(files)}}
    example_inputs = inputs[:5].numpy()
    info = tracker.log_model(
        run_id, EnsembleModel(), name="model", artifacts=artifacts, registered_model_name=name,
        example=(example_inputs, predictions[:5].astype(np.float32)), code_paths=_code_paths(), pip_requirements=_requirements(),
    )  # fmt: skip
    return _registry_uri(info, name)


def _summary(result: EvaluationResult, prepared: _Prepared) -> dict[str, Any]:
    return {
        "study": result.study_name,
        "evaluated_at": result.evaluated_at,
        "retrain_seeds": prepared.seeds,
        "selection_metric": prepared.selection,
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
            for r in result.results
        ],
        "registered": result.registered,
    }
