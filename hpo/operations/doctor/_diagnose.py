"""Running every check: local ones first, then network ones in daemon threads under one deadline."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from hpo.config import StudyConfig
from hpo.config.settings import Settings
from hpo.operations.doctor._databases import check_separate_databases
from hpo.operations.doctor._findings import DEADLINE, Finding, Report, Sources, _first_line
from hpo.operations.doctor._host import check_data, check_devices, check_versions
from hpo.operations.doctor._storage import check_storage
from hpo.operations.doctor._tracking import check_tracking


def diagnose(
    settings: Settings, *, config: StudyConfig | None = None, sources: Sources | None = None, deadline: float = DEADLINE
) -> Report:
    """Run every check. The deadline covers only waiting for a server to answer: the imports and the
    local checks (data, devices, SQLite files) run first and without it, so a busy machine is not
    mistaken for a host that does not answer."""
    sources = sources or Sources()
    checks: list[tuple[str, str, Callable[[threading.Event], list[Finding]]]] = [
        (
            "storage",
            settings.storage,
            lambda answered: check_storage(settings.storage, source=sources.storage, answered=answered),
        ),
        (
            "tracking",
            settings.tracking_uri,
            lambda answered: check_tracking(settings.tracking_uri, source=sources.tracking_uri, answered=answered),
        ),
    ]
    report = Report(check_versions())
    local = [*_safely("data", lambda: check_data(config)), *_safely("devices", lambda: check_devices(config))]
    _import_drivers([settings.storage, settings.tracking_uri])  # a slow import is not a slow host
    remote = [check for check in checks if not _is_local(check[1])]
    collect = _start_with_deadline(remote, deadline)
    for name, url, fn in checks:
        if _is_local(url):
            report.findings.extend(_safely(name, functools.partial(fn, threading.Event())))
        else:
            report.findings.extend(collect()[name])
    report.findings.extend(check_separate_databases(settings.storage, settings.tracking_uri))
    report.findings.extend(local)
    return report


def _is_local(url: str) -> bool:
    """A check that reads a file of this machine (SQLite, a file store): no network, so no deadline."""
    return url.split(":", 1)[0].split("+", 1)[0].lower() in ("sqlite", "file")


def _safely(name: str, fn: Callable[[], list[Finding]]) -> list[Finding]:
    try:
        return fn()
    except Exception as exc:
        return [Finding(name, "problem", f"the check failed: {_first_line(exc)}")]


def _import_drivers(urls: list[str]) -> None:
    """Import SQLAlchemy and each database URL's driver now, before the deadline starts counting."""
    import sqlalchemy

    for url in urls:
        if url.split(":", 1)[0].lower() in ("http", "https", "file", "databricks"):
            continue
        try:
            sqlalchemy.engine.make_url(url).get_dialect().import_dbapi()
        except Exception:
            pass


AFTER_ANSWER = 30.0  # seconds a check may take once its server has answered (reading a schema on a busy machine)


def _start_with_deadline(
    checks: list[tuple[str, str, Callable[[threading.Event], list[Finding]]]], deadline: float
) -> Callable[[], dict[str, list[Finding]]]:
    """Start each check in a daemon thread (a hung connect must not keep the process alive at exit);
    the returned function collects their findings. A check whose server has not answered by the
    deadline is reported as not answering; one whose server answered gets AFTER_ANSWER seconds more."""
    results: dict[str, list[Finding]] = {}
    answered = {name: threading.Event() for name, _, _ in checks}
    threads: dict[str, threading.Thread] = {}

    def run(name: str, fn: Callable[[threading.Event], list[Finding]]) -> None:
        results[name] = _safely(name, lambda: fn(answered[name]))

    for name, _, fn in checks:
        threads[name] = threading.Thread(target=run, args=(name, fn), name=f"hpo-doctor-{name}", daemon=True)
        threads[name].start()
    end = time.monotonic() + deadline
    collected: dict[str, list[Finding]] = {}

    def collect() -> dict[str, list[Finding]]:
        if collected:
            return collected
        for name, url, _ in checks:
            thread = threads[name]
            while thread.is_alive() and not answered[name].is_set() and time.monotonic() < end:
                thread.join(min(0.05, max(0.0, end - time.monotonic())))
            if answered[name].is_set():
                thread.join(AFTER_ANSWER)
            if name in results:
                collected[name] = results[name]
            elif answered[name].is_set():
                collected[name] = [
                    Finding(
                        name,
                        "problem",
                        f"{url}: the server answered, but the check did not finish within {AFTER_ANSWER:.0f}s more",
                        "run `hpo doctor` again when the machine is less busy",
                    )
                ]
            else:
                host = urlsplit(url).netloc.rsplit("@", 1)[-1] or url
                collected[name] = [
                    Finding(
                        name,
                        "problem",
                        f"{url}: {host} did not answer within {deadline:.0f}s",
                        "check that the host is up and that no firewall drops the connection",
                    )
                ]
        return collected

    return collect
