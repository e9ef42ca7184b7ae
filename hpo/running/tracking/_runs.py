"""Writing runs: the study's parent run, the trials' child runs (opened, fed, closed), and other runs."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from hpo.config.settings import redact
from hpo.running.meta import REASON_ATTR, SEED_ATTR
from hpo.running.tracking._connection import Connection
from hpo.running.tracking._layout import (
    MAX_VIEW_PARAMS,
    NOTE_TAG,
    ROLE,
    RUNS_VIEW_KEY,
    RUNS_VIEW_TAG,
    STATE_TO_STATUS,
    UI_VIEW,
    runs_filter,
    ui_base,
)
from hpo.running.tracking._sender import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    TrialRun,
    batches,
    chunks,
    now_ms,
)
from hpo.running.tracking._summary import PARAM_VALUE_LIMIT, StudySummary, as_params, study_note


class RunWriter(Connection):
    """The runs of a study: one parent run, one child run per trial, and the runs other commands add."""

    def find_study_run(self, study_name: str) -> str | None:
        runs = self._call(
            "find the study run",
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=runs_filter({ROLE: "study", "optuna.study_name": study_name}),
                order_by=["attributes.start_time ASC"],
                max_results=5,
            ),
        )
        return runs[0].info.run_id if runs else None

    def create_study_run(self, study_name: str, *, config_yaml: str, tags: dict[str, str] | None = None) -> str:
        """The parent run: tag hpo.role=study and the resolved study file (credentials redacted), as an
        artifact and as the run's description."""
        all_tags = {ROLE: "study", "optuna.study_name": study_name, NOTE_TAG: study_note(config_yaml), **(tags or {})}
        run_id, _ = self._create_run("create the study run", run_name=study_name, tags=all_tags)
        self._call("store the study file", lambda: self.client.log_text(run_id, redact(config_yaml), "study.yaml"))
        return run_id

    def log_study_summary(self, run_id: str, summary: StudySummary, *, config_yaml: str) -> None:
        """Put where a study stands on its parent run, in one request: metrics the collapsed runs table
        shows in the trials' own columns (`best_<metric>`, counts by state; step = finished trials, so
        their charts trace the study's progress), tags, and the description (summary above the study file)."""
        stamp, step = now_ms(), summary.finished
        metrics = [Metric(k, float(v), stamp, step) for k, v in summary.metrics().items()]
        tags = [RunTag(k, redact(v)[:PARAM_VALUE_LIMIT]) for k, v in summary.tags().items()]
        tags.append(RunTag(NOTE_TAG, study_note(config_yaml, summary=summary.text())))
        if self._write_tables(run_id, metrics, tags=tags, what="update the study run"):
            return
        self._call(
            "update the study run", lambda: self.client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
        )

    def set_runs_view(self, *, metrics: list[str], params: list[str], sort_by: str | None, ascending: bool) -> None:
        """Store the study's runs view (columns: each metric's best and last value, the trial counts, the
        searched params; sorted by `sort_by`) as the experiment's shared view, which `ui_link` opens."""
        columns = [
            f"metrics.`{name}`" for m in metrics for name in ((f"best_{m}", m) if m.startswith("val_") else (m,))
        ]
        columns += ["metrics.`best_epoch`", "metrics.`trials_complete`", "metrics.`trials_pruned`"]
        columns += [f"params.`{name}`" for name in params[:MAX_VIEW_PARAMS]]
        state: dict[str, Any] = {"selectedColumns": columns}
        if sort_by:
            state.update(orderByKey=f"metrics.`{sort_by}`", orderByAsc=ascending)
        value = json.dumps(state)
        self._call(
            "set the runs view", lambda: self.client.set_experiment_tag(self.experiment_id, RUNS_VIEW_TAG, value)
        )
        self._runs_view = True

    def ui_link(self, run_id: str | None = None) -> str | None:
        """The UI's page of this study's runs (in its shared view when one is stored) or of one run,
        opened on the model-training view; None when MLflow is a database or folder that no UI serves
        at a known address."""
        base = ui_base(self.tracking_uri)
        if base is None:
            return None
        runs = f"{base}/#/experiments/{self.experiment_id}/runs"
        if run_id:
            return f"{runs}/{run_id}?{UI_VIEW}"
        if self._runs_view is None:
            experiment = self._call("read the experiment", lambda: self.client.get_experiment(self.experiment_id))
            self._runs_view = RUNS_VIEW_TAG in experiment.tags
        return f"{runs}?viewStateShareKey={RUNS_VIEW_KEY}&{UI_VIEW}" if self._runs_view else f"{runs}?{UI_VIEW}"

    def set_study_status(self, run_id: str, status: str) -> None:
        self._call("update the study run", lambda: self.client.update_run(run_id, status=status))

    def start_trial_run(
        self,
        *,
        parent_run_id: str,
        study_name: str,
        trial_number: int,
        seed: int,
        params: dict[str, Any],
        extra_tags: dict[str, str] | None = None,
    ) -> str:
        """Open the trial's child run with its tags and every hyperparameter as a param."""
        tags = _trial_run_tags(parent_run_id, study_name, trial_number, seed, extra_tags)
        run_id, _ = self._create_run("open the trial run", run_name=f"trial-{trial_number:04d}", tags=tags)
        self.log_params(run_id, params)
        return run_id

    def open_trial_run(
        self,
        *,
        parent_run_id: str,
        study_name: str,
        trial_number: int,
        seed: int,
        params: dict[str, Any],
        extra_tags: dict[str, str] | None = None,
        on_open: Callable[[str], None] | None = None,
    ) -> TrialRun:
        """The trial's child run as :meth:`start_trial_run` makes it, opened in the background: returns at
        once. `on_open(run_id)` runs (on the sender thread) as soon as the run exists; its params go out
        with the first epochs."""
        tags = _trial_run_tags(parent_run_id, study_name, trial_number, seed, extra_tags)
        run = TrialRun(self, as_params(params))

        def open_run() -> str:
            run_id, run.artifact_uri = self._create_run(
                "open the trial run", run_name=f"trial-{trial_number:04d}", tags=tags
            )
            if on_open is not None:
                on_open(run_id)
            return run_id

        run._opened = self._sender.submit(open_run)
        return run

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        for chunk in chunks(as_params(params), MAX_PARAMS_PER_BATCH):
            self._call("log params", functools.partial(self.client.log_batch, run_id, params=chunk, synchronous=True))

    def log_epoch(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Buffer one epoch's metrics; send them when the buffer is a few seconds old."""
        stamp = now_ms()
        buffer = self._pending.setdefault(run_id, [])
        buffer.extend(Metric(k, float(v), stamp, step) for k, v in metrics.items())
        now = time.monotonic()
        if now - self._last_flush.setdefault(run_id, now) >= self.flush_seconds:
            self.flush(run_id)

    def flush(self, run_id: str) -> None:
        metrics = self._pending.pop(run_id, [])
        self._last_flush[run_id] = time.monotonic()
        for chunk in chunks(metrics, MAX_METRICS_PER_BATCH):
            self._call("log metrics", functools.partial(self.client.log_batch, run_id, metrics=chunk, synchronous=True))

    def end_trial_run(
        self,
        run_id: str,
        *,
        state: str,
        summary: dict[str, float] | None = None,
        reason: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Send the buffered epochs with the summary metrics, the Optuna state and `tags`, and close the run
        with the matching status.

        Buffered epochs and the summary share one `log_batch` when they fit (a database round trip per
        trial saved; see BENCHMARKS.md); MLflow caps a batch at 1000 metrics and tags together.
        """
        self._last_flush.pop(run_id, None)
        self._close(run_id, self._pending.pop(run_id, []), [], state=state, summary=summary, reason=reason, tags=tags)

    def _close(
        self,
        run_id: str,
        metrics: list[Metric],
        params: list[Param],
        *,
        state: str,
        summary: dict[str, float] | None,
        reason: str | None,
        tags: dict[str, str] | None,
    ) -> None:
        """The closing batch (epochs and params not sent yet, the summary, the state tags), then the run's
        status: in one transaction where hpo holds the tracking database (:mod:`._tables`)."""
        stamp = now_ms()
        metrics = metrics + [Metric(k, float(v), stamp, 0) for k, v in (summary or {}).items()]
        run_tags = [RunTag("optuna.state", state), *(RunTag(k, redact(str(v))) for k, v in (tags or {}).items())]
        if reason:
            run_tags.append(RunTag(REASON_ATTR, redact(reason)[:4000]))
            run_tags.append(RunTag("mlflow.note.content", redact(f"{state}: {reason}")[:4000]))
        status = STATE_TO_STATUS[state]
        if self._write_tables(run_id, metrics, params=params, tags=run_tags, status=status, what="close the trial run"):
            return
        for batch_metrics, batch_params, batch_tags in batches(metrics, params, run_tags):
            log = functools.partial(self.client.log_batch, run_id, synchronous=True)
            self._call(
                "close the trial run",
                functools.partial(log, metrics=batch_metrics, params=batch_params, tags=batch_tags),
            )
        self._call("close the trial run", lambda: self.client.set_terminated(run_id, status=status))

    def create_run(
        self, *, role: str, run_name: str, parent_run_id: str | None = None, tags: dict[str, str] | None = None
    ) -> str:
        all_tags = {ROLE: role, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run_id, _ = self._create_run("create a run", run_name=run_name, tags=all_tags)
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        stamp = now_ms()
        entries = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        for chunk in chunks(entries, MAX_METRICS_PER_BATCH):
            self._call("log metrics", functools.partial(self.client.log_batch, run_id, metrics=chunk, synchronous=True))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        entries = [RunTag(k, redact(str(v))) for k, v in tags.items()]
        if self._write_tables(run_id, [], tags=entries, what="set tags"):
            return
        self._call("set tags", lambda: self.client.log_batch(run_id, tags=entries, synchronous=True))

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("close a run", lambda: self.client.set_terminated(run_id, status=status))


def _trial_run_tags(
    parent_run_id: str, study_name: str, trial_number: int, seed: int, extra_tags: dict[str, str] | None
) -> dict[str, str]:
    """A trial run's tags when it opens: its parent (the study run), the Optuna trial it records, its seed."""
    return {
        "mlflow.parentRunId": parent_run_id,
        ROLE: "trial",
        "optuna.study_name": study_name,
        "optuna.trial_number": str(trial_number),
        "optuna.state": "RUNNING",
        SEED_ATTR: str(seed),
        **(extra_tags or {}),
    }
