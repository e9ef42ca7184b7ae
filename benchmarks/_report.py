"""What every benchmark result carries: the machine, the command, the date, and a JSON copy of the figures.

Figures from a shared machine are only comparable within one run, so each script prints its own
Markdown section (pasted into BENCHMARKS.md) together with the header this module produces.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, GPU and library versions: enough to judge whether a figure transfers."""
    import mlflow
    import optuna
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "mlflow": mlflow.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "commit": _git_commit(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="minutes"),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def command_line(argv: Sequence[str] | None) -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(REPO)
    except ValueError:
        shown = script
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", str(shown), *map(shlex.quote, args)])


def header(title: str, argv: Sequence[str] | None, info: dict[str, Any]) -> str:
    gpu = info["gpu"] or "no GPU"
    load = ", ".join(map(str, info["load_average"] or []))
    return "\n".join(
        [
            f"## {title}",
            "",
            f"- command: `{command_line(argv)}`",
            f"- date: {dt.datetime.now().astimezone().isoformat(timespec='minutes')}",
            f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, {gpu}; load average at the "
            f"end {load}",
            f"- software: Python {info['python']}, torch {info['torch']}, optuna {info['optuna']}, mlflow "
            f"{info['mlflow']}, hpo at {info['commit']}",
            "",
        ]
    )


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table; floats are shown with 3 significant digits (4 when below 1)."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def save(path: str | None, payload: dict[str, Any]) -> None:
    """Write the figures as JSON (for plots and for checking BENCHMARKS.md against the raw numbers)."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str))
