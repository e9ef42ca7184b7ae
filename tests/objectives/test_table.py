"""Hyperparameter tables: rows, rules, composition, and the study checks read from them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hpo.config import parse_study
from hpo.errors import UsageError
from hpo.objectives import (
    MLP,
    TRAINING,
    Hyperparameter,
    HyperparameterTable,
    choice,
    flag,
    integer,
    load_objective,
    number,
    text,
)
from hpo.objectives.cifar10 import BACKBONES, MODELS


def test_rules_accept_their_range_and_describe_it() -> None:
    # Each rule kind accepts what it says and says it in an error's words; a flag is never an int choice.
    assert (
        integer(ge=1).accepts(3)
        and integer(ge=1).accepts(3.0)
        and not integer(ge=1).accepts(0)
        and not integer(ge=1).accepts(True)
    )
    assert integer(ge=1).describe() == "an integer >= 1"
    assert number(ge=0, lt=1).accepts(0.0) and not number(ge=0, lt=1).accepts(1.0)
    assert number(ge=0, lt=1).describe() == "a number in [0, 1)"
    assert integer(ge=0, also=("same",)).accepts("same") and not integer(ge=0, also=("same",)).accepts("valid")
    assert choice(1, 2).accepts(1) and not choice(1, 2).accepts(True) and not choice("a").accepts("b")
    assert choice("relu", "tanh").describe() == "relu | tanh"
    assert flag().accepts(False) and not flag().accepts(0)
    assert text(nullable=True).accepts(None) and not text().accepts("") and text().describe() == "a non-empty string"


def test_a_row_refuses_a_default_its_rule_rejects() -> None:
    with pytest.raises(ValueError, match="default 0 is not an integer >= 1"):
        Hyperparameter("epochs", integer(ge=1), 0, "passes")


def test_tables_compose_once_per_name_and_change_defaults_without_restating_rows() -> None:
    table = TRAINING.with_defaults(epochs=3) + HyperparameterTable(
        Hyperparameter("channels", integer(ge=1), 8, "channels")
    )
    assert table["epochs"].default == 3 and TRAINING["epochs"].default == 50  # the fragment itself is unchanged
    assert table.resolve({"lr": 0.5}) == {**TRAINING.defaults(), "epochs": 3, "channels": 8, "lr": 0.5}
    with pytest.raises(ValueError, match="declared twice"):
        TRAINING + HyperparameterTable(Hyperparameter("lr", number(gt=0), 1.0, "lr"))
    with pytest.raises(KeyError, match="no hyperparameter nope"):
        TRAINING.with_defaults(nope=1)
    assert (
        MLP.applying_to(("mlp",), "width")["width"].applies_to == frozenset({"mlp"}) and MLP["width"].applies_to is None
    )
    assert "lr" not in TRAINING.without("lr") and len(TRAINING.without("lr")) == len(TRAINING) - 1


def test_cifar10_models_are_what_the_model_library_builds() -> None:
    # The objective offers every backbone hpo.models builds, and no other.
    from hpo.models import BACKBONES as BUILT

    assert set(BACKBONES) == set(BUILT) and set(MODELS) == {"mlp", "cnn", "resnet", "airbench", *BUILT}


def _error(study: dict[str, Any]) -> str:
    with pytest.raises(UsageError) as info:
        parse_study(study, source="s.yaml")
    return str(info.value)


def test_a_hyperparameter_no_model_of_the_study_uses_is_refused() -> None:
    # cifar10's `filters` is used by cnn and resnet only: with model fixed to mlp it would be silently ignored.
    assert "fixed.filters: is used by model cnn, resnet only, and this study's model is mlp" in _error(
        {"name": "c", "objective": "cifar10", "fixed": {"model": "mlp", "filters": 8}}
    )
    # The airbench-style net has no dropout layer: dropout with it would be ignored just the same.
    assert "fixed.dropout: is used by model" in _error(
        {"name": "c", "objective": "cifar10", "fixed": {"model": "airbench", "dropout": 0.2}}
    )
    # As soon as one model the study may sample uses it, it is fine.
    parse_study(
        {
            "name": "c",
            "objective": "cifar10",
            "params": {"model": {"type": "categorical", "choices": ["mlp", "cnn"]}},
            "fixed": {"filters": 8},
        }
    )


def test_an_objective_without_a_table_takes_any_name_and_checks_plain_values(tmp_path: Any) -> None:
    # No table: params and fixed pass through (ranges are still ranges, fixed values plain data), and the
    # study must say its metric and direction.
    (tmp_path / "free.py").write_text("def train(ctx):\n    return {'score': 1.0}\n")
    base = {"name": "f", "objective": "free.py:train", "metric": "score", "direction": "maximize"}
    config = parse_study(
        {
            **base,
            "fixed": {"anything": [1, 2], "depth": 3},
            "params": {"alpha": {"type": "float", "low": 0.1, "high": 1}},
        },
        base_dir=tmp_path,
    )
    assert config.trial_hyperparameters({"alpha": 0.5}) == {"anything": [1, 2], "depth": 3, "alpha": 0.5}
    with pytest.raises(UsageError, match=re.escape("metric: objective free.py:train declares no metrics")):
        parse_study({"name": "f", "objective": "free.py:train"}, base_dir=tmp_path)
    with pytest.raises(UsageError, match="direction: objective train does not declare the direction of 'score'"):
        parse_study({"name": "f", "objective": "free.py:train", "metric": "score"}, base_dir=tmp_path)
    with pytest.raises(UsageError, match=re.escape("fixed.when: expected numbers, strings")):
        parse_study({**base, "fixed": {"when": float("nan")}}, base_dir=tmp_path)


def test_builtin_declarations_agree_with_their_training_code() -> None:
    # Every hyperparameter a built-in declares is one its training code accepts: a trial of the table's
    # defaults builds (Boston: an MLP; CIFAR-10: each model family).
    from hpo.objectives.boston import _model as boston
    from hpo.objectives.cifar10 import _model as cifar10

    boston_table = load_objective("boston").objective.hyperparameters
    cifar_table = load_objective("cifar10").objective.hyperparameters
    assert boston_table is not None and cifar_table is not None
    assert boston.build_model(boston_table.defaults(), {"in_features": 13}) is not None
    for model in ("mlp", "cnn", "resnet", "airbench"):
        assert cifar10.build_model(cifar_table.resolve({"model": model}), {}) is not None
