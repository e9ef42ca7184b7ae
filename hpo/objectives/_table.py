"""Hyperparameter tables: one row per hyperparameter an objective understands.

A row says what the hyperparameter is called, which values it takes (its rule), its default, which
values of the `model` hyperparameter use it and what it means. Study-file validation, `hpo validate`'s
output and the README reference are all read from these rows, so a hyperparameter is declared once.
No torch and no optuna here: tables are read every time a study file is checked.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any, Literal


class FieldError(ValueError):
    """A problem with one field of the study file; `field` is its dotted path (``fixed.epochs``).

    Raise it from an objective's ``validate`` hook: hpo turns it into the one-line error (exit 2)
    that names the study file and the field.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Rule:
    """The values one hyperparameter takes: a kind, and a range or a list of choices.

    Build rules with :func:`integer`, :func:`number`, :func:`flag`, :func:`text` and :func:`choice`.
    """

    kind: Literal["int", "float", "bool", "str", "choice"]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    also: tuple[str, ...] = ()  # strings accepted besides the numbers (padding: "same")
    choices: tuple[Any, ...] = ()

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "choice":
            # `True == 1` in Python: compare kinds too, so a flag is never taken for a number choice.
            return any(type(value) is type(c) and value == c for c in self.choices) or (
                isinstance(value, float)
                and value.is_integer()
                and any(type(c) is int and value == c for c in self.choices)
            )
        if isinstance(value, str) and value in self.also:
            return True
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and bool(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        """What the rule accepts, in the words of an error message: 'an integer >= 1', 'relu | tanh'."""
        if self.kind == "choice":
            return " | ".join(_plain(c) for c in self.choices)
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = "a non-empty string"
        else:
            text = "an integer" if self.kind == "int" else "a number"
            if self.low is not None and self.high is not None:
                text += (
                    f" in {'(' if self.low_open else '['}{_number(self.low)}, "
                    f"{_number(self.high)}{')' if self.high_open else ']'}"
                )
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {_number(self.low)}"
            elif self.high is not None:
                text += f" {'<' if self.high_open else '<='} {_number(self.high)}"
        extras = [repr(a) for a in self.also] + (["null"] if self.nullable else [])
        return text + "".join(f" or {e}" for e in extras)


def _number(value: float) -> str:
    """1000000 rather than 1e+06, 0.5 as is."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _plain(value: Any) -> str:
    """A value as a study file spells it: true/false, null."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _bounds(ge: float | None, gt: float | None, le: float | None, lt: float | None) -> dict[str, Any]:
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise ValueError("give either ge or gt (le or lt), not both")
    return {
        "low": ge if ge is not None else gt,
        "low_open": gt is not None,
        "high": le if le is not None else lt,
        "high_open": lt is not None,
    }


def integer(
    *,
    ge: int | None = None,
    gt: int | None = None,
    le: int | None = None,
    lt: int | None = None,
    nullable: bool = False,
    also: tuple[str, ...] = (),
) -> Rule:
    """An integer in a range (an integral float such as ``10.0`` counts); `also` lists strings taken besides."""
    return Rule("int", nullable=nullable, also=also, **_bounds(ge, gt, le, lt))


def number(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    nullable: bool = False,
) -> Rule:
    """A finite number in a range: ``number(ge=0, lt=1)`` is [0, 1)."""
    return Rule("float", nullable=nullable, **_bounds(ge, gt, le, lt))


def flag() -> Rule:
    """true or false."""
    return Rule("bool")


def text(*, nullable: bool = False) -> Rule:
    """A non-empty string (a path, a name); `nullable` also takes null."""
    return Rule("str", nullable=nullable)


def choice(*values: Any) -> Rule:
    """One of the listed values; a search over it must be `type: categorical`."""
    if not values:
        raise ValueError("choice() needs at least one value")
    return Rule("choice", choices=tuple(values))


@dataclass(frozen=True)
class Hyperparameter:
    """One row of a table.

    `applies_to` names the values of the `model` hyperparameter that use this one (None: every
    model); a study that sets it while no model it may train uses it is refused, since the value
    would be silently ignored.
    """

    name: str
    rule: Rule
    default: Any
    description: str
    _: KW_ONLY
    applies_to: Collection[str] | None = None  # frozen to a frozenset in __post_init__

    def __post_init__(self) -> None:
        if not self.rule.accepts(self.default):
            raise ValueError(f"hyperparameter {self.name}: its default {self.default!r} is not {self.rule.describe()}")
        if self.applies_to is not None and not isinstance(self.applies_to, frozenset):
            object.__setattr__(self, "applies_to", frozenset(self.applies_to))


@dataclass(frozen=True)
class HyperparameterTable:
    """The hyperparameters an objective understands, in a fixed order.

    Tables compose: ``TRAINING + MLP + HyperparameterTable(Hyperparameter("model", ...))``; a name may
    appear once. ``table.with_defaults(epochs=100)`` changes defaults without restating the rows.
    """

    rows: tuple[Hyperparameter, ...] = field(default_factory=tuple)

    def __init__(self, *rows: Hyperparameter) -> None:
        seen: set[str] = set()
        for row in rows:
            if row.name in seen:
                raise ValueError(f"hyperparameter {row.name!r} is declared twice in one table")
            seen.add(row.name)
        object.__setattr__(self, "rows", tuple(rows))

    def __add__(self, other: HyperparameterTable) -> HyperparameterTable:
        return HyperparameterTable(*self.rows, *other.rows)

    def __iter__(self) -> Iterator[Hyperparameter]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, name: object) -> bool:
        return any(row.name == name for row in self.rows)

    def __getitem__(self, name: str) -> Hyperparameter:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def with_defaults(self, **defaults: Any) -> HyperparameterTable:
        """The same rows with other defaults (an objective's own epochs, batch size, ...)."""
        unknown = set(defaults) - set(self.names)
        if unknown:
            raise KeyError(f"with_defaults: no hyperparameter {', '.join(sorted(unknown))} in this table")
        return HyperparameterTable(
            *(replace(row, default=defaults[row.name]) if row.name in defaults else row for row in self.rows)
        )

    def applying_to(self, models: tuple[str, ...] | frozenset[str], *names: str) -> HyperparameterTable:
        """The same rows, `names` (default: all) used only by these values of `model`."""
        chosen = set(names or self.names)
        return HyperparameterTable(
            *(replace(row, applies_to=frozenset(models)) if row.name in chosen else row for row in self.rows)
        )

    def without(self, *names: str) -> HyperparameterTable:
        """The rows except `names` (an objective that composes a fragment but does not use all of it)."""
        return HyperparameterTable(*(row for row in self.rows if row.name not in names))

    def defaults(self) -> dict[str, Any]:
        return {row.name: row.default for row in self.rows}

    def resolve(self, chosen: Mapping[str, Any]) -> dict[str, Any]:
        """What a trial trains with: every default, overridden by the fixed and sampled values."""
        return {**self.defaults(), **chosen}


__all__ = [
    "FieldError",
    "Hyperparameter",
    "HyperparameterTable",
    "Rule",
    "choice",
    "flag",
    "integer",
    "number",
    "text",
]
