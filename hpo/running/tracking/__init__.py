"""Every MLflow call hpo makes, in one place, through an explicit `MlflowClient` (no global fluent state).

Layout (the contract): one experiment per study; one parent run tagged `hpo.role=study`; one child run
per trial opened when the trial starts, tagged with the Optuna study and trial, closed FINISHED, KILLED
(pruned) or FAILED with the reason. Per-epoch metrics are buffered and sent with `log_batch`, so a
trial costs a handful of requests, not one per value; on a database store hpo opens itself (SQLite,
PostgreSQL) at this install's MLflow revision a trial run's curves, params, tags and closing go into
MLflow's tables in one transaction instead (`_tables`). A trial's run is fed by a background sender
(:class:`TrialRun`): the training loop never waits on the store until the trial ends, when the run is
completed before the trial's state is told to Optuna. A tracking server that goes away never fails a
trial: calls retry with backoff, then warn; Optuna stays the record and `hpo reconcile` backfills.

Modules: `_connection` (client, experiment, retries), `_sender` (the background sender), `_tables`
(a run's records written straight into a database store's tables), `_runs` (writing runs), `_artifacts`,
`_models` (logging and loading models), `_reading` (queries), `_summary` (the study run's summary),
`_layout` (tag names and search filters).
"""

from hpo.running.tracking._connection import (
    TrackingUnavailable,
    absolute_sqlite_uri,
    build_mlflow_schema,
    configure_mlflow,
)
from hpo.running.tracking._layout import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    ROLE,
    RUNS_VIEW_KEY,
    RUNS_VIEW_TAG,
    STATE_TO_STATUS,
    UI_VIEW,
    runs_filter,
    ui_base,
)
from hpo.running.tracking._models import RegisteredModel, load_registered_model
from hpo.running.tracking._reading import read_run_json
from hpo.running.tracking._sender import TrialRun
from hpo.running.tracking._summary import StudySummary, study_note
from hpo.running.tracking._tracker import Tracker

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "NOTE_TAG",
    "ROLE",
    "RUNS_VIEW_KEY",
    "RUNS_VIEW_TAG",
    "STATE_TO_STATUS",
    "UI_VIEW",
    "RegisteredModel",
    "StudySummary",
    "Tracker",
    "TrackingUnavailable",
    "TrialRun",
    "absolute_sqlite_uri",
    "build_mlflow_schema",
    "configure_mlflow",
    "load_registered_model",
    "read_run_json",
    "runs_filter",
    "study_note",
    "ui_base",
]
