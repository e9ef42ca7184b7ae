"""A run's files: uploading, listing, downloading and pruning artifacts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from hpo.config.settings import redact
from hpo.running.tracking._connection import Connection

if TYPE_CHECKING:
    from mlflow.store.artifact.artifact_repo import ArtifactRepository

logger = logging.getLogger("hpo.running.tracking")


class ArtifactStore(Connection):
    """The artifacts of a study's runs."""

    def log_artifacts(
        self, run_id: str, directory: str | Path, artifact_path: str | None = None, *, artifact_uri: str | None = None
    ) -> None:
        """Upload a folder's files; `artifact_uri` (the run's, when the caller holds it) spares MLflow's client
        reading the whole run to find it, which was most of a checkpoint's cost on a database store."""
        if artifact_uri is None:
            self._call("upload artifacts", lambda: self.client.log_artifacts(run_id, str(directory), artifact_path))
            return
        self._call(
            "upload artifacts", lambda: self._repository(artifact_uri).log_artifacts(str(directory), artifact_path)
        )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call("upload a text artifact", lambda: self.client.log_text(run_id, redact(text), artifact_file))

    def log_dict(self, run_id: str, data: dict[str, Any], artifact_file: str) -> None:
        text = redact(json.dumps(data, indent=2, default=str))
        self._call("upload a JSON artifact", lambda: self.client.log_text(run_id, text, artifact_file))

    def download_artifacts(self, run_id: str, path: str, destination: str | Path) -> Path:
        local = self._call("download artifacts", lambda: self.client.download_artifacts(run_id, path, str(destination)))
        return Path(local)

    def delete_artifacts(self, run_id: str, path: str, *, artifact_uri: str | None = None) -> None:
        """Remove a run's artifact folder (used to keep only the top-k checkpoints on disk).

        `artifact_uri` spares a lookup when the caller already holds the run.
        """
        if artifact_uri is None:
            artifact_uri = self._call("find a run", lambda: self.client.get_run(run_id)).info.artifact_uri
        try:
            repo = self._repository(artifact_uri)
            self._call("delete artifacts", lambda: repo.delete_artifacts(path))
        except (MlflowException, NotImplementedError, FileNotFoundError) as exc:
            logger.warning("could not delete %s of run %s: %s", path, run_id, exc)

    def _repository(self, artifact_uri: str) -> ArtifactRepository:
        """The artifact repository at a run's `artifact_uri`, as MLflow's client finds it from the run."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

        uri = add_databricks_profile_info_to_artifact_uri(artifact_uri, self.tracking_uri)
        return get_artifact_repository(uri, tracking_uri=self.tracking_uri)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of the files (not folders) directly under `path` of a run's artifacts."""
        entries = self._call("list artifacts", lambda: self.client.list_artifacts(run_id, path))
        return [e.path for e in entries if not e.is_dir]
