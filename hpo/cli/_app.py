"""The Typer application and the one place where failures become exit codes and one-line messages."""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from hpo.config.settings import check_environment, env_setting, redact
from hpo.errors import HpoError

F = TypeVar("F", bound=Callable[..., Any])

# The two store options every command that opens a study takes, with the precedence they follow.
StorageOption = typer.Option(
    None, "--storage", help="Optuna storage URL (flag > HPO_STORAGE > study file > sqlite:///hpo.db)."
)
TrackingOption = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (flag > MLFLOW_TRACKING_URI > study file > sqlite:///mlflow.db)."
)

app = typer.Typer(
    name="hpo",
    help="Experiment-tracking hyperparameter search: Optuna studies logged to MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _before_every_command() -> None:
    # every environment variable hpo reads is checked before any command runs (a one-line error, exit 2)
    try:
        check_environment()
    except HpoError as exc:
        raise fail(str(exc), exc.exit_code) from None


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
        except KeyboardInterrupt as exc:
            # The runner says what became of the trial under way; elsewhere nothing was left half-done.
            detail = str(exc)
            raise fail(
                detail if detail.startswith("interrupted") else "interrupted; finished work is kept", 130
            ) from None

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the command's signature for typer


def command(group: typer.Typer = app, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register `fn` as a command of `group`, with hpo's error handling around it."""

    def decorate(fn: F) -> F:
        group.command(name, **kwargs)(handles_errors(fn))
        return fn

    return decorate


def configure_logging() -> None:
    _redact_logs_and_tracebacks()
    try:
        level = str(env_setting("HPO_LOG_LEVEL")).upper()
    except HpoError:  # reported by the command (check_environment), with the accepted values
        level = "WARNING"
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Optuna and MLflow are chatty at INFO: hpo reports progress itself.
    _quiet_optuna()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # MLflow's HTTP client retries a dead server with a warning per attempt; hpo says once what failed.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _quiet_optuna() -> None:
    """Optuna's INFO lines off, set as soon as Optuna is imported: importing it here would cost every
    command ~0.2 s, and some never need it (`hpo best` on a database, `hpo schedule`, `hpo data`).

    Optuna sets its own logger to INFO when it is imported, so the level is set right after that import
    (a finder that wraps Optuna's loader once), or at once when Optuna is already loaded.
    """
    if "optuna" in sys.modules:
        _set_optuna_verbosity(sys.modules["optuna"])
    elif not any(isinstance(finder, _AfterOptunaImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterOptunaImport())


def _set_optuna_verbosity(optuna: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class _AfterOptunaImport(importlib.abc.MetaPathFinder):
    """Finds `optuna` as the other finders do, and runs :func:`_set_optuna_verbosity` once it is loaded."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "optuna":
            return None
        sys.meta_path.remove(self)  # once; the lookup below goes to the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            loader = spec.loader
            original = loader.exec_module

            def exec_module(module: Any) -> None:
                original(module)
                _set_optuna_verbosity(module)

            loader.exec_module = exec_module  # type: ignore[method-assign]  # this loader serves optuna/__init__ only
        return spec


def _redact_logs_and_tracebacks() -> None:
    """A safety net under the messages hpo redacts itself: every log record (hpo's, MLflow's, SQLAlchemy's,
    whatever handler prints it) and every uncaught traceback, in any thread, passes through `redact`."""
    base = logging.getLogRecordFactory()
    if getattr(base, "hpo_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    factory.hpo_redacts = True  # type: ignore[attr-defined]  # a marker: the factory is installed once
    logging.setLogRecordFactory(factory)

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in {name}:\n{text}"))

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
