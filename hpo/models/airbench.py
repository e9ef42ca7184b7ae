"""An airbench-style CIFAR network (Keller Jordan's airbench94): a 2x2 patch-whitening stem and three
BN conv blocks, fast and strong for its size.

Stem: a 2x2 convolution with ``2 x 3 x 2 x 2 = 24`` output channels (no padding: 32 -> 31), then GELU.
With ``whiten: true`` its weights are frozen to the whitening transform of 2x2 patches of the trial's
own training images (eigenvectors of their covariance scaled by 1/sqrt(eigenvalue), each filter with
its negation), set by :meth:`Airbench.init_whitening`; with ``whiten: false`` it is an ordinary learned
convolution. Block ``i``: conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU, with widths
``round(64 s) / round(256 s) / round(256 s)`` for ``width_scale`` s (0.5: 32/128/128). Pooling follows
the first convolution, as in airbench: the second convolution runs at half resolution, a quarter of the
work. Then a 3x3 max-pool to 1x1, a linear classifier without bias and airbench's 1/9 output scale
(which keeps logits small at the large learning rates Nesterov SGD wants here).

With ``identity_init: true`` each block convolution starts as airbench's partial identity: its first
``in_channels`` filters are Dirac kernels (filter ``i`` passes input channel ``i`` through unchanged), the
rest keep PyTorch's random init. The net then starts close to "stem features, pooled", and a short
schedule spends its first epochs refining useful features rather than undoing random ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

BASE_WIDTHS = (64, 256, 256)
PATCH = 2
STEM_CHANNELS = 2 * 3 * PATCH * PATCH
OUTPUT_SCALE = 1 / 9
WHITENING_EPS = 5e-4  # added to the eigenvalues, as airbench does: the flattest directions are not blown up
WHITENING_IMAGES = 5000  # images the patch covariance is estimated from (airbench's choice)


def block_widths(width_scale: float) -> tuple[int, int, int]:
    """The three blocks' channels for `width_scale` (at least 1 each)."""
    first, second, third = (max(1, round(base * width_scale)) for base in BASE_WIDTHS)
    return first, second, third


def whitening_filters(images: torch.Tensor, *, eps: float = WHITENING_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(filters 24 x 3 x 2 x 2, eigenvalues 12) whitening the 2x2 patches of `images` (N x 3 x H x W float).

    The 12 eigenvectors of the patches' (uncentered) covariance, each divided by sqrt(eigenvalue + eps)
    so that a patch's projections have unit variance, followed by the same 12 negated (GELU keeps both signs).
    """
    x = images.float()
    patches = F.unfold(x, kernel_size=PATCH).transpose(1, 2).reshape(-1, 3 * PATCH * PATCH).double()
    covariance = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, 3, PATCH, PATCH)
    return torch.cat([filters, -filters]).float(), eigenvalues.float()


@torch.no_grad()
def identity_init_(conv: nn.Conv2d) -> None:
    """Make the first ``min(out, in)`` filters of `conv` Dirac kernels: output channel i copies input channel i."""
    shared = min(conv.out_channels, conv.in_channels)
    nn.init.dirac_(conv.weight[:shared, :shared])
    conv.weight[:shared, shared:].zero_()


class ConvBlock(nn.Sequential):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, *, identity_init: bool = False) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )
        if identity_init:
            for layer in self:
                if isinstance(layer, nn.Conv2d):
                    identity_init_(layer)


class Airbench(nn.Module):
    def __init__(self, hp: dict[str, Any], *, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError(f"the airbench model takes RGB images (3 channels), got {in_channels}")
        self.whiten = bool(hp["whiten"])
        self.stem = nn.Conv2d(in_channels, STEM_CHANNELS, PATCH, padding=0, bias=True)
        if self.whiten:
            self.stem.weight.requires_grad_(False)  # set once from the training images, then frozen
        widths = block_widths(float(hp["width_scale"]))
        blocks: list[nn.Module] = []
        previous = STEM_CHANNELS
        identity_init = bool(hp.get("identity_init", False))
        for width in widths:
            blocks.append(ConvBlock(previous, width, identity_init=identity_init))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.MaxPool2d(3)  # 31 -> 15 -> 7 -> 3 after the blocks, then 1
        self.head = nn.Linear(previous, num_classes, bias=False)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the frozen stem to whiten 2x2 patches of `images` (the trial's training images, scaled as the
        model sees them; the first WHITENING_IMAGES are used). A no-op with ``whiten: false``."""
        if not self.whiten:
            return
        filters, _ = whitening_filters(images[:WHITENING_IMAGES].to(self.stem.weight.device))
        self.stem.weight.copy_(filters)
        assert self.stem.bias is not None  # built with bias=True
        self.stem.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.stem(x))
        x = self.pool(self.blocks(x)).flatten(1)
        return self.head(x) * OUTPUT_SCALE


__all__ = [
    "BASE_WIDTHS",
    "OUTPUT_SCALE",
    "WHITENING_EPS",
    "Airbench",
    "block_widths",
    "identity_init_",
    "whitening_filters",
]
