"""Make MLflow agree with Optuna after crashes and outages; Optuna's storage is the record.

- trials whose worker died are failed (and re-queued) through Optuna's heartbeat check;
- MLflow runs still RUNNING for finished trials are closed with the trial's state;
- finished trials with no MLflow run (the tracking server was down) get one, with their params,
  the per-epoch values Optuna kept, and their final value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig, study_to_yaml
from hpo.running.budget import budget_count
from hpo.running.meta import (
    BACKFILLED_RUNS_ATTR,
    BACKFILLED_TAG,
    BUDGET_ATTR,
    LOST_RUN_TAG,
    OBJECTIVE_TAG,
    PARENT_RUN_ATTR,
    REASON_ATTR,
    RETRIED_SYSTEM_ATTR,
    ROLE_TAG,
    RUN_ID_ATTR,
    SEED_ATTR,
    STATE_TAG,
    STUDY_NAME_TAG,
    TRIAL_NUMBER_TAG,
)
from hpo.running.results import listed_trials
from hpo.running.tracking import Tracker

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class ReconcileReport:
    failed_stale: int = 0
    closed: list[int] = field(default_factory=list)
    backfilled: list[int] = field(default_factory=list)
    parent_created: bool = False
    parent_closed: str | None = None  # the status a parent run left RUNNING was closed with

    def lines(self) -> list[str]:
        return [
            f"stale trials failed and re-queued: {self.failed_stale}",
            f"MLflow runs closed: {len(self.closed)} {self.closed or ''}".rstrip(),
            f"MLflow runs backfilled: {len(self.backfilled)} {self.backfilled or ''}".rstrip(),
            f"parent run created: {'yes' if self.parent_created else 'no'}",
            f"parent run closed: {self.parent_closed or 'no'}",
        ]


def reconcile(study: optuna.Study, tracker: Tracker, config: StudyConfig) -> ReconcileReport:
    report = ReconcileReport()
    running_before = {t.number for t in _listed(study) if t.state == TrialState.RUNNING}
    optuna.storages.fail_stale_trials(study)  # re-queues them too, when the study's storage retries
    trials = _listed(study)
    stale = {t.number for t in trials if t.state == TrialState.FAIL} & running_before
    report.failed_stale = len(stale)

    parent = study.user_attrs.get(PARENT_RUN_ATTR) or tracker.find_study_run(study.study_name)
    if not parent:
        parent = tracker.create_study_run(
            study.study_name, config_yaml=study_to_yaml(config), tags={OBJECTIVE_TAG: config.objective}
        )
        report.parent_created = True
    study.set_user_attr(PARENT_RUN_ATTR, parent)

    backfilled = dict(study.user_attrs.get(BACKFILLED_RUNS_ATTR) or {})
    runs: dict[int, Any] = {}
    # 50,000 is the most one MLflow search may ask for.
    for run in tracker.search_runs({ROLE_TAG: "trial", STUDY_NAME_TAG: study.study_name}, max_results=50_000):
        runs.setdefault(int(run.data.tags[TRIAL_NUMBER_TAG]), run)
    for listed in (t for t in trials if t.state in _FINISHED):
        run = runs.get(listed.number)
        if run is None:
            backfilled[str(listed.number)] = _backfill(tracker, _whole(study, listed), parent, study.study_name, config)
            study.set_user_attr(BACKFILLED_RUNS_ATTR, backfilled)  # at once: a crash later keeps the links made
            report.backfilled.append(listed.number)
        elif run.info.status == "RUNNING" or run.data.tags.get(STATE_TAG) == "RUNNING":
            trial = _whole(study, listed)
            if trial.number in stale:
                reason = "the worker stopped sending heartbeats (killed or lost); failed by `hpo reconcile`"
            else:
                reason = (
                    trial.user_attrs.get(REASON_ATTR)
                    or "closed by `hpo reconcile` (the worker ended without closing the run)"
                )
            missing = {k: v for k, v in {**config.fixed, **trial.params}.items() if k not in run.data.params}
            if missing:  # the tracking server went away between opening the run and logging its params
                tracker.log_params(run.info.run_id, missing)
            tracker.end_trial_run(
                run.info.run_id,
                state=trial.state.name,
                summary=_summary(trial, config),
                reason=reason if trial.state != TrialState.COMPLETE else None,
            )
            report.closed.append(trial.number)
    report.parent_closed = _close_parent(study, tracker, str(parent), _listed(study))
    return report


def _listed(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials without their curves (Optuna's own load reads every curve: minutes at 10,000
    trials), with what reconcile looks at: run id, reason, seed, and the retry bookkeeping."""
    return listed_trials(
        study, user_attrs=(RUN_ID_ATTR, REASON_ATTR, SEED_ATTR), system_attrs=(RETRIED_SYSTEM_ATTR, "retry_history")
    )


def _whole(study: optuna.Study, listed: FrozenTrial) -> FrozenTrial:
    """One trial as Optuna stores it, curve included: for the few trials reconcile repairs."""
    return study._storage.get_trial(listed._trial_id)


def _close_parent(study: optuna.Study, tracker: Tracker, parent: str, trials: list[FrozenTrial]) -> str | None:
    """A parent run left RUNNING (its last worker was killed) while no trial runs: FINISHED if the budget
    was used up by finished trials, else KILLED (a later `hpo run` marks it RUNNING again)."""
    if tracker.get_run(parent).info.status != "RUNNING" or any(t.state == TrialState.RUNNING for t in trials):
        return None
    n_trials = (study.user_attrs.get(BUDGET_ATTR) or {}).get("n_trials")
    # A re-queued copy waiting to run leaves the budget unfilled (the failure it replaces does not count).
    status = "FINISHED" if n_trials is not None and budget_count(trials, finished=True) >= n_trials else "KILLED"
    tracker.set_study_status(parent, status)
    return status


def _summary(trial: FrozenTrial, config: StudyConfig) -> dict[str, float]:
    if trial.state != TrialState.COMPLETE or trial.values is None:
        return {}
    return {f"best_{m}": v for m, v in zip(config.metrics, trial.values)}


def _backfill(tracker: Tracker, trial: FrozenTrial, parent: str, study_name: str, config: StudyConfig) -> str:
    """A new MLflow run for a finished trial whose run was lost (its curve from Optuna); returns its id."""
    params = {**config.fixed, **trial.params}
    run_id = tracker.start_trial_run(
        parent_run_id=parent,
        study_name=study_name,
        trial_number=trial.number,
        seed=int(trial.user_attrs.get(SEED_ATTR, -1)),
        params=params,
        extra_tags={BACKFILLED_TAG: "true", LOST_RUN_TAG: str(trial.user_attrs.get(RUN_ID_ATTR, ""))},
    )
    metric = config.metrics[0]
    for step, value in sorted(trial.intermediate_values.items()):
        tracker.log_epoch(run_id, step, {metric: value})
    reason = trial.user_attrs.get(REASON_ATTR)
    tracker.end_trial_run(run_id, state=trial.state.name, summary=_summary(trial, config), reason=reason)
    return run_id
