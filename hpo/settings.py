"""Where things live: storage URL, tracking URI and data directory, resolved by the contract's precedence.

Precedence for every setting: command-line flag > environment > study file > built-in default.
The defaults are embedded (SQLite files in the working directory) so nothing needs a server.
Also home to credential redaction, since every place that prints a URL must go through it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

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


def resolve_settings(
    *,
    storage_flag: str | None = None,
    tracking_flag: str | None = None,
    file_storage: str | None = None,
    file_tracking_uri: str | None = None,
) -> Settings:
    """Apply flag > environment > study file > default, and check both URLs are well formed."""
    storage = _first(storage_flag, os.environ.get(STORAGE_ENV), file_storage, DEFAULT_STORAGE)
    tracking = _first(tracking_flag, os.environ.get(TRACKING_ENV), file_tracking_uri, DEFAULT_TRACKING_URI)
    check_storage_url(storage)
    check_tracking_uri(tracking)
    return Settings(storage=storage, tracking_uri=tracking, data_dir=data_dir())


def _first(*values: str | None) -> str:
    return next(v for v in values if v)


def data_dir() -> Path:
    """`HPO_DATA_DIR`, else a per-user cache directory (XDG on Linux)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hpo"


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""


def check_storage_url(url: str, *, field: str = "storage") -> None:
    """Refuse anything SQLAlchemy could not open as an Optuna RDB storage, naming the field."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if _scheme(url) not in _DB_SCHEMES or "://" not in url:
        raise UsageError(f"{field}: malformed URL {redact(url)!r}; expected a database URL such as sqlite:///hpo.db or postgresql://user@host/db")
    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UsageError(f"{field}: malformed URL {redact(url)!r} ({exc})") from None


def check_tracking_uri(uri: str, *, field: str = "tracking_uri") -> None:
    """Refuse a tracking URI MLflow could not use, naming the field and the accepted forms."""
    scheme = _scheme(uri)
    if scheme not in _TRACKING_SCHEMES or ("://" not in uri and scheme != "file" and scheme != "databricks"):
        raise UsageError(f"{field}: malformed URI {redact(uri)!r}; expected http(s)://host:port, sqlite:///mlflow.db, postgresql://... or file:///path")
    if scheme in ("http", "https") and not urlsplit(uri).hostname:
        raise UsageError(f"{field}: malformed URI {redact(uri)!r}; the host is missing")
    if scheme in _DB_SCHEMES:
        check_storage_url(uri, field=field)


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")


def redact(text: str) -> str:
    """Replace the password of every URL in `text` with ***: safe to print, log and store."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite:/// URL (None for in-memory or other databases)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None
