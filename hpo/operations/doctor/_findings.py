"""What `hpo doctor` reports: findings, each with its fix, and where each URL came from."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hpo.config.settings import redact

Status = Literal["ok", "warning", "problem"]


Reader = Callable[[str], list[tuple[Any, ...]]]


CONNECT_TIMEOUT = 3  # seconds; libpq's minimum useful value is 2


DEADLINE = 4.0  # seconds for all network checks together (after the imports)


_OPTUNA_TABLES = {"studies", "trials", "version_info"}


_MLFLOW_TABLES = {"experiments", "runs", "metrics"}


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, how it went, and what to do about it."""

    check: str
    status: Status
    message: str
    fix: str | None = None

    def line(self) -> str:
        label = {"ok": "ok", "warning": "warning", "problem": "PROBLEM"}[self.status]
        text = f"{label:<8} {self.check:<9} {self.message}"
        if self.fix:
            text += f"; fix: {self.fix}"
        return redact(text)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "problem"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]

    def to_json(self) -> str:
        checks = [{k: redact(v) if isinstance(v, str) else v for k, v in asdict(f).items()} for f in self.findings]
        return json.dumps({"ok": self.ok, "problems": len(self.problems), "checks": checks}, indent=2)


@dataclass(frozen=True)
class Sources:
    """Where each URL came from, so a fix can name the setting to change."""

    storage: str = "the default"
    tracking_uri: str = "the default"


def _first_line(exc: BaseException | str) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact(text.splitlines()[0].strip()) if text else exc.__class__.__name__
