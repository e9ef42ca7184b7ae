"""`enqueue:` warm-starts a study with configurations tried first, each a point of the search space."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpo.config import parse_study
from hpo.errors import UsageError
from tests.conftest import tiny_boston

KNOWN_GOOD = {"width": 12, "optimizer": "sgd", "momentum": 0.8, "lr": 0.005}


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"depth": 2}, "enqueue.0.depth", "not searched in params"),
        ({"epochs": 4}, "enqueue.0.epochs", "it is in fixed"),
        ({"width": 40}, "enqueue.0.width", "an integer from 4 to 16"),
        ({"width": 8.5}, "enqueue.0.width", "outside the search space"),
        ({"optimizer": "adagrad"}, "enqueue.0.optimizer", "accepted: adam, sgd"),
        ({"lr": 1.0}, "enqueue.0.lr", "a number from 0.001 to 0.01"),
        ({"optimizer": "adam", "momentum": 0.7}, "enqueue.0.momentum", "exists only when optimizer is sgd"),
    ],
)
def test_a_configuration_outside_the_search_space_is_refused(entry: dict[str, Any], field: str, words: str) -> None:
    # A warm start must be a point the study could sample; the error names the entry's field and what is accepted.
    with pytest.raises(UsageError) as error:
        parse_study(tiny_boston(enqueue=[entry]), source="s.yaml")
    message = str(error.value)
    assert message.startswith(f"s.yaml: {field}: ") and words in message and "\n" not in message


def test_more_configurations_than_the_budget_are_refused() -> None:
    with pytest.raises(UsageError, match=r"^s.yaml: enqueue: 4 configurations for n_trials: 3"):
        parse_study(tiny_boston(enqueue=[{"width": w} for w in (4, 5, 6, 7)]), source="s.yaml")


def test_step_and_whole_numbers_for_float_parameters() -> None:
    # On the step is accepted, off it refused; a whole number for a float parameter reaches Optuna as a float.
    study = tiny_boston()
    study["params"]["width"] = {"type": "int", "low": 4, "high": 16, "step": 4}
    study["params"]["lr"] = {"type": "float", "low": 1, "high": 3}
    assert parse_study({**study, "enqueue": [{"width": 8, "lr": 2}]}).warm_start() == [{"width": 8, "lr": 2.0}]
    with pytest.raises(
        UsageError,
        match=re.escape(
            "enqueue.0.width: 6 is outside the search space; accepted: an integer from 4 to 16 on steps of 4"
        ),
    ):
        parse_study({**study, "enqueue": [{"width": 6}]})


def test_run_tries_the_enqueued_configurations_first_and_once(
    cli: Callable[..., Any], write_study: Callable[..., Path]
) -> None:
    # Trial 0 trains the enqueued configuration; a resume does not queue it again, and it counts in the budget.
    path = write_study(tiny_boston(n_trials=2, enqueue=[KNOWN_GOOD, {"width": 5}]))
    result = cli("run", path)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").get_trials()
    assert len(trials) == 2
    assert trials[0].params == KNOWN_GOOD
    assert trials[1].params["width"] == 5 and set(trials[1].params) >= {"optimizer", "lr"}

    assert cli("run", path, "--n-trials", "3").exit_code == 0
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").get_trials()
    assert len(trials) == 3 and trials[2].params != KNOWN_GOOD
    assert sum(t.params == KNOWN_GOOD for t in trials) == 1


def test_the_budget_caps_enqueued_configurations_too(cli: Callable[..., Any], write_study: Callable[..., Path]) -> None:
    # `--n-trials 1` below the file's two `enqueue:` entries runs exactly one trial (the first entry); the
    # other waits for a bigger budget and does not keep the study's parent run open.
    from mlflow import MlflowClient

    path = write_study(tiny_boston(n_trials=2, enqueue=[KNOWN_GOOD, {"width": 5}]))
    assert cli("run", path, "--n-trials", "1").exit_code == 0
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").get_trials()
    assert [(t.state.name, t.params.get("width")) for t in trials] == [("COMPLETE", 12), ("WAITING", None)]
    client = MlflowClient("sqlite:///mlflow.db")
    experiment = client.get_experiment_by_name("tiny-boston")
    parent = client.search_runs([experiment.experiment_id], filter_string="tags.`hpo.role` = 'study'")[0]
    assert parent.info.status == "FINISHED"

    assert cli("run", path, "--n-trials", "2").exit_code == 0
    trials = optuna.load_study(study_name="tiny-boston", storage="sqlite:///hpo.db").get_trials()
    assert [(t.state.name, t.params["width"]) for t in trials] == [("COMPLETE", 12), ("COMPLETE", 5)]
