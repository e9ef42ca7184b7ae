"""Pixel scaling: how uint8 images become the float inputs a network sees.

- ``unit``: divide by 255, so pixels lie in [0, 1];
- ``center``: then subtract the per-channel mean of the training images (zero mean, range kept);
- ``standardize``: then also divide by the per-channel standard deviation (zero mean, unit variance).

`mean` and `std` are per channel in 0..1 units, measured on the training images only. The result is
float32 in channels_last memory order (faster convolutions on CUDA and on the CPU's oneDNN alike).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hpo.objectives._fragments import PIXEL_SCALINGS  # the names study files use, declared without torch


def scale_pixels(images: torch.Tensor, mode: str, *, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 scaled as `mode` says, in one pass over the batch after the convert.

    The offset and factor are folded to the 0..255 scale, so the result is (x - 255 mean) / (255 std)
    for `standardize` exactly as the CIFAR-10 objective has always computed it.
    """
    if mode not in PIXEL_SCALINGS:
        raise ValueError(f"unknown pixel_scaling {mode!r}; accepted: {', '.join(PIXEL_SCALINGS)}")
    x = images.contiguous(memory_format=torch.channels_last).float()  # reorder the 1-byte pixels, then convert
    if mode == "unit":
        return x.mul_(1 / 255)
    x = x.sub_(torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255)
    if mode == "center":
        return x.mul_(1 / 255)
    return x.mul_(1 / (torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255))


__all__ = ["PIXEL_SCALINGS", "scale_pixels"]
