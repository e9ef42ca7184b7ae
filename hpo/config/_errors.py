"""pydantic's validation errors, translated into the one line a YAML author reads: field, problem, what is accepted.

pydantic reports every problem with its own wording and locations that include union labels; a study
file's author gets the first problem by field, in words about YAML, with the accepted values or keys.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from hpo.config._space import PARAM_MODELS
from hpo.config._wording import short, suggest
from hpo.objectives._table import FieldError

_PARAM_KINDS = tuple(PARAM_MODELS)

# pydantic's error types that only say "wrong type", in words a YAML author uses.
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number (not .inf or .nan)",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "none_required": "null",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _path_in_file(loc: tuple[Any, ...], data: Any, *, keep_last: bool) -> list[str]:
    """The part of pydantic's error location that is a place in the file.

    pydantic inserts union member labels ('str', "literal['minimize','maximize']", the parameter
    kind) into locations; those are not keys of the YAML, so they are dropped by walking the data.
    """
    path: list[str] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(str(part))
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(str(part))
        elif keep_last and i == len(loc) - 1:
            path.append(str(part))
    return path


def _node(data: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _location(error: ErrorDetails, data: Any) -> list[str]:
    return _path_in_file(tuple(error["loc"]), data, keep_last=error["type"] == "missing")


def describe(errors: list[ErrorDetails], data: Any, model: type[BaseModel]) -> str:
    """One line for a failed validation: the first problem by field, with a count of the others."""
    where = _location(errors[0], data)
    others = {tuple(_location(e, data)) for e in errors} - {tuple(where)}
    field, message = explain_first(errors, data, model)
    line = f"{field}: {message}" if field else message
    if others:
        line += f" (and {len(others)} more problem{'s' if len(others) > 1 else ''} after this one)"
    return line


def explain_first(errors: list[ErrorDetails], data: Any, model: type[BaseModel]) -> tuple[str, str]:
    """(field, message) of the first problem pydantic found in `data`, validated as `model`."""
    where = _location(errors[0], data)
    return _explain([e for e in errors if _location(e, data) == where], where, data, model)


def _explain(errors: list[ErrorDetails], where: list[str], data: Any, model: type[BaseModel]) -> tuple[str, str]:
    """(field, message) for the errors pydantic raised at one place (several when a union failed)."""
    field = ".".join(where)
    error = next((e for e in errors if e["type"] not in _EXPECTED), errors[0])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    got = f" (got {short(value)})"
    if kind == "extra_forbidden":
        parent = where[:-1]
        accepted = _accepted_keys(parent, data, model)
        present = _node(data, parent)
        missing = [k for k in accepted if not (isinstance(present, dict) and k in present)]
        hint = suggest(where[-1], missing) or suggest(where[-1], accepted)
        listed = f"; accepted: {', '.join(accepted)}" if accepted else ""
        return ".".join(parent), f"unknown key {where[-1]!r}{hint}{listed}"
    if kind == "union_tag_not_found":
        return field, f"a parameter needs `type`; accepted: {', '.join(_PARAM_KINDS)}"
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag", ""))
        return (
            f"{field}.type",
            f"unknown kind {tag!r}{suggest(tag, _PARAM_KINDS)}; accepted: {', '.join(_PARAM_KINDS)}",
        )
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        also = " (or a list of them)" if any(e["type"] == "list_type" for e in errors) else ""
        return (
            field,
            f"unknown value {short(value)}{suggest(str(value), options)}; accepted: {', '.join(options)}{also}",
        )
    if kind == "missing":
        return field, "required field is missing"
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, FieldError):
            return ".".join([*where, cause.field] if cause.field else where), cause.message
        message = str(cause) if cause is not None else error["msg"].removeprefix("Value error, ")
        return field, message + ("" if short(value) in message or isinstance(value, (dict, list)) else got)
    if kind in _BOUNDS:
        both = _field_range(where, model)
        if both:
            return field, f"must be {both}{got}"
        bound = next(iter(ctx.values()), "")
        return field, f"must be {_BOUNDS[kind]} {bound}{got}"
    if kind in ("too_short", "string_too_short"):
        return field, "must not be empty"
    if kind == "string_too_long":
        return field, f"must be at most {ctx.get('max_length')} characters"
    if kind in _EXPECTED:
        expected = list(dict.fromkeys(_EXPECTED.get(e["type"], "") for e in errors if e["type"] in _EXPECTED))
        if len(expected) > 3:
            text = "a single value (a number, a string, true or false)"
        else:
            text = " or ".join(expected)
        return field, f"expected {text}{got}"
    return field, f"{error['msg']}{got}"


def _field_range(where: list[str], model: type[BaseModel]) -> str | None:
    """'in [low, high]' for a field bounded on both sides (so the error names the whole accepted range)."""
    current: Any = model
    field = None
    for part in where:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        current = field.annotation
    if field is None:
        return None
    bounds = {
        name: getattr(m, name)
        for m in field.metadata
        for name in ("ge", "gt", "le", "lt")
        if getattr(m, name, None) is not None
    }
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low is None or high is None:
        return None
    return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"


def _accepted_keys(parent: list[str], data: Any, model: type[BaseModel]) -> list[str]:
    """Field names of the part of the study file at `parent`, for the 'accepted' list of an unknown key."""
    if not parent:
        return list(model.model_fields)
    if parent[0] == "params" and len(parent) == 2 and _is_study(model):
        node = _node(data, parent)
        kind = node.get("type") if isinstance(node, dict) else None
        param_model = PARAM_MODELS.get(kind) if isinstance(kind, str) else None
        if param_model is not None:
            return list(param_model.model_fields)
        return sorted({name for m in PARAM_MODELS.values() for name in m.model_fields})
    if len(parent) == 1:
        field = model.model_fields.get(parent[0])
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return list(annotation.model_fields)
    return []


def _is_study(model: type[BaseModel]) -> bool:
    """Whether `model` is the whole study file (whose `params` entries are search-space models)."""
    from hpo.config._schema import StudyConfig  # that module imports this one: resolved at call time

    return model is StudyConfig
