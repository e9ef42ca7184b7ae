"""Per-epoch learning curves read back from MLflow metric histories, and their plots."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from hpo.tracking import Tracker

CURVE_KEYS = ("train_loss", "val_loss")


@dataclass
class Curves:
    """One trial's per-epoch metrics: name -> (epochs, values), sorted by epoch."""

    trial_number: int
    state: str
    run_id: str
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        return self.series.get(key, (np.empty(0), np.empty(0)))

    def at_epoch(self, key: str, epoch: int) -> float | None:
        steps, values = self.get(key)
        hits = values[steps == epoch]
        return float(hits[-1]) if len(hits) else None


def read_curves(tracker: Tracker, run_id: str, *, trial_number: int, state: str, keys: tuple[str, ...]) -> Curves:
    curves = Curves(trial_number, state, run_id)
    for key in dict.fromkeys(keys):
        history = sorted(tracker.metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if history:
            by_step = {m.step: m.value for m in history}  # a re-logged epoch keeps its last value
            steps = np.array(sorted(by_step))
            curves.series[key] = (steps, np.array([by_step[s] for s in steps]))
    return curves


_OTHER_COLORS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")  # C3 (red) is kept for the best trial


def _log_scale_if_positive(ax: Axes, arrays: list[np.ndarray]) -> None:
    """Early epochs are often ten times worse than late ones: a log axis keeps the interesting part readable."""
    values = np.concatenate([a for a in arrays if len(a)]) if any(len(a) for a in arrays) else np.empty(0)
    if len(values) and np.all(values > 0) and values.max() / values.min() > 5:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _plot_metric(ax: Axes, curves: list[Curves], metric: str, *, highlight: int | None) -> None:
    others = iter(_OTHER_COLORS * 10)
    shown = []
    for c in curves:
        steps, values = c.get(metric)
        if not len(steps):
            continue
        shown.append(values)
        if c.trial_number == highlight:
            ax.plot(steps, values, color="C3", linewidth=2.2, label=f"best: trial {c.trial_number}", zorder=5)
        elif c.state == "PRUNED":
            ax.plot(steps, values, color="0.6", linewidth=0.9, linestyle="--", alpha=0.8)
        else:
            ax.plot(steps, values, color=next(others), linewidth=1.1, alpha=0.9, label=f"trial {c.trial_number}")
    if any(c.state == "PRUNED" and len(c.get(metric)[0]) for c in curves):
        ax.plot([], [], color="0.6", linewidth=0.9, linestyle="--", label="pruned trials")
    _log_scale_if_positive(ax, shown)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")


def _plot_losses(ax: Axes, curve: Curves | None) -> None:
    if curve is not None:
        for key in ("train_loss", "val_loss"):
            steps, values = curve.get(key)
            if len(steps):
                ax.plot(steps, values, label=key)
        _log_scale_if_positive(ax, [curve.get(k)[1] for k in ("train_loss", "val_loss")])
        ax.set_title(f"trial {curve.trial_number}: training vs validation loss")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")


def learning_curves_figure(curves: list[Curves], metric: str, *, best: int | None, title: str) -> Figure:
    """Left: the study metric per epoch for the best, other top and pruned trials. Right: the best trial's losses."""
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    _plot_metric(left, curves, metric, highlight=best)
    left.set_title(f"{metric} per epoch")
    left.legend(fontsize=8)
    _plot_losses(right, next((c for c in curves if c.trial_number == best), None))
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def side_by_side_figure(left_curves: Curves, right_curves: Curves, metric: str, *, names: tuple[str, str]) -> Figure:
    """Two studies' best trials: the metric (top row, shared y axis) and their losses (bottom row)."""
    figure = Figure(figsize=(12, 8))
    axes = figure.subplots(2, 2, sharey="row")
    for column, (curve, name) in enumerate(zip((left_curves, right_curves), names)):
        steps, values = curve.get(metric)
        axes[0, column].plot(steps, values, color="C3", linewidth=2)
        axes[0, column].set_title(f"{name}: best trial {curve.trial_number}, {metric}")
        axes[0, column].set_xlabel("epoch")
        axes[0, column].set_ylabel(metric)
        axes[0, column].grid(alpha=0.3)
        _plot_losses(axes[1, column], curve)
        axes[1, column].set_title(f"{name}: training vs validation loss")
    figure.tight_layout()
    return figure
