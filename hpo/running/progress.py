"""Progress of a running study: a live rich display on a terminal, plain log lines elsewhere.

Everything goes to stderr so that stdout stays for results. Plain lines (cron logs, CI, `| tee`) carry
the same facts as the live display: trials done/total, the trial's state and value, best so far,
pruned/failed counts, elapsed time and an ETA. `--quiet` prints nothing but errors.
`HPO_PROGRESS=plain|rich|none` overrides the choice (workers started by `hpo run --workers` use plain).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgressBar

from hpo.config.settings import env_setting

PROGRESS_ENV = "HPO_PROGRESS"


class Progress(Protocol):
    def start(self, study: str, *, total: int | None, done: int) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any], *, epochs: int) -> None: ...
    def epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None: ...
    def trial_finished(
        self,
        number: int,
        state: str,
        values: list[float] | None,
        *,
        reason: str | None,
        best: str | None,
        requeued: bool = False,
    ) -> None: ...
    def warn(self, message: str) -> None: ...
    def finish(self, summary: Any) -> None: ...


def _values_text(values: list[float] | None) -> str:
    return ", ".join(f"{v:.4g}" for v in values) if values else "-"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _val_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val_"))


class PlainProgress:
    """One line per finished trial, an epoch line now and then for long trials, and warnings; all on stderr."""

    def __init__(self, *, quiet: bool = False, stream: Any = None, epoch_line_seconds: float = 30.0) -> None:
        self.quiet = quiet
        self.stream = stream
        self.epoch_line_seconds = epoch_line_seconds
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.total: int | None = None
        self.done = 0
        self.done_at_start = 0
        self.started = time.monotonic()
        self.last_line = self.started
        self.epochs = 0

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)
        self.last_line = time.monotonic()

    def _eta(self) -> str:
        """Remaining time from this run's pace; empty without a trial cap or a finished trial."""
        finished_here = self.done - self.done_at_start
        if not self.total or finished_here <= 0 or self.done >= self.total:
            return ""
        pace = (time.monotonic() - self.started) / finished_here
        return f", ETA {_duration(pace * (self.total - self.done))}"

    def start(self, study: str, *, total: int | None, done: int) -> None:
        self.total, self.done, self.done_at_start = total, done, done
        self.started = self.last_line = time.monotonic()
        if not self.quiet:
            budget = f"{done}/{total} trials done" if total else f"{done} trials done, no trial cap"
            self._print(f"study {study}: {budget}")

    def trial_started(self, number: int, params: dict[str, Any], *, epochs: int) -> None:
        self.epochs = epochs

    def epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        if self.quiet or time.monotonic() - self.last_line < self.epoch_line_seconds:
            return
        of = f"/{self.epochs}" if self.epochs else ""  # 0: the objective has no `epochs` hyperparameter
        self._print(f"trial {number} epoch {epoch + 1}{of} {_val_metrics(metrics)}".rstrip())

    def trial_finished(
        self,
        number: int,
        state: str,
        values: list[float] | None,
        *,
        reason: str | None,
        best: str | None,
        requeued: bool = False,
    ) -> None:
        """`requeued`: the trial's copy runs again, so it does not use up the budget (nor count as done)."""
        self.counts[state] = self.counts.get(state, 0) + 1
        self.done += 0 if requeued else 1
        if self.quiet:
            return
        of = f"/{self.total}" if self.total else ""
        why = f" ({reason})" if reason and state != "COMPLETE" else ""
        elapsed = _duration(time.monotonic() - self.started)
        self._print(
            f"trial {number} {state} value={_values_text(values)}{why} | {self.done}{of} done, "
            f"pruned {self.counts.get('PRUNED', 0)}, failed {self.counts.get('FAIL', 0)}, "
            f"best {best or '-'}, {elapsed}{self._eta()}"
        )

    def warn(self, message: str) -> None:
        if not self.quiet:
            self._print(f"warning: {message}")

    def finish(self, summary: Any) -> None:
        if not self.quiet:
            self._print(
                f"study {summary.study_name}: {summary.completed} complete, {summary.pruned} pruned, "
                f"{summary.failed} failed in {_duration(summary.seconds)}"
            )


class RichProgress(PlainProgress):
    """A live display: trials done/total with elapsed and ETA, best so far and pruned/failed counts,
    and the current trial's epoch bar with its validation metrics. Finished trials scroll above it."""

    def __init__(self, *, console: Console | None = None) -> None:
        super().__init__(quiet=False)
        self.console = console or Console(stderr=True)
        self.bars = RichProgressBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self.trials_task: Any = None
        self.epoch_task: Any = None

    def _print(self, line: str) -> None:
        self.bars.console.print(line, markup=False, highlight=False)
        self.last_line = time.monotonic()

    def start(self, study: str, *, total: int | None, done: int) -> None:
        super().start(study, total=total, done=done)
        self.bars.start()
        self.trials_task = self.bars.add_task(
            f"{study} trials", total=total, completed=done, info="best - | pruned 0 failed 0"
        )
        self.epoch_task = self.bars.add_task("  epochs", total=1, completed=0, info="", visible=False)

    def trial_started(self, number: int, params: dict[str, Any], *, epochs: int) -> None:
        super().trial_started(number, params, epochs=epochs)
        self.bars.reset(
            self.epoch_task, description=f"  trial {number} epochs", total=epochs, completed=0, visible=True, info=""
        )

    def epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        self.bars.update(self.epoch_task, completed=epoch + 1, info=_val_metrics(metrics))

    def trial_finished(
        self,
        number: int,
        state: str,
        values: list[float] | None,
        *,
        reason: str | None,
        best: str | None,
        requeued: bool = False,
    ) -> None:
        super().trial_finished(number, state, values, reason=reason, best=best, requeued=requeued)
        info = f"best {best or '-'} | pruned {self.counts.get('PRUNED', 0)} failed {self.counts.get('FAIL', 0)}"
        self.bars.update(self.trials_task, completed=self.done, info=info)
        self.bars.update(self.epoch_task, visible=False)

    def finish(self, summary: Any) -> None:
        self.bars.stop()
        super().finish(summary)


def make_progress(*, quiet: bool = False) -> Progress:
    """Rich when stderr is a terminal, plain lines otherwise, nothing with `quiet` (or HPO_PROGRESS)."""
    mode = env_setting(PROGRESS_ENV) or ""
    if quiet or mode == "none":
        return PlainProgress(quiet=True)
    if mode == "rich" or (mode != "plain" and sys.stderr.isatty()):
        return RichProgress()
    return PlainProgress()
