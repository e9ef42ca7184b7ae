"""The configurable CNN and the MLP on flattened pixels: output shapes and exact parameter counts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hpo.config import cnn_shapes as architecture
from hpo.models import CNN
from hpo.objectives.cifar10 import HYPERPARAMETERS
from hpo.objectives.cifar10._model import build_model
from hpo.training.loop import count_parameters


def _hp(**overrides: Any) -> dict[str, Any]:
    return HYPERPARAMETERS.resolve({"model": "cnn", **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"batch_norm": True, "dropout": 0.2, "hidden_layers": 0},
        {"conv_blocks": 2, "kernel_size": 5, "padding": 0, "stride": 2, "global_pool": False, "pooling": "avg"},
        {
            "conv_blocks": 4,
            "convs_per_block": 2,
            "filters": 8,
            "filters_growth": 1.5,
            "dilation": 2,
            "activation": "gelu",
        },
        {"kernel_size": 4, "pooling": "none", "stride": 2, "padding": "same", "init": "kaiming"},
        {
            "conv_blocks": 1,
            "padding": 1,
            "pooling": "max",
            "global_pool": False,
            "hidden_layers": 1,
            "width": 32,
            "init": "xavier",
        },
    ],
)
def test_cnn_forward_shape_and_parameter_count(overrides: dict[str, Any]) -> None:
    # Ten logits per image, and exactly the parameters (and spatial sizes) hpo.config.cnn_shapes predicts
    # without torch, which is what study validation relies on.
    hp = _hp(**overrides)
    model = CNN(hp)
    features = model.features(torch.zeros(2, 3, 32, 32))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == architecture.cnn_parameter_count(hp)
    assert features.flatten(1).shape[1] == architecture.cnn_shape(hp).features


def test_cnn_blocks_follow_filters_and_growth() -> None:
    # Block i has round(filters * growth**i) channels: 16, 24, 36.
    model = CNN(_hp(conv_blocks=3, filters=16, filters_growth=1.5))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 24, 36]


def test_cnn_rejects_an_architecture_that_shrinks_to_nothing() -> None:
    with pytest.raises(architecture.ArchitectureError, match="needs at least 2x2"):
        CNN(_hp(conv_blocks=6, stride=2))


def test_mlp_on_flattened_pixels() -> None:
    # model: mlp flattens 3x32x32 = 3072 pixels: (3072*64+64) + (64*64+64) + (64*10+10) parameters.
    model = build_model(HYPERPARAMETERS.resolve({"model": "mlp"}), {})
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == 3072 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize(
    "overrides",
    [
        {"pooling": "sum"},
        {"pooling": "min", "global_pool": False},
        {"pooling": "max", "pool_size": 3, "pool_stride": 2, "global_pool": False},
        {"pooling": "avg", "pool_size": 2, "pool_stride": 1, "conv_blocks": 2},
        {"pooling": "max", "pool_size": 4, "conv_blocks": 2, "global_pool": False},
    ],
)
def test_cnn_pooling_kinds_sizes_and_strides_match_the_shape_arithmetic(overrides: dict[str, Any]) -> None:
    # Every pooling kind, window and stride builds, and the spatial sizes and flattened head inputs are
    # what hpo.config.cnn_shapes computes without torch (which is what `hpo validate` checks).
    hp = _hp(**overrides)
    model = CNN(hp)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert model.features(torch.zeros(2, 3, 32, 32)).flatten(1).shape[1] == architecture.cnn_shape(hp).features
    assert count_parameters(model) == architecture.cnn_parameter_count(hp)
    sizes, side = [], 32
    for module in model.features:
        if isinstance(module, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)) or type(module).__name__ == "MinPool2d":
            side = module(torch.zeros(1, 1, side, side)).shape[-1]
            sizes.append(side)
    assert sizes == architecture.cnn_shape(hp).sizes


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_cnn_padding_mode_pads_each_convolution_that_way(mode: str) -> None:
    # The first convolution of a CNN with padding_mode equals the same kernel applied without padding
    # to the input padded by torch.nn.functional.pad in that mode ("zeros" is pad's "constant").
    model = CNN(_hp(padding_mode=mode, kernel_size=3, padding=1))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.padding_mode == mode
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="constant" if mode == "zeros" else mode)
    expected = torch.nn.functional.conv2d(padded, conv.weight, conv.bias)
    assert torch.allclose(conv(x), expected, atol=1e-6)


def test_default_cnn_is_unchanged_by_the_new_settings() -> None:
    # Without pool_size, pool_stride and padding_mode a CNN is built exactly as before: 2x2 windows moved
    # by 2 and zero padding, so existing studies train the same networks.
    torch.manual_seed(0)
    before = CNN(_hp())
    torch.manual_seed(0)
    after = CNN(_hp(pool_size=2, pool_stride=2, padding_mode="zeros"))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(before(x), after(x))
    assert [type(m).__name__ for m in before.features] == [type(m).__name__ for m in after.features]
