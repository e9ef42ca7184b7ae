"""The connection to MLflow: the client (the store prepared once), the experiment, retries and backoff.

MLflow's settings hpo relies on (fail fast on a dead server, nothing printed on stdout) are applied by
:func:`configure_mlflow` when the first client opens, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from hpo.config.settings import env_setting, is_postgresql, redact, sqlite_path
from hpo.errors import ServiceError
from hpo.running.databases import MLFLOW, first_line, prepared_database
from hpo.running.tracking._layout import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from hpo.running.tracking._sender import Sender, now_ms
from hpo.running.tracking._tables import MlflowTables

logger = logging.getLogger("hpo.running.tracking")
T = TypeVar("T")
_OUTAGE_SECONDS = 60.0
_MLFLOW_DEFAULTS = {
    # Fail fast on a dead server: MLflow's own default retries for minutes before giving up.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # MLflow prints a "View run" link on stdout (after an extra request) whenever a run ends on a server;
    # stdout is for results (`--json`), and hpo says where the runs are itself.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no bars in hpo's own output
}


class TrackingUnavailable(ServiceError):
    """MLflow could not be reached after retries; the caller records the trial for `hpo reconcile`.

    A ServiceError, so a command that cannot go on without MLflow (reconcile, predict, evaluate) ends
    with its one line and exit 1, not a traceback."""


def configure_mlflow() -> None:
    """MLflow's settings for hpo, unless the environment sets them: before every client opens (idempotent).

    They are environment variables because MLflow reads them there (and so does an `mlflow server` hpo
    starts). MLflow sets its logger's level when imported, so the level is applied here as well, once.
    """
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        _quiet_mlflow_logger()
    for key, value in _MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)


@functools.cache
def _quiet_mlflow_logger() -> None:
    logging.getLogger("mlflow").setLevel(_MLFLOW_DEFAULTS["MLFLOW_LOGGING_LEVEL"])


class Connection:
    """A study's MLflow client and experiment, and the retries every request goes through."""

    def __init__(
        self, tracking_uri: str, experiment_name: str, *, retries: int | None = None, backoff: float | None = None
    ) -> None:
        tracking_uri = absolute_sqlite_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.client = open_client(tracking_uri)
        # HPO_TRACKING_RETRIES / HPO_TRACKING_BACKOFF (seconds, doubling) tune how long a dead server is waited for.
        self.retries = retries if retries is not None else int(env_setting("HPO_TRACKING_RETRIES"))
        self.backoff = backoff if backoff is not None else float(env_setting("HPO_TRACKING_BACKOFF"))
        self._down_until = 0.0  # while MLflow is known to be down, one attempt per call, no waiting
        self._experiment_id: str | None = None
        self._runs_view: bool | None = None  # whether the experiment holds hpo's shared runs view (None: not known)
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush: dict[str, float] = {}
        self.flush_seconds = 5.0
        self._sender = Sender()

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
        message = redact(f"MLflow at {self.tracking_uri} did not answer to {what} ({brief(error)})")
        # The caller reports it (progress warning, `hpo reconcile` hint); here it is only a trace.
        logger.info(message)
        raise TrackingUnavailable(message)

    def _write_tables(
        self,
        run_id: str,
        metrics: list[Metric],
        *,
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        status: str | None = None,
        what: str = "log metrics",
    ) -> bool:
        """Write a run's records straight into a database store's tables (:mod:`._tables`: a few statements
        instead of MLflow's ORM objects and sessions); False where that does not apply and nothing was
        written, so the caller sends them through MLflow's client."""
        writer = self._tables
        if writer is None:
            return False
        end_time = now_ms() if status is not None else None
        write = functools.partial(
            writer.write, run_id, metrics, params=params, tags=tags, status=status, end_time=end_time
        )
        return self._call(what, write)

    def _create_run(self, what: str, *, run_name: str, tags: dict[str, str]) -> tuple[str, str]:
        """A new run of the study's experiment: its id and artifact URI. Written straight into a database
        store's tables where that applies (:mod:`._tables`), else by MLflow's client."""
        writer = self._tables
        if writer is not None:
            create = functools.partial(
                writer.create_run,
                self.experiment_id,
                self._artifact_location_of_experiment,
                run_name=run_name,
                tags=tags,
                start_time=now_ms(),
            )
            created = self._call(what, create)
            if created is not None:
                return created
        run = self._call(what, lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=run_name))
        return run.info.run_id, run.info.artifact_uri

    @functools.cached_property
    def _artifact_location_of_experiment(self) -> str:
        """Where the experiment's runs keep their files (each in a folder of its own), as MLflow reads it."""
        experiment = self._call("read the experiment", lambda: self.client.get_experiment(self.experiment_id))
        return str(experiment.artifact_location)

    @functools.cached_property
    def _tables(self) -> MlflowTables | None:
        """Probed the first time a run's records are sent, then kept."""
        return MlflowTables.for_store(self.tracking_uri)

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


def absolute_sqlite_uri(uri: str) -> str:
    """Pin a relative sqlite:/// URI to the current folder: MLflow caches stores per URI string, so a
    relative path would keep pointing at whichever folder the process was in when it first opened it."""
    path = sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


def brief(error: Exception) -> str:
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


def open_client(tracking_uri: str) -> MlflowClient:
    """A client on a database opens it at once and creates MLflow's tables: once, one process at a time
    and crash-safe (:mod:`hpo.running.databases`). On PostgreSQL the database is created if missing, and an
    unreachable server fails fast (MLflow itself retries for ~100 s)."""
    import sqlalchemy

    configure_mlflow()
    if tracking_uri.split(":", 1)[0].lower() in ("http", "https", "databricks", "file"):
        return MlflowClient(tracking_uri=tracking_uri)
    try:
        with prepared_database(tracking_uri, MLFLOW, build_mlflow_schema, field="tracking_uri"):
            with _unpooled_mlflow_store(tracking_uri):
                client = MlflowClient(tracking_uri=tracking_uri)
                client._tracking_client.store  # noqa: B018  # MLflow builds and caches its store (and engine) here
            return client
    except sqlalchemy.exc.OperationalError as exc:
        raise ServiceError(f"tracking_uri: cannot open {redact(tracking_uri)}: {first_line(exc)}") from None


@contextlib.contextmanager
def _unpooled_mlflow_store(tracking_uri: str) -> Iterator[None]:
    """MLflow's own store in a client process opens a PostgreSQL connection per request instead of keeping
    them: hpo writes its runs through :class:`MlflowTables` (one kept connection), MLflow's store is left
    a few requests at start, and 32 workers keeping two connections each filled a server of 100. Unless the
    environment chooses MLflow's pool; never for an MLflow server (its requests are all through the store)."""
    key = "MLFLOW_SQLALCHEMYSTORE_POOLCLASS"
    if key in os.environ or not is_postgresql(tracking_uri):
        yield
        return
    os.environ[key] = "NullPool"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def build_mlflow_schema(url: str) -> None:
    """MLflow's tables at their newest revision, as its own store creates them on an empty database."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    configure_mlflow()
    engine = sqlalchemy.create_engine(url)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
