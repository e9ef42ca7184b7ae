"""`hpo`: the command-line interface. Each group of commands lives in its own module."""

from __future__ import annotations

import warnings

from hpo.cli._app import app, configure_logging
from hpo.cli import _study  # noqa: F401  (registers run, worker, validate, status, best, reconcile)


def main() -> None:
    """Console-script entry point."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")
    configure_logging()
    app()


__all__ = ["app", "main"]
