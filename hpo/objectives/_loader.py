"""Resolving a study file's ``objective:`` to an :class:`Objective`, with one-line errors for every way
it can go wrong (all name the ``objective`` field, so the CLI exits 2 before anything is written).

Four spellings:

- ``boston`` — a registered name (hpo's built-ins and the entry points of group ``hpo.objectives``);
- ``package.module:name`` — imported as ``python -m`` would, from installed packages, ``PYTHONPATH``
  or the study file's folder;
- ``path/to/file.py:name`` — a file, relative to the study file's folder (or absolute); its folder is
  put on ``sys.path`` so it can import its neighbours;
- any of them resolves to a *resolved spec* (the absolute path for a file) that finds the same code again
  from any folder on this machine: checkpoints and the evaluation keep it.

Loading runs the module's code, as ``pytest`` or ``python -m`` would.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hpo.objectives._protocol import Objective
from hpo.objectives._registry import GROUP, is_builtin, registered
from hpo.objectives._table import FieldError

Kind = Literal["built-in", "entry point", "module", "file"]
FORMS = "package.module:name, path/to/file.py:name or an hpo.objectives entry point"


@dataclass(frozen=True)
class LoadedObjective:
    """An objective with where it came from."""

    objective: Objective
    spec: str  # as the study file wrote it
    resolved: str  # finds the same code from any folder: a name, package.module:name or /abs/path.py:name
    kind: Kind
    origin: str  # for people: "hpo.objectives.boston:objective" or "/abs/path/digits.py"

    def describe(self) -> str:
        """One line for `hpo validate`: which objective, of which kind, from where."""
        return f"{self.objective.name} ({self.kind}: {self.origin})"


_CACHE: dict[tuple[str, str], LoadedObjective] = {}


def load_objective(spec: str, *, base_dir: str | Path | None = None) -> LoadedObjective:
    """The objective `spec` names; a relative file path is taken from `base_dir` (default: the current folder).

    Raises :class:`FieldError` on the ``objective`` field for every problem.
    """
    spec = spec.strip()
    if not spec:
        raise FieldError("objective", f"must not be empty; accepted: {', '.join(registered())}, or {FORMS}")
    if ":" not in spec:
        return _load_registered(spec)
    target, _, attribute = spec.rpartition(":")
    if not attribute or not target:
        raise FieldError(
            "objective", f"{spec!r} needs a module or file before ':' and a name after it, e.g. my_models.py:train"
        )
    if target.endswith(".py") or "/" in target:
        return _load_file(spec, target, attribute, base_dir)
    return _load_module(spec, target, attribute, base_dir)


def _load_registered(name: str) -> LoadedObjective:
    for cached in ("built-in", "entry point"):  # loaded before: every trial asks, and entry points take ms to read
        if (cached, name) in _CACHE:
            return _CACHE[(cached, name)]
    known = registered()
    if name not in known:
        if name.endswith(".py") or "/" in name:
            raise FieldError("objective", f"{name!r} names a file but no function in it; write {name}:NAME")
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FieldError("objective", f"unknown objective {name!r}{hint}; accepted: {', '.join(known)}, or {FORMS}")
    target = known[name]
    kind: Kind = "built-in" if is_builtin(target) else "entry point"
    module, _, attribute = target.partition(":")
    where = f"entry point {name!r} of group {GROUP} ({target})"
    loaded = _import(module, what=where)
    _CACHE[(kind, name)] = LoadedObjective(
        _as_objective(_attribute(loaded, attribute, where=target), where=target, name=name),
        name,
        name,
        kind,
        target,
    )
    return _CACHE[(kind, name)]


def _load_module(spec: str, module: str, attribute: str, base_dir: str | Path | None) -> LoadedObjective:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
        raise FieldError(
            "objective", f"{module!r} is neither a module (package.module) nor a .py file; accepted: {FORMS}"
        )
    key = ("module", spec)
    if key not in _CACHE:
        folder = str(Path(base_dir).resolve()) if base_dir is not None else str(Path.cwd())
        if folder not in sys.path:
            sys.path.append(folder)  # as `python -m` finds modules beside it; installed packages come first
        loaded = _import(module, what=f"module {module!r}")
        objective = _as_objective(_attribute(loaded, attribute, where=module), where=spec, name=attribute)
        _CACHE[key] = LoadedObjective(
            objective, spec, spec, "module", f"{module}:{attribute} ({getattr(loaded, '__file__', None) or 'built in'})"
        )
    return _CACHE[key]


def _load_file(spec: str, target: str, attribute: str, base_dir: str | Path | None) -> LoadedObjective:
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = (Path(base_dir) if base_dir is not None else Path.cwd()) / path
    path = path.resolve()
    resolved = f"{path}:{attribute}"
    key = ("file", resolved)
    if key in _CACHE:
        return _CACHE[key]
    if not path.is_file():
        relative = "" if Path(target).is_absolute() else " (relative to the study file's folder)"
        raise FieldError("objective", f"file not found: {path}{relative}")
    module_name = (
        f"hpo_objective_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    )
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise FieldError("objective", f"{path} cannot be imported as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # `python file.py` lets a file import its neighbours
        sys.modules[module_name] = module  # dataclasses and pickle look their module up here
        try:
            module_spec.loader.exec_module(module)
        except BaseException as exc:
            del sys.modules[module_name]
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise FieldError("objective", f"importing {path} failed: {_last_line(exc)}") from None
    objective = _as_objective(_attribute(module, attribute, where=str(path)), where=spec, name=attribute)
    _CACHE[key] = LoadedObjective(objective, spec, resolved, "file", str(path))
    return _CACHE[key]


def _import(module: str, *, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module or module.startswith(missing + "."):
            raise FieldError(
                "objective",
                f"no module named {missing!r} ({what}); install the package that has it, or put it on PYTHONPATH",
            ) from None
        raise FieldError("objective", f"importing {what} failed: {_last_line(exc)}") from None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FieldError("objective", f"importing {what} failed: {_last_line(exc)}") from None


def _attribute(module: Any, attribute: str, *, where: str) -> Any:
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            names = sorted(
                n
                for n, v in vars(module).items()
                if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == module.__name__
            )
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listed = f"; it defines: {', '.join(names)}" if names else ""
            raise FieldError("objective", f"{where} has no {attribute!r}{hint}{listed}")
        found = getattr(found, part)
    return found


def _as_objective(found: Any, *, where: str, name: str) -> Objective:
    """An Objective as is; a plain function becomes a minimal objective once its signature fits."""
    if isinstance(found, Objective):
        return found
    if not callable(found) or isinstance(found, type):
        kind = "a class" if isinstance(found, type) else f"a {type(found).__name__}"
        raise FieldError(
            "objective", f"{where} is {kind}, not a function of the trial context or an hpo.objectives.Objective"
        )
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(object())
        except TypeError:
            raise FieldError(
                "objective", f"{where} must take one argument, the trial context; its signature is {signature}"
            ) from None
    return Objective(found, name=re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "objective")


def _last_line(exc: BaseException) -> str:
    """The last line of the exception as Python prints it (`ValueError: boom`)."""
    lines = [line.strip() for line in traceback.format_exception_only(type(exc), exc) if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:500]


__all__ = ["FORMS", "LoadedObjective", "load_objective"]
