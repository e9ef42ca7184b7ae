"""Resuming a study with an edited study file: which changes keep its trials comparable, and which do not.

A study's trials are only comparable while they are scored the same way on the same data: the
objective, metric, direction, search space (`params`, and the `fixed` values that complete it) and
`data` settings must stay as they were when the study started. Everything else (budget, sampler,
pruner, seed, evaluation and execution settings) may change. A widened range is the one safe change of
the search space: every stored trial still lies inside it, and Optuna's samplers accept it. The
comparison is generic, on the resolved study files (the one stored in the study and the new one), so
it covers whatever fields an objective or a later version adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

# Fields whose change makes old and new trials incomparable (any change of them is refused).
MEANING = ("objective", "metric", "direction", "params", "fixed", "data")
# Fields that name where the study lives rather than what it is.
IGNORED = ("name", "storage", "tracking_uri")


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any
    safe: bool

    def text(self) -> str:
        return f"{self.field}: {_show(self.before)} -> {_show(self.after)}"


def compare(stored: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every difference between two resolved study files, each marked safe or not."""
    grid = "grid" in ((stored.get("sampler") or {}).get("type"), (new.get("sampler") or {}).get("type"))
    changes: list[Change] = []
    for key in sorted((set(stored) | set(new)) - set(IGNORED), key=_field_order):
        before, after = stored.get(key, _ABSENT), new.get(key, _ABSENT)
        if before == after:
            continue
        if key == "params":
            changes += _param_changes(
                before if isinstance(before, dict) else {}, after if isinstance(after, dict) else {}, grid=grid
            )
        else:
            changes += [Change(field, b, a, safe=key not in MEANING) for field, b, a in _leaves(key, before, after)]
    return changes


def describe_refusal(changes: list[Change]) -> str:
    """The changes that cannot be accepted, as `field: before -> after; ...`."""
    return "; ".join(c.text() for c in changes if not c.safe)


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT: Any = _Absent()


def _field_order(key: str) -> tuple[int, str]:
    return (MEANING.index(key) if key in MEANING else len(MEANING), key)


def _leaves(path: str, before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """Differences between two values as (dotted field, before, after), descending into mappings."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            b, a = before.get(key, _ABSENT), after.get(key, _ABSENT)
            if b != a:
                found += _leaves(f"{path}.{key}", b, a)
        return found
    return [(path, before, after)]


def _param_changes(before: dict[str, Any], after: dict[str, Any], *, grid: bool) -> list[Change]:
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, _ABSENT), after.get(name, _ABSENT)
        if old != new:
            changes.append(Change(f"params.{name}", old, new, safe=not grid and _widened(old, new)))
    return changes


def _widened(old: Any, new: Any) -> bool:
    """True if `new` is the same numeric parameter over a range that contains `old`'s (on the same grid)."""
    if not (isinstance(old, dict) and isinstance(new, dict)) or old.get("type") not in ("float", "int"):
        return False
    if any(old.get(k) != new.get(k) for k in set(old) | set(new) if k not in ("low", "high")):
        return False  # type, log, step and `when` stay as they were
    try:
        low, high, new_low, new_high = (float(v) for v in (old["low"], old["high"], new["low"], new["high"]))
    except (KeyError, TypeError, ValueError):
        return False
    if not (new_low <= low and new_high >= high):
        return False
    step = old.get("step")
    if step:  # stored values must still lie on the new grid, which starts at the new low
        offset = (low - new_low) / float(step)
        return math.isclose(offset, round(offset), abs_tol=1e-9)
    return True


def _show(value: Any) -> str:
    """A value as it is written in a study file, on one line."""
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, dict):  # a parameter: its unset (null) options add nothing
        value = {k: v for k, v in value.items() if v is not None}
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= 120 else text[:117] + "..."
