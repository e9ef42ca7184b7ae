"""Bad input through the real CLI: exit code 2, one line naming the file/field, the value and what is
accepted, and nothing written anywhere (no study, no MLflow experiment, no file) by `hpo run` or
`hpo validate`."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from tests.conftest import tiny_boston


@dataclass(frozen=True)
class BadInput:
    id: str
    study: dict[str, Any] | str  # a study dict, or raw YAML text
    expect: tuple[str, ...]  # every one must appear in the error line
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    forbid: tuple[str, ...] = ()  # must not appear anywhere in the output (credentials)
    needs: str | None = None  # a module that must exist for the case to apply


def _params(**params: Any) -> dict[str, Any]:
    study = tiny_boston()
    study["params"] = {**study["params"], **params}
    return study


def _without(key: str, **overrides: Any) -> dict[str, Any]:
    study = tiny_boston(**overrides)
    del study[key]
    return study


def _garbage_csv(folder: Path) -> None:
    (folder / "garbage.csv").write_bytes(b'\x00\x01garbage,,\n"unterminated\n\xff\xfe')


def _headerless_csv(folder: Path) -> None:
    (folder / "wrong-columns.csv").write_text("a,b\n1,2\n")


GOOD_LR = {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}

CASES = [
    BadInput("yaml-syntax", "name: t\n  objective: boston\n", ("study.yaml:2:12:", "malformed YAML", "mapping values are not allowed")),
    BadInput("yaml-unclosed-bracket", "name: t\nobjective: [boston\n", ("study.yaml:3:1:", "malformed YAML", "flow sequence")),
    BadInput("yaml-duplicate-key", "name: t\nobjective: boston\nname: u\n", ("study.yaml:3:1:", "key 'name' is given twice")),
    BadInput("yaml-not-a-mapping", "- name\n- objective\n", ("study.yaml:", "must be a mapping", "got ['name', 'objective']")),
    BadInput("unknown-key", _without("params", paramz={}), ("unknown key 'paramz'", "did you mean 'params'?", "accepted: name, objective")),
    BadInput("unknown-param-key", _params(lr={"type": "float", "low": 1e-3, "high": 1e-2, "lgo": True}), ("params.lr: unknown key 'lgo'", "did you mean 'log'?", "accepted:")),
    BadInput("unknown-execution-key", tiny_boston(execution={"max_consecutive_failure": 2}), ("execution: unknown key", "did you mean 'max_consecutive_failures'?")),
    BadInput("wrong-type-int", tiny_boston(n_trials="many"), ("n_trials: expected an integer", "(got 'many')")),
    BadInput("wrong-type-metric", tiny_boston(metric=5), ("metric: expected a string or a list", "(got 5)")),
    BadInput("wrong-type-param", _params(lr=0.1), ("params.lr: expected a mapping", "(got 0.1)")),
    BadInput("wrong-type-fixed", tiny_boston(fixed={"epochs": "ten"}), ("fixed.epochs:", "'ten' is not an integer >= 1")),
    BadInput("wrong-type-bool-param", _params(batch_norm={"type": "float", "low": 0, "high": 1}), ("params.batch_norm.type", "true or false", "categorical")),
    BadInput("missing-type", _params(lr={"low": 1e-3, "high": 1e-2}), ("params.lr", "needs `type`", "accepted: float, int, categorical")),
    BadInput("unknown-param-kind", _params(lr={**GOOD_LR, "type": "flot"}), ("params.lr.type", "'flot'", "did you mean 'float'?")),
    BadInput("low-above-high", _params(lr={"type": "float", "low": 0.1, "high": 0.001}), ("params.lr:", "low (0.1) must be below high (0.001)")),
    BadInput("low-equals-high", _params(width={"type": "int", "low": 8, "high": 8}), ("params.width:", "low (8) must be below high (8)")),
    BadInput("log-with-zero-low", _params(lr={"type": "float", "low": 0.0, "high": 0.1, "log": True}), ("params.lr:", "log: true needs low > 0", "low=0.0")),
    BadInput("nan-bound", "name: t\nobjective: boston\nparams:\n  lr: {type: float, low: .nan, high: 1}\n", ("params.lr.low", "finite number", "nan")),
    BadInput("value-out-of-range", _params(dropout={"type": "float", "low": 0.0, "high": 1.0}), ("params.dropout.high", "1.0 is not a number in [0, 1)")),
    BadInput("empty-choices", _params(optimizer={"type": "categorical", "choices": []}), ("params.optimizer.choices", "at least one choice")),
    BadInput("unknown-choice", _params(optimizer={"type": "categorical", "choices": ["adam", "sgdd"]}), ("params.optimizer.choices", "'sgdd'", "did you mean 'sgd'?", "accepted: sgd, adam")),
    BadInput(
        "when-missing-parameter",
        _params(momentum={"type": "float", "low": 0.5, "high": 0.9, "when": {"optimiser": ["sgd"]}}),
        ("params.momentum.when.optimiser", "names no parameter", "accepted: lr, optimizer, width"),
    ),
    BadInput(
        "when-not-categorical",
        _params(momentum={"type": "float", "low": 0.5, "high": 0.9, "when": {"lr": [0.01]}}),
        ("params.momentum.when.lr", "'lr' is float", "categorical"),
    ),
    BadInput(
        "when-value-not-a-choice",
        _params(momentum={"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": ["rmsprop"]}}),
        ("params.momentum.when.optimizer", "'rmsprop' is not a choice", "accepted: adam, sgd"),
    ),
    BadInput(
        "when-cycle",
        _params(
            activation={"type": "categorical", "choices": ["relu", "tanh"], "when": {"init": ["xavier"]}},
            init={"type": "categorical", "choices": ["xavier", "kaiming"], "when": {"activation": ["relu"]}},
        ),
        ("params.", ".when", "cycle"),
    ),
    BadInput("unknown-objective", tiny_boston(objective="bostn"), ("objective:", "'bostn'", "did you mean 'boston'?", "accepted: boston")),
    BadInput("unknown-sampler", tiny_boston(sampler={"type": "tpee"}), ("sampler.type:", "'tpee'", "did you mean 'tpe'?", "accepted: tpe, random")),
    BadInput("unknown-pruner", tiny_boston(pruner={"type": "medain"}), ("pruner.type:", "'medain'", "did you mean 'median'?", "accepted: none, median")),
    BadInput("unknown-metric", tiny_boston(metric="val_acc"), ("metric:", "'val_acc'", "accepted: val_rmse")),
    BadInput("unknown-direction", tiny_boston(direction="down"), ("direction:", "'down'", "accepted: minimize, maximize")),
    BadInput(
        "direction-count",
        tiny_boston(metric=["val_rmse", "n_params"], direction=["minimize"]),
        ("direction:", "1 direction(s) for 2 metric(s)", "minimize|maximize"),
    ),
    BadInput(
        "unknown-hyperparameter",
        _params(conv_blocks={"type": "int", "low": 1, "high": 3}),
        ("params.conv_blocks:", "does not understand 'conv_blocks'", "it understands: activation, batch_norm"),
    ),
    BadInput("unknown-fixed", tiny_boston(fixed={"epoch": 3}), ("fixed.epoch:", "did you mean 'epochs'?", "it understands:")),
    BadInput("searched-and-fixed", tiny_boston(fixed={"lr": 0.01, "epochs": 2}), ("fixed.lr:", "also in params")),
    BadInput("unknown-sampler-argument", tiny_boston(sampler={"type": "tpe", "n_startup": 3}), ("study.yaml: sampler.n_startup:", "TPESampler", "accepted:", "n_startup_trials")),
    BadInput("unknown-pruner-argument", tiny_boston(pruner={"type": "median", "warmup": 3}), ("study.yaml: pruner.warmup:", "MedianPruner", "n_warmup_steps")),
    BadInput("bad-pruner-argument-value", tiny_boston(pruner={"type": "percentile", "percentile": 250}), ("study.yaml: pruner:", "PercentilePruner", "250")),
    BadInput("bad-execution-value", tiny_boston(execution={"nan_policy": "ignore"}), ("execution.nan_policy:", "'ignore'", "accepted: prune, fail")),
    BadInput("bad-fractions", tiny_boston(data={"val_fraction": 0.6, "test_fraction": 0.5}), ("data:", "val_fraction + test_fraction")),
    BadInput(
        "impossible-architecture",
        {
            "name": "cifar-arch",
            "objective": "cifar10",
            "params": {"lr": GOOD_LR},
            "fixed": {"model": "cnn", "conv_blocks": 8, "pooling": "max", "epochs": 1},
        },
        ("study.yaml: fixed.conv_blocks:", "conv_blocks=8", "pooling"),
        needs="hpo.architecture",
    ),
    BadInput(
        "cifar10-boston-only-data-setting",
        {"name": "cifar-data", "objective": "cifar10", "params": {"lr": GOOD_LR}, "fixed": {"model": "cnn", "epochs": 1}, "data": {"test_fraction": 0.3}},
        ("study.yaml: data.test_fraction:", "not used by objective cifar10", "official 10,000 test images", "accepts: val_fraction, subset, split_seed"),
    ),
    BadInput("data-file-missing", tiny_boston(data={"path": "missing.csv"}), ("data.path", "missing.csv", "not found")),
    BadInput("data-file-garbage", tiny_boston(data={"path": "garbage.csv"}), ("data.path", "garbage.csv"), setup=_garbage_csv),
    BadInput("data-file-wrong-columns", tiny_boston(data={"path": "wrong-columns.csv"}), ("data.path", "wrong-columns.csv", "lacks columns", "CRIM"), setup=_headerless_csv),
    BadInput("storage-unwritable", tiny_boston(storage="sqlite:////proc/nope/hpo.db"), ("study.yaml: storage:", "/proc/nope/hpo.db", "not writable")),
    BadInput("storage-under-a-file", tiny_boston(), ("--storage:", "study.yaml is a file, not a folder"), args=("--storage", "sqlite:///study.yaml/hpo.db")),
    BadInput("tracking-unwritable", tiny_boston(tracking_uri="sqlite:////proc/nope/mlflow.db"), ("tracking_uri:", "/proc/nope/mlflow.db", "not writable")),
    BadInput("tracking-file-store-unwritable", tiny_boston(), ("--tracking-uri:", "/proc/nope/mlruns"), args=("--tracking-uri", "file:///proc/nope/mlruns")),
    BadInput("storage-malformed", tiny_boston(storage="postgres//nohost"), ("storage:", "malformed URL 'postgres//nohost'", "sqlite:///hpo.db")),
    BadInput(
        "storage-malformed-with-password",
        tiny_boston(),
        ("--storage:", "malformed URL", "user:***@"),
        args=("--storage", "postgresql//user:s3cret@db.example/hpo"),
        forbid=("s3cret",),
    ),
    BadInput("tracking-malformed", tiny_boston(tracking_uri="htp://mlflow:5000"), ("tracking_uri:", "'htp://mlflow:5000'", "http(s)://host:port")),
    BadInput("tracking-env-malformed", tiny_boston(), ("MLFLOW_TRACKING_URI:", "'http://'", "host is missing"), env={"MLFLOW_TRACKING_URI": "http://"}),
]


def _snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case: BadInput, command: str, cli: Any, write_study: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each mistake is refused before anything exists: exit code 2, a single line on stderr that names
    # the field (and the file when the field is in it), the value and what is accepted; the folder
    # (which holds the default Optuna storage, MLflow store and data cache) is left as it was.
    if case.needs and importlib.util.find_spec(case.needs) is None:
        pytest.skip(f"{case.needs} is not there yet")
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    if case.setup:
        case.setup(tmp_path)
    path = write_study(case.study)
    before = _snapshot(tmp_path)

    result = cli(command, path, *case.args)

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hpo: "), lines[0]
    for text in case.expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "Traceback" not in result.output
    for secret in case.forbid:
        assert secret not in result.output
    assert result.stdout == ""
    assert _snapshot(tmp_path) == before


def test_the_table_covers_at_least_fifteen_study_file_mistakes() -> None:
    # Issue 2's requirement, kept honest: the table is not allowed to shrink below it.
    assert len({c.id for c in CASES}) == len(CASES) >= 15


@pytest.mark.postgres
def test_bad_input_leaves_a_database_storage_and_mlflow_store_untouched(cli: Any, write_study: Any, pg_url: Any) -> None:
    # With real databases for both stores, refused studies create no table in either: no Optuna
    # schema, no study, no MLflow experiment.
    storage, tracking = pg_url("optuna"), pg_url("mlflow")
    for case in (c for c in CASES if c.id in ("low-above-high", "unknown-sampler-argument", "data-file-missing", "unknown-hyperparameter")):
        path = write_study(case.study)
        result = cli("run", path, "--storage", storage, "--tracking-uri", tracking)
        assert result.exit_code == 2, (case.id, result.output)
    for url in (storage, tracking):
        engine = sqlalchemy.create_engine(url)
        try:
            assert sqlalchemy.inspect(engine).get_table_names() == []
        finally:
            engine.dispose()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so the folder is not read-only for this user")
def test_a_read_only_folder_for_the_storage_is_refused(cli: Any, write_study: Any, tmp_path: Path) -> None:
    # A storage in a folder the user cannot write is bad input (exit 2), found before any file is made.
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = cli("run", write_study(tiny_boston()), "--storage", f"sqlite:///{locked}/hpo.db")
        assert result.exit_code == 2
        assert "--storage:" in result.stderr and "not writable" in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("run", "study.yaml", "--bogus"), "No such option: --bogus"),
        (("run",), "Missing argument"),
        (("run", "study.yaml", "--n-trials", "0"), "--n-trials"),
        (("run", "study.yaml", "--n-trials", "many"), "Invalid value for '--n-trials'"),
        (("best",), "Missing argument"),
        (("nonsense",), "No such command 'nonsense'"),
    ],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...], expect: str, cli: Any, write_study: Any, tmp_path: Path) -> None:
    # Typer/Click usage errors use the contract's bad-input exit code and write nothing.
    write_study(tiny_boston())
    result = cli(*args)
    assert result.exit_code == 2
    assert expect in result.stderr
    assert _snapshot(tmp_path) == ["study.yaml"]


def test_a_missing_study_file_is_bad_input(cli: Any, tmp_path: Path) -> None:
    # A path that does not exist, or a folder, is named in a one-line error with exit code 2.
    result = cli("validate", "nowhere.yaml")
    assert result.exit_code == 2 and "nowhere.yaml: study file not found" in result.stderr
    result = cli("run", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.stderr
