"""The `hpo` entry point ends the process without Python's module teardown (1-2 s once torch and MLflow
are loaded) but keeps what a normal exit guarantees: the exit code, every line of output through a pipe,
atexit handlers, and other threads' work finished."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import tiny_boston


def _hpo_with_exit_hooks(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hpo ARGS` through hpo.cli.main, with an atexit handler and a non-daemon thread that write files late."""
    script = textwrap.dedent(
        f"""
        import atexit, sys, threading, time
        from pathlib import Path
        out = Path({str(tmp_path)!r})
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        def late():
            time.sleep(1.0)
            (out / "thread").write_text("finished")
        threading.Thread(target=late, daemon=False).start()
        # An idle pool left open, as MLflow's artifact repository leaves its uploader: its worker stops
        # only when threading's exit hooks tell it to (a bare join of every thread waited forever).
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=1)  # kept referenced, as MLflow keeps its own
        pool.submit(lambda: None).result()
        sys.argv = ["hpo", *{list(args)!r}]
        from hpo.cli import main
        main()
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_a_command_keeps_its_output_exit_code_atexit_handlers_and_threads(tmp_path: Path) -> None:
    # `hpo validate` prints the resolved study and its search-space table (more than a pipe buffer
    # holds); all of it arrives, the table closed and the verdict on stderr, exit code 0, and the late
    # writers both ran.
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(tiny_boston()))
    done = _hpo_with_exit_hooks(tmp_path, "validate", str(study))
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("┘") and len(done.stdout.encode()) > 4096
    assert done.stderr.rstrip().endswith(": valid")
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "finished"


def test_a_failing_command_keeps_its_exit_code_and_message(tmp_path: Path) -> None:
    # Bad input: exit code 2 and the one-line error, through the same fast exit.
    done: Any = _hpo_with_exit_hooks(tmp_path, "validate", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2
    assert "study file not found" in done.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
