"""Progress of a running study: a live rich display on a terminal, plain log lines elsewhere.

Plain lines go to stderr so that cron logs and CI output stay readable and stdout stays for results.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgressBar, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Progress(Protocol):
    def start(self, study: str, *, total: int | None, done: int) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any], *, epochs: int) -> None: ...
    def epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None: ...
    def trial_finished(self, number: int, state: str, values: list[float] | None, *, reason: str | None, best: str | None) -> None: ...
    def warn(self, message: str) -> None: ...
    def finish(self, summary: Any) -> None: ...


def _values_text(values: list[float] | None) -> str:
    return ", ".join(f"{v:.4g}" for v in values) if values else "-"


class PlainProgress:
    """One line per finished trial (and warnings) on stderr; nothing at all when quiet."""

    def __init__(self, *, quiet: bool = False, stream: Any = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.total: int | None = None
        self.done = 0
        self.started = time.monotonic()

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def start(self, study: str, *, total: int | None, done: int) -> None:
        self.total, self.done, self.started = total, done, time.monotonic()
        if not self.quiet:
            budget = f"{done}/{total} trials done" if total else f"{done} trials done, no trial cap"
            self._print(f"study {study}: {budget}")

    def trial_started(self, number: int, params: dict[str, Any], *, epochs: int) -> None:
        pass

    def epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def trial_finished(self, number: int, state: str, values: list[float] | None, *, reason: str | None, best: str | None) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        self.done += 1
        if self.quiet:
            return
        of = f"/{self.total}" if self.total else ""
        why = f" ({reason})" if reason and state != "COMPLETE" else ""
        elapsed = time.monotonic() - self.started
        self._print(f"trial {number} {state} value={_values_text(values)}{why} | {self.done}{of} done, best {best or '-'}, {elapsed:.0f}s")

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}")

    def finish(self, summary: Any) -> None:
        if not self.quiet:
            self._print(
                f"study {summary.study_name}: {summary.completed} complete, {summary.pruned} pruned, "
                f"{summary.failed} failed in {summary.seconds:.1f}s"
            )


class RichProgress(PlainProgress):
    """Trials done/total with ETA, the current trial's epoch bar, best so far, pruned/failed counts."""

    def __init__(self) -> None:
        super().__init__(quiet=False)
        self.console = Console(stderr=True)
        self.bars = RichProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.trials_task: Any = None
        self.epoch_task: Any = None

    def _print(self, line: str) -> None:
        self.bars.console.print(line, markup=False, highlight=False)

    def start(self, study: str, *, total: int | None, done: int) -> None:
        super().start(study, total=total, done=done)
        self.bars.start()
        self.trials_task = self.bars.add_task(f"{study}", total=total, completed=done, info="")
        self.epoch_task = self.bars.add_task("  epochs", total=1, completed=0, info="", visible=False)

    def trial_started(self, number: int, params: dict[str, Any], *, epochs: int) -> None:
        self.bars.update(self.epoch_task, description=f"  trial {number}", total=epochs, completed=0, visible=True, info="")

    def epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val_"))
        self.bars.update(self.epoch_task, completed=epoch + 1, info=shown)

    def trial_finished(self, number: int, state: str, values: list[float] | None, *, reason: str | None, best: str | None) -> None:
        super().trial_finished(number, state, values, reason=reason, best=best)
        info = f"best {best or '-'} | pruned {self.counts.get('PRUNED', 0)} failed {self.counts.get('FAIL', 0)}"
        self.bars.update(self.trials_task, completed=self.done, info=info)

    def finish(self, summary: Any) -> None:
        self.bars.stop()
        super().finish(summary)


def make_progress(*, quiet: bool = False) -> Progress:
    """Rich when stderr is a terminal and not quiet; plain lines otherwise."""
    if not quiet and sys.stderr.isatty():
        return RichProgress()
    return PlainProgress(quiet=quiet)
