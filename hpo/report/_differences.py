"""What two study files set differently: every setting whose effective value differs, in words."""

from __future__ import annotations

from hpo.config import StudyConfig
from hpo.report._facts import _num

# Study-file fields that say where results go or how trials run, not what they compute.
NOT_SETTINGS = ("name", "storage", "tracking_uri", "execution")


Differences = dict[str, tuple[str, str]]  # setting -> (A's value, B's value), in words


def _flatten(data: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _describe_spec(spec: dict[str, object]) -> str:
    """A searched hyperparameter in words: `searched 0.1 to 0.5 (log)`, `searched among sgd, adam`."""
    if spec["type"] == "categorical":
        choices = spec["choices"]
        assert isinstance(choices, (list, tuple))  # a categorical spec lists its choices
        text = "searched among " + ", ".join(str(c) for c in choices)
    else:
        scale = " (log)" if spec.get("log") else f" (step {spec['step']})" if spec.get("step") else ""
        low, high = spec["low"], spec["high"]
        assert isinstance(low, (int, float)) and isinstance(high, (int, float))  # a float/int spec's bounds
        text = f"searched {_num(float(low))} to {_num(float(high))}{scale}"
    when = spec.get("when")
    return text + (
        f" when {', '.join(f'{k} in {v}' for k, v in when.items())}" if isinstance(when, dict) and when else ""
    )


def _effective_settings(config: StudyConfig) -> dict[str, str]:
    """Every setting that shapes a study's results, by name, as words: each hyperparameter (searched
    with its range, else its fixed or default value) and every other study-file field."""
    resolved = config.resolved()
    out = {
        k: str(v)
        for k, v in _flatten({k: v for k, v in resolved.items() if k not in (*NOT_SETTINGS, "params", "fixed")}).items()
    }
    values = config.trial_hyperparameters({})  # table defaults < fixed
    for name in sorted(set(values) | set(resolved["params"])):
        spec = resolved["params"].get(name)
        out[name] = _describe_spec({k: v for k, v in spec.items() if v is not None}) if spec else str(values.get(name))
    return out


def setting_differences(a: StudyConfig, b: StudyConfig) -> Differences:
    """The settings whose effective values differ between two study files (their names, storage and
    how trials are run aside)."""
    left, right = _effective_settings(a), _effective_settings(b)
    return {
        k: (left.get(k, "not set"), right.get(k, "not set"))
        for k in sorted(set(left) | set(right))
        if left.get(k) != right.get(k)
    }


def _is_on(description: str) -> bool:
    return description.startswith("searched") or description not in ("0", "0.0", "False", "None", "none", "not set")


def _regularizer(differences: Differences, side: int) -> str:
    """What one side regularizes with, among the differing regularization settings."""
    used = [f"{k} {v[side]}" for k, v in differences.items() if _is_on(v[side])]
    return ", ".join(used) if used else "no regularizer"
