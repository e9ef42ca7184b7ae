"""`sampler.history_window`: the sampler is fitted to the most recent finished trials only (running ones
stay visible), which is exactly what it would do on a study holding just those trials; a study file sets
it for tpe and gp."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo.config import parse_study
from hpo.running.history_window import HistoryWindowSampler, recent_trials
from hpo.running.samplers import build_sampler
from tests.conftest import tiny_boston

SPACE = {"x": FloatDistribution(-5, 5), "n": IntDistribution(1, 8)}


def _objective(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -5, 5) - 1) ** 2 + trial.suggest_int("n", 1, 8)


def _filled(n: int, *, seed: int = 0) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(_objective, n_trials=n)
    return study


def test_recent_trials_keeps_the_window_of_finished_trials_and_every_running_one() -> None:
    # 12 trials, 3 of them running (numbers 2, 7, 11): a window of 4 keeps finished 6, 8, 9, 10 and the
    # three running ones, in number order; a window wider than the history keeps everything.
    trials = [
        FrozenTrial(
            number=i,
            state=TrialState.RUNNING if i in (2, 7, 11) else TrialState.COMPLETE,
            value=None if i in (2, 7, 11) else float(i),
            datetime_start=None,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=i,
            values=None,
        )
        for i in range(12)
    ]
    assert [t.number for t in recent_trials(trials, 4)] == [2, 6, 7, 8, 9, 10, 11]
    assert recent_trials(trials, 9) == trials


def test_a_windowed_tpe_proposes_what_tpe_proposes_on_a_study_of_only_the_recent_trials() -> None:
    # 40 finished trials, window 15: the wrapped TPE's next proposal equals a plain TPE's (same seed) on a
    # study holding only the last 15 trials, and differs from a plain TPE's on all 40.
    full = _filled(40)
    recent = optuna.create_study()
    recent.add_trials(full.trials[-15:])

    def propose(study: optuna.Study, sampler: optuna.samplers.BaseSampler) -> dict[str, float]:
        study.sampler = sampler
        return study.ask(SPACE).params

    windowed = propose(full, HistoryWindowSampler(optuna.samplers.TPESampler(seed=3, multivariate=True), window=15))
    plain_recent = propose(recent, optuna.samplers.TPESampler(seed=3, multivariate=True))
    plain_full = propose(_filled(40), optuna.samplers.TPESampler(seed=3, multivariate=True))
    assert windowed == plain_recent
    assert windowed != plain_full


def test_a_windowed_sampler_runs_a_study_and_stays_in_the_space() -> None:
    # A whole optimize loop through the wrapper (TPE's startup, then the model on the window): every
    # trial completes with params inside the space.
    study = optuna.create_study(
        sampler=HistoryWindowSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=5), window=8)
    )
    study.optimize(_objective, n_trials=30)
    assert len(study.trials) == 30
    assert all(t.state == TrialState.COMPLETE and -5 <= t.params["x"] <= 5 for t in study.trials)


def test_the_study_file_setting_wraps_tpe_and_leaves_it_out_by_default() -> None:
    # sampler.history_window builds the wrapper around the named sampler with its arguments; without it the
    # plain Optuna sampler is used.
    config = parse_study(tiny_boston(sampler={"type": "tpe", "n_startup_trials": 5, "history_window": 50}))
    sampler = build_sampler(config)
    assert isinstance(sampler, HistoryWindowSampler) and sampler.window == 50
    assert isinstance(sampler.sampler, optuna.samplers.TPESampler)
    assert sampler.sampler._n_startup_trials == 5
    assert isinstance(build_sampler(parse_study(tiny_boston(sampler={"type": "tpe"}))), optuna.samplers.TPESampler)
