"""The tracker: MLflow for one study, its parts (runs, artifacts, models, queries) on one connection."""

from __future__ import annotations

from hpo.running.tracking._artifacts import ArtifactStore
from hpo.running.tracking._models import ModelLogger
from hpo.running.tracking._reading import RunReader
from hpo.running.tracking._runs import RunWriter


class Tracker(RunWriter, ArtifactStore, ModelLogger, RunReader):
    """MLflow for one study: its experiment, parent run and trial runs."""
