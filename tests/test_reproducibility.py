"""Reproducibility: the same study file and seed give the same params, seeds and values on CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from hpo.running.runner import sampler_seed, trial_seed
from tests.conftest import MlflowServers, tiny_boston


def test_a_sequential_rerun_with_the_same_seed_reproduces_params_and_values(
    cli: Callable[..., Any], mlflow_server: MlflowServers, write_study: Callable[..., Path]
) -> None:
    # TPE's later proposals depend on the earlier trials' values, so equal params after the startup
    # trials also show that training itself is deterministic for a trial's seed.
    study = tiny_boston(name="repro", n_trials=4, seed=7, sampler={"type": "tpe", "n_startup_trials": 2})
    study_file = write_study(study)
    other_seed = write_study({**study, "seed": 8}, "other.yaml")
    for path, name in ((study_file, "repro-a"), (study_file, "repro-b"), (other_seed, "repro-c")):
        result = cli("run", path, "--study-name", name, "--tracking-uri", mlflow_server.shared, "--quiet")
        assert result.exit_code == 0, result.output

    def trials(name: str) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=name, storage="sqlite:///hpo.db").get_trials()

    first, second, other = trials("repro-a"), trials("repro-b"), trials("repro-c")
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.value for t in first] == [t.value for t in second]
    assert [t.user_attrs["hpo.seed"] for t in first] == [trial_seed(7, n) for n in range(4)]
    assert [t.user_attrs["hpo.seed"] for t in second] == [trial_seed(7, n) for n in range(4)]
    # A different seed is a different search.
    assert [t.params for t in other] != [t.params for t in first]


def test_seeds_differ_between_trials_and_between_studies() -> None:
    # Per-trial seeds (training and sampling) must be distinct across trials and study seeds, and
    # never equal to each other, so no two trials or workers replay the same random stream.
    training = {trial_seed(s, n) for s in range(3) for n in range(200)}
    sampling = {sampler_seed(s, n) for s in range(3) for n in range(200)}
    assert len(training) == len(sampling) == 600
    assert trial_seed(0, 5) == trial_seed(0, 5) and sampler_seed(0, 5) == sampler_seed(0, 5)
