"""Pixel scaling: unit range, centering and standardization, each against its definition."""

from __future__ import annotations

import pytest
import torch

from hpo.data.cifar10 import MEAN, STD
from hpo.objectives.cifar10._model import normalize
from hpo.training.pixels import scale_pixels

MEANS, STDS = (0.25, 0.5, 0.75), (0.1, 0.2, 0.4)


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (4, 3, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_unit_scaling_maps_pixels_to_zero_one() -> None:
    x = _images()
    assert torch.allclose(scale_pixels(x, "unit", mean=MEANS, std=STDS), x.float() / 255)
    assert float(
        scale_pixels(
            torch.tensor([[[[0, 255]]]], dtype=torch.uint8).expand(1, 3, 1, 2), "unit", mean=MEANS, std=STDS
        ).max()
    ) == pytest.approx(1.0)


def test_centering_subtracts_the_channel_mean_and_keeps_the_scale() -> None:
    x = _images()
    expected = x.float() / 255 - torch.tensor(MEANS).view(1, 3, 1, 1)
    assert torch.allclose(scale_pixels(x, "center", mean=MEANS, std=STDS), expected, atol=1e-6)


def test_standardization_divides_by_the_channel_std_too() -> None:
    x = _images()
    expected = (x.float() / 255 - torch.tensor(MEANS).view(1, 3, 1, 1)) / torch.tensor(STDS).view(1, 3, 1, 1)
    assert torch.allclose(scale_pixels(x, "standardize", mean=MEANS, std=STDS), expected, atol=1e-5)


def test_standardization_is_bit_for_bit_the_cifar10_objective_s_normalize() -> None:
    # The default must reproduce today's inputs exactly, memory layout included.
    x = _images()
    ours = scale_pixels(x, "standardize", mean=MEAN, std=STD)
    assert torch.equal(ours, normalize(x, {"mean": list(MEAN), "std": list(STD)}))
    assert ours.is_contiguous(memory_format=torch.channels_last)


def test_unknown_scaling_is_refused() -> None:
    with pytest.raises(ValueError, match="accepted: standardize, unit, center"):
        scale_pixels(_images(), "minmax", mean=MEANS, std=STDS)
