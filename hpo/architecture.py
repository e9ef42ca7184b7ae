"""Shapes and parameter counts of the convolutional models, in plain Python (no torch, no optuna).

`hpo validate` and every worker check a study's search space with :func:`check_search_space` before
anything runs: the worst case of the space (most pooling and stride stages, largest kernels, least
padding) must still leave a 32x32 image at least 1x1. The CNN builder uses the same arithmetic, so what
is accepted here is what gets built (tests compare both).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hpo.hyperparameters import resolve

IMAGE_SIZE = 32
IN_CHANNELS = 3
NUM_CLASSES = 10
MAX_FLAT_FEATURES = 1 << 18  # a flattened CNN head wider than this needs gigabytes for its first layer
SHAPE_PARAMETERS = ("conv_blocks", "convs_per_block", "kernel_size", "stride", "padding", "dilation", "pooling")


class ArchitectureError(ValueError):
    """An impossible architecture; `field` names the hyperparameter to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def conv_output_size(size: int, *, kernel: int, stride: int, padding: int | str, dilation: int) -> int:
    """Output side of a convolution, as torch.nn.Conv2d computes it."""
    pad = conv_padding(kernel, stride=stride, padding=padding, dilation=dilation)
    if pad == "same":
        return size
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def conv_padding(kernel: int, *, stride: int, padding: int | str, dilation: int) -> int | str:
    """What the CNN passes to Conv2d: "same" keeps the size at stride 1 (PyTorch pads exactly then);
    with a stride, "same" means the symmetric padding dilation * (kernel - 1) // 2."""
    if padding == "same":
        return "same" if stride == 1 else dilation * (kernel - 1) // 2
    return int(padding)


def conv_side_padding(*, kernel: int, stride: int, padding: int | str, dilation: int) -> int:
    """The widest padding on one side of a convolution's input (with "same" PyTorch puts the odd pixel
    on the right/bottom): what reflect and circular padding need to fit inside the map."""
    pad = conv_padding(kernel, stride=stride, padding=padding, dilation=dilation)
    if pad == "same":
        total = dilation * (kernel - 1)
        return total - total // 2
    return int(pad)


def pool_output_size(size: int, *, pool_size: int, pool_stride: int | None) -> int:
    """Output side of a pooling layer (no padding, floor), as torch.nn.MaxPool2d computes it."""
    return (size - pool_size) // (pool_size if pool_stride is None else pool_stride) + 1


def pool_settings(hp: Mapping[str, Any]) -> tuple[int, int | None]:
    """Window and stride of the CNN's pooling: 2 and the window size unless the study sets them."""
    size = int(hp.get("pool_size") or 2)
    stride = hp.get("pool_stride")
    return size, (None if stride is None else int(stride))


def block_channels(filters: int, growth: float, blocks: int) -> list[int]:
    """Filters of each block: `filters` times `growth` per block, rounded, at least 1."""
    return [max(1, round(filters * growth**i)) for i in range(blocks)]


@dataclass(frozen=True)
class CnnShape:
    channels: list[int]  # per block
    sizes: list[int]  # spatial side after each block
    features: int  # inputs of the classifier head


def cnn_shape(hp: Mapping[str, Any], *, image_size: int = IMAGE_SIZE) -> CnnShape:
    """Channels and spatial sizes through the CNN; ArchitectureError when the image shrinks to nothing."""
    blocks, per_block = int(hp["conv_blocks"]), int(hp["convs_per_block"])
    kernel, stride, dilation, padding = int(hp["kernel_size"]), int(hp["stride"]), int(hp["dilation"]), hp["padding"]
    channels = block_channels(int(hp["filters"]), float(hp["filters_growth"]), blocks)
    padding_mode = str(hp.get("padding_mode") or "zeros")
    pool_size, pool_stride = pool_settings(hp)
    size = image_size
    sizes = []
    for block in range(blocks):
        for conv in range(per_block):
            step = stride if conv == 0 else 1
            side = conv_side_padding(kernel=kernel, stride=step, padding=padding, dilation=dilation)
            if (padding_mode == "reflect" and side >= size) or (padding_mode == "circular" and side > size):
                raise ArchitectureError(
                    "padding_mode",
                    f"{_describe(hp)} pads a {size}x{size} map by {side} at block {block + 1}, conv {conv + 1}, more than "
                    f"{padding_mode} padding can take (at most {size - 1 if padding_mode == 'reflect' else size})",
                )
            size = conv_output_size(size, kernel=kernel, stride=step, padding=padding, dilation=dilation)
            if size < 1:
                raise ArchitectureError(
                    "conv_blocks",
                    f"{_describe(hp)} shrinks {image_size}x{image_size} images to nothing at block {block + 1}, conv {conv + 1}",
                )
        if hp["pooling"] != "none":
            if size < pool_size:
                raise ArchitectureError(
                    "conv_blocks",
                    f"{_describe(hp)} leaves {size}x{size} before the {hp['pooling']} pooling of block {block + 1}, "
                    f"which needs at least {pool_size}x{pool_size}",
                )
            size = pool_output_size(size, pool_size=pool_size, pool_stride=pool_stride)
        sizes.append(size)
    features = channels[-1] if hp["global_pool"] else channels[-1] * size * size
    return CnnShape(channels=channels, sizes=sizes, features=features)


def _describe(hp: Mapping[str, Any]) -> str:
    optional = [name for name in ("pool_size", "pool_stride", "padding_mode") if hp.get(name) is not None]
    return ", ".join(f"{name}={hp[name]}" for name in (*SHAPE_PARAMETERS, *optional))


def mlp_parameter_count(in_features: int, out_features: int, *, hidden_layers: int, width: int, batch_norm: bool) -> int:
    """Parameters of hpo.models.MLP (linear layers lose their bias under batch norm)."""
    total, size = 0, in_features
    for _ in range(hidden_layers):
        total += size * width + (2 * width if batch_norm else width)
        size = width
    return total + size * out_features + out_features


def cnn_parameter_count(hp: Mapping[str, Any], *, in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES) -> int:
    """Parameters of hpo.models.CNN for these hyperparameters (no torch needed)."""
    shape = cnn_shape(hp)
    kernel, bn = int(hp["kernel_size"]), bool(hp["batch_norm"])
    total, previous = 0, in_channels
    for channels in shape.channels:
        for _ in range(int(hp["convs_per_block"])):
            total += previous * channels * kernel * kernel + (2 * channels if bn else channels)
            previous = channels
    return total + mlp_parameter_count(shape.features, num_classes, hidden_layers=int(hp["hidden_layers"]), width=int(hp["width"]), batch_norm=bn)


def resnet_parameter_count(hp: Mapping[str, Any], *, in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES) -> int:
    """Parameters of hpo.models.ResNet: a conv stem, stages of basic blocks, a linear head."""
    kernel, bn = int(hp["kernel_size"]), bool(hp["batch_norm"])
    norm = lambda c: 2 * c if bn else c  # noqa: E731 - batch norm's affine pair, or the conv's own bias
    channels = block_channels(int(hp["filters"]), float(hp["filters_growth"]), int(hp["conv_blocks"]))
    total = in_channels * channels[0] * kernel * kernel + norm(channels[0])
    previous = channels[0]
    for stage, width in enumerate(channels):
        for block in range(int(hp["convs_per_block"])):
            total += previous * width * kernel * kernel + norm(width) + width * width * kernel * kernel + norm(width)
            if previous != width or (stage > 0 and block == 0):
                total += previous * width + norm(width)  # 1x1 projection shortcut
            previous = width
    return total + previous * num_classes + num_classes


# -- checking a search space ----------------------------------------------------------------------
def _candidates(name: str, params: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[Any]:
    """Values `name` can take in the study: its choices or range (ends and, for small ranges, every
    step), the fixed value, else the default; a conditional parameter may also keep its default."""
    if name in fixed:
        return [fixed[name]]
    spec = params.get(name)
    if spec is None:
        return [defaults[name]]
    values: list[Any]
    if spec["type"] == "categorical":
        values = list(spec["choices"])
    elif spec["type"] == "int":
        step = int(spec.get("step") or 1)
        span = range(int(spec["low"]), int(spec["high"]) + 1, step)
        values = list(span) if len(span) <= 16 else sorted({span[0], span[1], span[-2], span[-1]})
    else:
        values = [spec["low"], spec["high"]]
    if spec.get("when"):
        values.append(defaults[name])
    return values


def _spatial_cases(values: Mapping[str, list[Any]], defaults: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every combination of the values that decide the spatial size. Block counts are taken at their
    ends only: adding a block repeats the same map, so the size moves monotonically with the count."""
    names = list(SHAPE_PARAMETERS)
    ranges = [sorted({min(map(int, values[n])), max(map(int, values[n]))}) if n in ("conv_blocks", "convs_per_block") else values[n] for n in names]
    for combination in itertools.product(*ranges):
        yield {**defaults, **dict(zip(names, combination))}


def _blame(field: str, params: Mapping[str, Any], fixed: Mapping[str, Any]) -> str:
    """The study-file field to point at: the given one if the study sets it, else the first shape
    parameter it searches or fixes."""
    for name in (field, *SHAPE_PARAMETERS):
        if name in params:
            return f"params.{name}"
        if name in fixed:
            return f"fixed.{name}"
    return f"fixed.{field}"


def _check_values(params: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[str, str] | None:
    """Upper bounds the study file's own value rules cannot know: what fits a 32x32 image and these models."""
    limits: dict[str, tuple[float, float, str]] = {
        "conv_blocks": (1, 12, "an integer from 1 to 12"),
        "convs_per_block": (1, 8, "an integer from 1 to 8"),
        "filters": (1, 4096, "an integer from 1 to 4096"),
        "filters_growth": (0.25, 4, "a number from 0.25 to 4"),
        "kernel_size": (1, IMAGE_SIZE, f"an integer from 1 to {IMAGE_SIZE}"),
        "stride": (1, 4, "an integer from 1 to 4"),
        "dilation": (1, 8, "an integer from 1 to 8"),
        "augment_crop": (0, IMAGE_SIZE - 1, f"pixels from 0 to {IMAGE_SIZE - 1}"),
        "augment_cutout": (0, IMAGE_SIZE, f"pixels from 0 to {IMAGE_SIZE}"),
        "augment_jitter": (0, 1, "a strength from 0 to 1"),
        "augment_rotation": (0, 180, "degrees from 0 to 180"),
    }
    for name, (low, high, accepted) in limits.items():
        for value in _candidates(name, params, fixed, defaults):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                return _field(name, params), f"{value!r} is out of range; accepted: {accepted}"
    return None


def _field(name: str, params: Mapping[str, Any]) -> str:
    return f"params.{name}" if name in params else f"fixed.{name}"


def check_search_space(params: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, message) for the first impossible architecture a CIFAR-10 study could sample, else None.

    `params` are the study's parameter specs as plain dicts (type, low, high, step, choices, when).
    """
    defaults = resolve("cifar10", {})
    problem = _check_values(params, fixed, defaults)
    if problem is not None:
        return problem
    models = set(_candidates("model", params, fixed, defaults))
    if "resnet" in models:
        for kernel in _candidates("kernel_size", params, fixed, defaults):
            if int(kernel) % 2 == 0:
                return _field("kernel_size", params), f"{kernel} is even; the resnet model needs an odd kernel_size so residual sums keep their shape"
    if "cnn" not in models:
        return None
    values = {name: _candidates(name, params, fixed, defaults) for name in (*SHAPE_PARAMETERS, "global_pool", "filters", "filters_growth")}
    largest: dict[int, int] = {}  # conv_blocks -> the largest final side seen
    for hp in _spatial_cases(values, defaults):
        try:
            shape = cnn_shape({**hp, "global_pool": True})
        except ArchitectureError as exc:
            return _blame(exc.field, params, fixed), f"{exc.message}; lower conv_blocks, convs_per_block, stride, kernel_size or dilation, or use more padding or pooling: none"
        blocks = int(hp["conv_blocks"])
        largest[blocks] = max(largest.get(blocks, 0), shape.sizes[-1])
    if False in values["global_pool"]:
        for blocks, side in largest.items():
            channels = max(block_channels(int(f), float(g), blocks)[-1] for f in values["filters"] for g in values["filters_growth"])
            if channels * side * side > MAX_FLAT_FEATURES:
                return (
                    _blame("global_pool", params, fixed),
                    f"with global_pool=false, conv_blocks={blocks} can flatten {channels} channels of {side}x{side} into "
                    f"{channels * side * side:,} head inputs (at most {MAX_FLAT_FEATURES:,}); use global_pool: true, more pooling or fewer filters",
                )
    return None


__all__ = [
    "ArchitectureError",
    "CnnShape",
    "block_channels",
    "check_search_space",
    "cnn_parameter_count",
    "cnn_shape",
    "conv_output_size",
    "conv_padding",
    "conv_side_padding",
    "mlp_parameter_count",
    "pool_output_size",
    "pool_settings",
    "resnet_parameter_count",
]
