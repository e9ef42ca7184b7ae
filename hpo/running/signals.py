"""Stopping a worker cleanly: SIGINT and SIGTERM, and the heartbeats that tell other workers this one lives."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna

logger = logging.getLogger("hpo.running.runner")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the current trial is closed cleanly and re-queued, then the run stops (exit code 130)."""


class StopSignals:
    """SIGINT and SIGTERM (Ctrl-C, batch schedulers, `docker stop`, preemption) stop a worker cleanly.

    While a trial trains, the first signal abandons it at once: its run is closed FAILED and it is
    re-queued. Anywhere else the stop waits for the bookkeeping under way (asking, telling, closing
    a run), so nothing is left RUNNING in Optuna or MLflow. A second signal stops at once.
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._armed = False
        self._name = "SIGINT"
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        again = self._requested.is_set()
        self._name = signal.Signals(signum).name
        self._requested.set()
        if self._armed or again:
            self._armed = False
            raise Interrupted(self._name)

    def check(self) -> None:
        """Raise Interrupted if a stop was asked for."""
        if self._requested.is_set():
            raise Interrupted(self._name)

    def wait(self, seconds: float) -> bool:
        """Sleep, waking early (True) when a stop is asked for."""
        return self._requested.wait(seconds)

    @contextmanager
    def training(self) -> Iterator[None]:
        """The part of a trial a signal may cut short."""
        self.check()
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A part of training a signal must not cut: a write to the storage or to MLflow, which an
        exception in mid-flight can leave holding a database lock. The stop happens right after."""
        armed, self._armed = self._armed, False
        try:
            yield
        finally:
            self._armed = armed
        if armed:
            self.check()


@contextmanager
def heartbeat(storage: Any, trial: optuna.Trial) -> Iterator[None]:
    """Beat for the trial while it trains, so a killed worker's trial is recognised as stale."""
    interval = storage.get_heartbeat_interval()
    if not interval:
        yield
        return
    stop = threading.Event()
    trial_id = trial._trial_id  # Optuna keeps the storage id private; the heartbeat API needs it

    def beat() -> None:
        # The first beat was recorded when the trial was asked for; a second one now would only contend
        # with the trial's own first writes for the database.
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:
                logger.debug("heartbeat failed", exc_info=True)

    thread = threading.Thread(target=beat, name=f"hpo-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def will_retry(system_attrs: dict[str, Any], max_retry: int) -> bool:
    """Whether RetryHeartbeatStaleTrialCallback(max_retry) re-queues a trial with these attributes."""
    return max_retry > len(system_attrs.get("retry_history", []))


__all__ = ["Interrupted", "StopSignals", "heartbeat", "will_retry"]
