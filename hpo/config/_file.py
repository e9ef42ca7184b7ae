"""A study file to a StudyConfig: read, parse safely, validate, and turn every problem into one line (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpo.config._errors import describe
from hpo.config._schema import StudyConfig
from hpo.config._wording import one_line, short
from hpo.config._yaml import MAX_FILE_BYTES, MAX_VALUES, parse_yaml, too_large
from hpo.errors import UsageError
from hpo.objectives._table import FieldError


def parse_study(data: Any, *, source: str = "study", base_dir: str | Path | None = None) -> StudyConfig:
    """Validate already-parsed YAML data; raise :class:`UsageError` with one line naming the field.

    `base_dir` is the study file's folder: a file-path objective is relative to it (default: the
    current folder).
    """
    if not isinstance(data, dict):
        raise UsageError(
            f"{source}: the study file must be a mapping of keys (name, objective, params, ...), got {short(data)}"
        )
    if too_large(data):
        raise UsageError(
            f"{source}: the study file holds more than {MAX_VALUES} values once its YAML aliases are expanded "
            "(or an alias contains itself)"
        )
    try:
        context = {"base_dir": str(Path(base_dir).resolve())} if base_dir is not None else None
        return StudyConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise UsageError(one_line(f"{source}: {describe(exc.errors(), data, StudyConfig)}")) from None
    except FieldError as exc:
        raise UsageError(one_line(f"{source}: {exc}")) from None
    except RecursionError:
        raise UsageError(f"{source}: the study file nests too deeply") from None


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file. Every problem becomes a one-line :class:`UsageError`."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(
                f"{path}: the study file is {path.stat().st_size:,} bytes; "
                f"a study file may have at most {MAX_FILE_BYTES:,}"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: study file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a YAML study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the study file ({exc.__class__.__name__}: {exc})") from None
    return parse_study(parse_yaml(text, source=str(path)), source=str(path), base_dir=path.parent)


def study_to_yaml(config: StudyConfig) -> str:
    """The resolved study as YAML, for `hpo validate` and the parent run's artifact."""
    return yaml.safe_dump(config.resolved(), sort_keys=False)
