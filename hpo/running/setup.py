"""Setting a study up: its storage, the study (created once, resumed only if it still means the same,
joined as stored), the warm-start trials, and the MLflow parent run every worker shares."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, Literal, cast

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from hpo.config import StudyConfig, parse_study, study_to_yaml
from hpo.config.settings import Settings, redact
from hpo.errors import UsageError
from hpo.objectives import LoadedObjective
from hpo.running import meta
from hpo.running.checks import check_study
from hpo.running.grpc_storage import GrpcStorage
from hpo.running.progress import Progress
from hpo.running.resume import Change, compare, describe_refusal
from hpo.running.storage import MissingStorage, budget_lock, open_storage
from hpo.running.tracking import Tracker, TrackingUnavailable
from hpo.running.trial_cache import study_storage
from hpo.running.workers import WorkerDevice


class StudySetup:
    """Opening the storage, the study and its parent run (a mixin of StudyRunner)."""

    config: StudyConfig
    settings: Settings
    study_name: str
    source: str
    progress: Progress
    storage: RDBStorage | GrpcStorage
    study: optuna.Study
    tracker: Tracker
    objective: LoadedObjective
    _sampler: Any
    _pruner: Any
    _device: WorkerDevice
    _accepted_changes: list[Change]
    # StudyRunner's method: closes a dead worker's MLflow run when the heartbeat fails its trial.
    _close_stale_run: Callable[[optuna.Study, FrozenTrial], None]

    def _check_config(self, config: StudyConfig, settings: Settings | None = None) -> None:
        """The checks a config must pass (:func:`check_study`), then its objective and, when a GPU is asked
        for, that it is there (auto and cpu need no check, nor torch)."""
        self._sampler, self._pruner = check_study(config, settings)
        self.objective = config.load_objective()
        self._device = WorkerDevice(config.execution)
        if config.execution.device not in ("auto", "cpu"):
            self._device.resolve()

    def _open_storage(self, *, create: bool) -> RDBStorage | GrpcStorage:
        execution = self.config.execution
        try:
            return open_storage(
                self.settings.storage,
                heartbeat_interval=execution.heartbeat_interval,
                grace_period=execution.grace_period,
                max_retry=execution.max_retry,
                on_stale=self._close_stale_run,
                create=create,
                field=self.settings.storage_field,
            )
        except MissingStorage:
            raise self._no_such_study() from None

    def _no_such_study(self) -> UsageError:
        return UsageError(
            f"study {self.study_name!r} does not exist in {redact(self.settings.storage)}; "
            "create it with `hpo create` or `hpo run`"
        )

    # -- study and parent run ---------------------------------------------------------------------
    def _open_study(self, *, create: bool) -> optuna.Study:
        """Load the study, or create it; a resumed study must still mean what it meant (:mod:`hpo.running.resume`)."""
        if not create:
            try:
                study = self._load_study()
            except KeyError:
                raise self._no_such_study() from None
            return self._join(study)
        # Many workers may create the same study at once (a Kubernetes Job's init containers).
        with budget_lock(self.settings.storage, self.study_name + "/create"):
            try:
                study = self._load_study()
            except KeyError:
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=study_storage(self.storage),
                    sampler=self._sampler,
                    pruner=self._pruner,
                    directions=cast("list[Literal['minimize', 'maximize']]", self.config.directions),
                )
                study.set_user_attr(meta.CONFIG_ATTR, meta.plain_config(self.config))
                if self.config.base_dir:
                    study.set_user_attr(meta.OBJECTIVE_DIR_ATTR, self.config.base_dir)
                study.set_user_attr(meta.METRICS_ATTR, self.config.metrics)
                fingerprint = self.config.data_fingerprint()
                if fingerprint is not None:
                    study.set_user_attr(meta.DATA_ATTR, fingerprint)
            else:
                self._resume(study)
            for params in self.config.warm_start():  # under the lock, so concurrent starts queue each once
                study.enqueue_trial(params, skip_if_exists=True)
            if (
                study.metric_names != self.config.metrics
            ):  # every Optuna client (optuna-dashboard) shows val_rmse, not "Objective 0"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(list(self.config.metrics))
        return study

    def _load_study(self) -> optuna.Study:
        """The stored study, with this run's sampler and pruner, read through hpo's trial cache."""
        return optuna.load_study(
            study_name=self.study_name, storage=study_storage(self.storage), sampler=self._sampler, pruner=self._pruner
        )

    def _resume(self, study: optuna.Study) -> None:
        """Refuse a study file whose changes would make old and new trials incomparable; keep the safe ones."""
        changes = self._changes(study, self.config)
        refused = [c for c in changes if not c.safe]
        if refused:
            raise UsageError(
                f"{self.source}: study {self.study_name!r} in {redact(self.settings.storage)} was started with other "
                "settings, and its trials "
                f"would not be comparable with new ones: {describe_refusal(refused)}\n"
                f"hpo: start a new study instead (another `name:` or --study-name), or put those settings back"
            )
        if changes:
            self._accepted_changes = changes
            study.set_user_attr(meta.CONFIG_ATTR, meta.plain_config(self.config))
        if self.config.base_dir and study.user_attrs.get(meta.OBJECTIVE_DIR_ATTR) != self.config.base_dir:
            study.set_user_attr(meta.OBJECTIVE_DIR_ATTR, self.config.base_dir)
        if meta.DATA_ATTR not in study.user_attrs:  # a study from before hpo recorded its data
            fingerprint = self.config.data_fingerprint()
            if fingerprint is not None:
                study.set_user_attr(meta.DATA_ATTR, fingerprint)

    def _join(self, study: optuna.Study) -> optuna.Study:
        """A worker runs the study as it was stored, whatever its own file says, and never changes it."""
        stored = study.user_attrs.get(meta.CONFIG_ATTR)
        if stored is not None and stored != meta.plain_config(self.config):
            self.progress.warn(
                f"{self.source} differs from the config study {self.study_name!r} was started with; "
                "the stored one is used"
            )
            file_execution = self.config.execution
            self.config = meta.stored_config(study)
            self._check_config(self.config)
            if self.config.execution != file_execution:  # heartbeats and retries as the study was started with
                self.storage = self._open_storage(create=False)
            study = self._load_study()
        refused = [c for c in self._changes(study, self.config) if c.field == "data file"]
        if refused:
            raise UsageError(
                f"study {self.study_name!r} was run on other data than this worker has: {describe_refusal(refused)}; "
                "give every worker the same data"
            )
        return study

    def _changes(self, study: optuna.Study, config: StudyConfig) -> list[Change]:
        """What differs between the stored study and `config`: settings, directions and the data's fingerprint."""
        stored = study.user_attrs.get(meta.CONFIG_ATTR)
        changes: list[Change] = []
        if stored is not None:
            try:  # resolved again, so that a field added since the study started shows as its default
                stored = meta.plain_config(parse_study(meta.as_stored(stored), source="stored study"))
            except UsageError:
                pass
            changes = compare(stored, meta.plain_config(config))
        directions = [d.name.lower() for d in study.directions]
        if directions != config.directions and not any(c.field == "direction" for c in changes):
            changes.append(Change("direction", directions, config.directions, safe=False))
        before, after = study.user_attrs.get(meta.DATA_ATTR), config.data_fingerprint()
        if before is not None and after is not None and before != after:
            changes.append(Change("data file", before, after, safe=False))
        return changes

    def _parent_run(self) -> str | None:
        """The study's parent run, created once: the id is kept in the study so every worker finds it.

        A resumed study's run is marked RUNNING again, and the changes the study file made are recorded on it.
        """
        try:
            existing = self.study.user_attrs.get(meta.PARENT_RUN_ATTR) or self.tracker.find_study_run(self.study_name)
            if existing:
                self.study.set_user_attr(meta.PARENT_RUN_ATTR, existing)
                self.tracker.set_study_status(str(existing), "RUNNING")
                self._record_changes(str(existing))
                self._set_runs_view()
                return str(existing)
            with budget_lock(self.settings.storage, self.study_name + "/parent"):
                existing = optuna.load_study(study_name=self.study_name, storage=self.storage).user_attrs.get(
                    meta.PARENT_RUN_ATTR
                )
                if existing:
                    run_id = str(existing)
                else:
                    run_id = self.tracker.create_study_run(
                        self.study_name,
                        config_yaml=study_to_yaml(self.config),
                        tags={
                            meta.OBJECTIVE_TAG: self.config.objective,
                            meta.OBJECTIVE_SOURCE_TAG: self.objective.resolved,
                            meta.STORAGE_TAG: redact(self.settings.storage),
                        },
                    )
                    self.study.set_user_attr(meta.PARENT_RUN_ATTR, run_id)
            self._set_runs_view()
            return run_id
        except TrackingUnavailable as exc:
            self.progress.warn(f"tracking: {exc}; trials go on and `hpo reconcile` will backfill MLflow")
            return None

    def _record_changes(self, run_id: str) -> None:
        """A resumed study's accepted changes: a tag with the latest ones and the study file as resumed."""
        if not self._accepted_changes:
            return
        stamp = time.strftime("%Y%m%dT%H%M%S")
        text = "; ".join(c.text() for c in self._accepted_changes)
        self.tracker.set_tags(run_id, {meta.CHANGES_TAG: f"{stamp}: {text}"[:5000]})
        self.tracker.log_text(run_id, study_to_yaml(self.config), f"study-resumed-{stamp}.yaml")
        self.progress.warn(f"resuming study {self.study_name!r} with changed settings: {text}")

    def _set_runs_view(self) -> None:
        """The MLflow UI view that links open: the study's metrics and searched params, best trial first."""
        metric = self.config.metrics[0]
        sort_by = (
            None if self.config.is_multi_objective else (f"best_{metric}" if metric.startswith("val_") else metric)
        )
        self.tracker.set_runs_view(
            metrics=list(self.config.metrics),
            params=list(self.config.params),
            sort_by=sort_by,
            ascending=self.config.directions[0] == "minimize",
        )


__all__ = ["StudySetup"]
