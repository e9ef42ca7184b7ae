"""Progress and output for people and scripts: plain lines off a terminal, a live display on one,
silence with --quiet, JSON on stdout for the read-only commands, and shell completion."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from hpo.running import progress as progress_module
from hpo.running.progress import PlainProgress, RichProgress, make_progress
from tests.conftest import run_hpo, tiny_boston

ANSI = re.compile(r"\x1b\[")


def test_run_prints_plain_lines_off_a_terminal_and_nothing_when_quiet(write_study: Any, tmp_path: Path) -> None:
    # stderr is a pipe (cron, CI, `| tee`): one plain line per trial with done/total, pruned/failed
    # counts, best so far and elapsed time, and no terminal escapes; stdout stays empty for results.
    env = {"HPO_PROGRESS": ""}
    path = write_study(tiny_boston(n_trials=2))
    first = run_hpo("run", path, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert not ANSI.search(first.stderr)
    lines = first.stderr.strip().splitlines()
    assert lines[0] == "study tiny-boston: 0/2 trials done"
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 2
    assert re.fullmatch(
        r"trial 0 COMPLETE value=[\d.]+ \| 1/2 done, pruned 0, failed 0, best val_rmse=[\d.]+ \(trial 0\), \d+s, "
        r"ETA \d+s",
        trial_lines[0],
    ), trial_lines[0]
    assert trial_lines[1].startswith("trial 1 COMPLETE") and "2/2 done" in trial_lines[1]
    assert any(line.startswith("study tiny-boston: 2 complete, 0 pruned, 0 failed") for line in lines)

    # --quiet: the same study resumed for one more trial prints nothing at all.
    quiet = run_hpo("run", path, "--n-trials", "3", "--quiet", env=env)
    assert quiet.returncode == 0
    assert (quiet.stdout, quiet.stderr) == ("", "")

    # The read-only commands print valid JSON, and only JSON, on stdout.
    status = run_hpo("status", "tiny-boston", "--json")
    assert status.returncode == 0, status.stderr
    trials = json.loads(status.stdout)
    assert [t["state"] for t in trials] == ["COMPLETE"] * 3


def test_best_and_status_json_are_machine_readable(cli: Any, write_study: Any) -> None:
    # `hpo best --json`: a JSON list of the best trials with values and params; `hpo status --json`
    # without a study: one object per study.
    assert cli("run", write_study(tiny_boston(n_trials=3)), "--quiet").exit_code == 0
    result = cli("best", "tiny-boston", "--top-k", "2", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 2
    text = json.dumps(rows)
    assert "width" in text and "lr" in text
    studies = json.loads(cli("status", "--json").stdout)
    assert [(s["study"], s["complete"]) for s in studies] == [("tiny-boston", 3)]


def test_errors_still_reach_stderr_when_quiet(write_study: Any) -> None:
    # --quiet silences progress, never the error line (and its exit code).
    result = run_hpo("run", write_study(tiny_boston(n_trials=0)), "--quiet")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        next(line for line in result.stderr.splitlines() if line.startswith("hpo: "))
    ]
    assert "n_trials: must be >= 1 (got 0)" in result.stderr


def _summary(**counts: Any) -> SimpleNamespace:
    return SimpleNamespace(
        study_name="s",
        completed=counts.get("completed", 0),
        pruned=counts.get("pruned", 0),
        failed=counts.get("failed", 0),
        seconds=1.0,
    )


def test_rich_display_shows_trials_epochs_best_eta_and_counts() -> None:
    # On a terminal: a trials bar (done/total, elapsed, ETA, best, pruned/failed) and the current
    # trial's epoch bar with its validation metric.
    out = io.StringIO()
    display = RichProgress(console=Console(file=out, force_terminal=True, width=160, color_system="standard"))
    display.start("study-x", total=4, done=1)
    display.trial_started(1, {}, epochs=5)
    for epoch in range(3):
        display.epoch(1, epoch, {"train_loss": 1.0, "val_rmse": 4.5 - epoch})
    display.bars.refresh()
    live = out.getvalue()
    assert "trial 1 epochs" in live and "3/5" in live and "val_rmse=2.5" in live
    display.trial_finished(1, "PRUNED", None, reason="pruned at epoch 2", best=None)
    display.trial_started(2, {}, epochs=5)
    display.trial_finished(2, "FAIL", None, reason="out of memory", best="val_rmse=3.1 (trial 0)")
    display.bars.refresh()
    display.finish(_summary(pruned=1, failed=1))
    text = out.getvalue()
    assert "study-x trials" in text and "3/4" in text and "ETA" in text
    assert "best val_rmse=3.1 (trial 0) | pruned 1 failed 1" in text
    assert "trial 2 FAIL value=- (out of memory)" in text
    assert ANSI.search(text), "a terminal gets a live display"


def test_plain_progress_reports_long_trials_and_eta() -> None:
    # Off a terminal, a long trial still shows signs of life (an epoch line every so often) and the
    # trial lines carry an ETA from this run's pace.
    out = io.StringIO()
    plain = PlainProgress(stream=out, epoch_line_seconds=0)
    plain.start("s", total=3, done=0)
    plain.trial_started(0, {}, epochs=2)
    plain.epoch(0, 0, {"train_loss": 1.0, "val_rmse": 3.25})
    plain.trial_finished(0, "COMPLETE", [3.25], reason=None, best="val_rmse=3.25 (trial 0)")
    plain.warn("tracking is down")
    lines = out.getvalue().splitlines()
    assert lines[1] == "trial 0 epoch 1/2 val_rmse=3.25"
    assert (
        lines[2].startswith(
            "trial 0 COMPLETE value=3.25 | 1/3 done, pruned 0, failed 0, best val_rmse=3.25 (trial 0), "
        )
        and ", ETA " in lines[2]
    )
    assert lines[3] == "warning: tracking is down"
    quiet = io.StringIO()
    silent = PlainProgress(stream=quiet, quiet=True, epoch_line_seconds=0)
    silent.start("s", total=3, done=0)
    silent.epoch(0, 0, {"val_rmse": 1.0})
    silent.trial_finished(0, "FAIL", None, reason="x", best=None)
    silent.warn("w")
    silent.finish(_summary())
    assert quiet.getvalue() == ""


def test_make_progress_picks_by_terminal_quiet_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.delenv(progress_module.PROGRESS_ENV, raising=False)
    assert isinstance(make_progress(), RichProgress)
    quiet = make_progress(quiet=True)
    assert type(quiet) is PlainProgress and quiet.quiet  # type: ignore[attr-defined]
    monkeypatch.setenv(progress_module.PROGRESS_ENV, "plain")
    assert type(make_progress()) is PlainProgress
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv(progress_module.PROGRESS_ENV)
    assert type(make_progress()) is PlainProgress


def test_shell_completion_script_and_completions() -> None:
    # Typer's completion: `hpo --show-completion bash` prints a script for the `hpo` command, and the
    # completion protocol it installs answers with commands and options.
    hpo = Path(sys.executable).with_name("hpo")
    if not hpo.exists():
        pytest.skip("the `hpo` console script is not installed next to this Python")
    # Typer detects the user's shell from the parent processes unless told not to; a test runner's
    # parents need not include a shell, so the shell is named instead (Typer's own switch for that).
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = subprocess.run(
        [str(hpo), "--show-completion", "bash"], capture_output=True, text=True, timeout=120, env=named
    )
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _hpo_completion hpo" in script.stdout
    env = {**os.environ, "_HPO_COMPLETE": "complete_bash", "COMP_WORDS": "hpo run --n", "COMP_CWORD": "2"}
    answer = subprocess.run([str(hpo)], capture_output=True, text=True, env=env, timeout=120)
    assert answer.stdout.split() == ["--n-trials"]
