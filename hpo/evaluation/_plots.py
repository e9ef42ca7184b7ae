"""Pictures of a model's test results and of what its first convolution learned.

Figures are built with `matplotlib.figure.Figure` (no pyplot, no global state, no display needed) and
saved as PNG; callers log them to MLflow and embed them in reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def predicted_vs_actual(predicted: np.ndarray, actual: np.ndarray, *, title: str, unit: str = "") -> Figure:
    """Points on the diagonal are perfect predictions."""
    figure = Figure(figsize=(5, 5))
    ax = figure.add_subplot()
    ax.scatter(actual, predicted, s=14, alpha=0.7, edgecolor="none")
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1, linestyle="--", label="perfect")
    ax.set_xlabel(f"actual {unit}".strip())
    ax.set_ylabel(f"predicted {unit}".strip())
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.set_aspect("equal", adjustable="datalim")
    return figure


def residuals(predicted: np.ndarray, actual: np.ndarray, *, title: str, unit: str = "") -> Figure:
    """Residuals against the prediction, and their histogram: structure here means bias the model missed."""
    error = predicted - actual
    figure = Figure(figsize=(9, 4))
    left, right = figure.subplots(1, 2)
    left.scatter(predicted, error, s=14, alpha=0.7, edgecolor="none")
    left.axhline(0, color="black", linewidth=1, linestyle="--")
    left.set_xlabel(f"predicted {unit}".strip())
    left.set_ylabel(f"predicted - actual {unit}".strip())
    left.set_title(title)
    right.hist(error, bins=30)
    right.axvline(0, color="black", linewidth=1, linestyle="--")
    right.set_xlabel(f"residual {unit}".strip())
    right.set_ylabel("count")
    right.set_title("residual distribution")
    figure.tight_layout()
    return figure


def confusion_matrix_figure(matrix: np.ndarray, classes: Sequence[str], *, title: str) -> Figure:
    """Rows are true classes, columns predicted; each cell shows the row-normalized share."""
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(7, 6))
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(shares.shape[0]):
        for j in range(shares.shape[1]):
            ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=ax, fraction=0.046)
    figure.tight_layout()
    return figure


def per_class_accuracy(accuracies: dict[str, float], *, title: str) -> Figure:
    figure = Figure(figsize=(7, 3.5))
    ax = figure.add_subplot()
    names = list(accuracies)
    ax.bar(names, [accuracies[n] for n in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    return figure


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first 2-D convolution in the model's module order (None for an MLP)."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def _to_unit(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _grid(n: int) -> tuple[int, int]:
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def conv_filters(model: nn.Module, *, title: str, limit: int = 64) -> Figure | None:
    """The first layer's kernels as small images (RGB when they see three channels)."""
    conv = first_conv(model)
    if conv is None:
        return None
    weights = conv.weight.detach().cpu().float().numpy()[:limit]
    rows, cols = _grid(len(weights))
    figure = Figure(figsize=(cols * 0.9, rows * 0.9 + 0.5))
    axes = np.atleast_1d(figure.subplots(rows, cols)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for ax, kernel in zip(axes, weights):
        picture = _to_unit(kernel.transpose(1, 2, 0)) if kernel.shape[0] == 3 else _to_unit(kernel[0])
        ax.imshow(picture, cmap=None if kernel.shape[0] == 3 else "gray", interpolation="nearest")
    figure.suptitle(title)
    return figure


def feature_maps(model: nn.Module, image: torch.Tensor, *, title: str, limit: int = 32) -> Figure | None:
    """One image (model-ready, C x H x W) and what the first convolution makes of it."""
    conv = first_conv(model)
    if conv is None:
        return None
    captured: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda module, inputs, output: captured.append(output.detach()))
    try:
        model.eval()
        with torch.no_grad():
            model(image.unsqueeze(0).to(next(model.parameters()).device).float())
    finally:
        handle.remove()
    maps = captured[0][0].cpu().float().numpy()[:limit]
    rows, cols = _grid(len(maps) + 1)
    figure = Figure(figsize=(cols * 1.1, rows * 1.1 + 0.5))
    axes = np.atleast_1d(figure.subplots(rows, cols)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    shown = image.cpu().float().numpy()
    axes[0].imshow(_to_unit(shown.transpose(1, 2, 0)) if shown.shape[0] == 3 else _to_unit(shown[0]), cmap=None if shown.shape[0] == 3 else "gray")
    axes[0].set_title("input", fontsize=8)
    for ax, feature in zip(axes[1:], maps):
        ax.imshow(feature, cmap="viridis")
    figure.suptitle(title)
    return figure
