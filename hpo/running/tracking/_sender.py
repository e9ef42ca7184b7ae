"""A trial's run fed in the background: one sender thread per tracker sends epochs in batches, in order."""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from mlflow.entities import Metric, Param, RunTag

if TYPE_CHECKING:
    from hpo.running.tracking._runs import RunWriter

T = TypeVar("T")
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_MAX_TAGS_PER_BATCH = 100
_MAX_ENTRIES_PER_BATCH = 1000
# A run's epochs go out at most once a second (its first ones a second after it opened), and after a
# slow send the sender waits three times its duration (at most 2 s): epochs reported meanwhile go in one
# batch, so a trial of many quick epochs costs a few requests, not one per epoch, and the sender stays
# busy at most a quarter of the time. It shares the interpreter with the training loop: on the embedded
# SQLite store every send is Python work that slows the training as much as it costs (measured:
# sub-second Boston trials trained 0.163 s a trial with a send every few epochs, 0.125 s with none), so
# a trial shorter than a second sends its whole curve with its closing batch.
_MIN_SEND_GAP = 1.0
_SEND_GAP_FACTOR = 3.0
_MAX_SEND_GAP = 2.0


def now_ms() -> int:
    return int(time.time() * 1000)


class TrialRun:
    """A trial's MLflow run, fed from the training loop without waiting on the store.

    Opening the run, its per-epoch metrics and its closing batch go to the tracker's sender thread, in
    order. Only :meth:`close` waits, and hpo tells Optuna a trial's state after it: a finished trial's
    run holds every epoch it reported, and a worker killed mid-trial loses at most the epochs reported
    since the last send (one or two seconds of training), its trial being failed or retried.
    """

    def __init__(self, tracker: RunWriter, params: list[Param]) -> None:
        self._tracker = tracker
        self._params = params  # sent with the first epochs, or the closing batch
        self._opened: Future[str] = Future()  # the run id, once the sender has created the run
        self.artifact_uri: str | None = None  # where the run's files go, known once it is open
        self._lock = threading.Lock()
        self._pending: list[Metric] = []
        self._queued = False  # a send of this run waits in the sender's queue
        self._next_send = time.monotonic() + _MIN_SEND_GAP  # before this, the run's next send waits
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
        stamp = now_ms()
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
            if self._tracker._write_tables(run_id, metrics, params=params):
                return
            for batch_metrics, batch_params, _ in batches(metrics, params, []):
                log = functools.partial(
                    self._tracker.client.log_batch, run_id, metrics=batch_metrics, params=batch_params, synchronous=True
                )
                self._tracker._call("log metrics", log)
        except BaseException as exc:
            self._failed = exc
        finally:
            took = time.monotonic() - started
            gap = min(max(_MIN_SEND_GAP, _SEND_GAP_FACTOR * took), _MAX_SEND_GAP)
            self._next_send = time.monotonic() + gap


class Sender:
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


def batches(
    metrics: list[Metric], params: list[Param], tags: list[RunTag]
) -> Iterable[tuple[list[Metric], list[Param], list[RunTag]]]:
    """`log_batch` requests within MLflow's limits (1000 metrics, 100 params, 100 tags, 1000 entries in
    all): as few as fit, params first and tags in the last (a run's state tag changes last)."""
    limits = {Param: MAX_PARAMS_PER_BATCH, Metric: MAX_METRICS_PER_BATCH, RunTag: _MAX_TAGS_PER_BATCH}
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


def chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
