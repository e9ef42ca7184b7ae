"""Test-time augmentation: the averaged logits checked against a direct computation on small tensors
(mirror and shifts done by index loops), and no change in training mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo.models import TestTimeAugment, with_tta


class _Probe(nn.Module):
    """A fixed, position-dependent linear map, so every view gives different logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _mirror(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    width = x.shape[-1]
    for col in range(width):
        out[..., col] = x[..., width - 1 - col]
    return out


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[y, x] = in[reflect(y - dy), reflect(x - dx)]: the content moves by (dy, dx)."""
    h, w = x.shape[-2:]

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else 2 * (n - 1) - i if i > n - 1 else i

    out = torch.empty_like(x)
    for y in range(h):
        for col in range(w):
            out[..., y, col] = x[..., reflect(y - dy, h), reflect(col - dx, w)]
    return out


@pytest.fixture
def probe() -> nn.Module:
    torch.manual_seed(0)
    return _Probe()


def test_flip_averages_the_image_and_its_mirror(probe: nn.Module) -> None:
    x = torch.randn(5, 2, 3, 3)
    model = TestTimeAugment(probe, "flip").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), (probe(x) + probe(_mirror(x))) / 2)


def test_flip_translate_adds_one_pixel_shifts_both_ways(probe: nn.Module) -> None:
    # airbench's level 2: half the flip average of the image, a quarter each of the flip averages of the
    # image moved one pixel down-right and one pixel up-left (reflected edges).
    x = torch.randn(5, 2, 3, 3)

    def flip_mean(v: torch.Tensor) -> torch.Tensor:
        return (probe(v) + probe(_mirror(v))) / 2

    expected = 0.5 * flip_mean(x) + 0.25 * flip_mean(_shift(x, 1, 1)) + 0.25 * flip_mean(_shift(x, -1, -1))
    with torch.no_grad():
        torch.testing.assert_close(TestTimeAugment(probe, "flip_translate").eval()(x), expected)


def test_training_mode_and_none_leave_the_network_alone(probe: nn.Module) -> None:
    x = torch.randn(5, 2, 3, 3)
    torch.testing.assert_close(TestTimeAugment(probe, "flip").train()(x), probe(x))
    assert with_tta(probe, "none") is probe
    with pytest.raises(ValueError, match="accepted: flip, flip_translate"):
        TestTimeAugment(probe, "rotate")
