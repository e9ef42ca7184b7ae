"""`hpo`: the command-line interface. Each group of commands lives in its own module.

The top layer: may import every package; nothing imports it.
"""

from __future__ import annotations

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
    """Console-script entry point."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ExperimentalWarning.*")
    configure_logging()
    app()


__all__ = ["app", "main"]
