"""The study file: resolved defaults, validation messages, URL settings and `hpo validate`'s output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo.config import StudyConfig, load_study, parse_study, study_to_yaml
from hpo.config import reference as study_reference
from hpo.config.settings import Settings, check_writable, redact, resolve_settings
from hpo.errors import UsageError
from tests.conftest import tiny_boston

README = Path(__file__).resolve().parents[1] / "README.md"


def _error(data: Any) -> str:
    with pytest.raises(UsageError) as info:
        parse_study(data, source="s.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_study_resolves_every_default() -> None:
    # Two keys are enough; everything else comes from the model and the objective's declaration.
    config = parse_study({"name": "m", "objective": "boston"})
    resolved = config.resolved()
    assert resolved["metric"] == "val_rmse" and resolved["direction"] == "minimize"
    assert resolved["sampler"] == {"type": "tpe", "history_window": None} and resolved["pruner"] == {"type": "none"}
    # Boston scores trials by 5-fold cross-validation unless the study says otherwise
    assert resolved["data"] == {
        "val_fraction": 0.1,
        "test_fraction": 0.2,
        "subset": 1.0,
        "split_seed": 0,
        "cv_folds": 5,
        "drop_features": [],
        "path": None,
    }
    assert resolved["execution"]["max_consecutive_failures"] == 5
    assert resolved["execution"]["nan_policy"] == "prune"
    assert resolved["evaluation"]["top_k"] == 5
    # The printed YAML is itself a valid study file describing the same study.
    assert parse_study(yaml.safe_load(study_to_yaml(config))) == config.model_copy(
        update={"metric": "val_rmse", "direction": "minimize"}
    )


def test_multi_objective_directions_default_per_metric() -> None:
    config = parse_study({"name": "m", "objective": "boston", "metric": ["val_rmse", "val_r2"]})
    assert config.directions == ["minimize", "maximize"]
    assert config.is_multi_objective


def test_when_accepts_a_single_value_and_orders_parents_first() -> None:
    study = tiny_boston()
    study["params"] = {
        "momentum": {"type": "float", "low": 0.1, "high": 0.9, "when": {"optimizer": "sgd"}},
        **study["params"],
    }
    config = parse_study(study)
    assert config.params["momentum"].when == {"optimizer": ["sgd"]}
    order = config.parameter_order()
    assert order.index("optimizer") < order.index("momentum")


def test_unknown_key_suggests_a_key_not_already_given() -> None:
    # 'lgo' is as close to 'low' as to 'log', but 'low' is already there: the hint must be 'log'.
    message = _error(
        {"name": "m", "objective": "boston", "params": {"lr": {"type": "float", "low": 0.1, "high": 1, "lgo": True}}}
    )
    assert "params.lr: unknown key 'lgo' (did you mean 'log'?)" in message


def test_union_errors_read_as_one_expectation_and_other_problems_are_counted() -> None:
    message = _error({"name": "m", "objective": "boston", "metric": 5, "seed": "x", "n_trials": 0})
    assert message.startswith("s.yaml: metric: expected a string or a list (got 5)")
    assert message.endswith("(and 2 more problems after this one)")


def test_fixed_values_and_ranges_are_checked_against_the_hyperparameter() -> None:
    base = {"name": "m", "objective": "boston"}
    assert "fixed.batch_norm: 'yes' is not true or false" in _error({**base, "fixed": {"batch_norm": "yes"}})
    assert "fixed.batch_size: 0 is not an integer >= 1" in _error({**base, "fixed": {"batch_size": 0}})
    assert "params.epochs.type: epochs takes an integer >= 1; use type: int" in _error(
        {**base, "params": {"epochs": {"type": "float", "low": 1, "high": 5}}}
    )
    assert "params.lr.low: 0.0 is not a number in (0, 1000000]" in _error(
        {**base, "params": {"lr": {"type": "float", "low": 0.0, "high": 1}}}
    )
    # An integral float is an integer; an int range is a valid float range.
    config = parse_study({**base, "fixed": {"epochs": 10.0}, "params": {"lr": {"type": "int", "low": 1, "high": 2}}})
    assert config.fixed["epochs"] == 10.0


def test_table_rules_describe_what_they_accept() -> None:
    # Every built-in hyperparameter's rule accepts its own default and rejects a value of another kind.
    from hpo.objectives import load_objective, registered

    for name in registered():
        for row in load_objective(name).objective.hyperparameters or ():
            assert row.rule.accepts(row.default), (name, row.name)
            assert not row.rule.accepts([1]), (name, row.name)
    padding = load_objective("cifar10").objective.hyperparameters["padding"].rule  # type: ignore[index]
    assert padding.accepts("same") and not padding.accepts("valid")


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("? [a, b]\n: 1\n", ":1:3: malformed YAML: a key must be a plain word"),
        ("[" * 3000, "malformed YAML"),
        (
            "name: t\nobjective: boston\nfixed:\n  epochs: !!python/object/apply:os.system [ls]\n",
            ":4:11: malformed YAML: could not determine a constructor",
        ),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdef", "bcdefg"))
            + "name: t\n",
            "aliases are expanded",
        ),
        ("\tname: t\n", "malformed YAML"),
        ("name: t\x00\n", "malformed YAML"),
    ],
)
def test_hostile_yaml_is_a_clean_error(text: str, expect: str, tmp_path: Path) -> None:
    # Valid-but-odd and plainly broken YAML both end as one UsageError line naming the file.
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        load_study(path)
    assert expect in str(info.value) and str(info.value).startswith(str(path))


def test_settings_name_the_source_of_a_bad_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Precedence flag > environment > study file > default, and errors name where the URL came from.
    assert resolve_settings().storage == "sqlite:///hpo.db"
    assert resolve_settings(file_storage="sqlite:///f.db", source="s.yaml").storage == "sqlite:///f.db"
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///env.db")
    assert resolve_settings(file_storage="sqlite:///f.db").storage == "sqlite:///env.db"
    assert (
        resolve_settings(storage_flag="sqlite:///flag.db", file_storage="sqlite:///f.db").storage == "sqlite:///flag.db"
    )
    with pytest.raises(UsageError, match=r"^HPO_STORAGE: malformed URL"):
        monkeypatch.setenv("HPO_STORAGE", "hpo.db")
        resolve_settings()
    monkeypatch.delenv("HPO_STORAGE")
    with pytest.raises(UsageError, match=r"^s\.yaml: tracking_uri: malformed URI 'localhost:5000'"):
        resolve_settings(file_tracking_uri="localhost:5000", source="s.yaml")
    with pytest.raises(UsageError, match=r"^--storage: malformed URL"):
        resolve_settings(storage_flag=" sqlite:///hpo.db")


def test_check_writable_refuses_what_cannot_be_created(tmp_path: Path) -> None:
    # A database path under a file, or a folder where the database file should be, is refused;
    # a path whose folders do not exist yet is fine (they are created) and nothing is left behind.
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    ok = Settings(
        storage=f"sqlite:///{tmp_path}/new/deeper/hpo.db", tracking_uri=f"file://{tmp_path}/mlruns", data_dir=tmp_path
    )
    check_writable(ok)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"]
    for storage, expect in (
        (f"sqlite:///{tmp_path}/a-file/hpo.db", "is a file, not a folder"),
        (f"sqlite:///{tmp_path}/a-folder", "it is a folder"),
    ):
        with pytest.raises(UsageError, match=expect):
            check_writable(
                Settings(
                    storage=storage, tracking_uri="sqlite:///mlflow.db", data_dir=tmp_path, storage_field="--storage"
                )
            )


def test_redact_hides_passwords_even_in_malformed_urls() -> None:
    for url in ("postgresql://u:pw@h/db", "postgresql//u:pw@h/db", "u:pw@h/db", "mysql+pymysql://u:p@ss:w@h:3306/x"):
        text = redact(f"storage: malformed URL '{url}'")
        assert ":pw@" not in text and "ss:w" not in text and ":***@" in text, text
    assert redact("sqlite:///hpo.db and http://host:5000") == "sqlite:///hpo.db and http://host:5000"


def test_validate_prints_the_resolved_config_and_search_space_and_writes_nothing(
    cli: Any, write_study: Any, tmp_path: Path
) -> None:
    # stdout: the resolved study (YAML a script can read back), where it would be stored, and the
    # search space; stderr: one "valid" line; the folder is untouched.
    path = write_study(tiny_boston())
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"{path}: valid"
    yaml_part, rest = result.stdout.split("# storage:", 1)
    resolved = yaml.safe_load(yaml_part)
    assert resolved == load_study(path).resolved()
    assert resolved["execution"]["max_consecutive_failures"] == 5
    assert "sqlite:///hpo.db" in rest and "# tracking_uri: sqlite:///mlflow.db" in rest
    for name in ("width", "optimizer", "momentum", "lr", "epochs"):
        assert name in rest
    assert "optimizer in ['sgd']" in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_readme_study_reference_is_generated_from_the_model() -> None:
    # The README's reference section is exactly what hpo.config.reference renders from the model;
    # after changing a field run `python -m hpo.config.reference README.md`.
    assert study_reference.section(README.read_text(encoding="utf-8")) == study_reference.markdown()


def test_study_files_shipped_in_studies_are_valid() -> None:
    # Every example study in the repository validates.
    files = sorted((README.parent / "studies").glob("*.yaml"))
    assert files
    for path in files:
        assert isinstance(load_study(path), StudyConfig)


def test_every_sampler_and_pruner_name_has_an_optuna_class() -> None:
    # hpo.config owns the names; mypy checks each class entry's name, this that no name lacks a class.
    from hpo.config import PRUNER_CLASSES, PRUNERS, SAMPLER_CLASSES, SAMPLERS

    assert tuple(SAMPLER_CLASSES) == SAMPLERS
    assert tuple(PRUNER_CLASSES) == PRUNERS
