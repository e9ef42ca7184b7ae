"""Shapes and parameter counts of the convolutional models, in plain Python (no torch, no optuna).

The CNN builder uses this arithmetic, and so does an objective's check of its search space before
anything runs (the CIFAR-10 objective's), so what a study check accepts is what gets built (tests
compare both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IMAGE_SIZE = 32
IN_CHANNELS = 3
NUM_CLASSES = 10
# Every hyperparameter the spatial size depends on: a study's check tries each combination of their values.
SHAPE_PARAMETERS = (
    "conv_blocks",
    "convs_per_block",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "pooling",
    "pool_size",
    "pool_stride",
    "padding_mode",
)
POOLINGS: tuple[str, ...] = ("max", "avg", "sum", "min", "none")
# torch.nn.Conv2d's padding modes: what fills the border when a convolution pads its input.
PADDING_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")


class ArchitectureError(ValueError):
    """An impossible architecture; `field` names the hyperparameter to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def conv_output_size(size: int, *, kernel: int, stride: int, padding: int | str, dilation: int) -> int:
    """Output side of a convolution, as torch.nn.Conv2d computes it."""
    pad = conv_padding(kernel, stride=stride, padding=padding, dilation=dilation)
    if isinstance(pad, str):  # "same"
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
                    f"{_describe(hp)} pads a {size}x{size} map by {side} at block {block + 1}, conv {conv + 1}, "
                    f"more than {padding_mode} padding can take "
                    f"(at most {size - 1 if padding_mode == 'reflect' else size})",
                )
            size = conv_output_size(size, kernel=kernel, stride=step, padding=padding, dilation=dilation)
            if size < 1:
                raise ArchitectureError(
                    "conv_blocks",
                    f"{_describe(hp)} shrinks {image_size}x{image_size} images to nothing "
                    f"at block {block + 1}, conv {conv + 1}",
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
    return ", ".join(f"{name}={hp[name]}" for name in SHAPE_PARAMETERS if hp.get(name) is not None)


def mlp_parameter_count(
    in_features: int, out_features: int, *, hidden_layers: int, width: int, batch_norm: bool
) -> int:
    """Parameters of hpo.models.MLP (linear layers lose their bias under batch norm)."""
    total, size = 0, in_features
    for _ in range(hidden_layers):
        total += size * width + (2 * width if batch_norm else width)
        size = width
    return total + size * out_features + out_features


def cnn_parameter_count(
    hp: Mapping[str, Any], *, in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES
) -> int:
    """Parameters of hpo.models.CNN for these hyperparameters (no torch needed)."""
    shape = cnn_shape(hp)
    kernel, bn = int(hp["kernel_size"]), bool(hp["batch_norm"])
    total, previous = 0, in_channels
    for channels in shape.channels:
        for _ in range(int(hp["convs_per_block"])):
            total += previous * channels * kernel * kernel + (2 * channels if bn else channels)
            previous = channels
    return total + mlp_parameter_count(
        shape.features, num_classes, hidden_layers=int(hp["hidden_layers"]), width=int(hp["width"]), batch_norm=bn
    )


def resnet_parameter_count(
    hp: Mapping[str, Any], *, in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES
) -> int:
    """Parameters of hpo.models.ResNet: a conv stem, stages of basic blocks, a linear head."""
    kernel, bn = int(hp["kernel_size"]), bool(hp["batch_norm"])
    norm = lambda c: 2 * c if bn else c  # batch norm's affine pair, or the conv's own bias
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


__all__ = [
    "PADDING_MODES",
    "POOLINGS",
    "SHAPE_PARAMETERS",
    "ArchitectureError",
    "CnnShape",
    "block_channels",
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
