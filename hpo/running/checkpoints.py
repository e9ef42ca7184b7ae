"""Keeping checkpoints: a full objective's best-epoch weights and validation predictions, for the trials the
policy keeps (all, or the top k, whose fallen-out checkpoints are deleted to bound disk use)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.objectives import LoadedObjective, TrialResult
from hpo.objectives._checkpoint import Checkpoint
from hpo.running.meta import CHECKPOINT_TAG, RUN_ID_ATTR
from hpo.running.progress import Progress
from hpo.running.tracking import Tracker, TrackingUnavailable, TrialRun


class CheckpointKeeping:
    """The checkpoint policy of `evaluation.checkpoints` (a mixin of StudyRunner)."""

    config: StudyConfig
    objective: LoadedObjective
    tracker: Tracker
    progress: Progress
    _asked_after: list[FrozenTrial]

    def _checkpoint(
        self,
        trial: optuna.Trial,
        run: TrialRun | None,
        hp: dict[str, Any],
        metrics: dict[str, float],
        result: TrialResult | None,
        values: list[float],
    ) -> dict[str, str]:
        """Keep a full objective's best-epoch weights and validation predictions, as the checkpoint policy says.

        Returns the tags for the trial's run, which go out with its closing batch.
        """
        policy = self.config.evaluation.checkpoints
        if (
            run is None
            or policy == "none"
            or result is None
            or not result.models
            or not self.objective.objective.is_full
        ):
            return {}
        # The trials seen when this one was asked for: a later finish elsewhere only makes this trial look
        # better than it is, so at worst one checkpoint too many is kept until the next top-k entry.
        done = [t for t in self._asked_after if t.state == TrialState.COMPLETE]
        if (
            policy == "top_k"
            and self._better_count(done, values[0]) >= self.config.evaluation.top_k
            and not self._on_pareto_front(values, done)
        ):
            return {}
        checkpoint = Checkpoint.of(
            result.models,
            objective=self.objective.resolved,
            hyperparameters=hp,
            meta=result.meta,
            val_predictions=result.val_predictions,
            metrics=metrics,
        )
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.save(Path(tmp))
            try:
                self.tracker.log_artifacts(run.run_id, Path(tmp), "checkpoint", artifact_uri=run.artifact_uri)
            except TrackingUnavailable as exc:
                self.progress.warn(f"trial {trial.number}: checkpoint not saved: {exc}")
                return {}
        if policy == "top_k":
            self._drop_checkpoints_outside_top_k(done, values[0])
        return {CHECKPOINT_TAG: "kept"}

    def _better_count(self, trials: list[FrozenTrial], value: float) -> int:
        maximize = self.config.directions[0] == "maximize"
        return sum(1 for t in trials if (t.values[0] > value if maximize else t.values[0] < value))

    def _on_pareto_front(self, values: list[float], trials: list[FrozenTrial]) -> bool:
        """With several objectives, whether no trial dominates `values`: `hpo evaluate` ranks the Pareto
        front first, so its trials keep their checkpoints however they rank on the first metric."""
        if len(self.config.directions) < 2:
            return False
        signs = [1.0 if d == "minimize" else -1.0 for d in self.config.directions]
        mine = [s * v for s, v in zip(signs, values)]

        def dominates(other: list[float]) -> bool:
            theirs = [s * v for s, v in zip(signs, other)]
            return all(a <= b for a, b in zip(theirs, mine)) and theirs != mine

        return not any(dominates(t.values) for t in trials if t.values)

    def _drop_checkpoints_outside_top_k(self, done: list[FrozenTrial], value: float) -> None:
        """Delete kept checkpoints that have fallen out of the top k, bounding disk use.

        One query finds the runs that still hold a checkpoint (about k of them, however long the
        study). Only finished trials are judged: a checkpoint another worker is closing right now is
        not in `done` yet and is left alone.
        """
        k = self.config.evaluation.top_k
        if len(done) < k:
            return  # fewer than k finished trials: nothing has fallen out yet
        ranked = sorted(done, key=lambda t: -t.values[0] if self.config.directions[0] == "maximize" else t.values[0])
        keep = {t.user_attrs.get(RUN_ID_ATTR) for t in ranked[: k - 1]}  # the new trial takes the k-th place
        below = {t.user_attrs.get(RUN_ID_ATTR): t for t in ranked[k - 1 :] if self._better_count([t], value) == 0}
        try:
            for run_id, artifact_uri in self.tracker.tagged_runs({CHECKPOINT_TAG: "kept"}):
                trial = below.get(run_id)
                # the front is checked for the ~k runs still holding a checkpoint only, not for every trial
                if trial is not None and run_id not in keep and not self._on_pareto_front(trial.values, done):
                    self.tracker.delete_artifacts(run_id, "checkpoint", artifact_uri=artifact_uri)
                    self.tracker.set_tags(run_id, {CHECKPOINT_TAG: "deleted"})
        except TrackingUnavailable:
            return


__all__ = ["CheckpointKeeping"]
