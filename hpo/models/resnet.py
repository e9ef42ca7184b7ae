"""A small ResNet for 32x32 images: a conv stem, stages of basic residual blocks, global average pooling.

``conv_blocks`` stages of ``convs_per_block`` blocks each; stage ``i`` has
``round(filters * filters_growth**i)`` channels and halves the spatial size at its first block (except
the first stage). Each block is conv-BN-act-conv-BN plus a shortcut (a 1x1 projection where the shape
changes), then the activation. ``kernel_size`` (odd), ``activation``, ``batch_norm``, ``dropout`` (before
the classifier) and ``init`` apply; pooling, stride, padding and dilation are fixed by the design.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpo.config import cnn_shapes as architecture
from hpo.models._layers import activation, init_weights


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, kernel: int, activation_name: str, batch_norm: bool
    ) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=pad, bias=not batch_norm)
        self.bn1 = _norm(out_channels, batch_norm)
        self.act1 = activation(activation_name)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel, padding=pad, bias=not batch_norm)
        self.bn2 = _norm(out_channels, batch_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batch_norm),
                _norm(out_channels, batch_norm),
            )
        self.act2 = activation(activation_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, hp: dict[str, Any], *, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        kernel, batch_norm, act = int(hp["kernel_size"]), bool(hp["batch_norm"]), str(hp["activation"])
        if kernel % 2 == 0:
            raise architecture.ArchitectureError(
                "kernel_size", f"{kernel} is even; the resnet model needs an odd kernel_size"
            )
        channels = architecture.block_channels(int(hp["filters"]), float(hp["filters_growth"]), int(hp["conv_blocks"]))
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel, padding=kernel // 2, bias=not batch_norm),
            _norm(channels[0], batch_norm),
            activation(act),
        )
        blocks: list[nn.Module] = []
        previous = channels[0]
        for stage, width in enumerate(channels):
            for index in range(int(hp["convs_per_block"])):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(
                    BasicBlock(
                        previous, width, stride=stride, kernel=kernel, activation_name=act, batch_norm=batch_norm
                    )
                )
                previous = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(float(hp["dropout"])) if float(hp["dropout"]) > 0 else nn.Identity()
        self.fc = nn.Linear(previous, num_classes)
        init_weights(self, str(hp["init"]), nonlinearity=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))
