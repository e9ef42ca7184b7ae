"""A sampler fitted to the study's recent trials only (`sampler.history_window`).

TPE and the GP sampler model every finished trial on each ask: TPE's Parzen estimators get one kernel per
trial, so at 10,000 trials an ask costs about a second, while the trials themselves may take two. Fitting
them to the most recent N finished trials bounds that cost; in a long study the recent trials are where
the sampler's own proposals have concentrated, so little is lost. Trials still running stay visible (TPE's
constant liar treats them as bad results, which keeps parallel workers apart).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


def recent_trials(trials: Sequence[FrozenTrial], window: int) -> list[FrozenTrial]:
    """`trials` (in number order) without the finished ones older than the `window` most recent finished."""
    finished = [t.number for t in trials if t.state.is_finished()]
    if len(finished) <= window:
        return list(trials)
    oldest_kept = finished[-window]
    return [t for t in trials if t.number >= oldest_kept or not t.state.is_finished()]


class _RecentView:
    """The study as the wrapped sampler sees it: every attribute the study's, its trial lists windowed."""

    def __init__(self, study: optuna.Study, window: int) -> None:
        self._study = study
        self._window = window

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return recent_trials(trials, self._window)

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return recent_trials(self._study.get_trials(deepcopy=deepcopy, states=states), self._window)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class HistoryWindowSampler(optuna.samplers.BaseSampler):
    """`sampler`, shown only the `window` most recent finished trials (and those still running)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, *, window: int) -> None:
        self.sampler = sampler
        self.window = window

    def _view(self, study: optuna.Study) -> optuna.Study:
        # Duck-typed: the samplers read the study's trials and settings through it, and write nothing.
        return cast(optuna.Study, _RecentView(study, self.window))

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self._view(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(self._view(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)


__all__ = ["HistoryWindowSampler", "recent_trials"]
