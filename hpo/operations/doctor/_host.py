"""Checks of this machine: the data cache, the training devices, the installed versions."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform

from hpo.config import StudyConfig
from hpo.config.settings import data_dir, env_setting
from hpo.config.writable import write_problem
from hpo.operations.doctor._findings import Finding, _first_line


def check_data(config: StudyConfig | None) -> list[Finding]:
    """The data cache folder, and each dataset the objectives declare: cached, broken, or needed and missing."""
    from hpo.errors import HpoError
    from hpo.objectives._registry import datasets

    folder = data_dir()
    if not folder.exists():
        if write_problem(folder, is_folder=True) is not None:
            return [
                Finding(
                    "data",
                    "problem",
                    f"{folder} (HPO_DATA_DIR) cannot be created",
                    "set HPO_DATA_DIR to a writable folder",
                )
            ]
        cached: list[str] = []
    elif not os.access(folder, os.W_OK | os.X_OK):
        return [
            Finding(
                "data",
                "problem",
                f"{folder} (HPO_DATA_DIR) is not writable",
                "set HPO_DATA_DIR to a writable folder, or fix its permissions",
            )
        ]
    else:
        cached = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    findings = [Finding("data", "ok", f"{folder} (HPO_DATA_DIR): {', '.join(cached) if cached else 'empty'}")]
    needed = {d.name for d in config.load_objective().objective.datasets} if config is not None else set()
    for name, dataset in datasets().items():
        try:
            entry = dataset.describe()
        except HpoError as exc:
            findings.append(
                Finding("data", "problem", f"{name}: {exc}", f"re-import it (`hpo data import {name} PATH`)")
            )
            continue
        summary = str(entry.get("summary") or entry.get("path", "")).splitlines()[0]
        if entry.get("cached"):
            findings.append(Finding("data", "ok", f"{name}: {summary}"))
        elif name in needed and config is not None:  # only a study's config needs datasets
            findings.append(
                Finding(
                    "data",
                    "problem",
                    f"study {config.name} needs {name} and it is not cached in {entry.get('path')}",
                    str(entry.get("fix")),
                )
            )
    return findings


def check_devices(config: StudyConfig | None) -> list[Finding]:
    """What trials will run on: CUDA devices, else the CPU and its thread budget."""
    import torch

    cores = os.cpu_count() or 1
    from_env = env_setting("HPO_THREADS")
    threads = from_env or (config.execution.threads if config and config.execution.threads else None)
    cpu = f"CPU: {cores} cores, torch uses {threads or torch.get_num_threads()} threads" + (
        " (HPO_THREADS)" if from_env else ""
    )
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = [torch.cuda.get_device_name(i) for i in range(count)]
    except RuntimeError as exc:  # a broken driver
        return [
            Finding(
                "devices",
                "warning",
                f"{cpu}; CUDA present but unusable ({_first_line(exc)})",
                "check the NVIDIA driver (nvidia-smi)",
            )
        ]
    gpus = f"CUDA: {count} device(s): {', '.join(names)}" if count else "CUDA: none, trials run on the CPU"
    wanted = config.execution.device if config is not None else "auto"
    if wanted.startswith("cuda") and count == 0:
        return [
            Finding(
                "devices",
                "problem",
                f"{cpu}; {gpus}; the study asks for execution.device={wanted}",
                "run where a GPU is visible, or set execution.device: auto",
            )
        ]
    return [Finding("devices", "ok", f"{cpu}; {gpus}")]


def check_versions() -> list[Finding]:
    names = ("hpo", "optuna", "mlflow", "torch", "sqlalchemy")
    text = ", ".join(f"{n} {_version(n)}" for n in names)
    return [Finding("versions", "ok", f"{text}, python {platform.python_version()}")]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
