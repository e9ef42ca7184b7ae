"""A configurable CNN: blocks of convolutions, optional pooling, then an MLP head.

Block ``i`` has ``round(filters * filters_growth**i)`` channels and ``convs_per_block`` convolutions
[Conv -> (BatchNorm) -> activation], the first with ``stride``, padded with ``padding_mode`` (zeros,
reflect, replicate or circular); then max/avg/sum/min pooling (or none) over ``pool_size`` windows moved
by ``pool_stride`` (2 and 2 unless set), and dropout. The head takes global average pooling
(``global_pool: true``) or the flattened maps into :class:`hpo.models.MLP` (``hidden_layers`` x ``width``,
0 = a linear classifier). Shapes follow :mod:`hpo.config.cnn_shapes`, which checks a study's whole search
space before anything trains.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import nn

from hpo.config import cnn_shapes as architecture
from hpo.models._layers import activation, init_weights, pooling
from hpo.models.mlp import MLP


class CNN(nn.Module):
    def __init__(
        self, hp: dict[str, Any], *, in_channels: int = 3, num_classes: int = 10, image_size: int = 32
    ) -> None:
        super().__init__()
        shape = architecture.cnn_shape(hp, image_size=image_size)  # raises ArchitectureError on impossible shapes
        kernel, stride, dilation = int(hp["kernel_size"]), int(hp["stride"]), int(hp["dilation"])
        batch_norm, dropout = bool(hp["batch_norm"]), float(hp["dropout"])
        padding_mode = str(hp.get("padding_mode") or "zeros")
        pool_size, pool_stride = architecture.pool_settings(hp)
        layers: list[nn.Module] = []
        previous = in_channels
        for channels in shape.channels:
            for conv in range(int(hp["convs_per_block"])):
                step = stride if conv == 0 else 1
                padding = architecture.conv_padding(kernel, stride=step, padding=hp["padding"], dilation=dilation)
                layers.append(
                    nn.Conv2d(
                        previous,
                        channels,
                        kernel,
                        stride=step,
                        padding=padding,
                        dilation=dilation,
                        bias=not batch_norm,
                        padding_mode=cast(Literal["zeros", "reflect", "replicate", "circular"], padding_mode),
                    )
                )
                if batch_norm:
                    layers.append(nn.BatchNorm2d(channels))
                layers.append(activation(str(hp["activation"])))
                previous = channels
            pool = pooling(str(hp["pooling"]), size=pool_size, stride=pool_stride)
            if pool is not None:
                layers.append(pool)
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        if hp["global_pool"]:
            layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.head = MLP(
            shape.features,
            num_classes,
            hidden_layers=int(hp["hidden_layers"]),
            width=int(hp["width"]),
            activation_name=str(hp["activation"]),
            dropout=dropout,
            batch_norm=batch_norm,
        )
        init_weights(self, str(hp["init"]), nonlinearity=str(hp["activation"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
