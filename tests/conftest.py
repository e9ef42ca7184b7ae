"""Shared fixtures: a working directory per test, tiny study files, the real CLI, and (when present)
a fresh PostgreSQL database and a real `mlflow server` subprocess. Nothing here reads ../shared."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hpo.cli import app

PG_HOST = os.environ.get("HPO_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HPO_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("HPO_TEST_PG_USER", "postgres")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own folder with no hpo/MLflow settings inherited from the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("HPO_STORAGE", "MLFLOW_TRACKING_URI", "HPO_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "data-cache"))
    return tmp_path


def tiny_boston(**overrides: Any) -> dict[str, Any]:
    """A Boston study small enough to run in a few seconds: few epochs, tiny widths."""
    study: dict[str, Any] = {
        "name": "tiny-boston",
        "objective": "boston",
        "metric": "val_rmse",
        "direction": "minimize",
        "seed": 1,
        "n_trials": 3,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "params": {
            "width": {"type": "int", "low": 4, "high": 16},
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": ["sgd"]}},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
        "fixed": {"epochs": 4, "hidden_layers": 1, "batch_size": 64},
        "data": {
            "cv_folds": 1
        },  # one validation split (Boston's default is 5-fold CV; see tests/test_cross_validation.py)
    }
    study.update(overrides)
    return study


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study dict (or raw text) to a YAML file in the test folder and return its path."""

    def write(study: dict[str, Any] | str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(study if isinstance(study, str) else yaml.safe_dump(study, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Invoke the real Typer app in-process; returns the click Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str, **kwargs: Any) -> Any:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


def run_hpo(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run `python -m hpo ...` as a separate process, as a user or scheduler would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpo", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        **kwargs,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_reachable() -> str | None:
    try:
        import psycopg2

        psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3).close()
        return None
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({exc.__class__.__name__}: {first_line})"


@pytest.fixture(scope="session")
def postgres_available() -> None:
    reason = _postgres_reachable()
    if reason is not None:
        if os.environ.get("HPO_REQUIRE_POSTGRES"):
            pytest.fail(f"HPO_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(reason)


@pytest.fixture
def pg_url(postgres_available: None) -> Iterator[Callable[[str], str]]:
    """Factory of fresh PostgreSQL databases (dropped after the test): pg_url('optuna') -> URL."""
    import psycopg2

    created: list[str] = []

    def make(label: str = "db") -> str:
        name = f"hpo_test_{label}_{uuid.uuid4().hex[:10]}"
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
        conn.close()
        created.append(name)
        return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    yield make
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    for name in created:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend hpo runs on (the PostgreSQL case skips without a server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    make: Callable[[str], str] = request.getfixturevalue("pg_url")
    return make("db")


def wait_http(url: str, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class MlflowServer:
    """A real `mlflow server` (SQLite or any backend store) in its own process group, so a test can kill
    it (and its uvicorn child) mid-study like a crashed machine and start another on the same store. Its
    background job runners are switched off."""

    def __init__(self, backend_store_uri: str, folder: Path, *, port: int | None = None) -> None:
        self.url = f"http://127.0.0.1:{port or free_port()}"
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            *(sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri),
            *("--artifacts-destination", str(folder / "artifacts"), "--workers", "1"),
            *("--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]),
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(folder / f"mlflow-server-{self.url.rsplit(':', 1)[1]}.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole server at once (SIGKILL by default: no graceful shutdown, requests are cut)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class MlflowServers:
    """The `mlflow_server` fixture: `.shared` is one server for the whole session (SQLite backend; tests
    keep apart by experiment = study name), started on first use and stopped when the session ends;
    `.start(backend_store_uri, port=None)` starts a server of the test's own, killed when the test ends."""

    def __init__(self, session: dict[str, MlflowServer], folder: Path, factory: pytest.TempPathFactory) -> None:
        self._session, self._folder, self._factory = session, folder, factory
        self._own: list[MlflowServer] = []

    @property
    def shared(self) -> str:
        if "shared" not in self._session:
            folder = self._factory.mktemp("shared-mlflow")
            # registered before the wait, so it is stopped at the session's end even if it never answers
            server = self._session["shared"] = MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder)
            wait_http(f"{server.url}/health", timeout=120)
        return self._session["shared"].url

    def start(self, backend_store_uri: str, *, port: int | None = None) -> MlflowServer:
        server = MlflowServer(backend_store_uri, self._folder, port=port)
        self._own.append(server)  # registered first, so it is killed even if it never answers
        wait_http(f"{server.url}/health", timeout=120)
        return server

    def _close(self) -> None:
        for server in self._own:
            server.kill()


@pytest.fixture(scope="session")
def _mlflow_session() -> Iterator[dict[str, MlflowServer]]:
    """Where `mlflow_server` keeps the session's shared server, stopped (SIGTERM) when the session ends."""
    servers: dict[str, MlflowServer] = {}
    yield servers
    for server in servers.values():
        server.kill(signal.SIGTERM)


@pytest.fixture
def mlflow_server(
    _mlflow_session: dict[str, MlflowServer], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServers]:
    """Real MLflow servers: the session's shared one (`.shared`, a URL) or a test's own (`.start(...)`)."""
    servers = MlflowServers(_mlflow_session, tmp_path, tmp_path_factory)
    yield servers
    servers._close()


# -- tiny CIFAR-10 data, built in the test (never ../shared) ---------------------------------------
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_cifar10_arrays(
    *, train_per_class: int = 10, test_per_class: int = 2, seed: int = 0
) -> dict[str, tuple[Any, Any]]:
    """{"train"|"test": (images N x 3 x 32 x 32 uint8, labels N uint8)}, ordered by class. Each image is a
    flat colour whose red channel encodes the class and green the index, so labels can be checked."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
        images[:, 0] = (labels * 25 + 5)[:, None, None]
        images[:, 1] = (np.tile(np.arange(per_class), 10) * 7 % 250)[:, None, None]
        images[:, 2] = rng.integers(0, 256, len(labels), dtype=np.uint8)[:, None, None]
        arrays[split] = (images, labels)
    return arrays


def write_cifar10_image_folder(root: Path, arrays: dict[str, tuple[Any, Any]], *, suffix: str = ".png") -> Path:
    """`root/train/<class>/NNNN.png` and `root/test/<class>/NNNN.png` (numbered within each class)."""
    from PIL import Image

    for split, (images, labels) in arrays.items():
        counts: dict[int, int] = {}
        for image, label in zip(images, labels):
            folder = root / split / CIFAR10_CLASSES[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            index = counts.get(int(label), 0)
            counts[int(label)] = index + 1
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index:04d}{suffix}", quality=95)
    return root


def write_cifar10_official(folder: Path, arrays: dict[str, tuple[Any, Any]]) -> Path:
    """The official layout: `cifar-10-batches-py/data_batch_1..5`, `test_batch`, `batches.meta` (pickles)."""
    import pickle

    import numpy as np

    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    train_images, train_labels = arrays["train"]
    order = np.random.default_rng(1).permutation(len(train_labels))  # the official batches are not sorted
    for i, part in enumerate(np.array_split(order, 5), start=1):
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": train_labels[part].tolist(),
            b"data": train_images[part].reshape(len(part), -1),
            b"filenames": [b"x.png"] * len(part),
        }
        (batches / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test_images, test_labels = arrays["test"]
    (batches / "test_batch").write_bytes(
        pickle.dumps({b"labels": test_labels.tolist(), b"data": test_images.reshape(len(test_labels), -1)})
    )
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}))
    return batches


def tar_folder(source: Path, archive: Path) -> Path:
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


@pytest.fixture
def tiny_cifar10(tmp_path: Path) -> Callable[..., dict[str, tuple[Any, Any]]]:
    """Import a tiny generated CIFAR-10 (PNG image-folder tarball) into this test's HPO_DATA_DIR."""

    def make(**kwargs: Any) -> dict[str, tuple[Any, Any]]:
        from hpo.data import cifar10

        arrays = make_cifar10_arrays(**kwargs)
        tree = write_cifar10_image_folder(tmp_path / "tiny-cifar10-src", arrays)
        cifar10.import_dataset(tar_folder(tree, tmp_path / "tiny-cifar10.tar.gz"))
        return arrays

    return make


def wait_for_training_trials(
    storage: str, study_name: str, proc: subprocess.Popen[Any], *, count: int = 1, timeout: float = 120
) -> list[Any]:
    """Poll the Optuna storage until `count` trials are RUNNING with an MLflow run and at least one epoch
    reported (so a signal or SIGKILL now lands mid-training); fail if `proc` ends first."""
    import optuna
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    rdb: optuna.storages.RDBStorage | None = None  # opened once: opening checks the schema, which costs CPU
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the process ended early with exit code {proc.returncode}"
        try:
            rdb = rdb or optuna.storages.RDBStorage(storage)
            running = optuna.load_study(study_name=study_name, storage=rdb).get_trials(states=(TrialState.RUNNING,))
        except (KeyError, optuna.exceptions.StorageInternalError):  # the worker has not created it yet
            running = []
        training = [t for t in running if t.user_attrs.get("mlflow_run_id") and t.intermediate_values]
        if len(training) >= count:
            return training
        time.sleep(0.2)
    raise TimeoutError(f"{count} trial(s) did not start training within {timeout}s")


# -- an evaluated Boston study, shared by the evaluation and report tests --------------------------
class EvaluatedStudy:
    """A tiny Boston study run and evaluated once per session through the in-process CLI, with the
    test-split read counts seen around each step."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = "tiny-boston"
        self.storage = f"sqlite:///{folder / 'hpo.db'}"
        self.tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.reads_before = self.reads_after_run = self.reads_after_evaluate = 0
        self.run_output = self.evaluate_output = ""

    @property
    def flags(self) -> list[str]:
        return ["--storage", self.storage, "--tracking-uri", self.tracking_uri]


@pytest.fixture(scope="session")
def evaluated_boston(tmp_path_factory: pytest.TempPathFactory) -> EvaluatedStudy:
    """`hpo run` then `hpo evaluate` on a 3-trial Boston study (top 3 checkpoints kept, greedy ensemble)."""
    from hpo.data import TEST_SPLIT_READS

    study = EvaluatedStudy(tmp_path_factory.mktemp("evaluated-boston"))
    path = study.folder / "study.yaml"
    path.write_text(
        yaml.safe_dump(tiny_boston(n_trials=3, evaluation={"top_k": 3, "ensemble": "greedy"}), sort_keys=False)
    )
    runner = CliRunner()
    study.reads_before = TEST_SPLIT_READS["boston"]
    result = runner.invoke(app, ["run", str(path), "--quiet", *study.flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study.run_output = result.output
    study.reads_after_run = TEST_SPLIT_READS["boston"]
    result = runner.invoke(app, ["evaluate", study.name, *study.flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study.evaluate_output = result.output
    study.reads_after_evaluate = TEST_SPLIT_READS["boston"]
    return study


# -- `hpo server` as a subprocess, a PostgreSQL-backed one for the session, and a password-checking PostgreSQL
class HpoServer:
    """`hpo server` run exactly as docker-compose runs it (hpo.operations.server.server_argv, the backend store in
    MLFLOW_BACKEND_STORE_URI), with its stdout and stderr kept in files for the test to read."""

    def __init__(
        self, backend_store_uri: str, folder: Path, *, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        from hpo.operations.server import server_argv

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = folder / "artifacts"
        self.argv = server_argv(
            port=self.port, artifacts_destination=str(self.artifacts), program=(sys.executable, "-m", "hpo")
        )
        self.stdout_path, self.stderr_path = folder / "server.out", folder / "server.err"
        full_env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend_store_uri, **(env or {})}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=full_env)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self, timeout: float = 240) -> str:
        """Until `hpo server` says it is ready (it checks /health first); fail if it exits instead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready at" in self.stdout:
                return self.url
            if self.proc.poll() is not None:
                raise RuntimeError(f"hpo server exited with code {self.proc.returncode}: {self.stderr[-2000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"hpo server did not get ready within {timeout}s: {self.stderr[-2000:]}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as docker stop sends; `hpo server` stops its whole process tree and exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def pg_mlflow_server(postgres_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `hpo server` for the session whose backend store is a PostgreSQL database that does not exist
    until the server creates it; tests keep apart by experiment (= study) name. Returns its URL."""
    name = f"hpo_test_mlflow_{uuid.uuid4().hex[:10]}"
    server = HpoServer(
        f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}", tmp_path_factory.mktemp("pg-mlflow")
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()
        drop_database(name)


class PasswordPostgres:
    """A private PostgreSQL cluster that checks passwords (scram-sha-256) on 127.0.0.1:port."""

    user = "postgres"

    def __init__(self, port: int, password: str) -> None:
        self.host, self.port, self.password = "127.0.0.1", port, password

    def url(
        self,
        database: str,
        *,
        password: str | None = None,
        with_password: bool = True,
        driver: str = "postgresql+psycopg2",
    ) -> str:
        secret = f":{password or self.password}" if with_password else ""
        return f"{driver}://{self.user}{secret}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database, connect_timeout=5
        )
        conn.autocommit = True
        return conn


def _postgres_bindir() -> Path | None:
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="session")
def pg_password_server() -> Iterator[PasswordPostgres]:
    """The shared PostgreSQL trusts every local connection, so it cannot tell a wrong password from a
    right one. This starts a private cluster with password authentication on a free port (initdb and
    pg_ctl of the local PostgreSQL; as root they run as the `postgres` user) and removes it afterwards."""
    import pwd
    import shutil
    import tempfile

    def unavailable(reason: str) -> None:
        if os.environ.get("HPO_REQUIRE_POSTGRES"):
            pytest.fail(f"HPO_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(reason)

    bindir = _postgres_bindir()
    if bindir is None:
        unavailable("no PostgreSQL server binaries (initdb) to start a password-checking cluster")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="hpo-pg-password-"))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            unavailable("running as root and there is no `postgres` user to run initdb as")
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if Path(p).exists()), None
        )
        if runuser is None:
            shutil.rmtree(base)
            unavailable("running as root and there is no `runuser` to run initdb as the `postgres` user")
        shutil.chown(base, "postgres")
        as_user = [str(runuser), "-u", "postgres", "--"]
    password = f"pw-{uuid.uuid4().hex[:12]}"
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    data, port = base / "data", free_port()
    try:
        subprocess.run(
            [
                *as_user,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-N",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        pwfile.unlink()
        options = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        subprocess.run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "-l",
                str(base / "log"),
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(base, ignore_errors=True)
        output = getattr(exc, "stderr", b"") or b""
        unavailable(
            "a password-checking PostgreSQL cluster could not be started: "
            f"{output.decode(errors='replace').strip()[-300:]}"
        )
    try:
        yield PasswordPostgres(port, password)
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)
