"""Reading studies back: which study a command means, its trials as a table, and its best trials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hpo.config.settings import redact
from hpo.errors import UsageError
from hpo.running.best_query import ROW_USER_ATTRS, metric_names
from hpo.running.best_query import trial_row as row_of
from hpo.running.meta import (
    BACKFILLED_RUNS_ATTR,
    CONFIG_ATTR,
    METRICS_ATTR,
    RETRIED_SYSTEM_ATTR,
)
from hpo.running.storage import MissingStorage, best_trial_ids, open_storage, trial_counts, trials_for_listing
from hpo.running.study_ref import StudyRef

if TYPE_CHECKING:
    from hpo.running.grpc_storage import GrpcStorage


def open_existing(url: str, *, field: str = "storage", **kwargs: Any) -> RDBStorage | GrpcStorage:
    """The storage as it is, for read commands: a missing file or schema is a clear error and nothing is created."""
    try:
        return open_storage(url, create=False, field=field, **kwargs)
    except MissingStorage:
        raise UsageError(
            f"{field}: {redact(url)} holds no hpo study; run a study first (`hpo run STUDY.yaml`) or pass --storage"
        ) from None


def load(ref: StudyRef) -> optuna.Study:
    """The stored study; a clear error (exit 2) naming the storage when it is not there."""
    storage = open_existing(ref.settings.storage, field=ref.settings.storage_field)
    try:
        return optuna.load_study(study_name=ref.name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        known = f"; studies there: {', '.join(names)}" if names else "; it holds no study yet"
        raise UsageError(f"study {ref.name!r} not found in {redact(ref.settings.storage)}{known}") from None


def study_summaries(storage_url: str, *, field: str = "storage") -> list[dict[str, Any]]:
    """One row per study: name, directions, trial counts, best value, start time.

    Counted in the database (one query for every study), not by loading each study's trials as
    `optuna.get_all_study_summaries` does: `hpo status` stays a fraction of a second at 10,000 trials.
    """
    storage = open_existing(storage_url, field=field)
    if not isinstance(storage, RDBStorage):  # the counting queries need the database itself
        raise UsageError(f"{field}: {redact(storage_url)} is a gRPC proxy; name the study (`hpo status STUDY`)")
    counts = trial_counts(storage)
    rows = []
    for s in storage.get_all_studies():
        states, started = counts.get(s._study_id, ({}, None))
        best = None
        if len(s.directions) == 1 and states.get("COMPLETE"):
            maximize = s.directions[0] == optuna.study.StudyDirection.MAXIMIZE
            ids = best_trial_ids(storage, s.study_name, k=1, maximize=maximize)
            best = storage.get_trial(ids[0]).value if ids else None
        rows.append(
            {
                "study": s.study_name,
                "objective": (s.user_attrs.get(CONFIG_ATTR) or {}).get("objective", ""),
                "direction": ",".join(d.name.lower() for d in s.directions),
                "trials": sum(states.values()),
                "complete": states.get("COMPLETE", 0),
                "pruned": states.get("PRUNED", 0),
                "fail": states.get("FAIL", 0),
                "running": states.get("RUNNING", 0),
                "best_value": best,
                "started": started.isoformat(timespec="seconds") if started else None,
            }
        )
    return rows


def backfilled_runs(study: optuna.Study) -> dict[str, str]:
    """Trial number (as text) -> the MLflow run `hpo reconcile` backfilled for it (its first run was lost)."""
    return dict(study.user_attrs.get(BACKFILLED_RUNS_ATTR) or {})


def trial_row(trial: FrozenTrial, metrics: list[str], *, backfilled: dict[str, str] | None = None) -> dict[str, Any]:
    return row_of(
        number=trial.number,
        state=trial.state.name,
        values=list(trial.values or []),
        metrics=metrics,
        duration=trial.duration,
        params=dict(trial.params),
        user_attrs=trial.user_attrs,
        retried_from=RetryHeartbeatStaleTrialCallback.retried_trial_number(trial),
        backfilled=backfilled,
    )


def study_metrics(study: optuna.Study) -> list[str]:
    return metric_names(study.user_attrs.get(METRICS_ATTR), objectives=len(study.directions))


def listed_trials(
    study: optuna.Study,
    *,
    user_attrs: tuple[str, ...] = ROW_USER_ATTRS,
    system_attrs: tuple[str, ...] = (RETRIED_SYSTEM_ATTR,),
) -> list[FrozenTrial]:
    """Every trial with its params, values and the attributes named, in number order, without curves on a
    database storage (:func:`trials_for_listing`); elsewhere Optuna's own trials, whole."""
    backend = getattr(study, "_storage", None)
    backend = getattr(backend, "_backend", backend)
    if isinstance(backend, RDBStorage):
        return trials_for_listing(backend, study.study_name, user_attrs=user_attrs, system_attrs=system_attrs)
    return study.get_trials(deepcopy=False)


def trials_table(study: optuna.Study) -> list[dict[str, Any]]:
    """One :func:`trial_row` per trial, in trial-number order.

    On a database storage the trials are read without their curves (:func:`trials_for_listing`), which
    keeps `hpo status` linear and light at 10,000 trials; elsewhere Optuna loads them whole.
    """
    metrics = study_metrics(study)
    backfilled = backfilled_runs(study)
    return [trial_row(t, metrics, backfilled=backfilled) for t in listed_trials(study)]


def best_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best complete trials: by value for one objective, the Pareto front first for several."""
    if len(study.directions) == 1 and k <= _QUERY_AT_MOST:
        fetched = _best_by_query(study, k)
        if fetched is not None:
            return fetched
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) == 1:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        return sorted(done, key=lambda t: (-t.values[0] if maximize else t.values[0], t.number))[:k]
    front = {t.number for t in study.best_trials}
    first = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(done, key=lambda t: (t.number not in front, -t.values[0] if first else t.values[0], t.number))
    return ranked[:k]


_QUERY_AT_MOST = 100  # beyond this, loading every trial at once is cheaper than fetching them one by one


def _best_by_query(study: optuna.Study, k: int) -> list[FrozenTrial] | None:
    """The k best trials through one ranking query on a database storage; None for other storages.

    Optuna keeps the storage of a loaded study private (`_storage`, an RDBStorage behind a cache); if
    that ever changes, this falls back to ranking every trial, which gives the same answer slowly.
    """
    backend = getattr(study, "_storage", None)
    backend = getattr(backend, "_backend", backend)
    if not isinstance(backend, RDBStorage):
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return [
        backend.get_trial(trial_id) for trial_id in best_trial_ids(backend, study.study_name, k=k, maximize=maximize)
    ]
