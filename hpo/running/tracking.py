"""Every MLflow call hpo makes, in one place, through an explicit `MlflowClient` (no global fluent state).

Layout (the contract): one experiment per study; one parent run tagged `hpo.role=study`; one child run
per trial opened when the trial starts, tagged with the Optuna study and trial, closed FINISHED, KILLED
(pruned) or FAILED with the reason. Per-epoch metrics are buffered and sent with `log_batch`, so a
trial costs a handful of requests, not one per value. A trial's run is fed by a background sender
(:class:`TrialRun`): the training loop never waits on the store until the trial ends, when the run is
completed before the trial's state is told to Optuna. A tracking server that goes away never fails a
trial: calls retry with backoff, then warn; Optuna stays the record and `hpo reconcile` backfills.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from hpo.config.settings import env_setting, redact, sqlite_path
from hpo.errors import ServiceError, UsageError
from hpo.operations.databases import MLFLOW, first_line, prepared_database

# Fail fast on a dead server: MLflow's own default retries for minutes before giving up.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# MLflow prints a "View run" link on stdout (after an extra request) whenever a run ends on a server;
# stdout is for results (`--json`), and hpo says where the runs are itself.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in hpo's own output

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

logger = logging.getLogger("hpo.running.tracking")
T = TypeVar("T")

ROLE = "hpo.role"
# MLflow 3's UI opens an experiment on its GenAI pages unless told it holds model training: the
# experiment tag says so, and every link hpo prints asks for the training (runs) view explicitly.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_VIEW = "workflowType=machine_learning"
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI (Markdown)
# The UI shows no metric column until one is picked; a shared view (an experiment tag the UI reads when a
# link names its key) picks the study's metrics and searched params, best first.
RUNS_VIEW_KEY = "hpo"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
MAX_VIEW_PARAMS = 12
STATE_TO_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_TAGS_PER_BATCH = 100
_MAX_ENTRIES_PER_BATCH = 1000
_PARAM_VALUE_LIMIT = 6000
_OUTAGE_SECONDS = 60.0
_NOTE_LIMIT = 8000  # MLflow's longest tag value; a longer study file is cut (the study.yaml artifact is whole)
# After sending a run's epochs the sender waits this many times the send's duration (at most
# _MAX_SEND_GAP seconds) before the next send of that run: epochs reported meanwhile go in one batch, so
# a trial of many quick epochs costs a few requests, not one per epoch, and the sender (which shares
# the interpreter with the training) stays busy at most a quarter of the time.
_SEND_GAP_FACTOR = 3.0
_MAX_SEND_GAP = 1.0


class TrackingUnavailable(RuntimeError):
    """MLflow could not be reached after retries; the caller records the trial for `hpo reconcile`."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """MLflow for one study: its experiment, parent run and trial runs."""

    def __init__(
        self, tracking_uri: str, experiment_name: str, *, retries: int | None = None, backoff: float | None = None
    ) -> None:
        tracking_uri = absolute_sqlite_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.client = _open_client(tracking_uri)
        # HPO_TRACKING_RETRIES / HPO_TRACKING_BACKOFF (seconds, doubling) tune how long a dead server is waited for.
        self.retries = retries if retries is not None else int(env_setting("HPO_TRACKING_RETRIES"))
        self.backoff = backoff if backoff is not None else float(env_setting("HPO_TRACKING_BACKOFF"))
        self._down_until = 0.0  # while MLflow is known to be down, one attempt per call, no waiting
        self._experiment_id: str | None = None
        self._runs_view: bool | None = None  # whether the experiment holds hpo's shared runs view (None: not known)
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush: dict[str, float] = {}
        self.flush_seconds = 5.0
        self._sender = _Sender()

    # -- plumbing ---------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one MLflow request with retries and exponential backoff; raise TrackingUnavailable.

        After a request has failed, calls in the next minute try once without backoff, so an outage costs
        a study one quick failure per call instead of the full backoff each time.
        """
        delay = self.backoff
        known_down = time.monotonic() < self._down_until
        retries = 0 if known_down else self.retries
        for attempt in range(retries + 1):
            try:
                result = fn()
                self._down_until = 0.0
                return result
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                    raise
                error: Exception = exc
            except (OSError, ConnectionError) as exc:  # requests' errors derive from OSError
                error = exc
            except Exception as exc:
                if exc.__class__.__module__.startswith(("sqlalchemy", "requests", "urllib3")):
                    error = exc
                else:
                    raise
            if attempt < retries:
                time.sleep(delay)
                delay *= 2
        self._down_until = time.monotonic() + _OUTAGE_SECONDS
        message = redact(f"MLflow at {self.tracking_uri} did not answer to {what} ({_brief(error)})")
        # The caller reports it (progress warning, `hpo reconcile` hint); here it is only a trace.
        logger.info(message)
        raise TrackingUnavailable(message)

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._call("open the experiment", self._ensure_experiment)
        return self._experiment_id

    def _ensure_experiment(self) -> str:
        """Get or create the experiment; safe when many workers start at once."""
        existing = self.client.get_experiment_by_name(self.experiment_name)
        if existing is not None:
            if existing.lifecycle_stage == "deleted":
                self.client.restore_experiment(existing.experiment_id)
            if existing.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # experiments of older hpo versions
                self.client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return existing.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment_name,
                artifact_location=self._artifact_location(),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = self.client.get_experiment_by_name(self.experiment_name)
            assert found is not None
            return found.experiment_id

    def _artifact_location(self) -> str | None:
        """With an embedded SQLite store, keep artifacts beside the database file, not in the CWD."""
        path = sqlite_path(self.tracking_uri)
        if path is None:
            return None
        root = path.resolve().parent / "mlartifacts"
        folder = (root / self.experiment_name).resolve()
        if folder.parent != root:  # study names are checked where they enter; this is the last guard
            raise ValueError(f"experiment name {self.experiment_name!r} would put artifacts outside {root}")
        return folder.as_uri()

    # -- study (parent) run -----------------------------------------------------------------------
    def find_study_run(self, study_name: str) -> str | None:
        runs = self._call(
            "find the study run",
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=runs_filter({ROLE: "study", "optuna.study_name": study_name}),
                order_by=["attributes.start_time ASC"],
                max_results=5,
            ),
        )
        return runs[0].info.run_id if runs else None

    def create_study_run(self, study_name: str, *, config_yaml: str, tags: dict[str, str] | None = None) -> str:
        """The parent run: tag hpo.role=study and the resolved study file (credentials redacted), as an
        artifact and as the run's description."""
        all_tags = {ROLE: "study", "optuna.study_name": study_name, NOTE_TAG: study_note(config_yaml), **(tags or {})}
        run = self._call(
            "create the study run",
            lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=study_name),
        )
        run_id = run.info.run_id
        self._call("store the study file", lambda: self.client.log_text(run_id, redact(config_yaml), "study.yaml"))
        return run_id

    def log_study_summary(self, run_id: str, summary: StudySummary, *, config_yaml: str) -> None:
        """Put where a study stands on its parent run, in one request: metrics the collapsed runs table
        shows in the trials' own columns (`best_<metric>`, counts by state; step = finished trials, so
        their charts trace the study's progress), tags, and the description (summary above the study file)."""
        stamp, step = _now_ms(), summary.finished
        metrics = [Metric(k, float(v), stamp, step) for k, v in summary.metrics().items()]
        tags = [RunTag(k, redact(v)[:_PARAM_VALUE_LIMIT]) for k, v in summary.tags().items()]
        tags.append(RunTag(NOTE_TAG, study_note(config_yaml, summary=summary.text())))
        self._call(
            "update the study run", lambda: self.client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
        )

    def set_runs_view(self, *, metrics: list[str], params: list[str], sort_by: str | None, ascending: bool) -> None:
        """Store the study's runs view (columns: each metric's best and last value, the trial counts, the
        searched params; sorted by `sort_by`) as the experiment's shared view, which `ui_link` opens."""
        columns = [
            f"metrics.`{name}`" for m in metrics for name in ((f"best_{m}", m) if m.startswith("val_") else (m,))
        ]
        columns += ["metrics.`best_epoch`", "metrics.`trials_complete`", "metrics.`trials_pruned`"]
        columns += [f"params.`{name}`" for name in params[:MAX_VIEW_PARAMS]]
        state: dict[str, Any] = {"selectedColumns": columns}
        if sort_by:
            state.update(orderByKey=f"metrics.`{sort_by}`", orderByAsc=ascending)
        value = json.dumps(state)
        self._call(
            "set the runs view", lambda: self.client.set_experiment_tag(self.experiment_id, RUNS_VIEW_TAG, value)
        )
        self._runs_view = True

    def ui_link(self, run_id: str | None = None) -> str | None:
        """The UI's page of this study's runs (in its shared view when one is stored) or of one run,
        opened on the model-training view; None when MLflow is a database or folder that no UI serves
        at a known address."""
        base = ui_base(self.tracking_uri)
        if base is None:
            return None
        runs = f"{base}/#/experiments/{self.experiment_id}/runs"
        if run_id:
            return f"{runs}/{run_id}?{UI_VIEW}"
        if self._runs_view is None:
            experiment = self._call("read the experiment", lambda: self.client.get_experiment(self.experiment_id))
            self._runs_view = RUNS_VIEW_TAG in experiment.tags
        return f"{runs}?viewStateShareKey={RUNS_VIEW_KEY}&{UI_VIEW}" if self._runs_view else f"{runs}?{UI_VIEW}"

    def set_study_status(self, run_id: str, status: str) -> None:
        self._call("update the study run", lambda: self.client.update_run(run_id, status=status))

    # -- trial runs -------------------------------------------------------------------------------
    def start_trial_run(
        self,
        *,
        parent_run_id: str,
        study_name: str,
        trial_number: int,
        seed: int,
        params: dict[str, Any],
        extra_tags: dict[str, str] | None = None,
    ) -> str:
        """Open the trial's child run with its tags and every hyperparameter as a param."""
        tags = _trial_run_tags(parent_run_id, study_name, trial_number, seed, extra_tags)
        run = self._call(
            "open the trial run",
            lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial-{trial_number:04d}"),
        )
        run_id = run.info.run_id
        self.log_params(run_id, params)
        return run_id

    def open_trial_run(
        self,
        *,
        parent_run_id: str,
        study_name: str,
        trial_number: int,
        seed: int,
        params: dict[str, Any],
        extra_tags: dict[str, str] | None = None,
        on_open: Callable[[str], None] | None = None,
    ) -> TrialRun:
        """The trial's child run as :meth:`start_trial_run` makes it, opened in the background: returns at
        once. `on_open(run_id)` runs (on the sender thread) as soon as the run exists; its params go out
        with the first epochs."""
        tags = _trial_run_tags(parent_run_id, study_name, trial_number, seed, extra_tags)
        run = TrialRun(self, _params(params))

        def open_run() -> str:
            created = self._call(
                "open the trial run",
                lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial-{trial_number:04d}"),
            )
            run_id = created.info.run_id
            if on_open is not None:
                on_open(run_id)
            return run_id

        run._opened = self._sender.submit(open_run)
        return run

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        for chunk in _chunks(_params(params), _MAX_PARAMS_PER_BATCH):
            self._call("log params", lambda c=chunk: self.client.log_batch(run_id, params=c, synchronous=True))

    def log_epoch(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Buffer one epoch's metrics; send them when the buffer is a few seconds old."""
        stamp = _now_ms()
        buffer = self._pending.setdefault(run_id, [])
        buffer.extend(Metric(k, float(v), stamp, step) for k, v in metrics.items())
        now = time.monotonic()
        if now - self._last_flush.setdefault(run_id, now) >= self.flush_seconds:
            self.flush(run_id)

    def flush(self, run_id: str) -> None:
        metrics = self._pending.pop(run_id, [])
        self._last_flush[run_id] = time.monotonic()
        for chunk in _chunks(metrics, _MAX_METRICS_PER_BATCH):
            self._call("log metrics", lambda c=chunk: self.client.log_batch(run_id, metrics=c, synchronous=True))

    def end_trial_run(
        self,
        run_id: str,
        *,
        state: str,
        summary: dict[str, float] | None = None,
        reason: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Send the buffered epochs with the summary metrics, the Optuna state and `tags`, and close the run with the matching status.

        Buffered epochs and the summary share one `log_batch` when they fit (a database round trip per
        trial saved; see BENCHMARKS.md); MLflow caps a batch at 1000 metrics and tags together.
        """
        self._last_flush.pop(run_id, None)
        self._close(run_id, self._pending.pop(run_id, []), [], state=state, summary=summary, reason=reason, tags=tags)

    def _close(
        self,
        run_id: str,
        metrics: list[Metric],
        params: list[Param],
        *,
        state: str,
        summary: dict[str, float] | None,
        reason: str | None,
        tags: dict[str, str] | None,
    ) -> None:
        """The closing batch (epochs not sent yet, params not sent yet, the summary, the state tags), then the run's status."""
        stamp = _now_ms()
        metrics = metrics + [Metric(k, float(v), stamp, 0) for k, v in (summary or {}).items()]
        run_tags = [RunTag("optuna.state", state), *(RunTag(k, redact(str(v))) for k, v in (tags or {}).items())]
        if reason:
            run_tags.append(RunTag("hpo.failure_reason", redact(reason)[:4000]))
            run_tags.append(RunTag("mlflow.note.content", redact(f"{state}: {reason}")[:4000]))
        for batch_metrics, batch_params, batch_tags in _batches(metrics, params, run_tags):
            self._call(
                "close the trial run",
                lambda m=batch_metrics, p=batch_params, t=batch_tags: self.client.log_batch(
                    run_id, metrics=m, params=p, tags=t, synchronous=True
                ),
            )
        self._call("close the trial run", lambda: self.client.set_terminated(run_id, status=STATE_TO_STATUS[state]))

    # -- artifacts --------------------------------------------------------------------------------
    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("upload an artifact", lambda: self.client.log_artifact(run_id, str(path), artifact_path))

    def log_artifacts(self, run_id: str, directory: str | Path, artifact_path: str | None = None) -> None:
        self._call("upload artifacts", lambda: self.client.log_artifacts(run_id, str(directory), artifact_path))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call("upload a text artifact", lambda: self.client.log_text(run_id, redact(text), artifact_file))

    def log_dict(self, run_id: str, data: dict[str, Any], artifact_file: str) -> None:
        text = redact(json.dumps(data, indent=2, default=str))
        self._call("upload a JSON artifact", lambda: self.client.log_text(run_id, text, artifact_file))

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        self._call("upload a figure", lambda: self.client.log_figure(run_id, figure, artifact_file))

    def download_artifacts(self, run_id: str, path: str, destination: str | Path) -> Path:
        local = self._call("download artifacts", lambda: self.client.download_artifacts(run_id, path, str(destination)))
        return Path(local)

    def delete_artifacts(self, run_id: str, path: str, *, artifact_uri: str | None = None) -> None:
        """Remove a run's artifact folder (used to keep only the top-k checkpoints on disk).

        `artifact_uri` spares a lookup when the caller already holds the run.
        """
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if artifact_uri is None:
            artifact_uri = self._call("find a run", lambda: self.client.get_run(run_id)).info.artifact_uri
        try:
            repo = get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)
            self._call("delete artifacts", lambda: repo.delete_artifacts(path))
        except (MlflowException, NotImplementedError, FileNotFoundError) as exc:
            logger.warning("could not delete %s of run %s: %s", path, run_id, exc)

    # -- generic runs and queries -----------------------------------------------------------------
    def create_run(
        self, *, role: str, run_name: str, parent_run_id: str | None = None, tags: dict[str, str] | None = None
    ) -> str:
        all_tags = {ROLE: role, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self._call(
            "create a run", lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
        )
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        stamp = _now_ms()
        entries = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        for chunk in _chunks(entries, _MAX_METRICS_PER_BATCH):
            self._call("log metrics", lambda c=chunk: self.client.log_batch(run_id, metrics=c, synchronous=True))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        entries = [RunTag(k, redact(str(v))) for k, v in tags.items()]
        self._call("set tags", lambda: self.client.log_batch(run_id, tags=entries, synchronous=True))

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("close a run", lambda: self.client.set_terminated(run_id, status=status))

    def get_run(self, run_id: str) -> Any:
        return self._call("read a run", lambda: self.client.get_run(run_id))

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self._call("read a metric history", lambda: self.client.get_metric_history(run_id, key))

    def search_runs(self, tags: dict[str, str], *, status: str | None = None, max_results: int = 1000) -> list[Any]:
        """The experiment's runs with these tag values (and status), every value quoted for MLflow's filter syntax."""
        filter_string = runs_filter(tags, status=status)
        runs: list[Any] = []
        token = None
        while True:
            page = self._call(
                "search runs",
                lambda t=token: self.client.search_runs(
                    [self.experiment_id], filter_string=filter_string, max_results=max_results, page_token=t
                ),
            )
            runs.extend(page)
            token = page.token
            if not token or len(runs) >= max_results:
                return runs

    def runs_with_status(self, status: str, *, role: str = "trial") -> list[Any]:
        return self.search_runs({ROLE: role}, status=status)

    def log_model(
        self,
        run_id: str,
        python_model: Any,
        *,
        name: str,
        artifacts: dict[str, str] | None = None,
        registered_model_name: str | None = None,
        example: tuple[Any, Any] | None = None,
        code_paths: list[str] | None = None,
        pip_requirements: list[str] | None = None,
    ) -> Any:
        """Log an MLflow pyfunc model into `run_id` and optionally register it in the model registry.

        `example` is (inputs, outputs): the signature is inferred from it and the inputs are kept as the
        input example, which MLflow checks by loading the model and predicting. Explicit
        `pip_requirements` spare MLflow from loading the model in a subprocess to guess them.
        """
        signature = mlflow.models.infer_signature(*example) if example is not None else None
        input_example = example[0] if example is not None else None

        def log() -> Any:
            mlflow.set_tracking_uri(self.tracking_uri)
            pyfunc_logger = logging.getLogger("mlflow.pyfunc")
            level = pyfunc_logger.level
            pyfunc_logger.setLevel(
                logging.ERROR
            )  # the python_model is a plain instance: its cloudpickle advisory is noise
            try:
                with mlflow.start_run(run_id=run_id, experiment_id=self.experiment_id):
                    return mlflow.pyfunc.log_model(
                        name=name,
                        python_model=python_model,
                        artifacts=artifacts,
                        registered_model_name=registered_model_name,
                        signature=signature,
                        input_example=input_example,
                        code_paths=code_paths,
                        pip_requirements=pip_requirements,
                    )
            finally:
                pyfunc_logger.setLevel(level)

        return self._call("log a model", log)

    def log_torch_model(
        self,
        run_id: str,
        model: Any,
        *,
        name: str,
        registered_model_name: str | None = None,
        example: tuple[Any, Any] | None = None,
        code_paths: list[str] | None = None,
        pip_requirements: list[str] | None = None,
    ) -> Any:
        """Log a PyTorch module with the `mlflow.pytorch` flavor, optionally registering it.

        The module is pickled (its classes travel in `code_paths`): MLflow's "pt2" alternative traces
        it with torch.export, which costs more than the whole evaluation of a small model.
        `example` is (inputs, outputs) for the signature.
        """
        import mlflow.pytorch

        signature = mlflow.models.infer_signature(*example) if example is not None else None

        def log() -> Any:
            mlflow.set_tracking_uri(self.tracking_uri)
            with mlflow.start_run(run_id=run_id, experiment_id=self.experiment_id):
                return mlflow.pytorch.log_model(
                    model,
                    name=name,
                    registered_model_name=registered_model_name,
                    signature=signature,
                    serialization_format="pickle",
                    code_paths=code_paths,
                    pip_requirements=pip_requirements,
                )

        return self._call("log a model", log)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of the files (not folders) directly under `path` of a run's artifacts."""
        entries = self._call("list artifacts", lambda: self.client.list_artifacts(run_id, path))
        return [e.path for e in entries if not e.is_dir]


class TrialRun:
    """A trial's MLflow run, fed from the training loop without waiting on the store.

    Opening the run, its per-epoch metrics and its closing batch go to the tracker's sender thread, in
    order. Only :meth:`close` waits, and hpo tells Optuna a trial's state after it: a finished trial's
    run holds every epoch it reported, and a worker killed mid-trial loses at most the epochs reported
    since the last send (a fraction of a second), its trial being failed or retried.
    """

    def __init__(self, tracker: Tracker, params: list[Param]) -> None:
        self._tracker = tracker
        self._params = params  # sent with the first epochs, or the closing batch
        self._opened: Future[str] = Future()  # the run id, once the sender has created the run
        self._lock = threading.Lock()
        self._pending: list[Metric] = []
        self._queued = False  # a send of this run waits in the sender's queue
        self._next_send = 0.0  # monotonic time before which this run's next send waits
        self._failed: BaseException | None = None  # the first request of this run that failed

    @property
    def run_id(self) -> str:
        """The run's id (waits for the run to exist); TrackingUnavailable when it could not be opened."""
        return self._opened.result()

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        """Queue one epoch's metrics (`step` = epoch) for the sender.

        Raises TrackingUnavailable when an earlier request of this run failed: from then on the run
        misses data, which `hpo reconcile` backfills from Optuna."""
        self._raise_failure()
        stamp = _now_ms()
        with self._lock:
            self._pending.extend(Metric(k, float(v), stamp, step) for k, v in metrics.items())
            if self._queued:
                return
            self._queued = True
        self._tracker._sender.submit(self._send, not_before=lambda: self._next_send)

    def close(
        self,
        *,
        state: str,
        summary: dict[str, float] | None = None,
        reason: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Send what is left with the summary metrics, the Optuna state and `tags`; close the run with
        the matching status; return when that is done, so the run holds every epoch reported.

        Raises TrackingUnavailable when a request of the run failed; the run then stays open for
        `hpo reconcile`, which closes it with the trial's state.
        """
        with self._lock:  # the closing batch takes every epoch not sent yet: one request, not two
            metrics, params, self._pending, self._params = self._pending, self._params, [], []
        self._next_send = 0.0  # a send waiting for its turn runs now (and finds nothing left)

        def close() -> None:
            run_id = self._opened.result()
            if self._failed is not None:
                raise self._failed
            self._tracker._close(run_id, metrics, params, state=state, summary=summary, reason=reason, tags=tags)

        self._tracker._sender.submit(close).result()

    def _raise_failure(self) -> None:
        if self._failed is None and self._opened.done() and self._opened.exception() is not None:
            self._failed = self._opened.exception()
        if self._failed is not None:
            raise self._failed

    def _send(self) -> None:
        """On the sender thread: every epoch queued so far (and the params, the first time) in one request."""
        with self._lock:
            metrics, params, self._pending, self._params, self._queued = self._pending, self._params, [], [], False
        if self._failed is not None or not (metrics or params):
            return
        started = time.monotonic()
        try:
            run_id = self._opened.result()
            for batch_metrics, batch_params, _ in _batches(metrics, params, []):
                self._tracker._call(
                    "log metrics",
                    lambda m=batch_metrics, p=batch_params: self._tracker.client.log_batch(
                        run_id, metrics=m, params=p, synchronous=True
                    ),
                )
        except BaseException as exc:
            self._failed = exc
        finally:
            took = time.monotonic() - started
            self._next_send = time.monotonic() + min(_SEND_GAP_FACTOR * took, _MAX_SEND_GAP)


class _Sender:
    """One daemon thread that runs a tracker's background MLflow requests in the order they were handed over.

    A job may wait for a moment (`not_before`, read again whenever the sender wakes, so it can be
    brought forward); the jobs behind it wait too. The thread ends after a few idle seconds and is
    started again by the next job.
    """

    _IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        self._jobs: deque[tuple[Callable[[], Any], Future[Any], Callable[[], float] | None]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], T], *, not_before: Callable[[], float] | None = None) -> Future[T]:
        future: Future[T] = Future()
        with self._wake:
            self._jobs.append((fn, future, not_before))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hpo-tracking-sender", daemon=True)
                self._thread.start()
            self._wake.notify()
        return future

    def _next(self) -> tuple[Callable[[], Any], Future[Any]] | None:
        with self._wake:
            while True:
                if not self._jobs:
                    if not self._wake.wait(self._IDLE_SECONDS) and not self._jobs:
                        self._thread = None
                        return None
                    continue
                fn, future, not_before = self._jobs[0]
                delay = not_before() - time.monotonic() if not_before is not None else 0.0
                if delay <= 0:
                    self._jobs.popleft()
                    return fn, future
                self._wake.wait(delay)

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)


@dataclass
class RegisteredModel:
    """A model of MLflow's model registry, loaded on the CPU: the torch module of an `mlflow.pytorch` model,
    or the Python model inside a pyfunc model (hpo's ensemble)."""

    uri: str
    run_id: str | None  # the run that logged it
    flavor: str  # "pytorch" or "python_function"
    model: Any


def load_registered_model(tracking_uri: str, uri: str) -> RegisteredModel:
    """Load `uri` (``models:/<name>/<version>``, or ``@alias``/``latest`` as MLflow resolves them) from the
    registry at `tracking_uri`. An unknown model is a UsageError naming the registered ones."""
    tracking_uri = absolute_sqlite_uri(tracking_uri)
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise UsageError(
            f"model: {uri}: {redact(tracking_uri)} holds no MLflow store; pass --tracking-uri (or MLFLOW_TRACKING_URI) of the one `hpo evaluate` wrote"
        )
    client = _open_client(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)  # models:/ URIs resolve against the current registry
    try:
        info = mlflow.models.get_model_info(uri)
    except (MlflowException, OSError) as exc:
        names = sorted(m.name for m in client.search_registered_models(max_results=1000))
        known = (
            f"registered models there: {', '.join(names)}"
            if names
            else "no model is registered there yet (`hpo evaluate STUDY` registers <study>-best and <study>-ensemble)"
        )
        raise UsageError(f"model: {uri} not found in {redact(tracking_uri)} ({_brief(exc)[:120]}); {known}") from None
    if "pytorch" in info.flavors:
        from mlflow import pytorch as mlflow_pytorch

        return RegisteredModel(uri, info.run_id, "pytorch", mlflow_pytorch.load_model(uri, map_location="cpu").eval())
    loaded = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    return RegisteredModel(uri, info.run_id, "python_function", loaded.unwrap_python_model())


def read_run_json(tracking_uri: str, run_id: str, artifact_file: str) -> dict[str, Any] | None:
    """A JSON artifact of a run (None when the run has no such file)."""
    import tempfile

    client = _open_client(absolute_sqlite_uri(tracking_uri))
    with tempfile.TemporaryDirectory(prefix="hpo-artifact-") as tmp:
        try:
            local = client.download_artifacts(run_id, artifact_file, tmp)
        except (MlflowException, OSError):
            return None
        return dict(json.loads(Path(local).read_text()))


def runs_filter(tags: dict[str, str], *, status: str | None = None) -> str:
    """An MLflow search filter matching every tag value exactly (and the run status), safely quoted."""
    parts = [f"tags.`{_key(key)}` = {_quoted(value)}" for key, value in tags.items()]
    if status is not None:
        parts.append(f"attributes.status = {_quoted(status)}")
    return " and ".join(parts)


def _key(key: str) -> str:
    if "`" in key:
        raise ValueError(f"a tag key with a backtick cannot be searched: {key!r}")
    return key


def _quoted(value: str) -> str:
    """A string literal of MLflow's filter syntax: single quotes, or double quotes around a value with an apostrophe."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"a value with both kinds of quotes cannot be searched in MLflow: {value!r}")


@dataclass
class StudySummary:
    """Where a study stands: counts by state, and the best trial (single-objective) or Pareto front size."""

    study_name: str
    counts: dict[str, int]  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING -> trials
    best_values: dict[str, float] = field(default_factory=dict)  # metric -> value of the best trial
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    pareto_size: int | None = None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {f"best_{k}": v for k, v in self.best_values.items()}
        if self.best_trial is not None:
            out["best_trial"] = self.best_trial
        out.update(
            {
                name: self.counts.get(state, 0)
                for state, name in (
                    ("COMPLETE", "trials_complete"),
                    ("PRUNED", "trials_pruned"),
                    ("FAIL", "trials_failed"),
                )
            }
        )
        return out

    def tags(self) -> dict[str, str]:
        out = {"hpo.trials": self._counts_text()}
        if self.best_trial is not None:
            out.update(
                {"hpo.best_trial": str(self.best_trial), "hpo.best_params": json.dumps(self.best_params, default=str)}
            )
        if self.pareto_size is not None:
            out["hpo.pareto_front"] = str(self.pareto_size)
        return out

    def _counts_text(self) -> str:
        shown = [(s, self.counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")]
        return ", ".join(f"{n} {s.lower()}" for s, n in shown if n or s == "COMPLETE")

    def text(self) -> str:
        """Markdown lines for the run's description."""
        lines = [f"**Study {self.study_name}**: {self._counts_text()}."]
        if self.best_trial is not None:
            values = ", ".join(f"{k} **{v:.6g}**" for k, v in self.best_values.items())
            lines.append(f"Best: {values} (trial {self.best_trial}).")
            lines.append(
                "Best params: " + ", ".join(f"`{k}={_param_text(v)}`" for k, v in self.best_params.items()) + "."
            )
        elif self.pareto_size is not None:
            lines.append(f"Pareto front: {self.pareto_size} trials.")
        return "\n\n".join(lines)


def study_note(config_yaml: str, *, summary: str | None = None) -> str:
    """A study run's description: the summary (once trials finish), then the resolved study file."""
    head = f"{summary}\n\nStudy file (resolved):" if summary else "Study file (resolved):"
    text = redact(config_yaml).rstrip()
    room = _NOTE_LIMIT - len(head) - 200
    if len(text) > room:
        text = text[:room] + "\n# ... cut here: the whole file is the run's study.yaml artifact"
    return f"{head}\n\n```yaml\n{text}\n```"


def ui_base(tracking_uri: str) -> str | None:
    """The address of the UI that serves a tracking URI: an http(s) server's own, credentials removed."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def absolute_sqlite_uri(uri: str) -> str:
    """Pin a relative sqlite:/// URI to the current folder: MLflow caches stores per URI string, so a
    relative path would keep pointing at whichever folder the process was in when it first opened it."""
    path = sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


def _brief(error: Exception) -> str:
    """What went wrong in a few words: a connection error's cause, else the first line of the error."""
    text = str(error)
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "connection closed by the server"),
    ):
        if needle in text:
            return short
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{error.__class__.__name__}: {first[:200]}".rstrip(": ")


def _open_client(tracking_uri: str) -> MlflowClient:
    """A client on a database opens it at once and creates MLflow's tables: once, one process at a time
    and crash-safe (:mod:`hpo.databases`). On PostgreSQL the database is created if missing, and an
    unreachable server fails fast (MLflow itself retries for ~100 s)."""
    import sqlalchemy

    if tracking_uri.split(":", 1)[0].lower() in ("http", "https", "databricks", "file"):
        return MlflowClient(tracking_uri=tracking_uri)
    try:
        with prepared_database(tracking_uri, MLFLOW, build_mlflow_schema, field="tracking_uri"):
            return MlflowClient(tracking_uri=tracking_uri)
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceError(f"tracking_uri: cannot open {redact(tracking_uri)}: {first_line(exc)}") from None


def build_mlflow_schema(url: str) -> None:
    """MLflow's tables at their newest revision, as its own store creates them on an empty database."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(url)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()


def _param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _batches(
    metrics: list[Metric], params: list[Param], tags: list[RunTag]
) -> Iterable[tuple[list[Metric], list[Param], list[RunTag]]]:
    """`log_batch` requests within MLflow's limits (1000 metrics, 100 params, 100 tags, 1000 entries in
    all): as few as fit, params first and tags in the last (a run's state tag changes last)."""
    limits = {Param: _MAX_PARAMS_PER_BATCH, Metric: _MAX_METRICS_PER_BATCH, RunTag: _MAX_TAGS_PER_BATCH}
    batch: dict[type, list[Any]] = {kind: [] for kind in limits}
    size = 0
    for entry in [*params, *metrics, *tags]:
        kind = type(entry)
        if size == _MAX_ENTRIES_PER_BATCH or len(batch[kind]) == limits[kind]:
            yield batch[Metric], batch[Param], batch[RunTag]
            batch, size = {kind: [] for kind in limits}, 0
        batch[kind].append(entry)
        size += 1
    if size:
        yield batch[Metric], batch[Param], batch[RunTag]


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _trial_run_tags(
    parent_run_id: str, study_name: str, trial_number: int, seed: int, extra_tags: dict[str, str] | None
) -> dict[str, str]:
    """A trial run's tags when it opens: its parent (the study run), the Optuna trial it records, its seed."""
    return {
        "mlflow.parentRunId": parent_run_id,
        ROLE: "trial",
        "optuna.study_name": study_name,
        "optuna.trial_number": str(trial_number),
        "optuna.state": "RUNNING",
        "hpo.seed": str(seed),
        **(extra_tags or {}),
    }


def _params(params: dict[str, Any]) -> list[Param]:
    """Hyperparameters as MLflow params: text, credentials redacted, cut to MLflow's value limit."""
    return [Param(k, redact(_param_text(v))[:_PARAM_VALUE_LIMIT]) for k, v in params.items()]
