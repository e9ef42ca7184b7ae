"""Models: logging a pyfunc or PyTorch model into a run and the registry, and loading a registered one.

Everything goes through the tracker's own `MlflowClient` and explicit URIs: MLflow's `log_model` and
`models:/` loading read the process-wide tracking URI and active run, which hpo never sets.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.model import ModelInfo

from hpo.config.settings import redact, sqlite_path
from hpo.errors import ServiceError, UsageError
from hpo.running.tracking._connection import Connection, absolute_sqlite_uri, brief, open_client

logger = logging.getLogger("hpo.running.tracking")
_REGISTRY_HINT = "no model is registered there yet (`hpo evaluate STUDY` registers <study>-best and <study>-ensemble)"


class ModelLogger(Connection):
    """Models logged into a study's runs, optionally registered."""

    def log_model(
        self,
        run_id: str,
        python_model: Any,
        *,
        name: str,
        artifacts: dict[str, str] | None = None,
        registered_model_name: str | None = None,
        example: tuple[Any, Any] | None = None,
        code_paths: list[str] | None = None,
        pip_requirements: list[str] | None = None,
    ) -> ModelInfo:
        """Log an MLflow pyfunc model into `run_id` and optionally register it in the model registry.

        `example` is (inputs, outputs): the signature is inferred from it and the inputs are kept as the
        input example, which is checked by loading the model and predicting. Explicit
        `pip_requirements` spare MLflow from loading the model in a subprocess to guess them.
        """
        import mlflow.pyfunc
        from mlflow.models import infer_signature

        signature = infer_signature(*example) if example is not None else None

        def save(path: str, model: Model) -> None:
            with _quiet("mlflow.pyfunc"):  # the python_model is a plain instance: its cloudpickle advisory is noise
                mlflow.pyfunc.save_model(
                    path,
                    mlflow_model=model,
                    python_model=python_model,
                    artifacts=artifacts,
                    signature=signature,
                    input_example=example[0] if example is not None else None,
                    code_paths=code_paths,
                    pip_requirements=pip_requirements,
                )
            if example is not None:  # as MLflow does when it logs a model: the saved model predicts its example
                try:
                    mlflow.pyfunc.load_model(path, suppress_warnings=True).predict(example[0])
                except Exception as exc:
                    logger.warning("the model's input example failed to predict: %s", brief(exc))

        return self._call("log a model", lambda: self._log_saved(run_id, name, save, registered_model_name))

    def log_torch_model(
        self,
        run_id: str,
        model: Any,
        *,
        name: str,
        registered_model_name: str | None = None,
        example: tuple[Any, Any] | None = None,
        code_paths: list[str] | None = None,
        pip_requirements: list[str] | None = None,
    ) -> ModelInfo:
        """Log a PyTorch module with the `mlflow.pytorch` flavor, optionally registering it.

        The module is pickled (its classes travel in `code_paths`): MLflow's "pt2" alternative traces
        it with torch.export, which costs more than the whole evaluation of a small model.
        `example` is (inputs, outputs) for the signature.
        """
        import mlflow.pytorch
        from mlflow.models import infer_signature

        signature = infer_signature(*example) if example is not None else None

        def save(path: str, mlflow_model: Model) -> None:
            mlflow.pytorch.save_model(
                model,
                path,
                mlflow_model=mlflow_model,
                signature=signature,
                serialization_format="pickle",
                code_paths=code_paths,
                pip_requirements=pip_requirements,
            )

        return self._call("log a model", lambda: self._log_saved(run_id, name, save, registered_model_name))

    def _log_saved(
        self, run_id: str, name: str, save: Callable[[str, Model], None], registered_model_name: str | None
    ) -> ModelInfo:
        """What MLflow's `Model.log` does, on this tracker's client: a logged model linked to the run (with
        the run's params, and its step-0 metrics), its files saved locally and uploaded, then registered."""
        client = self.client
        params = dict(client.get_run(run_id).data.params)
        logged = client.create_logged_model(self.experiment_id, name=name, source_run_id=run_id, params=params)
        model_id = logged.model_id
        try:
            client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
            if metrics := self._step_metrics(run_id, model_id):
                client.log_batch(run_id, metrics=metrics)
            mlflow_model = Model(
                artifact_path=logged.artifact_location, model_uuid=model_id, run_id=run_id, model_id=model_id
            )
            with tempfile.TemporaryDirectory(prefix="hpo-model-") as tmp:
                path = str(Path(tmp) / "model")
                save(path, mlflow_model)
                client.log_model_artifacts(model_id, path)
        except Exception:
            client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
            raise
        logged = client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        info = mlflow_model.get_model_info(logged)
        if registered_model_name is not None:
            try:
                client.create_registered_model(registered_model_name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            # The source is the model's artifact location: given `models:/<model_id>`, MLflow's registry looks
            # the model up through the process-wide tracking URI (an open limitation of MLflow's), not this client's.
            version = client.create_model_version(
                registered_model_name, logged.artifact_location, run_id=run_id, model_id=model_id
            )
            info.registered_model_version = int(version.version)
        return info

    def _step_metrics(self, run_id: str, model_id: str) -> list[Metric]:
        """The run's step-0 metrics again, naming the model (MLflow shows them on the logged model's page)."""
        client = self.client
        return [
            Metric(m.key, m.value, m.timestamp, m.step, run_id=run_id, model_id=model_id)
            for key in client.get_run(run_id).data.metrics
            for m in client.get_metric_history(run_id, key)
            if m.step == 0 and m.model_id is None
        ]


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """A logger shows errors only, for the duration."""
    target = logging.getLogger(name)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


@dataclass
class RegisteredModel:
    """A model of MLflow's model registry, loaded on the CPU: the torch module of an `mlflow.pytorch` model,
    or the Python model inside a pyfunc model (hpo's ensemble)."""

    uri: str
    run_id: str | None  # the run that logged it
    flavor: str  # "pytorch" or "python_function"
    model: Any


def load_registered_model(tracking_uri: str, uri: str) -> RegisteredModel:
    """Load `uri` (``models:/<name>/<version>``, or ``@alias``/``latest`` as MLflow resolves them) from the
    registry at `tracking_uri`. An unknown model is a UsageError naming the registered ones."""
    from mlflow.artifacts import download_artifacts

    tracking_uri = absolute_sqlite_uri(tracking_uri)
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise UsageError(
            f"model: {uri}: {redact(tracking_uri)} holds no MLflow store; "
            "pass --tracking-uri (or MLFLOW_TRACKING_URI) of the one `hpo evaluate` wrote"
        )
    client = open_client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="hpo-model-") as tmp:
        try:
            location = _model_location(client, uri)
            local = download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri)
            info = Model.load(local)
        except (MlflowException, OSError) as exc:
            try:
                names = sorted(m.name for m in client.search_registered_models(max_results=1000))
            except (MlflowException, OSError):  # the registry cannot be read either: the server is down
                raise ServiceError(
                    f"model: {uri}: the MLflow registry at {redact(tracking_uri)} did not answer ({brief(exc)[:120]})"
                ) from None
            known = f"registered models there: {', '.join(names)}" if names else _REGISTRY_HINT
            raise UsageError(
                f"model: {uri} not found in {redact(tracking_uri)} ({brief(exc)[:120]}); {known}"
            ) from None
        if "pytorch" in info.flavors:
            from mlflow import pytorch as mlflow_pytorch

            module = mlflow_pytorch.load_model(local, map_location="cpu").eval()
            return RegisteredModel(uri, info.run_id, "pytorch", module)
        import mlflow.pyfunc

        loaded = mlflow.pyfunc.load_model(local, suppress_warnings=True)  # the ensemble loads its members here
        return RegisteredModel(uri, info.run_id, "python_function", loaded.unwrap_python_model())


def _model_location(client: MlflowClient, uri: str) -> str:
    """Where the files of a `models:/` URI are, resolved by `client`'s registry: MLflow's own resolution
    of such a URI asks the process-wide registry, whatever tracking URI it is given."""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    found = get_model_name_and_version(client, uri)
    if len(found) == 1:  # models:/<model_id>: a logged model, not a registered one
        return str(client.get_logged_model(found[0]).artifact_location)
    name, version = found
    return str(client.get_model_version_download_uri(name, version))
