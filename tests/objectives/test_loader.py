"""Where an objective comes from: a built-in name, package.module:name, path/to/file.py:name (relative to the
study file) or an entry point; every way of getting it wrong is exit 2 with one line naming `objective`
and nothing written, from `hpo validate`, `hpo run` and `hpo worker` alike."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import tiny_boston

MINIMAL = "def train(ctx):\n    return {'score': float(ctx.hyperparameters['x'])}\n"


def _study(objective: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "own",
        "objective": objective,
        "metric": "score",
        "direction": "maximize",
        "n_trials": 2,
        "sampler": {"type": "random"},
        "params": {"x": {"type": "float", "low": 0, "high": 1}},
        **extra,
    }


def _snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts)


@pytest.mark.parametrize(
    ("case", "files", "objective", "expect"),
    [
        (
            "missing-module",
            {},
            "no_such_package.models:train",
            ("objective:", "no module named 'no_such_package'", "PYTHONPATH"),
        ),
        (
            "missing-file",
            {},
            "models/missing.py:train",
            ("objective:", "file not found", "models/missing.py", "relative to the study file's folder"),
        ),
        (
            "raises-on-import",
            {"broken.py": "import math\nraise ValueError('the weights file is gone')\n"},
            "broken.py:train",
            ("objective:", "importing", "broken.py failed: ValueError: the weights file is gone"),
        ),
        (
            "module-raises-on-import",
            {"brokenmod.py": "raise RuntimeError('no GPU driver')\n"},
            "brokenmod:train",
            ("objective:", "importing module 'brokenmod' failed: RuntimeError: no GPU driver"),
        ),
        (
            "missing-dependency",
            {"needs.py": "import no_such_dependency\n"},
            "needs.py:train",
            ("objective:", "ModuleNotFoundError: No module named 'no_such_dependency'"),
        ),
        (
            "missing-name",
            {"own.py": MINIMAL},
            "own.py:trian",
            ("objective:", "has no 'trian'", "did you mean 'train'?", "it defines: train"),
        ),
        (
            "not-callable",
            {"own.py": MINIMAL + "SETTINGS = {'a': 1}\n"},
            "own.py:SETTINGS",
            ("objective:", "own.py:SETTINGS is a dict", "not a function of the trial context"),
        ),
        ("a-class", {"own.py": MINIMAL + "class Model:\n    pass\n"}, "own.py:Model", ("objective:", "is a class")),
        (
            "wrong-signature",
            {"own.py": "def train(ctx, data, model):\n    return {}\n"},
            "own.py:train",
            ("objective:", "must take one argument, the trial context", "(ctx, data, model)"),
        ),
        (
            "misspelt-builtin",
            {},
            "cifar-10",
            (
                "objective:",
                "unknown objective 'cifar-10'",
                "did you mean 'cifar10'?",
                "accepted: boston, cifar10",
                "package.module:name",
            ),
        ),
        (
            "unknown-entry-point",
            {},
            "xgboost_tabular",
            ("objective:", "unknown objective 'xgboost_tabular'", "hpo.objectives entry point"),
        ),
        (
            "file-without-name",
            {"own.py": MINIMAL},
            "own.py",
            ("objective:", "names a file but no function in it", "own.py:NAME"),
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run", "worker"])
def test_a_bad_objective_is_one_line_exit_2_and_nothing_written(
    case: str,
    files: dict[str, str],
    objective: str,
    expect: tuple[str, ...],
    command: str,
    cli: Any,
    write_study: Any,
    tmp_path: Path,
) -> None:
    # Whatever is wrong with `objective:`, no command starts: a worker stops at once, not trial by trial.
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    path = write_study(_study(objective))
    before = _snapshot(tmp_path)
    result = cli(command, path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hpo: {path}: objective: "), result.stderr
    for text in expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert result.stdout == "" and _snapshot(tmp_path) == before
    sys.modules.pop("brokenmod", None)


def test_a_file_objective_is_found_from_the_study_files_folder_and_again_from_storage(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `models/own.py:train` is relative to the study file, not to where hpo runs; the stored study keeps the
    # study file's folder, so commands that read the study back (evaluate, report, reconcile) find it from
    # anywhere; `hpo validate` says which objective it loaded and from where.
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "own.py").write_text(MINIMAL)
    (project / "study.yaml").write_text(yaml.safe_dump(_study("models/own.py:train")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shown = cli("validate", project / "study.yaml")
    assert shown.exit_code == 0, shown.output
    assert f"# objective: train (file: {project / 'models' / 'own.py'})" in shown.stdout
    result = cli("run", project / "study.yaml", "--quiet")
    assert result.exit_code == 0, result.output

    import optuna

    from hpo.running.runner import stored_config

    monkeypatch.chdir(tmp_path)
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{elsewhere / 'hpo.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.value == t.params["x"] for t in study.trials)  # the function's own result, returned as a dict
    config = stored_config(study)
    assert (
        config.objective == "models/own.py:train"
        and config.load_objective().resolved == f"{project / 'models' / 'own.py'}:train"
    )


def test_a_module_objective_is_imported_from_the_study_files_folder(cli: Any, write_study: Any, tmp_path: Path) -> None:
    # package.module:name is found as `python -m` finds it; here beside the study file. A single-metric
    # study may also get a plain number back.
    (tmp_path / "ownpkg").mkdir()
    (tmp_path / "ownpkg" / "__init__.py").write_text("")
    (tmp_path / "ownpkg" / "models.py").write_text("def train(ctx):\n    return ctx.hyperparameters['x'] * 2\n")
    result = cli("run", write_study(_study("ownpkg.models:train")), "--quiet")
    assert result.exit_code == 0, result.output
    import optuna

    trials = optuna.load_study(study_name="own", storage="sqlite:///hpo.db").trials
    assert [t.value for t in trials] == [2 * t.params["x"] for t in trials]
    sys.modules.pop("ownpkg.models", None)
    sys.modules.pop("ownpkg", None)


def test_an_entry_point_of_an_installed_package_is_an_objective(
    cli: Any, write_study: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package that declares `[project.entry-points."hpo.objectives"] tabular = "tabular_models:train"`
    # is named by its entry point; built-in names cannot be taken over.
    site = tmp_path / "site"
    (site / "tabular_models-1.0.dist-info").mkdir(parents=True)
    (site / "tabular_models-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tabular-models\nVersion: 1.0\n"
    )
    (site / "tabular_models-1.0.dist-info" / "entry_points.txt").write_text(
        "[hpo.objectives]\ntabular = tabular_models:train\nboston = tabular_models:train\n"
    )
    (site / "tabular_models.py").write_text(MINIMAL)
    monkeypatch.syspath_prepend(str(site))
    from hpo.objectives import load_objective, registered

    assert (
        registered()["tabular"] == "tabular_models:train"
        and registered()["boston"] == "hpo.objectives.boston:objective"
    )
    loaded = load_objective("tabular")
    assert (loaded.kind, loaded.resolved) == ("entry point", "tabular")
    result = cli("run", write_study(_study("tabular")), "--quiet")
    assert result.exit_code == 0, result.output
    sys.modules.pop("tabular_models", None)


def test_what_a_trial_returns_decides_its_state(cli: Any, write_study: Any, tmp_path: Path) -> None:
    # A missing study metric, a non-number or a non-dict fails the trial with a reason that says what was
    # expected; the study goes on (and stops after max_consecutive_failures like any failure).
    import optuna

    (tmp_path / "odd.py").write_text(
        textwrap.dedent("""
        def train(ctx):
            x = ctx.hyperparameters["x"]
            if x < 0.34:
                return {"accuracy": x}
            if x < 0.67:
                return {"score": "high"}
            return [x]
    """)
    )
    study = _study(
        "odd.py:train",
        n_trials=3,
        sampler={"type": "grid"},
        params={"x": {"type": "categorical", "choices": [0.1, 0.5, 0.9]}},
    )
    result = cli("run", write_study(study), "--quiet")
    assert result.exit_code == 1  # no trial completed
    reasons = {
        t.params["x"]: t.user_attrs["hpo.failure_reason"]
        for t in optuna.load_study(study_name="own", storage="sqlite:///hpo.db").trials
    }
    assert (
        reasons[0.1] == "the objective returned no 'score' (it returned: accuracy); return the study's metric 'score'"
    )
    assert reasons[0.5] == "the objective returned str 'high' for metric 'score'; metrics are numbers"
    assert reasons[0.9].startswith("the objective returned list [0.9]; it must return its final metrics")


def test_the_builtins_are_registered_like_any_other_objective() -> None:
    # hpo's own objectives come through the registry (entry points, or the source checkout's scan).
    from hpo.objectives import load_objective, registered

    assert {
        "boston": "hpo.objectives.boston:objective",
        "cifar10": "hpo.objectives.cifar10:objective",
    }.items() <= registered().items()
    loaded = load_objective("boston")
    assert (loaded.kind, loaded.origin, loaded.objective.name, loaded.objective.metric) == (
        "built-in",
        "hpo.objectives.boston:objective",
        "boston",
        "val_rmse",
    )


def test_validate_prints_the_objective_of_a_builtin(cli: Any, write_study: Any) -> None:
    result = cli("validate", write_study(tiny_boston()))
    assert result.exit_code == 0 and "# objective: boston (built-in: hpo.objectives.boston:objective)" in result.stdout
