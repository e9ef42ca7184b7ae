"""The small ResNet: output shape, parameter count, residual stages."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hpo.config import cnn_shapes as architecture
from hpo.models import ResNet
from hpo.models.resnet import BasicBlock
from hpo.objectives.cifar10 import HYPERPARAMETERS
from hpo.training.loop import count_parameters


@pytest.mark.parametrize(
    "overrides",
    [
        {"batch_norm": True},
        {"batch_norm": False, "conv_blocks": 2, "convs_per_block": 2, "filters": 8},
        {
            "batch_norm": True,
            "conv_blocks": 4,
            "filters": 8,
            "filters_growth": 1.5,
            "kernel_size": 5,
            "dropout": 0.1,
            "activation": "elu",
        },
    ],
)
def test_resnet_forward_shape_and_parameter_count(overrides: dict[str, Any]) -> None:
    hp = HYPERPARAMETERS.resolve({"model": "resnet", **overrides})
    model = ResNet(hp)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == architecture.resnet_parameter_count(hp)


def test_resnet_stages_downsample_and_add_shortcuts() -> None:
    # 3 stages x 2 blocks; the first block of stages 2 and 3 halves the size with a projection shortcut.
    model = ResNet(
        HYPERPARAMETERS.resolve(
            {"model": "resnet", "batch_norm": True, "conv_blocks": 3, "convs_per_block": 2, "filters": 8}
        )
    )
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 6
    projections = [i for i, b in enumerate(blocks) if not isinstance(b.shortcut, torch.nn.Identity)]
    assert projections == [2, 4]
    sizes = []
    x = model.stem(torch.zeros(1, 3, 32, 32))
    for block in blocks:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [32, 32, 16, 16, 8, 8]


def test_resnet_refuses_an_even_kernel() -> None:
    with pytest.raises(architecture.ArchitectureError, match="odd"):
        ResNet(HYPERPARAMETERS.resolve({"model": "resnet", "kernel_size": 4}))
