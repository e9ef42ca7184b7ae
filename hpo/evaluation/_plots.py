"""Pictures of a model's test results and of what each of its convolutional layers learned.

Figures are built with `matplotlib.figure.Figure` (no pyplot, no global state, no display needed) and
saved as PNG; callers log them to MLflow and embed them in reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
            ax.text(
                j,
                i,
                f"{shares[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shares[i, j] > 0.5 else "black",
            )
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


# What a picture of one layer shows at most: wide layers are cut to their first channels, so a grid
# stays legible and a ResNet's 512-channel stage does not make a 512-panel figure.
MAX_CONV_LAYERS = 32  # more than this (deep backbones): evenly spaced layers, first and last included
MAX_FILTERS = 32  # output channels (filters, feature maps) per layer
MAX_INPUTS = 16  # input channels per filter of a deeper layer
CONV_INDEX = "index.json"  # beside the PNGs: file -> caption, in layer order


@dataclass
class ConvPicture:
    file: str
    caption: str
    figure: Figure


def conv_layers(model: nn.Module) -> tuple[list[tuple[str, nn.Conv2d]], int]:
    """The 2-D convolutions in module order (at most MAX_CONV_LAYERS of them), and how many there are."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(found) <= MAX_CONV_LAYERS:
        return found, len(found)
    picks = sorted({round(i * (len(found) - 1) / (MAX_CONV_LAYERS - 1)) for i in range(MAX_CONV_LAYERS)})
    return [found[i] for i in picks], len(found)


def _to_unit(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _grid(n: int) -> tuple[int, int]:
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def _mosaic(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Tiles (n x h x w [x 3]) laid out row by row on a grid with a one-pixel NaN gap (drawn blank)."""
    n, h, w = tiles.shape[:3]
    extra = tiles.shape[3:]
    canvas = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, *extra), np.nan, dtype=np.float32)
    for index in range(n):
        r, c = divmod(index, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tiles[index]
    return canvas


def _mosaic_figure(
    canvas: np.ndarray, *, title: str, cmap: str | None, limits: tuple[float, float] | None = None
) -> Figure:
    height, width = canvas.shape[:2]
    scale = min(10 / max(width, height) * 1.0, 0.25)  # inches per mosaic pixel, at most 10 inches a side
    figure = Figure(figsize=(max(width * scale, 3.0), max(height * scale, 1.5) + 0.6))
    ax = figure.add_subplot()
    ax.set_axis_off()
    if canvas.ndim == 3:  # RGB: NaN gaps as white
        ax.imshow(np.nan_to_num(canvas, nan=1.0), interpolation="nearest")
    else:
        colours = _colormap(cmap or "viridis")
        ax.imshow(
            np.ma.masked_invalid(canvas),
            cmap=colours,
            interpolation="nearest",
            vmin=limits[0] if limits else None,
            vmax=limits[1] if limits else None,
        )
    ax.set_title(title, fontsize=9)
    return figure


def _colormap(name: str) -> Any:
    """The named colormap, drawing masked (gap) pixels white."""
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="white")


def layer_filters(conv: nn.Conv2d, *, title: str) -> tuple[Figure, str]:
    """One layer's kernels: RGB tiles when they see three channels (the first layer), grey tiles when
    they see one (depthwise convolutions), else a grid of filters (rows) by input channels (columns) on
    one colour scale centred at zero (red positive, blue negative). Returns the figure and what it shows."""
    weights = conv.weight.detach().cpu().float().numpy()
    out_channels, inputs = weights.shape[:2]
    if inputs in (1, 3):
        shown = weights[: 2 * MAX_FILTERS]
        rows, cols = _grid(len(shown))
        if inputs == 3:
            tiles = np.stack([_to_unit(k.transpose(1, 2, 0)) for k in shown])
            figure = _mosaic_figure(_mosaic(tiles, rows, cols), title=title, cmap=None)
        else:
            figure = _mosaic_figure(
                _mosaic(np.stack([_to_unit(k[0]) for k in shown]), rows, cols), title=title, cmap="gray"
            )
        return figure, f"{len(shown)} of {out_channels} filters" if len(
            shown
        ) < out_channels else f"all {out_channels} filters"
    shown = weights[:MAX_FILTERS, :MAX_INPUTS]
    bound = float(np.abs(shown).max()) or 1.0
    rows, cols = shown.shape[:2]
    tiles = shown.reshape(rows * cols, *shown.shape[2:])
    figure = _mosaic_figure(_mosaic(tiles, rows, cols), title=title, cmap="RdBu_r", limits=(-bound, bound))
    return figure, f"{rows} of {out_channels} filters (rows) x {cols} of {inputs} input channels (columns)"


def layer_feature_maps(maps: np.ndarray, *, title: str) -> tuple[Figure, str]:
    """One layer's output channels for one image (C x H x W), each scaled to its own range."""
    shown = maps[:MAX_FILTERS]
    rows, cols = _grid(len(shown))
    figure = _mosaic_figure(_mosaic(np.stack([_to_unit(m) for m in shown]), rows, cols), title=title, cmap="viridis")
    what = f"{len(shown)} of {len(maps)} channels" if len(shown) < len(maps) else f"all {len(maps)} channels"
    return figure, f"{what}, {maps.shape[1]}x{maps.shape[2]}"


def conv_pictures(model: nn.Module, image: torch.Tensor, *, label: str, image_name: str) -> list[ConvPicture]:
    """Filters and feature maps (of `image`, model-ready C x H x W) of every convolutional layer: one
    forward pass with a hook on each layer, then two pictures per layer. Empty for a model without any."""
    layers, total = conv_layers(model)
    if not layers:
        return []
    captured: dict[str, torch.Tensor] = {}
    handles = [
        conv.register_forward_hook(
            lambda module, inputs, output, name=name: captured.__setitem__(name, output.detach())
        )
        for name, conv in layers
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(image.unsqueeze(0).to(next(model.parameters()).device).float())
    finally:
        for handle in handles:
            handle.remove()
    input_picture = image.detach().cpu().float().numpy()
    pictures = [_input_picture(input_picture, label=label, image_name=image_name)]
    subset = f" ({len(layers)} of the model's {total} convolutional layers)" if len(layers) < total else ""
    for index, (name, conv) in enumerate(layers, start=1):
        kernel = "x".join(str(k) for k in conv.kernel_size)
        layer = f"conv layer {index} `{name}` ({conv.in_channels} -> {conv.out_channels} channels, {kernel} kernels)"
        stem = f"layer{index:02d}-{name.replace('.', '-') or 'conv'}"
        figure, shown = layer_filters(conv, title=f"{label}: {layer}, filters")
        pictures.append(ConvPicture(f"{stem}-filters.png", f"{label}, {layer}: {shown}{subset}.", figure))
        maps = captured[name][0].cpu().float().numpy()
        figure, shown = layer_feature_maps(maps, title=f"{label}: {layer}, feature maps of {image_name}")
        pictures.append(
            ConvPicture(f"{stem}-feature-maps.png", f"{label}, {layer}: feature maps of {image_name}, {shown}.", figure)
        )
    return pictures


def _input_picture(image: np.ndarray, *, label: str, image_name: str) -> ConvPicture:
    figure = Figure(figsize=(2.2, 2.4))
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.imshow(
        _to_unit(image.transpose(1, 2, 0)) if image.shape[0] == 3 else _to_unit(image[0]),
        cmap=None if image.shape[0] == 3 else "gray",
    )
    ax.set_title(image_name, fontsize=9)
    return ConvPicture(
        "input.png", f"{label}: {image_name}, the input of the feature maps below (rescaled for display).", figure
    )


def save_conv_pictures(pictures: list[ConvPicture], folder: Path) -> list[str]:
    """Write the PNGs and an index (file -> caption, in layer order) that reports read back; nothing for
    a model without convolutions."""
    if not pictures:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    for picture in pictures:
        save(picture.figure, folder / picture.file)
    (folder / CONV_INDEX).write_text(
        json.dumps([{"file": p.file, "caption": p.caption} for p in pictures], indent=1), encoding="utf-8"
    )
    return [p.file for p in pictures]
