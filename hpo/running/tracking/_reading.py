"""Reading runs back: a run, a metric's history, the runs with given tags, a run's JSON artifact."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from hpo.running.tracking._connection import Connection, absolute_sqlite_uri, open_client
from hpo.running.tracking._layout import runs_filter


class RunReader(Connection):
    """Queries on a study's experiment."""

    def get_run(self, run_id: str) -> Any:
        return self._call("read a run", lambda: self.client.get_run(run_id))

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self._call("read a metric history", lambda: self.client.get_metric_history(run_id, key))

    def search_runs(self, tags: dict[str, str], *, status: str | None = None, max_results: int = 1000) -> list[Any]:
        """The experiment's runs with these tag values (and status), every value quoted for MLflow's filter syntax."""
        filter_string = runs_filter(tags, status=status)
        runs: list[Any] = []
        token = None
        while True:
            search = functools.partial(
                self.client.search_runs, [self.experiment_id], filter_string=filter_string, max_results=max_results
            )
            page = self._call("search runs", functools.partial(search, page_token=token))
            runs.extend(page)
            token = page.token
            if not token or len(runs) >= max_results:
                return runs

    def tagged_runs(self, tags: dict[str, str]) -> list[tuple[str, str]]:
        """The experiment's active runs with these tag values, as (run id, artifact URI): one query where hpo
        holds the tracking database (:mod:`._tables`), else MLflow's search."""
        tables = self._tables
        if tables is not None:
            return self._call("search runs", functools.partial(tables.tagged_runs, self.experiment_id, tags))
        return [(run.info.run_id, run.info.artifact_uri) for run in self.search_runs(tags)]


def read_run_json(tracking_uri: str, run_id: str, artifact_file: str) -> dict[str, Any] | None:
    """A JSON artifact of a run (None when the run has no such file)."""
    import tempfile

    client = open_client(absolute_sqlite_uri(tracking_uri))
    with tempfile.TemporaryDirectory(prefix="hpo-artifact-") as tmp:
        try:
            local = client.download_artifacts(run_id, artifact_file, tmp)
        except (MlflowException, OSError):
            return None
        return dict(json.loads(Path(local).read_text()))
