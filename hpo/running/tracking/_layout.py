"""The names of hpo's MLflow layout (roles, tags, the UI's views) and the search filter that finds its runs."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from hpo.running.meta import ROLE_TAG

ROLE = ROLE_TAG  # study | trial | evaluation | ensemble: the tag every search of hpo's runs filters on

# MLflow 3's UI opens an experiment on its GenAI pages unless told it holds model training: the
# experiment tag says so, and every link hpo prints asks for the training (runs) view explicitly.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_VIEW = "workflowType=machine_learning"
NOTE_TAG = "mlflow.note.content"  # a run's description in the UI (Markdown)
# The UI shows no metric column until one is picked; a shared view (an experiment tag the UI reads when a
# link names its key) picks the study's metrics and searched params, best first.
RUNS_VIEW_KEY = "hpo"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
MAX_VIEW_PARAMS = 12
STATE_TO_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def runs_filter(tags: dict[str, str], *, status: str | None = None) -> str:
    """An MLflow search filter matching every tag value exactly (and the run status), safely quoted."""
    parts = [f"tags.`{_key(key)}` = {_quoted(value)}" for key, value in tags.items()]
    if status is not None:
        parts.append(f"attributes.status = {_quoted(status)}")
    return " and ".join(parts)


def _key(key: str) -> str:
    if "`" in key:
        raise ValueError(f"a tag key with a backtick cannot be searched: {key!r}")
    return key


def _quoted(value: str) -> str:
    """A string literal of MLflow's filter syntax: single quotes, or double quotes around a value with an apostrophe."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"a value with both kinds of quotes cannot be searched in MLflow: {value!r}")


def ui_base(tracking_uri: str) -> str | None:
    """The address of the UI that serves a tracking URI: an http(s) server's own, credentials removed."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
