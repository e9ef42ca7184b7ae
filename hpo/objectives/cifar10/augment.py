"""Whole-batch image augmentation on the training device, with per-image randomness drawn as tensors.

Every transform takes a batch ``B x C x H x W`` (uint8 in 0..255 or float in 0..1), draws one random
draw per image with the trial's generator, and returns a batch of the same dtype: random translation
(a crop of the reflect-padded image), horizontal and vertical flips, cutout, colour jitter, additive
Gaussian noise, and the geometric warps rotation, zoom and shear (one resampling of the batch when
several are on). Nothing loops over images in Python, so the cost per batch is a handful of tensor ops
(airbench-style).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

# ITU-R 601-2 luma, the weights of torchvision's rgb_to_grayscale. torchvision.transforms.v2 draws one
# random parameter per call (the same for the whole batch), so per-image randomness is done here with
# tensors; importing torchvision just for this would add seconds to every `hpo` start.
_LUMA = (0.299, 0.587, 0.114)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W float -> B x 1 x H x W luma."""
    return x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]


def _uniform(n: int, low: float, high: float, *, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=like.device) * (high - low) + low


def _max_value(x: torch.Tensor) -> float:
    return 255.0 if x.dtype == torch.uint8 else 1.0


def _restore(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Back to the input's dtype after float arithmetic (rounded and clamped for uint8)."""
    if dtype == torch.uint8:
        return x.round_().clamp_(0, 255).to(torch.uint8)
    return x.to(dtype)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside 0..size-1 mirrored back inside, as reflect padding does."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def random_translate(x: torch.Tensor, pad: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to `pad` pixels each way, filling by reflection.

    The same as RandomCrop(size, padding=pad, padding_mode="reflect"), done with two gathers.
    """
    b, c, h, w = x.shape
    if not 0 < pad < min(h, w):
        raise ValueError(f"augment_crop must be between 0 and {min(h, w) - 1} pixels, got {pad}")
    shifts = torch.randint(-pad, pad + 1, (2, b, 1), generator=generator, device=x.device)
    rows = _reflect(torch.arange(h, device=x.device) + shifts[0], h)  # b x h
    cols = _reflect(torch.arange(w, device=x.device) + shifts[1], w)  # b x w
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _flip_some(x: torch.Tensor, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(dim), x)


def random_flip(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the images left to right."""
    return _flip_some(x, -1, generator)


def random_vflip(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Turn a random half of the images upside down (mirror top to bottom): only for data where that
    still shows the same class, e.g. aerial or microscope images, not digits or street scenes."""
    return _flip_some(x, -2, generator)


def cutout(
    x: torch.Tensor, size: int, *, fill: Sequence[float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Erase one `size` x `size` square per image (centre anywhere, clipped at the border) to `fill`.

    `fill` is per channel in 0..1 (the dataset mean, so an erased patch centers or standardizes to zero).
    """
    b, c, h, w = x.shape
    if not 0 < size <= min(h, w):
        raise ValueError(f"augment_cutout must be between 0 and {min(h, w)} pixels, got {size}")
    top = torch.randint(0, h, (b, 1), generator=generator, device=x.device) - size // 2
    left = torch.randint(0, w, (b, 1), generator=generator, device=x.device) - size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size)  # b x h
    in_cols = (cols >= left) & (cols < left + size)  # b x w
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    value = torch.tensor(fill, device=x.device, dtype=torch.float32) * _max_value(x)
    value = (value.round() if x.dtype == torch.uint8 else value).to(x.dtype).view(1, c, 1, 1)
    return torch.where(mask, value, x)


def colour_jitter(x: torch.Tensor, strength: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast and saturation, each a factor in [1 - strength, 1 + strength] per image.

    Brightness and contrast fold into one affine map per image and the result is clamped once, which
    saves passes over the batch (torchvision clamps after each step; the difference is only at the extremes).
    """
    if not 0 < strength <= 1:
        raise ValueError(f"augment_jitter must be between 0 and 1, got {strength}")
    dtype, top = x.dtype, _max_value(x)
    b = x.shape[0]
    low, high = max(0.0, 1 - strength), 1 + strength
    brightness, contrast, saturation = _uniform(3 * b, low, high, like=x, generator=generator).view(3, b, 1, 1, 1)
    y = x.to(torch.float32, copy=True)  # the steps below work in place; never on the caller's batch
    mean = _grayscale(y).mean(dim=(1, 2, 3), keepdim=True)
    y = y.mul_(brightness * contrast).add_(brightness * mean * (1 - contrast))  # contrast about the brightened mean
    gray = _grayscale(y)
    y = y.sub_(gray).mul_(saturation).add_(gray).clamp_(0, top)
    return _restore(y, dtype)


def gaussian_noise(x: torch.Tensor, std: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add independent Gaussian noise of standard deviation `std` (a share of the full 0..1 range) to
    every pixel, then clamp to the valid range."""
    if not 0 < std <= 1:
        raise ValueError(f"augment_noise must be between 0 and 1, got {std}")
    dtype, top = x.dtype, _max_value(x)
    noise = torch.randn(x.shape, generator=generator, device=x.device).mul_(std * top)
    return _restore(noise.add_(x).clamp_(0, top), dtype)


def _check_warp(rotation: float, zoom: float, shear: float) -> None:
    if rotation and not 0 < rotation <= 180:
        raise ValueError(f"augment_rotation must be between 0 and 180 degrees, got {rotation}")
    if zoom and not 0 < zoom < 1:
        raise ValueError(f"augment_zoom must be between 0 and 1 (a scale factor in [1 - zoom, 1 + zoom]), got {zoom}")
    if shear and not 0 < shear <= 45:
        raise ValueError(f"augment_shear must be between 0 and 45 degrees, got {shear}")


def _warp_matrices(
    n: int, *, rotation: float, zoom: float, shear: float, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """n x 2 x 2 matrices that map output to input coordinates (affine_grid's convention): a rotation by
    an angle in [-rotation, rotation] degrees, a scaling by 1 / s for a magnification s in
    [1 - zoom, 1 + zoom], and a horizontal shear by an angle in [-shear, shear] degrees, in that order.
    Only the warps switched on draw random numbers."""
    matrices: list[torch.Tensor] = []
    if rotation:
        angles = _uniform(n, -rotation, rotation, like=like, generator=generator) * (math.pi / 180)
        cos, sin = angles.cos(), angles.sin()
        matrices.append(torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1))
    if zoom:
        shrink = 1 / _uniform(n, 1 - zoom, 1 + zoom, like=like, generator=generator)
        zero = torch.zeros_like(shrink)
        matrices.append(torch.stack([torch.stack([shrink, zero], 1), torch.stack([zero, shrink], 1)], 1))
    if shear:
        slope = (_uniform(n, -shear, shear, like=like, generator=generator) * (math.pi / 180)).tan()
        one, zero = torch.ones_like(slope), torch.zeros_like(slope)
        matrices.append(torch.stack([torch.stack([one, slope], 1), torch.stack([zero, one], 1)], 1))
    combined = matrices[0]
    for matrix in matrices[1:]:
        combined = combined @ matrix
    return combined


def random_warp(
    x: torch.Tensor,
    *,
    rotation: float = 0.0,
    zoom: float = 0.0,
    shear: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate, zoom and shear each image about its centre by its own random amounts, in one bilinear
    resampling of the whole batch (edges filled by reflection)."""
    _check_warp(rotation, zoom, shear)
    if not (rotation or zoom or shear):
        return x
    dtype = x.dtype
    linear = _warp_matrices(x.shape[0], rotation=rotation, zoom=zoom, shear=shear, like=x, generator=generator)
    theta = torch.cat([linear, torch.zeros_like(linear[:, :, :1])], 2)  # no translation
    y = x.float()
    grid = F.affine_grid(theta, list(y.shape), align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _restore(y, dtype)


def random_rotation(x: torch.Tensor, degrees: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image by an angle in [-degrees, degrees] about its centre (bilinear, reflected edges)."""
    return random_warp(x, rotation=degrees, generator=generator)


def random_zoom(x: torch.Tensor, amount: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Magnify each image about its centre by a factor in [1 - amount, 1 + amount] (below 1 it shrinks,
    and the border is filled by reflection)."""
    return random_warp(x, zoom=amount, generator=generator)


def random_shear(x: torch.Tensor, degrees: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shear each image horizontally by an angle in [-degrees, degrees]: rows slide sideways in
    proportion to their height above or below the centre."""
    return random_warp(x, shear=degrees, generator=generator)


@dataclass(frozen=True)
class BatchAugment:
    """The augmentations a trial's hyperparameters switch on, applied in a fixed order to each batch."""

    flip: bool = False
    crop: int = 0  # pixels of translation (crop padding); 0 = off
    cutout: int = 0  # side of the erased square; 0 = off
    jitter: float = 0.0  # colour jitter strength; 0 = off
    rotation: float = 0.0  # maximum degrees; 0 = off
    fill: tuple[float, ...] = (0.5, 0.5, 0.5)  # cutout value per channel, in 0..1
    vflip: bool = False
    zoom: float = 0.0  # magnification in [1 - zoom, 1 + zoom]; 0 = off
    shear: float = 0.0  # maximum degrees of horizontal shear; 0 = off
    noise: float = 0.0  # standard deviation of additive Gaussian noise, share of the 0..1 range; 0 = off

    @classmethod
    def from_hyperparameters(cls, hp: Mapping[str, Any], *, fill: Sequence[float]) -> BatchAugment | None:
        """None when every augmentation is off, so the training loop skips the call entirely."""
        augment = cls(
            flip=bool(hp["augment_flip"]),
            crop=int(hp["augment_crop"] or 0),
            cutout=int(hp["augment_cutout"] or 0),
            jitter=float(hp["augment_jitter"] or 0.0),
            rotation=float(hp["augment_rotation"] or 0.0),
            fill=tuple(fill),
            vflip=bool(hp.get("augment_vflip")),
            zoom=float(hp.get("augment_zoom") or 0.0),
            shear=float(hp.get("augment_shear") or 0.0),
            noise=float(hp.get("augment_noise") or 0.0),
        )
        return augment if augment.active else None

    @property
    def active(self) -> bool:
        switches = (
            self.flip,
            self.crop,
            self.cutout,
            self.jitter,
            self.rotation,
            self.vflip,
            self.zoom,
            self.shear,
            self.noise,
        )
        return any(switches)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.crop:
            x = random_translate(x, self.crop, generator=generator)
        if self.flip:
            x = random_flip(x, generator=generator)
        if self.vflip:
            x = random_vflip(x, generator=generator)
        if self.rotation or self.zoom or self.shear:
            x = random_warp(x, rotation=self.rotation, zoom=self.zoom, shear=self.shear, generator=generator)
        if self.jitter:
            x = colour_jitter(x, self.jitter, generator=generator)
        if self.noise:
            x = gaussian_noise(x, self.noise, generator=generator)
        if self.cutout:
            x = cutout(x, self.cutout, fill=self.fill, generator=generator)
        return x


__all__ = [
    "BatchAugment",
    "colour_jitter",
    "cutout",
    "gaussian_noise",
    "random_flip",
    "random_rotation",
    "random_shear",
    "random_translate",
    "random_vflip",
    "random_warp",
    "random_zoom",
]
