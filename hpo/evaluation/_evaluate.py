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
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from hpo.config import StudyConfig
from hpo.data._test_guard import reading_test_split
from hpo.errors import HpoError, UsageError
from hpo.evaluation._ensemble import blend
from hpo.evaluation._families import log_family_best
from hpo.evaluation._logging import ModelRun, RunLog, save_estimator, save_models, test_metrics
from hpo.evaluation._metrics import score
from hpo.evaluation._prepare import Prepared, Say, prepare
from hpo.evaluation._registry import log_pyfunc, register_best
from hpo.evaluation._results import EvaluationResult, ModelResult, existing_results, headline_metrics, order
from hpo.objectives._checkpoint import predictions
from hpo.running.meta import (
    BASELINE_TAG,
    DETAIL_TAG,
    ENSEMBLE_METHOD_TAG,
    EVALUATED_AT_TAG,
    MEMBERS_TAG,
    MODEL_FAMILY_TAG,
    OBJECTIVE_TAG,
    PARENT_RUN_ATTR,
    RANK_TAG,
    STUDY_NAME_TAG,
    SUPERSEDED_TAG,
    TEST_READ_AT_TAG,
    TRIAL_NUMBER_TAG,
    TRIAL_RUN_TAG,
    check_data_unchanged,
    stored_config,
)
from hpo.running.results import StudyRef, load
from hpo.running.tracking import Tracker, TrackingUnavailable
from hpo.training.device import pick_device


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

    `tta` (e.g. ``flip``; default: the study's ``evaluation.tta``) makes every model predict with that
    test-time augmentation, through the objective's `test_time_augmentation(model, mode)` hook; their
    validation predictions are recomputed with it first, so the ensemble is chosen on what the test will see.
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
            f"study {study.study_name!r} has no MLflow parent run (tracking was down while it ran); "
            "run `hpo reconcile` first"
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
    if previous is None and not force:
        _refuse_a_second_read(tracker, parent, study.study_name)

    top_k = top_k if top_k is not None else config.evaluation.top_k
    method = ensemble if ensemble is not None else config.evaluation.ensemble
    seeds = seeds if seeds is not None else config.evaluation.retrain_seeds
    tta = tta if tta is not None else config.evaluation.tta
    if config.evaluation.checkpoints == "none":
        raise UsageError(
            f"evaluation.checkpoints: study {study.study_name!r} kept no weights (checkpoints: none); "
            "run it with checkpoints: top_k or all"
        )
    device = pick_device(config.execution.device, threads=config.execution.threads)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hpo-evaluate-") as tmp:
        folder = Path(tmp)
        prepared = prepare(
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
        result = _test_and_log(study, config, tracker, parent, prepared, folder, device=device, say=say)
    if previous is not None:
        for old in previous.results:
            tracker.set_tags(old.run_id, {SUPERSEDED_TAG: "true"})
    result.notes = notes
    return result


def _refuse_a_second_read(tracker: Tracker, parent: str, study_name: str) -> None:
    """An evaluation that read the test split and then failed (interrupted, a registry error) left no
    finished results, only its mark on the parent run: reading the test split again must be asked for."""
    read_at = tracker.get_run(parent).data.tags.get(TEST_READ_AT_TAG)
    if read_at:
        raise UsageError(
            f"study {study_name!r}: an evaluation read the test split at {read_at} and did not finish; "
            "evaluating again reads it a second time: pass --force to do so knowingly"
        )


def _test_and_log(
    study: optuna.Study,
    config: StudyConfig,
    tracker: Tracker,
    parent: str,
    prepared: Prepared,
    folder: Path,
    *,
    device: torch.device,
    say: Say,
) -> EvaluationResult:
    """Read the test split once, then log every model's run; the runs close FAILED if anything fails."""
    hooks = prepared.hooks
    members = prepared.members
    say("reading the test split (the first and only time for this evaluation)")
    tracker.set_tags(parent, {TEST_READ_AT_TAG: time.strftime("%Y-%m-%dT%H:%M:%S%z")})  # before, not after
    with reading_test_split(members[0].checkpoint.objective):
        inputs, targets = hooks.test_split(config.data, members[0].meta)
    inputs_device = inputs.to(device)
    classes = members[0].meta.get("classes")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    common_tags = {STUDY_NAME_TAG: study.study_name, EVALUATED_AT_TAG: stamp, OBJECTIVE_TAG: config.objective}
    log = RunLog(tracker, parent, np.asarray(targets), folder)
    try:
        logged, member_predictions, member_files = _log_members(
            log, prepared, inputs, inputs_device, classes=classes, common_tags=common_tags, say=say
        )
        baseline_predictions = [
            np.asarray(b.estimator.predict(inputs.reshape(len(inputs), -1).numpy()), np.float64)
            for b in prepared.baselines
        ]
        registered = {
            f"{study.study_name}-best": register_best(
                tracker, logged[0].run_id, members[0], prepared.variants[0][0], inputs, study.study_name
            )
        }
        if prepared.ensemble is not None:
            pooled = [baseline_predictions[prepared.baselines.index(b)] for b in prepared.pooled]
            name = f"{study.study_name}-ensemble"
            ensemble_result, registered[name] = _log_ensemble(
                log,
                prepared,
                member_predictions + pooled,
                member_files,
                inputs,
                name=name,
                classes=classes,
                common_tags=common_tags,
                say=say,
            )
            logged.append(ensemble_result)
        logged.extend(_log_baselines(log, prepared, config, baseline_predictions, common_tags=common_tags, say=say))
        if prepared.family_best:
            logged.extend(
                log_family_best(
                    log,
                    prepared.family_best,
                    hooks,
                    logged,
                    inputs=inputs,
                    inputs_device=inputs_device,
                    classes=classes,
                    common_tags=common_tags,
                )
            )
        log.finish()
    except BaseException:
        log.finish("FAILED")
        raise
    result = EvaluationResult(
        study.study_name,
        existing=False,
        results=sorted(logged, key=order),
        evaluated_at=stamp,
        registered=registered,
        headline=headline_metrics(logged[0].metrics),
    )
    tracker.set_tags(parent, {EVALUATED_AT_TAG: stamp})
    tracker.log_dict(
        parent, result.summary(retrain_seeds=prepared.seeds, selection=prepared.selection), "evaluation/summary.json"
    )
    return result


def _log_members(
    log: RunLog,
    prepared: Prepared,
    inputs: torch.Tensor,
    inputs_device: torch.Tensor,
    *,
    classes: Any,
    common_tags: dict[str, str],
    say: Say,
) -> tuple[list[ModelResult], list[np.ndarray], list[list[Path]]]:
    """One run per top-k trial (its seeds' predictions blended); their predictions and model files."""
    targets = log.targets
    logged: list[ModelResult] = []
    member_predictions: list[np.ndarray] = []
    member_files: list[list[Path]] = []
    for rank, (member, variants) in enumerate(zip(prepared.members, prepared.variants), start=1):
        per_seed = [predictions(prepared.hooks, models, inputs_device, meta) for models, meta in variants]
        prediction = blend(per_seed, [1.0] * len(per_seed))
        member_predictions.append(prediction)
        metrics = test_metrics(prediction, targets, classes)
        if len(per_seed) > 1:
            for name in headline_metrics(metrics):
                values = [score(p, targets, prefix="test", classes=classes)[name] for p in per_seed]
                metrics[f"{name}_seed_mean"], metrics[f"{name}_seed_std"] = (
                    float(np.mean(values)),
                    float(np.std(values, ddof=1)),
                )
        for metric, value in zip(prepared.config.metrics, member.values):
            metrics[metric] = float(value)
        if prepared.val_scores:
            metrics[f"{prepared.selection}_selection"] = prepared.val_scores[rank - 1]
        folder = log.folder / f"models-{member.trial_number:04d}"
        rewritten = prepared.seeds or prepared.tta is not None  # the checkpoint file no longer says what was tested
        member_files.append(save_models(member, variants, folder) if rewritten else [member.path])
        detail = (
            f"retrained on train+validation over {prepared.seeds} seeds" if prepared.seeds else "best-epoch checkpoint"
        )
        tags = {
            **common_tags,
            TRIAL_NUMBER_TAG: str(member.trial_number),
            RANK_TAG: str(rank),
            TRIAL_RUN_TAG: member.run_id,
            MODEL_FAMILY_TAG: member.family,
            DETAIL_TAG: detail,
        }
        params = {"trial_number": member.trial_number, "rank": rank, "retrain_seeds": prepared.seeds}
        run_id = log.log(
            ModelRun(
                label=member.name,
                kind="trial",
                run_name=f"eval-trial-{member.trial_number:04d}",
                tags=tags,
                params={**params, "model": member.family},
                metrics=metrics,
                predictions=prediction,
                classes=classes,
                conv_model=variants[0][0][0],
                image=inputs[0],
            )
        )
        logged.append(ModelResult(member.name, "trial", run_id, metrics, member.trial_number, rank, detail))
        say(f"{member.name}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in headline_metrics(metrics)))
    return logged, member_predictions, member_files


def _log_ensemble(
    log: RunLog,
    prepared: Prepared,
    candidate_predictions: list[np.ndarray],
    member_files: list[list[Path]],
    inputs: torch.Tensor,
    *,
    name: str,
    classes: Any,
    common_tags: dict[str, str],
    say: Say,
) -> tuple[ModelResult, str]:
    """The ensemble's run and its registered pyfunc model (members, and the baselines pooled with them)."""
    ens = prepared.ensemble
    assert ens is not None  # the caller logs an ensemble only when one was chosen
    members = prepared.members
    prediction = blend(candidate_predictions, ens.weights)
    metrics = test_metrics(prediction, log.targets, classes)
    if ens.val_score is not None:
        metrics[f"{prepared.selection}_selection"] = float(ens.val_score)
    keys: list[int | str] = [m.trial_number for m in members] + [b.name for b in prepared.pooled]
    weights = {keys[i]: round(w, 6) for i, w in enumerate(ens.weights) if w > 0}
    detail = ", ".join(f"trial {n}: {w:.3g}" if isinstance(n, int) else f"{n}: {w:.3g}" for n, w in weights.items())
    candidate_scores = {str(k): v for k, v in zip(keys, prepared.val_scores)}
    member_runs = {
        str(members[i].trial_number): members[i].run_id for i, w in enumerate(ens.weights[: len(members)]) if w > 0
    }
    validation = {
        "metric": prepared.selection,
        "value": ens.val_score,
        "history": list(ens.history),
        "members": candidate_scores,
    }
    label = f"ensemble ({ens.method})"
    run_id = log.log(
        ModelRun(
            label=label,
            kind="ensemble",
            run_name=f"ensemble-{ens.method}",
            tags={
                **common_tags,
                ENSEMBLE_METHOD_TAG: ens.method,
                MEMBERS_TAG: json.dumps(list(weights)),
                DETAIL_TAG: detail,
            },
            params={
                "method": ens.method,
                "members": json.dumps(list(weights)),
                "weights": json.dumps(list(weights.values())),
                "candidates": len(keys),
            },
            metrics=metrics,
            predictions=prediction,
            classes=classes,
            role="ensemble",
            extra={
                "ensemble.json": {
                    "method": ens.method,
                    "weights": {str(k): v for k, v in weights.items()},
                    "member_runs": member_runs,
                    "validation": validation,
                }
            },
        )
    )
    files = [(path, w / len(paths)) for paths, w in zip(member_files, ens.weights) if w > 0 for path in paths]
    files += [(save_estimator(b, log.folder), w) for b, w in zip(prepared.pooled, ens.weights[len(members) :]) if w > 0]
    registered = log_pyfunc(log.tracker, run_id, files, inputs, prediction, name, log.folder)
    say(f"{label}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in headline_metrics(metrics)))
    return ModelResult(label, "ensemble", run_id, metrics, None, None, detail), registered


def _log_baselines(
    log: RunLog,
    prepared: Prepared,
    config: StudyConfig,
    baseline_predictions: list[np.ndarray],
    *,
    common_tags: dict[str, str],
    say: Say,
) -> list[ModelResult]:
    """One run per scikit-learn baseline, scored on the same test split."""
    logged = []
    for baseline, prediction in zip(prepared.baselines, baseline_predictions):
        metrics = test_metrics(prediction, log.targets, None)
        if baseline.val_predictions is not None and prepared.val_targets is not None:
            metrics.update(score(baseline.val_predictions, prepared.val_targets, prefix="val"))
        if config.data.cross_validated:
            rows = f"all non-test rows (validation out of fold, {config.data.cv_folds} folds)"
        else:
            rows = "train+validation" if prepared.seeds else "the training rows"
        detail = f"scikit-learn {baseline.estimator.__class__.__name__}, trained on {rows}"
        run_id = log.log(
            ModelRun(
                label=baseline.label,
                kind="baseline",
                run_name=f"baseline-{baseline.name}",
                tags={**common_tags, BASELINE_TAG: baseline.name, DETAIL_TAG: detail},
                params={"baseline": baseline.name, "estimator": baseline.estimator.__class__.__name__},
                metrics=metrics,
                predictions=prediction,
            )
        )
        logged.append(ModelResult(baseline.label, "baseline", run_id, metrics, None, None, detail, baseline.name))
        say(f"{baseline.label}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in headline_metrics(metrics)))
    return logged
