"""Where a study stands, as its parent run shows it: summary metrics, tags and the run's description."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Param

from hpo.config.settings import redact
from hpo.running.meta import BEST_PARAMS_TAG, BEST_TRIAL_TAG, PARETO_FRONT_TAG, TRIALS_TAG

_NOTE_LIMIT = 8000  # MLflow's longest tag value; a longer study file is cut (the study.yaml artifact is whole)
PARAM_VALUE_LIMIT = 6000


@dataclass
class StudySummary:
    """Where a study stands: counts by state, and the best trial (single-objective) or Pareto front size."""

    study_name: str
    counts: dict[str, int]  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING -> trials
    best_values: dict[str, float] = field(default_factory=dict)  # metric -> value of the best trial
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    pareto_size: int | None = None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {f"best_{k}": v for k, v in self.best_values.items()}
        if self.best_trial is not None:
            out["best_trial"] = self.best_trial
        out.update(
            {
                name: self.counts.get(state, 0)
                for state, name in (
                    ("COMPLETE", "trials_complete"),
                    ("PRUNED", "trials_pruned"),
                    ("FAIL", "trials_failed"),
                )
            }
        )
        return out

    def tags(self) -> dict[str, str]:
        out = {TRIALS_TAG: self._counts_text()}
        if self.best_trial is not None:
            out.update(
                {BEST_TRIAL_TAG: str(self.best_trial), BEST_PARAMS_TAG: json.dumps(self.best_params, default=str)}
            )
        if self.pareto_size is not None:
            out[PARETO_FRONT_TAG] = str(self.pareto_size)
        return out

    def _counts_text(self) -> str:
        shown = [(s, self.counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")]
        return ", ".join(f"{n} {s.lower()}" for s, n in shown if n or s == "COMPLETE")

    def text(self) -> str:
        """Markdown lines for the run's description."""
        lines = [f"**Study {self.study_name}**: {self._counts_text()}."]
        if self.best_trial is not None:
            values = ", ".join(f"{k} **{v:.6g}**" for k, v in self.best_values.items())
            lines.append(f"Best: {values} (trial {self.best_trial}).")
            lines.append(
                "Best params: " + ", ".join(f"`{k}={param_text(v)}`" for k, v in self.best_params.items()) + "."
            )
        elif self.pareto_size is not None:
            lines.append(f"Pareto front: {self.pareto_size} trials.")
        return "\n\n".join(lines)


def study_note(config_yaml: str, *, summary: str | None = None) -> str:
    """A study run's description: the summary (once trials finish), then the resolved study file."""
    head = f"{summary}\n\nStudy file (resolved):" if summary else "Study file (resolved):"
    text = redact(config_yaml).rstrip()
    room = _NOTE_LIMIT - len(head) - 200
    if len(text) > room:
        text = text[:room] + "\n# ... cut here: the whole file is the run's study.yaml artifact"
    return f"{head}\n\n```yaml\n{text}\n```"


def param_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def as_params(params: dict[str, Any]) -> list[Param]:
    """Hyperparameters as MLflow params: text, credentials redacted, cut to MLflow's value limit."""
    return [Param(k, redact(param_text(v))[:PARAM_VALUE_LIMIT]) for k, v in params.items()]
