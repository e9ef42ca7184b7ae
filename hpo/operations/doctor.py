"""`hpo doctor`: check the storage, the tracking server, the data cache and the devices; say what is wrong.

Each finding is one line with its fix. Nothing is written anywhere: databases are only connected to
and read (an empty one is fine, hpo creates the schema on its first run). Network checks run in daemon
threads with connect timeouts and one shared deadline, so a host that is down costs a few seconds and
never a hang, and a check that misses the deadline is itself reported.
"""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from hpo.config import StudyConfig
from hpo.config.settings import Settings, data_dir, env_setting, redact, sqlite_path
from hpo.config.writable import write_problem
from hpo.errors import UsageError
from hpo.operations.databases import MLFLOW, OPTUNA, alembic_heads
from hpo.running.grpc_storage import grpc_address, is_grpc_url

Status = Literal["ok", "warning", "problem"]
Reader = Callable[[str], list[tuple[Any, ...]]]
CONNECT_TIMEOUT = 3  # seconds; libpq's minimum useful value is 2
DEADLINE = 4.0  # seconds for all network checks together (after the imports)
_OPTUNA_TABLES = {"studies", "trials", "version_info"}
_MLFLOW_TABLES = {"experiments", "runs", "metrics"}


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, how it went, and what to do about it."""

    check: str
    status: Status
    message: str
    fix: str | None = None

    def line(self) -> str:
        label = {"ok": "ok", "warning": "warning", "problem": "PROBLEM"}[self.status]
        text = f"{label:<8} {self.check:<9} {self.message}"
        if self.fix:
            text += f"; fix: {self.fix}"
        return redact(text)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "problem"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]

    def to_json(self) -> str:
        checks = [{k: redact(v) if isinstance(v, str) else v for k, v in asdict(f).items()} for f in self.findings]
        return json.dumps({"ok": self.ok, "problems": len(self.problems), "checks": checks}, indent=2)


@dataclass(frozen=True)
class Sources:
    """Where each URL came from, so a fix can name the setting to change."""

    storage: str = "the default"
    tracking_uri: str = "the default"


def diagnose(
    settings: Settings, *, config: StudyConfig | None = None, sources: Sources | None = None, deadline: float = DEADLINE
) -> Report:
    """Run every check. The deadline covers only waiting for a server to answer: the imports and the
    local checks (data, devices, SQLite files) run first and without it, so a busy machine is not
    mistaken for a host that does not answer."""
    sources = sources or Sources()
    checks: list[tuple[str, str, Callable[[threading.Event], list[Finding]]]] = [
        (
            "storage",
            settings.storage,
            lambda answered: check_storage(settings.storage, source=sources.storage, answered=answered),
        ),
        (
            "tracking",
            settings.tracking_uri,
            lambda answered: check_tracking(settings.tracking_uri, source=sources.tracking_uri, answered=answered),
        ),
    ]
    report = Report(check_versions())
    local = [*_safely("data", lambda: check_data(config)), *_safely("devices", lambda: check_devices(config))]
    _import_drivers([settings.storage, settings.tracking_uri])  # a slow import is not a slow host
    remote = [check for check in checks if not _is_local(check[1])]
    collect = _start_with_deadline(remote, deadline)
    for name, url, fn in checks:
        if _is_local(url):
            report.findings.extend(_safely(name, lambda fn=fn: fn(threading.Event())))
        else:
            report.findings.extend(collect()[name])
    report.findings.extend(check_separate_databases(settings.storage, settings.tracking_uri))
    report.findings.extend(local)
    return report


def _is_local(url: str) -> bool:
    """A check that reads a file of this machine (SQLite, a file store): no network, so no deadline."""
    return url.split(":", 1)[0].split("+", 1)[0].lower() in ("sqlite", "file")


def _safely(name: str, fn: Callable[[], list[Finding]]) -> list[Finding]:
    try:
        return fn()
    except Exception as exc:
        return [Finding(name, "problem", f"the check failed: {_first_line(exc)}")]


def _import_drivers(urls: list[str]) -> None:
    """Import SQLAlchemy and each database URL's driver now, before the deadline starts counting."""
    import sqlalchemy

    for url in urls:
        if url.split(":", 1)[0].lower() in ("http", "https", "file", "databricks"):
            continue
        try:
            sqlalchemy.engine.make_url(url).get_dialect().import_dbapi()
        except Exception:
            pass


AFTER_ANSWER = 30.0  # seconds a check may take once its server has answered (reading a schema on a busy machine)


def _start_with_deadline(
    checks: list[tuple[str, str, Callable[[threading.Event], list[Finding]]]], deadline: float
) -> Callable[[], dict[str, list[Finding]]]:
    """Start each check in a daemon thread (a hung connect must not keep the process alive at exit);
    the returned function collects their findings. A check whose server has not answered by the
    deadline is reported as not answering; one whose server answered gets AFTER_ANSWER seconds more."""
    results: dict[str, list[Finding]] = {}
    answered = {name: threading.Event() for name, _, _ in checks}
    threads: dict[str, threading.Thread] = {}

    def run(name: str, fn: Callable[[threading.Event], list[Finding]]) -> None:
        results[name] = _safely(name, lambda: fn(answered[name]))

    for name, _, fn in checks:
        threads[name] = threading.Thread(target=run, args=(name, fn), name=f"hpo-doctor-{name}", daemon=True)
        threads[name].start()
    end = time.monotonic() + deadline
    collected: dict[str, list[Finding]] = {}

    def collect() -> dict[str, list[Finding]]:
        if collected:
            return collected
        for name, url, _ in checks:
            thread = threads[name]
            while thread.is_alive() and not answered[name].is_set() and time.monotonic() < end:
                thread.join(min(0.05, max(0.0, end - time.monotonic())))
            if answered[name].is_set():
                thread.join(AFTER_ANSWER)
            if name in results:
                collected[name] = results[name]
            elif answered[name].is_set():
                collected[name] = [
                    Finding(
                        name,
                        "problem",
                        f"{url}: the server answered, but the check did not finish within {AFTER_ANSWER:.0f}s more",
                        "run `hpo doctor` again when the machine is less busy",
                    )
                ]
            else:
                host = urlsplit(url).netloc.rsplit("@", 1)[-1] or url
                collected[name] = [
                    Finding(
                        name,
                        "problem",
                        f"{url}: {host} did not answer within {deadline:.0f}s",
                        "check that the host is up and that no firewall drops the connection",
                    )
                ]
        return collected

    return collect


# -- storage (Optuna) -----------------------------------------------------------------------------
def check_storage(url: str, *, source: str = "--storage", answered: threading.Event | None = None) -> list[Finding]:
    """The Optuna storage: reachable with these credentials, and its schema one this Optuna can use."""
    if is_grpc_url(url):
        return [check_grpc_proxy(url, source=source, answered=answered)]
    opened = _open_database(
        "storage", url, source, owner="Optuna", instead="a file (sqlite:///hpo.db) or PostgreSQL", answered=answered
    )
    if isinstance(opened, Finding):
        return [opened]
    tables, read, server = opened
    return [_optuna_schema(url, server, tables, read)]


def check_grpc_proxy(url: str, *, source: str = "--storage", answered: threading.Event | None = None) -> Finding:
    """A gRPC storage proxy (`grpc://host:port`): it answers, and serves an Optuna storage."""
    try:
        host, port = grpc_address(url, field=source)
        from optuna.storages import GrpcStorageProxy

        proxy = GrpcStorageProxy(host=host, port=port)
    except UsageError as exc:
        return Finding("storage", "problem", str(exc))
    except ImportError as exc:
        return Finding("storage", "problem", f"{url}: the gRPC client is not installed ({exc})", "pip install grpcio")
    start = f"start the proxy: `hpo server --grpc-port {port} --storage DATABASE_URL` on {host}, or correct {source}"
    try:
        proxy.wait_server_ready(timeout=CONNECT_TIMEOUT)
        if answered is not None:
            answered.set()
        studies = proxy.get_all_studies()
    except ConnectionError:
        return Finding(
            "storage",
            "problem",
            f"{url}: no gRPC storage proxy answers at {host}:{port} within {CONNECT_TIMEOUT}s",
            start,
        )
    except Exception as exc:
        return Finding(
            "storage",
            "problem",
            f"{url}: the proxy answers but cannot read its storage ({_first_line(exc)})",
            "see the `hpo server` log: its --storage database",
        )
    finally:
        proxy.close()
    return Finding("storage", "ok", f"{url}: Optuna gRPC storage proxy answers, {len(studies)} studies")


def _open_database(
    name: str, url: str, source: str, *, owner: str, instead: str, answered: threading.Event | None = None
) -> Finding | tuple[set[str], Reader, str]:
    """The tables of the SQLite file or database server behind `url`, a reader and the server's name;
    or the Finding that says why they cannot be read (in-memory, missing file, unreachable server)."""
    if not url.startswith("sqlite"):
        return _connect_database(name, url, source, answered=answered or threading.Event())
    path = sqlite_path(url)
    if path is None:
        return Finding(
            name, "warning", f"{url}: an in-memory database is lost when the process ends", f"use {instead} in {source}"
        )
    if not path.exists():
        return _missing_sqlite(name, path, owner, source)
    tables, read = _sqlite_tables(path)
    return tables, read, "SQLite"


def _optuna_schema(raw_url: str, server: str, tables: set[str], read: Reader) -> Finding:
    name = "storage"
    url = f"{raw_url} ({server})"
    if not tables:
        return Finding(name, "ok", f"{url}: empty database; Optuna creates its tables on the first `hpo run`")
    if not _OPTUNA_TABLES <= tables:
        if _MLFLOW_TABLES <= tables:
            return Finding(
                name,
                "problem",
                f"{url}: holds MLflow's tables, not Optuna's",
                "give the Optuna storage a database of its own (Optuna and MLflow both keep an alembic_version table)",
            )
        if "alembic_version" in tables:
            return Finding(
                name,
                "problem",
                f"{url}: another application's schema (alembic_version) is there",
                "give the Optuna storage a database of its own",
            )
        return Finding(
            name,
            "warning",
            f"{url}: holds other tables ({', '.join(sorted(tables)[:5])}); Optuna will add its own beside them",
        )
    current = _alembic_revision(read)
    head, known = alembic_heads(OPTUNA)
    studies = [row[0] for row in read("SELECT study_name FROM studies ORDER BY study_id")]
    listed = f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}" + (
        f" ({', '.join(studies[:5])}{', ...' if len(studies) > 5 else ''})" if studies else ""
    )
    version = _version("optuna")
    if current is None or current == head:
        return Finding(name, "ok", f"{url}: Optuna schema current, {listed}")
    if current in known:
        return Finding(
            name,
            "problem",
            f"{url}: Optuna schema {current} is older than this Optuna {version} ({head})",
            f"`optuna storage upgrade --storage '{redact(raw_url)}'` (back up first)",
        )
    return Finding(
        name,
        "problem",
        f"{url}: Optuna schema {current} was written by a newer Optuna than {version}",
        "`pip install -U optuna` on this machine",
    )


# -- tracking (MLflow) ----------------------------------------------------------------------------
def check_tracking(
    uri: str, *, source: str = "--tracking-uri", answered: threading.Event | None = None
) -> list[Finding]:
    """The MLflow tracking store: a server that answers with its version, or a database hpo can use."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return [_check_server(uri, source, answered=answered or threading.Event())]
    if scheme == "file":
        folder = Path(urlsplit(uri).path)
        writable = write_problem(folder, is_folder=True) is None
        if writable:
            return [
                Finding(
                    "tracking",
                    "warning",
                    f"{uri}: MLflow's file store is deprecated and slow with many runs",
                    f"use sqlite:///mlflow.db or a server (`hpo server`) in {source}",
                )
            ]
        return [
            Finding(
                "tracking",
                "problem",
                f"{uri}: {folder} cannot be written",
                f"point {source} at a writable folder or a database",
            )
        ]
    if scheme == "databricks":
        return [Finding("tracking", "warning", f"{uri}: Databricks is not checked by hpo doctor")]
    opened = _open_database(
        "tracking", uri, source, owner="MLflow", instead="sqlite:///mlflow.db or a server", answered=answered
    )
    if isinstance(opened, Finding):
        return [opened]
    tables, read, server = opened
    return [_mlflow_schema(uri, server, tables, read)]


def _mlflow_schema(raw_uri: str, server: str, tables: set[str], read: Reader) -> Finding:
    name = "tracking"
    uri = f"{raw_uri} ({server})"
    if not tables:
        return Finding(name, "ok", f"{uri}: empty database; MLflow creates its tables on first use")
    if not _MLFLOW_TABLES <= tables:
        if _OPTUNA_TABLES <= tables:
            return Finding(
                name,
                "problem",
                f"{uri}: holds Optuna's tables, not MLflow's",
                "give MLflow a database of its own (Optuna and MLflow both keep an alembic_version table)",
            )
        return Finding(
            name,
            "warning",
            f"{uri}: holds other tables ({', '.join(sorted(tables)[:5])}); MLflow will add its own beside them",
        )
    current = _alembic_revision(read)
    head, known = alembic_heads(MLFLOW)
    count = read("SELECT COUNT(*) FROM experiments WHERE lifecycle_stage = 'active'")[0][0]
    version = _version("mlflow")
    if current is None or current == head:
        return Finding(name, "ok", f"{uri}: MLflow schema current, {count} active experiment(s)")
    if current in known:
        return Finding(
            name,
            "problem",
            f"{uri}: MLflow schema {current} is older than this MLflow {version}",
            f"`mlflow db upgrade '{redact(raw_uri)}'` (back up first)",
        )
    return Finding(
        name,
        "problem",
        f"{uri}: MLflow schema {current} was written by a newer MLflow than {version}",
        "`pip install -U mlflow` on this machine",
    )


def _check_server(uri: str, source: str, *, answered: threading.Event) -> Finding:
    name = "tracking"
    base = uri.rstrip("/")
    parts = urlsplit(base)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    try:
        _http_get(f"{base}/health", answered=answered)
        version = _http_get(f"{base}/version").strip()
        body = json.loads(_http_post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 1000}) or "{}")
    except urllib.error.HTTPError as exc:
        detail = _first_line(exc.read().decode("utf-8", "replace") or exc.reason)
        if exc.code in (401, 403) and "host" not in detail.lower():
            return Finding(
                name,
                "problem",
                f"{uri}: the server refused hpo ({exc.code} {detail})",
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
            )
        if "host" in detail.lower():
            return Finding(
                name,
                "problem",
                f"{uri}: the server rejects this host name ({exc.code} {detail})",
                f"start the server with MLFLOW_SERVER_ALLOWED_HOSTS (or --allowed-hosts) including {parts.netloc}",
            )
        if exc.code == 404:
            return Finding(
                name,
                "problem",
                f"{uri}: answers but is not an MLflow tracking server (404 on {exc.url})",
                f"point {source} at the MLflow server's address",
            )
        return Finding(name, "problem", f"{uri}: the server answered {exc.code} ({detail})", "look at the server's log")
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return _network_finding(
            name,
            uri,
            where,
            reason,
            fix_start=f"start it (`hpo server --port {parts.port or 5000}`) or correct {source}",
        )
    except ValueError:
        return Finding(
            name,
            "problem",
            f"{uri}: answers but not like an MLflow server (the API did not return JSON)",
            f"point {source} at the MLflow server's address",
        )
    ours = _version("mlflow")
    experiments = len(body.get("experiments", []))
    message = f"{uri}: MLflow server {version}, {experiments} experiment(s)"
    if version.split(".")[0] != ours.split(".")[0]:
        return Finding(
            name,
            "warning",
            f"{message}; this machine has MLflow {ours}",
            f"install mlflow=={version} here, or the same major version on both sides",
        )
    return Finding(name, "ok", message)


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send, so doctor sees what hpo sees."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _http_get(url: str, *, answered: threading.Event | None = None) -> str:
    request = urllib.request.Request(url, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
            if answered is not None:
                answered.set()
            return str(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError:
        if answered is not None:  # an HTTP error is an answer too
            answered.set()
        raise


def _http_post(url: str, payload: dict[str, Any]) -> str:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **_auth_headers()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as response:
        return str(response.read().decode("utf-8", "replace"))


def _network_finding(name: str, url: str, where: str, reason: Any, *, fix_start: str) -> Finding:
    if isinstance(reason, ConnectionRefusedError):
        return Finding(name, "problem", f"{url}: nothing listens on {where} (connection refused)", fix_start)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return Finding(
            name,
            "problem",
            f"{url}: {where} did not answer within {CONNECT_TIMEOUT}s",
            "check that the host is up and that no firewall drops the connection",
        )
    if isinstance(reason, socket.gaierror):
        return Finding(
            name, "problem", f"{url}: unknown host {where.rsplit(':', 1)[0]}", "correct the host name in the URL"
        )
    return Finding(name, "problem", f"{url}: cannot connect to {where} ({_first_line(reason)})", fix_start)


# -- databases ------------------------------------------------------------------------------------


def _connect_database(
    name: str, url: str, source: str, *, answered: threading.Event
) -> tuple[set[str], Reader, str] | Finding:
    """Connect once (short timeout) and read the table names; a Finding that explains a failure."""
    import sqlalchemy

    target = sqlalchemy.engine.make_url(url)
    is_pg = target.get_backend_name() == "postgresql"
    connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT} if is_pg else {}
    try:
        engine = sqlalchemy.create_engine(target, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
    except ImportError as exc:
        return Finding(
            name,
            "problem",
            f"{url}: no database driver ({exc})",
            "pip install the driver the URL names (psycopg2-binary for postgresql+psycopg2, psycopg[binary] for postgresql)",
        )
    try:
        with engine.connect() as conn:
            answered.set()  # the network part is done: reading the schema is local work
            tables = set(sqlalchemy.inspect(conn).get_table_names())
            server = (
                "PostgreSQL " + str(conn.execute(sqlalchemy.text("SHOW server_version")).scalar()).split()[0]
                if is_pg
                else target.get_backend_name()
            )
            rows: dict[str, list[tuple[Any, ...]]] = {}

            def read(sql: str) -> list[tuple[Any, ...]]:
                if sql not in rows:
                    rows[sql] = [tuple(r) for r in conn.execute(sqlalchemy.text(sql))]
                return rows[sql]

            # read eagerly what the schema checks need while the connection is open
            if "alembic_version" in tables:
                read("SELECT version_num FROM alembic_version")
            if "studies" in tables:
                read("SELECT study_name FROM studies ORDER BY study_id")
            if "experiments" in tables:
                read("SELECT COUNT(*) FROM experiments WHERE lifecycle_stage = 'active'")
        return tables, lambda sql: rows[sql], server
    except sqlalchemy.exc.OperationalError as exc:
        answered.set()  # a refusal or a timeout of libpq's own is an answer
        return (
            _database_finding(name, url, target, exc, source)
            if is_pg
            else Finding(name, "problem", f"{url}: {_first_line(exc)}", f"check {source}")
        )
    except sqlalchemy.exc.DBAPIError as exc:
        return Finding(name, "problem", f"{url}: {_first_line(exc)}", f"check {source}")
    finally:
        engine.dispose()


def _database_finding(name: str, url: str, target: Any, exc: Exception, source: str) -> Finding:
    """Turn libpq's error text into what is wrong and what to do."""
    text = _first_line(exc)
    lower = str(getattr(exc, "orig", exc)).lower()
    user = target.username or os.environ.get("PGUSER") or "the current user"
    where = f"{target.host or 'localhost'}:{target.port or 5432}"
    secret = "the URL's password, PGPASSWORD or ~/.pgpass (libpq reads the last two when the URL has none)"
    if "password authentication failed" in lower:
        return Finding(name, "problem", f"{url}: wrong password for user {user}", f"correct {secret}")
    if "no password supplied" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: the server wants a password for user {user} and none was given",
            f"set {secret}; a ~/.pgpass line is host:port:database:user:password, chmod 600",
        )
    if "connection refused" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: nothing listens on {where} (connection refused)",
            f"start PostgreSQL there, or correct the host/port in {source}",
        )
    if "timeout expired" in lower or "timed out" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: {where} did not answer within {CONNECT_TIMEOUT}s",
            "check that the host is up and that no firewall drops port 5432",
        )
    if "could not translate host name" in lower or "name or service not known" in lower:
        return Finding(name, "problem", f"{url}: unknown host {target.host}", f"correct the host name in {source}")
    if "does not exist" in lower and f'database "{target.database}"' in lower:
        return _missing_database(name, url, target, source)
    if "role" in lower and "does not exist" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: user {user} does not exist on {where}",
            f"create it (CREATE ROLE {user} LOGIN PASSWORD ...) or correct the user in {source}",
        )
    if "pg_hba.conf" in lower:
        return Finding(
            name,
            "problem",
            f"{url}: the server does not accept this host/user/database ({text})",
            "add a matching line to the server's pg_hba.conf and reload it",
        )
    return Finding(name, "problem", f"{url}: {text}", f"check {source}")


def _missing_database(name: str, url: str, target: Any, source: str) -> Finding:
    """A database that does not exist yet is fine if the user may create it: hpo does on first run."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(
        target.set(database="postgres"),
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )
    try:
        with admin.connect() as conn:
            may_create = conn.execute(
                sqlalchemy.text("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar()
    except sqlalchemy.exc.DBAPIError:
        may_create = None
    finally:
        admin.dispose()
    if may_create:
        return Finding(
            name, "ok", f"{url}: database {target.database} does not exist yet; hpo creates it on the first run"
        )
    return Finding(
        name,
        "problem",
        f"{url}: database {target.database} does not exist and user {target.username} may not create it",
        f'CREATE DATABASE "{target.database}" OWNER {target.username} as an administrator, or correct {source}',
    )


def _sqlite_tables(path: Path) -> tuple[set[str], Reader]:
    from hpo.operations.databases import connect_readonly

    conn = connect_readonly(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for sql, needs in (
            ("SELECT version_num FROM alembic_version", "alembic_version"),
            ("SELECT study_name FROM studies ORDER BY study_id", "studies"),
            ("SELECT COUNT(*) FROM experiments WHERE lifecycle_stage = 'active'", "experiments"),
        ):
            if needs in tables:
                rows[sql] = [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()
    return tables, lambda sql: rows[sql]


def _missing_sqlite(name: str, path: Path, owner: str, source: str) -> Finding:
    folder = path.resolve().parent
    if write_problem(folder, is_folder=True) is None:
        return Finding(name, "ok", f"sqlite:///{path}: does not exist yet; {owner} creates it on the first `hpo run`")
    return Finding(
        name,
        "problem",
        f"sqlite:///{path}: cannot be created, {folder} is not writable",
        f"point {source} at a writable place",
    )


def _alembic_revision(read: Reader) -> str | None:
    try:
        rows = read("SELECT version_num FROM alembic_version")
    except KeyError:
        return None
    return str(rows[0][0]) if rows else None


def check_separate_databases(storage: str, tracking_uri: str) -> list[Finding]:
    """Optuna and MLflow in one database break each other: both keep an `alembic_version` table."""
    from hpo.operations.databases import same_database

    if not same_database(storage, tracking_uri):
        return []
    return [
        Finding(
            "storage",
            "problem",
            "the Optuna storage and the MLflow tracking store are the same database",
            "use two databases, e.g. .../optuna and .../mlflow on the same server (Optuna and MLflow both keep an alembic_version table)",
        )
    ]


# -- data and devices -----------------------------------------------------------------------------
def check_data(config: StudyConfig | None) -> list[Finding]:
    """The data cache folder, and each dataset the objectives declare: cached, broken, or needed and missing."""
    from hpo.errors import HpoError
    from hpo.objectives._registry import datasets

    folder = data_dir()
    if not folder.exists():
        if write_problem(folder, is_folder=True) is not None:
            return [
                Finding(
                    "data",
                    "problem",
                    f"{folder} (HPO_DATA_DIR) cannot be created",
                    "set HPO_DATA_DIR to a writable folder",
                )
            ]
        cached: list[str] = []
    elif not os.access(folder, os.W_OK | os.X_OK):
        return [
            Finding(
                "data",
                "problem",
                f"{folder} (HPO_DATA_DIR) is not writable",
                "set HPO_DATA_DIR to a writable folder, or fix its permissions",
            )
        ]
    else:
        cached = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    findings = [Finding("data", "ok", f"{folder} (HPO_DATA_DIR): {', '.join(cached) if cached else 'empty'}")]
    needed = {d.name for d in config.load_objective().objective.datasets} if config is not None else set()
    for name, dataset in datasets().items():
        try:
            entry = dataset.describe()
        except HpoError as exc:
            findings.append(
                Finding("data", "problem", f"{name}: {exc}", f"re-import it (`hpo data import {name} PATH`)")
            )
            continue
        summary = str(entry.get("summary") or entry.get("path", "")).splitlines()[0]
        if entry.get("cached"):
            findings.append(Finding("data", "ok", f"{name}: {summary}"))
        elif name in needed:
            findings.append(
                Finding(
                    "data",
                    "problem",
                    f"study {config.name} needs {name} and it is not cached in {entry.get('path')}",
                    str(entry.get("fix")),
                )
            )  # type: ignore[union-attr]
    return findings


def check_devices(config: StudyConfig | None) -> list[Finding]:
    """What trials will run on: CUDA devices, else the CPU and its thread budget."""
    import torch

    cores = os.cpu_count() or 1
    from_env = env_setting("HPO_THREADS")
    threads = from_env or (config.execution.threads if config and config.execution.threads else None)
    cpu = f"CPU: {cores} cores, torch uses {threads or torch.get_num_threads()} threads" + (
        " (HPO_THREADS)" if from_env else ""
    )
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = [torch.cuda.get_device_name(i) for i in range(count)]
    except RuntimeError as exc:  # a broken driver
        return [
            Finding(
                "devices",
                "warning",
                f"{cpu}; CUDA present but unusable ({_first_line(exc)})",
                "check the NVIDIA driver (nvidia-smi)",
            )
        ]
    gpus = f"CUDA: {count} device(s): {', '.join(names)}" if count else "CUDA: none, trials run on the CPU"
    wanted = config.execution.device if config is not None else "auto"
    if wanted.startswith("cuda") and count == 0:
        return [
            Finding(
                "devices",
                "problem",
                f"{cpu}; {gpus}; the study asks for execution.device={wanted}",
                "run where a GPU is visible, or set execution.device: auto",
            )
        ]
    return [Finding("devices", "ok", f"{cpu}; {gpus}")]


def check_versions() -> list[Finding]:
    names = ("hpo", "optuna", "mlflow", "torch", "sqlalchemy")
    text = ", ".join(f"{n} {_version(n)}" for n in names)
    return [Finding("versions", "ok", f"{text}, python {platform.python_version()}")]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _first_line(exc: BaseException | str) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact(text.splitlines()[0].strip()) if text else exc.__class__.__name__
