"""What a command imports: checking a study file or listing studies must not pay for torch or MLflow.

Importing torch costs seconds and MLflow seconds more; `hpo validate` and `hpo status` need neither.
These tests look at the modules a real `python -m hpo` process imported (`-X importtime` lists every
one), not at a timing, so that they hold on a loaded machine and fail as soon as an import creeps back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "mlflow", "sklearn", "pandas", "matplotlib")


def _imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime -m hpo ARGS` and return it with the top-level packages it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hpo", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ),
        timeout=120,
    )
    names = {
        m.group(1).split(".")[0]
        for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", proc.stderr, re.MULTILINE)
    }
    assert "hpo" in names, proc.stderr[-2000:]  # the listing was produced at all
    return proc, names


def test_validate_of_a_boston_study_imports_no_torch_mlflow_or_pandas(tmp_path: Path) -> None:
    # The shipped CSV is counted, not parsed: not even pandas is needed to check a Boston study.
    proc, names = _imported("validate", str(ROOT / "studies" / "boston-mlp.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
    assert list(tmp_path.iterdir()) == []  # and nothing was written


def test_validate_of_a_cifar10_study_checks_the_data_without_torch(
    tmp_path: Path, tiny_cifar10: Callable[..., Any]
) -> None:
    # The CIFAR-10 cache is verified (checksums, split sizes) with numpy; torch comes with the first trial.
    tiny_cifar10()
    proc, names = _imported("validate", str(ROOT / "studies" / "cifar10-quick.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_validate_still_finds_a_corrupt_cifar10_cache(tmp_path: Path, tiny_cifar10: Callable[..., Any]) -> None:
    # Checking without torch must not mean checking less: a damaged cached file is still refused (exit 2).
    tiny_cifar10()
    cached = Path(os.environ["HPO_DATA_DIR"]) / "cifar10" / "train_labels.npy"
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF
    cached.write_bytes(bytes(data))
    proc, _ = _imported("validate", str(ROOT / "studies" / "cifar10-quick.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "corrupt" in proc.stderr


def test_status_imports_no_torch_mlflow_or_pandas(tmp_path: Path) -> None:
    proc, names = _imported("status", "--storage", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]  # no study there yet: a clear error, nothing created
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


@pytest.mark.parametrize("command", [["schedule", "--help"], ["data", "info"]])
def test_other_light_commands_import_no_torch(tmp_path: Path, command: list[str]) -> None:
    proc, names = _imported(*command, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch" not in names and "mlflow" not in names
