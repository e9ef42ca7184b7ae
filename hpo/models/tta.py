"""Test-time augmentation: a classifier that, in evaluation mode, averages its logits over augmented views.

``flip``: the image and its mirror image, half each. ``flip_translate`` (airbench's level 2): half the
flip average of the image, and half the mean of the flip averages of the image shifted by one pixel
up-left and down-right (reflect padding). In training mode the wrapped network runs unchanged, so the
same module trains, validates and tests: the validation score a study ranks trials by is the score the
test will see. Inputs are the float images the network takes (mirroring and shifting commute with the
per-channel pixel scaling).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hpo.objectives._fragments import TTA_MODES


def _flip_average(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (net(x) + net(x.flip(-1)))


def shifted_views(x: torch.Tensor, pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` moved by `pixels` towards the bottom-right and towards the top-left, edges filled by reflection."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    return padded[..., :h, :w], padded[..., 2 * pixels : 2 * pixels + h, 2 * pixels : 2 * pixels + w]


def tta_logits(net: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The averaged logits `mode` names (see the module docstring)."""
    if mode == "none":
        return net(x)
    if mode == "flip":
        return _flip_average(net, x)
    if mode == "flip_translate":
        first, second = shifted_views(x)
        return 0.5 * _flip_average(net, x) + 0.25 * (_flip_average(net, first) + _flip_average(net, second))
    raise ValueError(f"unknown tta {mode!r}; accepted: {', '.join(TTA_MODES)}")


class TestTimeAugment(nn.Module):
    """`net` with test-time augmentation `mode` in evaluation mode (state dict keys gain the prefix `net.`)."""

    __test__ = False  # not a pytest test class

    def __init__(self, net: nn.Module, mode: str) -> None:
        super().__init__()
        if mode not in TTA_MODES or mode == "none":
            raise ValueError(f"unknown tta {mode!r}; accepted: {', '.join(m for m in TTA_MODES if m != 'none')}")
        self.net = net
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) if self.training else tta_logits(self.net, x, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def with_tta(net: nn.Module, mode: str) -> nn.Module:
    """`net` wrapped for `mode`, or `net` itself for ``none``."""
    return net if mode == "none" else TestTimeAugment(net, mode)


__all__ = ["TTA_MODES", "TestTimeAugment", "shifted_views", "tta_logits", "with_tta"]
