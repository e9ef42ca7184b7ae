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
    app()


__all__ = ["app", "main"]
