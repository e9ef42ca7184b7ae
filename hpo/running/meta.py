"""What hpo keeps about a study beside Optuna's own data: the names of its user attributes and MLflow tags,
the study file it was started with, the trials' seeds and the sweep's global budget.

One home for these names, so the runner that writes them and the commands that read them back
(status, reconcile, evaluate, report) cannot drift apart.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from hpo.config.settings import redact
from hpo.errors import UsageError

if TYPE_CHECKING:  # the schema (pydantic) is imported when a stored file is read: `hpo status` never does
    import optuna

    from hpo.config import StudyConfig

# -- Optuna study user attributes -------------------------------------------------------------------
CONFIG_ATTR = "hpo.config"  # the resolved study file, plain JSON
BUDGET_ATTR = "hpo.budget"  # {n_trials, timeout, deadline}: the sweep's global budget, set by `hpo run` / `hpo create`
OBJECTIVE_DIR_ATTR = "hpo.objective_dir"  # the study file's folder: a relative file-path objective is found from it
PARENT_RUN_ATTR = "hpo.mlflow_parent_run_id"
METRICS_ATTR = "hpo.metrics"
DATA_ATTR = "hpo.data_fingerprint"
# {trial number: run id} of the MLflow runs `hpo reconcile` backfilled: Optuna keeps a finished trial's
# attributes read-only, so a trial whose run was lost is linked to its new run here.
BACKFILLED_RUNS_ATTR = "hpo.backfilled_runs"

# -- Optuna trial user attributes -------------------------------------------------------------------
RUN_ID_ATTR = "mlflow_run_id"
SEED_ATTR = "hpo.seed"
SYNCED_ATTR = "hpo.mlflow_synced"
REASON_ATTR = "hpo.failure_reason"
DEVICE_ATTR = "hpo.device"  # e.g. "cuda:0 (physical GPU 1, NVIDIA A100), pid 4242": shown by `hpo status`
RETRIED_SYSTEM_ATTR = "failed_trial"  # Optuna's system attribute: the trial a re-queued copy repeats

# -- MLflow tags ------------------------------------------------------------------------------------
ROLE_TAG = "hpo.role"  # study | trial | evaluation | ensemble
OBJECTIVE_TAG = "hpo.objective"
OBJECTIVE_SOURCE_TAG = "hpo.objective_source"
STORAGE_TAG = "hpo.storage"
CHECKPOINT_TAG = "hpo.checkpoint"  # kept | deleted
CHANGES_TAG = "hpo.config_changes"
RETRIED_FROM_TAG = "hpo.retried_from"
BACKFILLED_TAG = "hpo.backfilled"
LOST_RUN_TAG = "hpo.lost_run_id"
STUDY_NAME_TAG = "optuna.study_name"
TRIAL_NUMBER_TAG = "optuna.trial_number"
STATE_TAG = "optuna.state"

# -- MLflow tags of `hpo evaluate`'s runs -----------------------------------------------------------
EVALUATED_ROLES = ("evaluation", "ensemble")  # the ROLE_TAG values of evaluated models
SUPERSEDED_TAG = "hpo.superseded"
KIND_TAG = "hpo.kind"  # trial | ensemble | baseline
LABEL_TAG = "hpo.label"
EVALUATED_AT_TAG = "hpo.evaluated_at"
# On the study's parent run: when `hpo evaluate` last began reading the test split, set before it reads.
TEST_READ_AT_TAG = "hpo.test_read_at"
RANK_TAG = "hpo.rank"
DETAIL_TAG = "hpo.detail"
BASELINE_TAG = "hpo.baseline"
TRIAL_RUN_TAG = "hpo.trial_run_id"
MODEL_FAMILY_TAG = "hpo.model_family"
ENSEMBLE_METHOD_TAG = "hpo.ensemble_method"
MEMBERS_TAG = "hpo.members"
# The study (parent) run's summary, rewritten after every trial.
TRIALS_TAG = "hpo.trials"
BEST_TRIAL_TAG = "hpo.best_trial"
BEST_PARAMS_TAG = "hpo.best_params"
PARETO_FRONT_TAG = "hpo.pareto_front"


# -- seeds ------------------------------------------------------------------------------------------
def trial_seed(study_seed: int, trial_number: int) -> int:
    """Each trial's seed derives from the study seed and the trial number: reproducible, distinct."""
    return (study_seed * 1_000_003 + trial_number) % (2**31 - 1)


def sampler_seed(study_seed: int, trial_number: int) -> int:
    """The sampler's seed for the ask that creates trial `trial_number`.

    One sampler seeded once per process would make every worker (and every resumed run) propose
    the same sequence again; seeding per trial number keeps workers apart and a sequential re-run
    identical. Kept apart from `trial_seed` so sampling and training draw unrelated streams.
    """
    import numpy as np  # not at import: `hpo best` reads these names without numpy or Optuna

    return int(np.random.SeedSequence([study_seed % 2**32, trial_number, 0x5A]).generate_state(1)[0])


def stored_seed(trial: optuna.trial.FrozenTrial, config: StudyConfig) -> int:
    """The seed a trial trained with: as recorded, else as derived (a trial from before it was recorded)."""
    return int(trial.user_attrs.get(SEED_ATTR, trial_seed(config.seed, trial.number)))


# -- the stored study file --------------------------------------------------------------------------
def plain_config(config: StudyConfig) -> dict[str, Any]:
    """The resolved config as stored in the study: plain JSON data, credentials redacted."""
    return dict(json.loads(redact(json.dumps(config.resolved()))))


def stored_config(study: optuna.Study) -> StudyConfig:
    """The study file a study was started with, as kept in its user attributes."""
    from hpo.config import parse_study

    data = study.user_attrs.get(CONFIG_ATTR)
    if data is None:
        raise UsageError(f"study {study.study_name!r} was not created by hpo (no stored study file)")
    return parse_study(
        as_stored(data), source=f"study {study.study_name!r}", base_dir=study.user_attrs.get(OBJECTIVE_DIR_ATTR)
    )


def as_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A stored study file with what an older hpo meant by a field it did not have yet: a study stored
    before `data.cv_folds` existed was scored on one validation split (not on the objective's default)."""
    section = data.get("data")
    if isinstance(section, dict) and "cv_folds" not in section:
        return {**data, "data": {**section, "cv_folds": 1}}
    return data


def check_data_unchanged(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse (exit 2) when the data a study was scored on has changed since: its file is named."""
    stored, now = study.user_attrs.get(DATA_ATTR), config.data_fingerprint()
    if stored is not None and now is not None and stored != now:
        raise UsageError(
            f"data: study {study.study_name!r} was run on {stored}, but the data is now {now}; "
            "restore the data the study was run on"
        )


# -- the global budget and its shared deadline ------------------------------------------------------
def new_budget(config: StudyConfig, *, n_trials: int | None, timeout: float | None) -> dict[str, Any]:
    """The sweep's global budget as kept in the study: every worker reads it, so `timeout` becomes a
    wall-clock deadline shared by all of them rather than a clock of their own."""
    n_trials = n_trials if n_trials is not None else config.n_trials
    timeout = timeout if timeout is not None else config.timeout
    return {
        "n_trials": n_trials,
        "timeout": timeout,
        "deadline": time.time() + timeout if timeout is not None else None,
    }


def stored_budget(study: optuna.Study, config: StudyConfig) -> dict[str, Any]:
    """The budget `hpo run` / `hpo create` stored, or the study file's when none was."""
    return study.user_attrs.get(BUDGET_ATTR) or {"n_trials": config.n_trials, "timeout": config.timeout}


def set_budget(study: optuna.Study, budget: dict[str, Any]) -> None:
    study.set_user_attr(BUDGET_ATTR, budget)


def remaining(budget: dict[str, Any]) -> float | None:
    """Seconds left of a stored budget's timeout (None: no timeout)."""
    if budget.get("deadline") is not None:
        return max(0.0, float(budget["deadline"]) - time.time())
    return budget.get("timeout")


def deadline_passed(budget: dict[str, Any]) -> bool:
    """Whether a stored budget's shared deadline is over (never, without a timeout)."""
    return budget.get("deadline") is not None and float(budget["deadline"]) <= time.time()


__all__ = [
    "BACKFILLED_RUNS_ATTR",
    "BACKFILLED_TAG",
    "BASELINE_TAG",
    "BUDGET_ATTR",
    "CHANGES_TAG",
    "CHECKPOINT_TAG",
    "CONFIG_ATTR",
    "DATA_ATTR",
    "DETAIL_TAG",
    "DEVICE_ATTR",
    "ENSEMBLE_METHOD_TAG",
    "EVALUATED_AT_TAG",
    "EVALUATED_ROLES",
    "KIND_TAG",
    "LABEL_TAG",
    "LOST_RUN_TAG",
    "MEMBERS_TAG",
    "METRICS_ATTR",
    "MODEL_FAMILY_TAG",
    "OBJECTIVE_DIR_ATTR",
    "OBJECTIVE_SOURCE_TAG",
    "OBJECTIVE_TAG",
    "PARENT_RUN_ATTR",
    "RANK_TAG",
    "REASON_ATTR",
    "RETRIED_FROM_TAG",
    "RETRIED_SYSTEM_ATTR",
    "ROLE_TAG",
    "RUN_ID_ATTR",
    "SEED_ATTR",
    "STATE_TAG",
    "STORAGE_TAG",
    "STUDY_NAME_TAG",
    "SUPERSEDED_TAG",
    "SYNCED_ATTR",
    "TRIAL_NUMBER_TAG",
    "TRIAL_RUN_TAG",
    "as_stored",
    "check_data_unchanged",
    "deadline_passed",
    "new_budget",
    "plain_config",
    "remaining",
    "sampler_seed",
    "set_budget",
    "stored_budget",
    "stored_config",
    "stored_seed",
    "trial_seed",
]
