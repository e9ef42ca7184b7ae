"""`hpo`: the command-line interface. Each group of commands lives in its own module."""

from __future__ import annotations

import warnings

from hpo.cli._app import app, configure_logging
from hpo.cli import _study  # noqa: F401  (registers run, worker, validate, status, best, reconcile)
from hpo.cli import _doctor, _server  # noqa: F401  (registers doctor, server)
from hpo.cli import _evaluate  # noqa: F401  (registers evaluate, report, compare)
from hpo.cli import _predict  # noqa: F401  (registers predict)
from hpo.cli import _schedule  # noqa: F401  (registers schedule)
from hpo.cli import _data  # noqa: F401  (registers data fetch, data import, data info)


def main() -> None:
    """Console-script entry point."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")
    configure_logging()
    app()


__all__ = ["app", "main"]
