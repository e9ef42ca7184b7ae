"""Many workers on one study: Optuna's gRPC storage proxy in front of the database, as `grpc://host:port`.

With direct RDB access every worker holds its own pool of database connections and re-reads every
trial on each ask. Optuna's gRPC proxy (`optuna.storages.run_grpc_proxy_server`, `GrpcStorageProxy`)
puts one process in front of the database: workers keep a cache of finished trials and fetch only what
changed, and the database sees the proxy's few connections however many workers there are.

hpo adds the two things its workers rely on that the plain proxy lacks:

- **heartbeats**: a worker beats by setting the trial system attribute ``hpo:heartbeat``; hpo's proxy
  turns that into an RDB heartbeat (so `hpo reconcile` on the database URL sees it too) and stamps the
  attribute with its own clock, which workers compare with theirs to find dead workers' trials
  (clocks must agree within the grace period, as NTP keeps them);
- **an exact budget**: workers cannot take the database's budget lock through the proxy, so the proxy
  takes it when a worker asks for a new trial, and refuses one the study's stored budget
  (``hpo.budget``) has no room for. The worker reads the refusal as "budget used up".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from hpo.config.settings import GRPC_SCHEME, grpc_address
from hpo.errors import ServiceError
from hpo.running.trial_rows import LeanRDBStorage, grace_seconds

HEARTBEAT_ATTR = "hpo:heartbeat"
BUDGET_REFUSED = "hpo: the study's trial budget is used up"

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def budget_refused(exc: KeyError) -> bool:
    """Whether `exc` (from `create_new_trial` through the proxy) is hpo's proxy refusing a trial beyond the budget.

    Optuna's client raises a bare KeyError for the NOT_FOUND status; the reason is in the gRPC error's details.
    """
    details = getattr(exc.__cause__, "details", None)
    return BUDGET_REFUSED in str(exc) or (callable(details) and BUDGET_REFUSED in str(details()))


class GrpcStorage(GrpcStorageProxy, BaseHeartbeat):
    """Optuna's gRPC client with heartbeats, so that a dead worker's trial is failed and re-queued as on an RDB."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        stale_trial_callback: StaleCallback | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = grace_seconds(self.heartbeat_interval, self.grace_period)
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            t._trial_id
            for t in running
            if HEARTBEAT_ATTR in t.system_attrs and now - float(t.system_attrs[HEARTBEAT_ATTR]) > grace
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.stale_trial_callback


def connect(url: str, *, field: str = "storage", timeout: float = 10.0, **heartbeat: Any) -> GrpcStorage:
    """A client of the proxy at `url`, once the proxy answers; ServiceError (exit 1) if it does not."""
    host, port = grpc_address(url, field=field)
    storage = GrpcStorage(host, port, **heartbeat)
    try:
        storage.wait_server_ready(timeout=timeout)
    except ConnectionError:
        storage.close()
        raise ServiceError(
            f"{field}: no gRPC storage proxy answers at {host}:{port} within {timeout:.0f}s;"
            f" start one with `hpo server --grpc-port {port}`"
        ) from None
    return storage


class ProxiedStorage(LeanRDBStorage):
    """The database behind hpo's proxy: heartbeats recorded in the database, new trials only within the budget."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._budget_guard = threading.Lock()  # this proxy's threads; the database lock covers other processes

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_ATTR:
            self.record_heartbeat(trial_id)
            value = time.time()  # the proxy's clock: one clock for every worker's beats
        super().set_trial_system_attr(trial_id, key, value)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # a queued trial claimed by a worker
            self._first_beat(trial_id)
        return changed

    def _first_beat(self, trial_id: int) -> None:
        """A trial that starts running is alive now: a worker killed before its first own beat leaves a
        trial that goes stale like any other, instead of one never failed (no stamp) or failed at once
        (a stamp older than the trial)."""
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, None)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # The one door to a new trial: RDBStorage.create_new_trial and Optuna's cache in front both call it.
        if template_trial is not None:  # enqueued or re-queued trials: counted already, or replacing a failure
            return super()._create_new_trial(study_id, template_trial)
        from hpo.running.meta import BUDGET_ATTR
        from hpo.running.storage import budget_lock

        name = self.get_study_name_from_id(study_id)
        with self._budget_guard, budget_lock(self.url, name):
            n_trials = (self.get_study_user_attrs(study_id).get(BUDGET_ATTR) or {}).get("n_trials")
            if n_trials is not None and self._budget_used(study_id) >= int(n_trials):
                raise KeyError(
                    BUDGET_REFUSED
                )  # Optuna's servicer sends a KeyError as NOT_FOUND; the client raises KeyError
            created = super()._create_new_trial(study_id)
        self._first_beat(created._trial_id)
        return created

    def _budget_used(self, study_id: int) -> int:
        """Trials that use up the budget, queued ones included, counted in SQL instead of loading every trial."""
        from hpo.running.budget import BudgetTally

        return BudgetTally.read(self.engine, study_id).used()


class ProxyServer:
    """Optuna's gRPC storage proxy serving `storage_url` on host:port, in a thread pool of this process."""

    def __init__(self, storage_url: str, *, host: str, port: int, threads: int = 8) -> None:
        self.storage_url, self.host, self.port, self.threads = storage_url, host, port, threads
        self._server: Any = None

    def start(self) -> str:
        """Serve (the Optuna schema created if missing) and return the workers' storage URL."""
        from optuna.storages._grpc.server import make_server  # the non-blocking half of run_grpc_proxy_server

        from hpo.running.storage import open_storage

        opened = open_storage(self.storage_url, field="--storage")  # the schema created once, crash-safe
        if isinstance(opened, RDBStorage):  # a database URL (a grpc:// one is refused before)
            opened.engine.dispose()
        # One database connection per serving thread at most: the proxy is the only client the database sees.
        backend = ProxiedStorage(
            self.storage_url,
            engine_kwargs={"pool_size": self.threads, "max_overflow": 1, "pool_pre_ping": True},
            skip_table_creation=True,
        )
        # Optuna's cache in front, as `optuna.storages.get_storage` gives it: finished trials are read
        # from the database once, not on every worker's request (the servicer asks for all trials).
        storage = optuna.storages._CachedStorage(backend)
        self._server = make_server(
            storage, self.host, self.port, ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="hpo-grpc")
        )
        self._server.start()
        return self.url

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{GRPC_SCHEME}://{f'[{host}]' if ':' in host else host}:{self.port}"

    def stop(self, *, grace: float = 5.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
            self._server = None
