"""Per-epoch learning curves read back from MLflow metric histories, and their plots.

Axes say what they show: epochs are whole numbers, and a metric's unit (from the objective, e.g.
standardized MSE for Boston's losses and k$² for its validation MSE) follows its name. Beside the study
metric come its training counterpart when one is logged (train_acc beside val_acc) and, for an RMSE,
the MSE it is the root of.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

from hpo.config import StudyConfig
from hpo.running.tracking import Tracker

CURVE_KEYS = ("train_loss", "val_loss")
Units = Mapping[str, str]


def training_counterpart(metric: str) -> str | None:
    """The training-set twin of a validation metric (val_acc -> train_acc), logged by some objectives."""
    return "train_" + metric[len("val_") :] if metric.startswith("val_") and metric != "val_loss" else None


def squared_counterpart(metric: str) -> str | None:
    """The MSE an RMSE is the root of (val_rmse -> val_mse), shown beside it in its own unit."""
    return metric[: -len("rmse")] + "mse" if metric.endswith("_rmse") else None


def curve_keys(metric: str) -> tuple[str, ...]:
    """What to read for a trial's curves: the losses, the study metric and its companions."""
    extra = [
        k
        for k in (
            metric if metric.startswith("val_") else None,
            training_counterpart(metric),
            squared_counterpart(metric),
        )
        if k
    ]
    return tuple(dict.fromkeys((*CURVE_KEYS, *extra)))


def metric_units(config: StudyConfig) -> dict[str, str]:
    """Units of the study's logged metrics as its objective declares them (metric -> unit), so axes can
    say e.g. that Boston's losses are in standardized units and its MSE in k$²."""
    return dict(config.load_objective().objective.units)


def axis_label(key: str, units: Units) -> str:
    unit = units.get(key)
    return f"{key} ({unit})" if unit else key


def loss_label(units: Units) -> str:
    """The loss axis: its unit when the objective names one (training and validation loss share it)."""
    unit = units.get("val_loss") or units.get("train_loss")
    return f"loss ({unit})" if unit else "loss"


def _epoch_axis(ax: Axes) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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


def _plot_metric(ax: Axes, curves: list[Curves], metric: str, *, highlight: int | None, units: Units) -> None:
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
    _epoch_axis(ax)
    ax.set_ylabel(axis_label(metric, units))
    ax.grid(alpha=0.3, which="both")


def _plot_pair(ax: Axes, curve: Curves | None, keys: tuple[str, str], *, ylabel: str, log: bool) -> None:
    """Two curves of one trial on one axis (training vs validation)."""
    if curve is not None:
        for key in keys:
            steps, values = curve.get(key)
            if len(steps):
                ax.plot(steps, values, label=key)
        if log:
            _log_scale_if_positive(ax, [curve.get(k)[1] for k in keys])
        ax.legend()
    _epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")


def _plot_losses(ax: Axes, curve: Curves | None, *, units: Units) -> None:
    _plot_pair(ax, curve, ("train_loss", "val_loss"), ylabel=loss_label(units), log=True)
    if curve is not None:
        ax.set_title(f"trial {curve.trial_number}: training vs validation loss")


def _plot_squared(ax: Axes, curve: Curves, metric: str, squared: str, *, units: Units) -> None:
    """The MSE (left axis) and the RMSE it is the root of (right axis) of one trial."""
    steps, values = curve.get(squared)
    ax.plot(steps, values, color="C0", label=squared)
    ax.set_ylabel(axis_label(squared, units), color="C0")
    twin = ax.twinx()
    steps, values = curve.get(metric)
    twin.plot(steps, values, color="C3", linestyle="--", label=metric)
    twin.set_ylabel(axis_label(metric, units), color="C3")
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.set_title(f"trial {curve.trial_number}: {squared} and {metric}")


def _extra_panels(curve: Curves | None, metric: str) -> list[str]:
    """Which companion panels the best trial's logged metrics allow: training counterpart, MSE."""
    if curve is None:
        return []
    panels = []
    counterpart, squared = training_counterpart(metric), squared_counterpart(metric)
    if counterpart and len(curve.get(counterpart)[0]):
        panels.append("train")
    if squared and len(curve.get(squared)[0]):
        panels.append("squared")
    return panels


def learning_curves_figure(
    curves: list[Curves], metric: str, *, best: int | None, title: str, units: Units | None = None
) -> Figure:
    """The study metric per epoch for the best, other top and pruned trials; then the best trial's
    losses, its training vs validation metric (when logged) and, for an RMSE, its MSE."""
    units = units or {}
    best_curve = next((c for c in curves if c.trial_number == best), None)
    extra = _extra_panels(best_curve, metric)
    figure = Figure(figsize=(6 * (2 + len(extra)), 4.5))
    axes = figure.subplots(1, 2 + len(extra))
    _plot_metric(axes[0], curves, metric, highlight=best, units=units)
    axes[0].set_title(f"{metric} per epoch")
    axes[0].legend(fontsize=8)
    _plot_losses(axes[1], best_curve, units=units)
    for ax, panel in zip(axes[2:], extra):
        assert best_curve is not None
        if panel == "train":
            counterpart = training_counterpart(metric) or ""
            _plot_pair(ax, best_curve, (counterpart, metric), ylabel=axis_label(metric, units), log=False)
            ax.set_title(f"trial {best_curve.trial_number}: training vs validation {metric[len('val_') :]}")
        else:
            _plot_squared(ax, best_curve, metric, squared_counterpart(metric) or "", units=units)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def side_by_side_figure(
    left_curves: Curves, right_curves: Curves, metric: str, *, names: tuple[str, str], units: Units | None = None
) -> Figure:
    """Two studies' best trials: the metric (top row, shared y axis), their training vs validation losses
    and, when either logs it, their training vs validation metric (e.g. accuracy)."""
    units = units or {}
    counterpart = training_counterpart(metric)
    with_train = bool(counterpart) and any(len(c.get(counterpart or "")[0]) for c in (left_curves, right_curves))
    rows = 3 if with_train else 2
    figure = Figure(figsize=(12, 4 * rows))
    axes = figure.subplots(rows, 2, sharey="row")
    for column, (curve, name) in enumerate(zip((left_curves, right_curves), names)):
        steps, values = curve.get(metric)
        axes[0, column].plot(steps, values, color="C3", linewidth=2)
        axes[0, column].set_title(f"{name}: best trial {curve.trial_number}, {metric}")
        _epoch_axis(axes[0, column])
        axes[0, column].set_ylabel(axis_label(metric, units))
        axes[0, column].grid(alpha=0.3)
        _plot_losses(axes[1, column], curve, units=units)
        axes[1, column].set_title(f"{name}: training vs validation loss")
        if with_train:
            _plot_pair(axes[2, column], curve, (counterpart or "", metric), ylabel=axis_label(metric, units), log=False)
            axes[2, column].set_title(f"{name}: training vs validation {metric[len('val_') :]}")
    figure.tight_layout()
    return figure
