"""The Typer application and the one place where failures become exit codes and one-line messages."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from hpo.errors import HpoError
from hpo.settings import redact

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="hpo",
    help="Experiment-tracking hyperparameter search: Optuna studies logged to MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str, code: int) -> typer.Exit:
    """Print `message` (credentials redacted) on stderr and return the Exit to raise."""
    typer.echo(f"hpo: {redact(message)}", err=True)
    return typer.Exit(code)


def handles_errors(fn: F) -> F:
    """Map hpo's exceptions to the contract's exit codes: 1 work failed, 2 bad input, 130 interrupted."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HpoError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; finished trials are kept, the current one was closed as FAIL", 130) from None

    return wrapper  # type: ignore[return-value]


def command(group: typer.Typer = app, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register `fn` as a command of `group`, with hpo's error handling around it."""

    def decorate(fn: F) -> F:
        group.command(name, **kwargs)(handles_errors(fn))
        return fn

    return decorate


def configure_logging() -> None:
    level = os.environ.get("HPO_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Optuna and MLflow are chatty at INFO: hpo reports progress itself.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
