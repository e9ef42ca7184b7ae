"""The best trial a worker shows after each trial, from the trials it already read (no query), and how often
a worker summarises the study on its parent run."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.config import parse_study
from hpo.running.summary import best_known_text, best_text, summary_interval
from tests.conftest import tiny_boston


def _trials(values: list[float | None]) -> list[optuna.trial.FrozenTrial]:
    trials = []
    for number, value in enumerate(values):
        state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        trial = create_trial(state=state, value=value, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)})
        trial.number = number
        trials.append(trial)
    return trials


def test_the_best_known_trial_is_the_one_optuna_would_name() -> None:
    # Among the trials read at the ask plus the one just finished, the best by the study's direction
    # (the lower number of equals), in the words `best_text` uses; failed trials and values of a trial
    # that did not complete count for nothing.
    config = parse_study(tiny_boston())
    study = optuna.create_study(direction="minimize")
    for trial in _trials([3.0, None, 2.5, 2.5]):
        study.add_trial(trial)
    known = study.get_trials(deepcopy=False)
    assert best_known_text(study, config, known, number=4, values=None) == best_text(study, config)
    assert best_known_text(study, config, known, number=4, values=None) == "val_rmse=2.5 (trial 2)"
    assert best_known_text(study, config, known, number=4, values=[1.0]) == "val_rmse=1 (trial 4)"
    assert best_known_text(study, config, [], number=0, values=None) is None
    maximizing = parse_study(tiny_boston(metric="val_r2", direction="maximize"))
    assert best_known_text(study, maximizing, known, number=4, values=[2.9]) == "val_r2=3 (trial 0)"


def test_busy_workers_share_the_summary_interval() -> None:
    # One interval for a lone worker (or before any trial runs); with N trials running each worker waits
    # N intervals, so the study is summarised about once an interval however many workers share it.
    running = [create_trial(state=TrialState.RUNNING) for _ in range(32)]
    finished = _trials([1.0, None, 2.0])
    assert summary_interval(5.0, []) == 5.0
    assert summary_interval(5.0, finished) == 5.0
    assert summary_interval(5.0, finished + running[:1]) == 5.0
    assert summary_interval(5.0, finished + running) == 160.0
