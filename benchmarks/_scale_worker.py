"""`hpo worker` with stopwatches: the real command, with Optuna's ask and tell and MLflow's HTTP requests timed.

Run as `python benchmarks/_scale_worker.py OUT.json worker STUDY.yaml ...` (everything after OUT.json is
`hpo`'s command line). Nothing is replaced: the timed functions are wrapped and called as they are. At
exit the worker writes OUT.json: the latencies in seconds, whether torch was ever imported, and the
process's peak resident memory and CPU time. A worker killed with SIGKILL writes nothing.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIMES: dict[str, list[float]] = {"ask": [], "tell": [], "mlflow": []}
ENDPOINTS: dict[str, list[float]] = {}  # MLflow's REST endpoint -> [requests, seconds]


def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[key].append(time.perf_counter() - started)

    return wrapper


def by_endpoint(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = ENDPOINTS.setdefault(str(kwargs.get("endpoint", args[1] if len(args) > 1 else "?")), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    return wrapper


def report(out: Path) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload = {
        "pid": os.getpid(),
        **TIMES,
        "mlflow_endpoints": ENDPOINTS,
        "torch_imported": "torch" in sys.modules,
        "max_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    out.write_text(json.dumps(payload))


def main() -> None:
    out = Path(sys.argv[1])
    import mlflow.utils.rest_utils as rest

    from hpo.running import runner as runner

    # hpo's ask: the stale-trial check, the budget lock, claiming the trial and the sampler.
    ask = timed("ask", runner.StudyRunner._ask_within_budget)
    runner.StudyRunner._ask_within_budget = ask  # type: ignore[method-assign]  # timing the real method
    # hpo's tell: Optuna's state write (and the sampler's after-trial hook), after the run is closed.
    runner.StudyRunner._tell = timed("tell", runner.StudyRunner._tell)  # type: ignore[method-assign]
    rest.http_request = timed(
        "mlflow", by_endpoint(rest.http_request)
    )  # every REST call of MLflow's client goes through it
    atexit.register(report, out)
    from hpo.cli import main as hpo_main

    sys.argv = ["hpo", *sys.argv[2:]]
    hpo_main()


if __name__ == "__main__":
    main()
