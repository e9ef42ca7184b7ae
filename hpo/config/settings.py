"""Where things live: storage URL, tracking URI and data directory, resolved by the contract's precedence.

Precedence for every setting: command-line flag > environment > study file > built-in default.
The defaults are embedded (SQLite files in the working directory) so nothing needs a server.
Also home to credential redaction, since every place that prints a URL must go through it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from hpo.config.writable import write_problem
from hpo.errors import UsageError

DEFAULT_STORAGE = "sqlite:///hpo.db"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STORAGE_ENV = "HPO_STORAGE"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
DATA_DIR_ENV = "HPO_DATA_DIR"

_DB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")
_TRACKING_SCHEMES = (*_DB_SCHEMES, "http", "https", "file", "databricks")


@dataclass(frozen=True)
class Settings:
    storage: str
    tracking_uri: str
    data_dir: Path
    # Where each URL came from ("--storage", "HPO_STORAGE", "study.yaml: storage"), for error messages.
    storage_field: str = "storage"
    tracking_field: str = "tracking_uri"


# -- environment variables ------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvSetting:
    """An environment variable hpo reads: checked like a study field, and named when it is wrong."""

    name: str
    meaning: str
    accepted: str
    parse: Callable[[str], Any]  # the value, or ValueError
    default: Any = None


def _number(kind: type, low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _one_of(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(text)
        return text.lower()

    return parse


def _folder(text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(text)
    return path


def _download_url(text: str) -> str:
    if urlsplit(text).scheme not in ("http", "https", "file") or not (
        urlsplit(text).netloc or text.startswith("file:")
    ):
        raise ValueError(text)
    return text


ENVIRONMENT: dict[str, EnvSetting] = {
    setting.name: setting
    for setting in (
        EnvSetting(
            "HPO_LOG_LEVEL",
            "how much hpo logs",
            "debug, info, warning, error or critical",
            _one_of("debug", "info", "warning", "error", "critical"),
            "warning",
        ),
        EnvSetting("HPO_PROGRESS", "the progress display", "plain, rich or none", _one_of("plain", "rich", "none")),
        EnvSetting("HPO_THREADS", "CPU threads per worker", "an integer in [1, 4096]", _number(int, 1, 4096)),
        EnvSetting(
            "HPO_TRACKING_RETRIES", "retries of a failed MLflow call", "an integer in [0, 100]", _number(int, 0, 100), 3
        ),
        EnvSetting(
            "HPO_TRACKING_BACKOFF",
            "seconds before the first retry of an MLflow call, doubling",
            "a number in [0, 600]",
            _number(float, 0, 600),
            1.0,
        ),
        EnvSetting("HPO_SQLITE_WAL", "SQLite files in write-ahead-log mode", "1 or 0", _one_of("1", "0"), "1"),
        EnvSetting(
            DATA_DIR_ENV,
            "where datasets and empty store schemas are cached",
            "a folder (created if missing), not a file",
            _folder,
        ),
        EnvSetting(
            "HPO_CIFAR10_URL",
            "where `hpo data fetch cifar10` downloads from",
            "an http(s):// or file: URL",
            _download_url,
        ),
    )
}


def env_setting(name: str) -> Any:
    """The environment variable `name` (one of ENVIRONMENT), parsed; its default when unset or empty.

    A value that is not accepted is a UsageError naming the variable, its meaning and what is accepted.
    """
    setting = ENVIRONMENT[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return setting.default
    try:
        return setting.parse(text)
    except (ValueError, OverflowError):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise UsageError(
            f"{name}: {shown!r} is not accepted ({setting.meaning}); accepted: {setting.accepted}"
        ) from None


def check_environment() -> None:
    """Every environment variable hpo reads, checked at once before a command does anything."""
    for name in ENVIRONMENT:
        env_setting(name)


def resolve_settings(
    *,
    storage_flag: str | None = None,
    tracking_flag: str | None = None,
    file_storage: str | None = None,
    file_tracking_uri: str | None = None,
    source: str | None = None,
) -> Settings:
    """Apply flag > environment > study file > default, and check both URLs are well formed.

    `source` (the study file) is named in errors about a URL that came from it.
    """
    remember_secrets(
        storage_flag,
        tracking_flag,
        file_storage,
        file_tracking_uri,
        os.environ.get(STORAGE_ENV),
        os.environ.get(TRACKING_ENV),
    )
    storage, storage_field = _first(
        (storage_flag, "--storage"),
        (os.environ.get(STORAGE_ENV), STORAGE_ENV),
        (file_storage, _in_file(source, "storage")),
        (DEFAULT_STORAGE, "storage"),
    )
    tracking, tracking_field = _first(
        (tracking_flag, "--tracking-uri"),
        (os.environ.get(TRACKING_ENV), TRACKING_ENV),
        (file_tracking_uri, _in_file(source, "tracking_uri")),
        (DEFAULT_TRACKING_URI, "tracking_uri"),
    )
    check_storage_url(storage, field=storage_field)
    check_tracking_uri(tracking, field=tracking_field)
    return Settings(
        storage=storage,
        tracking_uri=tracking,
        data_dir=data_dir(),
        storage_field=storage_field,
        tracking_field=tracking_field,
    )


def _in_file(source: str | None, field: str) -> str:
    return f"{source}: {field}" if source else field


def _first(*candidates: tuple[str | None, str]) -> tuple[str, str]:
    """The first (value, where it came from) whose value is set."""
    return next((value, where) for value, where in candidates if value)


def data_dir() -> Path:
    """`HPO_DATA_DIR`, else a per-user cache directory (XDG on Linux)."""
    folder = env_setting(DATA_DIR_ENV)
    if folder is not None:
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hpo"


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""


def check_storage_url(url: str, *, field: str = "storage", allow_grpc: bool = True) -> None:
    """Refuse anything SQLAlchemy could not open as a lasting database, naming the field and the right form.

    An Optuna storage may also be a gRPC storage proxy, `grpc://host:port`; a database that must be one
    (MLflow's backend store, the proxy's own database) passes `allow_grpc=False`.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    remember_secrets(url)
    if not url.strip() or url != url.strip():
        raise UsageError(
            f"{field}: malformed URL {redact(url)!r}; remove the surrounding spaces or give a database URL "
            "such as sqlite:///hpo.db"
        )
    if (
        _scheme(url) == "grpc" and allow_grpc
    ):  # a gRPC storage proxy in front of the database (hpo.running.grpc_storage)
        grpc_address(url, field=field)
        return
    if _scheme(url) not in _DB_SCHEMES or "://" not in url:
        grpc = " (or a gRPC storage proxy, grpc://host:port)" if allow_grpc else ""
        raise UsageError(
            f"{field}: malformed URL {redact(url)!r}; expected a database URL such as sqlite:///hpo.db or "
            f"postgresql://user@host/db{grpc}"
        )
    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError) as exc:
        raise UsageError(f"{field}: malformed URL {redact(url)!r} ({redact(str(exc))})") from None
    if _scheme(url) == "sqlite":
        if parsed.host or parsed.port:
            raise UsageError(
                f"{field}: malformed URL {redact(url)!r}; "
                "a SQLite URL has three slashes before a relative path (sqlite:///hpo.db) "
                "and four before an absolute one (sqlite:////data/hpo.db)"
            )
        if not parsed.database or parsed.database == ":memory:" or "mode=memory" in url:
            raise UsageError(
                f"{field}: {redact(url)!r} is an in-memory database, "
                "lost when hpo exits (and each worker would have its own); "
                "use a file such as sqlite:///hpo.db"
            )
    elif port is not None and not 0 < port < 65536:
        raise UsageError(f"{field}: malformed URL {redact(url)!r}; the port must be 1-65535")
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise UsageError(
            f"{field}: unknown database driver in {redact(url)!r}; "
            "use e.g. sqlite:///hpo.db, postgresql://... or postgresql+psycopg2://..."
        ) from None
    except ImportError as exc:
        raise UsageError(
            f"{field}: no database driver for {redact(url)!r} is installed ({exc}); "
            "pip install it (psycopg2-binary for postgresql+psycopg2)"
        ) from None


def check_tracking_uri(uri: str, *, field: str = "tracking_uri") -> None:
    """Refuse a tracking URI MLflow could not use well, naming the field and the accepted forms."""
    remember_secrets(uri)
    scheme = _scheme(uri)
    if scheme == "file" or (":" not in uri and uri.strip()):  # file:///path or a bare folder
        raise UsageError(
            f"{field}: {redact(uri)!r} is MLflow's file store, which is in maintenance mode (and slow with many runs); "
            "use sqlite:///mlflow.db (the default) or an MLflow server such as http://127.0.0.1:5000 (`hpo server`)"
        )
    if scheme not in _TRACKING_SCHEMES or ("://" not in uri and scheme != "databricks"):
        raise UsageError(
            f"{field}: malformed URI {redact(uri)!r}; expected http(s)://host:port, sqlite:///mlflow.db "
            "or postgresql://..."
        )
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        try:
            parts.port  # noqa: B018 - urllib checks the port when it is read
        except ValueError:
            raise UsageError(f"{field}: malformed URI {redact(uri)!r}; the port must be a number in 1-65535") from None
        if not parts.hostname:
            raise UsageError(f"{field}: malformed URI {redact(uri)!r}; the host is missing")
    if scheme in _DB_SCHEMES:
        check_storage_url(uri, field=field, allow_grpc=False)


# -- credentials ----------------------------------------------------------------------------------
# user:password@ after a scheme (also a mistyped one such as "postgresql//"). The password may hold any
# character but white space (percent-encoded, or a raw / : # ? % + that SQLAlchemy's parser accepts),
# so it runs to the last "@" before the next white space.
_USERINFO = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*:?/+)(?P<user>[^:/@\s'\"]*):(?P<password>\S+)@")
# The same at the start of a word, for a URL whose scheme is missing (user:password@host); a "//" after
# the colon is a scheme's, not a password.
_BARE_USERINFO = re.compile(r"(?P<prefix>^|(?<=[\s'\"(=]))(?P<user>[^:/@\s'\"]+):(?P<password>(?!/)\S+)@")
# libpq also takes the password as a query parameter: postgresql://host/db?password=...
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:password|passwd|pwd)=)[^&\s'\"]+", re.IGNORECASE)
# Passwords of the URLs hpo was given, as their own parsers read them: scrubbed wherever they appear.
_SECRETS: set[str] = set()
_MIN_SECRET = 4  # a shorter one would scrub ordinary words; the patterns above still hide it inside URLs


def url_password(url: str) -> str | None:
    """The password in `url` as the library that opens it reads it: SQLAlchemy's parser for a database
    URL, urllib's for an http(s) one; also a libpq `?password=` parameter. None if there is none."""
    from urllib.parse import parse_qs

    try:
        if _scheme(url) in _DB_SCHEMES:
            from sqlalchemy.engine import make_url

            password = make_url(url).password
        else:
            password = urlsplit(url).password
    except Exception:
        password = None
    if password is None and "?" in url:
        query = parse_qs(url.split("?", 1)[1])
        password = next(
            (values[0] for key, values in query.items() if key.lower() in ("password", "passwd", "pwd") and values),
            None,
        )
    return str(password) if password else None


def remember_secrets(*urls: str | None) -> None:
    """Note the passwords of these URLs (raw and percent-encoded) so that `redact` hides them anywhere."""
    for url in urls:
        password = url_password(url) if url else None
        if password and len(password) >= _MIN_SECRET:
            _SECRETS.update({password, quote(password, safe=""), quote(password)})


def redact(text: str) -> str:
    """Replace the password of every URL in `text` with ***: safe to print, log and store."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern in (_USERINFO, _BARE_USERINFO):
        text = pattern.sub(lambda m: f"{m['prefix']}{m['user']}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}***", text)


def is_postgresql(url: str) -> bool:
    """Whether a storage or tracking URL names a PostgreSQL database (any driver)."""
    return url.startswith(("postgresql", "postgres"))


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite:/// URL (None for in-memory or other databases)."""
    match = re.match(r"^sqlite(?:\+\w+)?:///", url)
    if not match:
        return None
    path = url[match.end() :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def check_writable(settings: Settings) -> None:
    """Refuse, before anything is created, a SQLite file that could not be written.

    The probe is a temporary file in the nearest existing folder, removed at once, so a refused run
    leaves nothing behind (and the same holds for the folders `open_storage` would create).
    """
    for path, field in (
        (sqlite_path(settings.storage), settings.storage_field),
        (sqlite_path(settings.tracking_uri), settings.tracking_field),
    ):
        if path is None:
            continue
        problem = write_problem(path)
        if problem:
            raise UsageError(f"{field}: cannot write {path}: {problem}; choose a file in a folder you can write to")


# A gRPC storage proxy's address (`hpo server --grpc-port`): parsed here, with the other URL checks, so that
# validating a study file needs neither grpc nor Optuna; hpo.running.grpc_storage connects to it.
GRPC_SCHEME = "grpc"
DEFAULT_PORT = 13000
_URL = re.compile(r"^grpc://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(?::(?P<port>\d+))?/?$")


def is_grpc_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() == GRPC_SCHEME


def grpc_address(url: str, *, field: str = "storage") -> tuple[str, int]:
    """(host, port) of `grpc://host[:port]` (default port 13000); a one-line error naming `field` otherwise."""
    match = _URL.match(url.strip())
    port = int(match["port"]) if match and match["port"] else DEFAULT_PORT
    if match is None or not 0 < port < 65536:
        raise UsageError(
            f"{field}: malformed URL {url!r}; a gRPC storage proxy is grpc://host:port,"
            f" e.g. grpc://127.0.0.1:{DEFAULT_PORT} (`hpo server --grpc-port`)"
        )
    return match["host"].strip("[]"), port
