"""`hpo`: the command-line interface. Each group of commands lives in its own module.

The top layer: may import every package; nothing imports it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings

from hpo.cli import (  # noqa: F401  (registers doctor, server)
    _data,
    _doctor,
    _evaluate,
    _predict,
    _schedule,
    _server,
    _study,
)
from hpo.cli._app import app, configure_logging


def main() -> None:
    """Console-script entry point (and `python -m hpo`).

    The warning filters are set here, where a command starts, not when hpo is imported: a program that
    imports hpo as a library keeps its own. hpo uses Optuna's heartbeat, retry and ask-and-tell APIs on
    purpose; their "experimental" and "use Study.optimize" notices would only confuse users of the CLI.
    """
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")
    warnings.filterwarnings("ignore", message=r".*experimental.*")
    warnings.filterwarnings("ignore", message=r"Heartbeat of storage is supposed to be used with Study.optimize")
    configure_logging()
    try:
        app()
    except SystemExit as exc:
        _exit_without_teardown(exc.code)
    _exit_without_teardown(0)


def _exit_without_teardown(code: object) -> None:
    """End the process as Python would, minus the interpreter's teardown of its modules.

    Once torch, MLflow and SQLAlchemy are loaded, Python spends 1-2 s after the last line of a command
    freeing their objects one by one (measured: `hpo run` of a one-epoch trial 8.1 s, 6.3 s without it),
    work the operating system does at once when the process ends. Everything Python's own exit does
    that matters still happens, in its order: threading's own exit hooks run and other non-daemon threads
    are joined (`threading._shutdown`, what the interpreter calls: the hooks stop idle thread pools, such
    as the one MLflow keeps for artifact uploads, whose workers a bare join would wait on forever), atexit
    handlers run (logging's flush among them), the standard streams are flushed. Files hpo writes are
    closed by `with` blocks and database transactions are committed before a command returns.
    """
    shutdown = getattr(threading, "_shutdown", None)
    if callable(shutdown):
        shutdown()
    else:  # an interpreter without it: join what is left
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()  # logging's own shutdown (flushing its handlers) is one of them
    status = 0 if code is None else code if isinstance(code, int) else 1
    if not isinstance(code, int | None):
        print(code, file=sys.stderr)  # what SystemExit("message") prints
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`hpo status | head`), a closed stream
            pass
    os._exit(status)


__all__ = ["app", "main"]
