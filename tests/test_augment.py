"""Each whole-batch augmentation does what it says to every image, with its own randomness per image."""

from __future__ import annotations

import math

import pytest
import torch

from hpo.objectives.cifar10 import HYPERPARAMETERS
from hpo.objectives.cifar10.augment import (
    BatchAugment,
    colour_jitter,
    cutout,
    gaussian_noise,
    random_flip,
    random_rotation,
    random_shear,
    random_translate,
    random_vflip,
    random_warp,
    random_zoom,
)


def _batch(n: int = 64, *, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.float() / 255


def _reflect_shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """RandomCrop(32, padding=p, padding_mode='reflect') at offset (p + dy, p + dx), for checking."""
    pad = 4
    padded = torch.nn.functional.pad(image[None].float(), (pad, pad, pad, pad), mode="reflect")[0]
    return padded[:, pad + dy : pad + dy + 32, pad + dx : pad + dx + 32].to(image.dtype)


@pytest.mark.parametrize(("flip", "dim"), [(random_flip, -1), (random_vflip, -2)])
def test_flip_mirrors_some_images_and_keeps_the_others(flip: object, dim: int) -> None:
    # Every output is its input or its mirror image (left-right, or top-bottom for the vertical flip),
    # and a batch of 64 gets both.
    x = _batch()
    y = flip(x, generator=torch.Generator().manual_seed(1))  # type: ignore[operator]
    flipped = [bool(torch.equal(b, a.flip(dim))) for a, b in zip(x, y)]
    kept = [bool(torch.equal(b, a)) for a, b in zip(x, y)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_translate_is_a_reflect_padded_crop_per_image() -> None:
    # Each output equals the reflect-padded input cropped at some offset within the padding, and the
    # offsets differ between images.
    x = _batch(12)
    y = random_translate(x, 4, generator=torch.Generator().manual_seed(2))
    offsets = []
    for a, b in zip(x, y):
        matches = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if torch.equal(_reflect_shift(a, dy, dx), b)]
        assert matches, "output is not a crop of the padded input"
        offsets.append(matches[0])
    assert len(set(offsets)) > 3
    assert y.dtype == torch.uint8


def test_cutout_erases_one_square_per_image_to_the_fill() -> None:
    # Only pixels inside one square of at most size x size change, all channels to the fill value.
    x = torch.full((32, 3, 32, 32), 7, dtype=torch.uint8)
    y = cutout(x, 8, fill=(0.5, 0.25, 1.0), generator=torch.Generator().manual_seed(3))
    changed = (y != x).any(dim=1)  # N x H x W
    for mask, image in zip(changed, y):
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 8
        assert mask.sum() == len(rows) * len(cols)  # a solid rectangle (a square clipped at the border)
        assert image[:, mask].T.tolist()[0] == [128, 64, 255]
    corners = {(int(m.any(1).nonzero()[0]), int(m.any(0).nonzero()[0])) for m in changed}
    assert len(corners) > 5


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_colour_jitter_changes_colours_within_range(dtype: torch.dtype) -> None:
    # Colours change per image but stay in the valid range and dtype; a plain grey image stays grey
    # (jitter does not invent hue).
    x = _batch(16, dtype=dtype)
    y = colour_jitter(x, 0.4, generator=torch.Generator().manual_seed(4))
    assert y.dtype == dtype and y.shape == x.shape
    top = 255 if dtype == torch.uint8 else 1.0
    assert float(y.min()) >= 0 and float(y.max()) <= top
    assert not torch.equal(x, y)
    change = (y.float() - x.float()).abs().mean(dim=(1, 2, 3))
    assert change.std() > 0  # different factors per image
    grey = torch.full((4, 3, 32, 32), 100, dtype=torch.uint8)
    out = colour_jitter(grey, 0.4, generator=torch.Generator().manual_seed(5))
    assert (out.max(dim=1).values - out.min(dim=1).values).max() <= 1


def test_rotation_turns_images_about_the_centre() -> None:
    # A rotated image keeps its centre pixel region and moves its corners; angles differ per image.
    x = torch.zeros(8, 1, 32, 32)
    x[:, :, 14:18, :] = 1.0  # a horizontal bar through the centre
    y = random_rotation(x.expand(8, 3, 32, 32).contiguous(), 15, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(y[:, :, 15:17, 15:17], torch.ones(8, 3, 2, 2), atol=0.05)
    assert not torch.allclose(y, x.expand(8, 3, 32, 32))
    tilt = y[:, 0, :16, 0].sum(1) - y[:, 0, :16, 31].sum(1)  # bar height at the left vs right edge
    assert len({round(float(t), 2) for t in tilt}) == 8


def test_batch_augment_follows_the_hyperparameters() -> None:
    # All switches off -> no augmentation at all; each switch on -> its transform runs, dtype kept,
    # and the same generator seed gives the same batch.
    hp = HYPERPARAMETERS.resolve({})
    assert BatchAugment.from_hyperparameters(hp, fill=(0.5, 0.5, 0.5)) is None
    on = BatchAugment.from_hyperparameters(
        {
            **hp,
            "augment_flip": True,
            "augment_crop": 4,
            "augment_cutout": 8,
            "augment_jitter": 0.3,
            "augment_rotation": 10.0,
        },
        fill=(0.5, 0.5, 0.5),
    )
    assert on is not None and (on.flip, on.crop, on.cutout, on.jitter, on.rotation) == (True, 4, 8, 0.3, 10.0)
    x = _batch(16)
    first = on(x, torch.Generator().manual_seed(7))
    assert first.dtype == torch.uint8 and first.shape == x.shape and not torch.equal(first, x)
    assert torch.equal(first, on(x, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: random_translate(x, 40), "augment_crop"),
        (lambda x: cutout(x, 33, fill=(0, 0, 0)), "augment_cutout"),
        (lambda x: colour_jitter(x, 1.5), "augment_jitter"),
        (lambda x: random_rotation(x, 200), "augment_rotation"),
        (lambda x: random_zoom(x, 1.0), "augment_zoom"),
        (lambda x: random_shear(x, 60), "augment_shear"),
        (lambda x: gaussian_noise(x, 0), "augment_noise"),
    ],
)
def test_out_of_range_settings_name_the_hyperparameter(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(_batch(2))  # type: ignore[operator]


def _sample(image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Direct bilinear resampling of one C x H x W image: output pixel centre p (in [-1, 1] coordinates)
    takes the input at matrix @ p, with coordinates outside the image reflected back in."""
    _c, h, w = image.shape
    out = torch.empty_like(image)
    for i in range(h):
        for j in range(w):
            p = torch.tensor([(2 * j + 1) / w - 1, (2 * i + 1) / h - 1], dtype=torch.float64)
            qx, qy = (matrix.double() @ p).tolist()
            px, py = ((qx + 1) * w - 1) / 2, ((qy + 1) * h - 1) / 2  # pixel coordinates

            def reflect(v: float, n: int) -> float:
                v = abs(v + 0.5) % (2 * n)
                return (2 * n - v if v > n else v) - 0.5

            px, py = min(max(reflect(px, w), 0), w - 1), min(max(reflect(py, h), 0), h - 1)
            x0, y0 = int(px), int(py)
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            fx, fy = px - x0, py - y0
            out[:, i, j] = (
                image[:, y0, x0] * (1 - fx) * (1 - fy)
                + image[:, y0, x1] * fx * (1 - fy)
                + image[:, y1, x0] * (1 - fx) * fy
                + image[:, y1, x1] * fx * fy
            )
    return out


@pytest.mark.parametrize(("warp", "amount"), [("zoom", 0.3), ("shear", 20.0), ("rotation", 30.0)])
def test_each_warp_resamples_each_image_by_its_own_matrix(warp: str, amount: float) -> None:
    # Recompute each image's random factor from the same generator, build the matrix by hand (zoom:
    # 1/s on the diagonal, shear: tan(angle) above it, rotation: cos/sin) and resample directly: the
    # batch operation gives the same pixels, and the factors differ between images.
    x = torch.rand(4, 2, 9, 9, generator=torch.Generator().manual_seed(12))
    y = random_warp(x, **{warp: amount}, generator=torch.Generator().manual_seed(13))
    draws = torch.rand(4, generator=torch.Generator().manual_seed(13))
    for image, out, u in zip(x, y, draws.tolist()):
        if warp == "zoom":
            s = 1 - amount + 2 * amount * u
            matrix = torch.tensor([[1 / s, 0.0], [0.0, 1 / s]])
        else:
            angle = math.radians(-amount + 2 * amount * u)
            matrix = (
                torch.tensor([[1.0, math.tan(angle)], [0.0, 1.0]])
                if warp == "shear"
                else torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            )
        assert torch.allclose(out, _sample(image, matrix), atol=1e-4), warp
    assert len({round(float((b - a).abs().sum()), 3) for a, b in zip(x, y)}) == 4


def test_combined_warps_are_one_resampling_by_the_product_matrix() -> None:
    # Rotation, zoom and shear on together resample once by R @ Z @ S, the factors drawn in that order.
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(14))
    y = random_warp(x, rotation=10.0, zoom=0.2, shear=15.0, generator=torch.Generator().manual_seed(15))
    draws = torch.rand(9, generator=torch.Generator().manual_seed(15))
    for k, (image, out) in enumerate(zip(x, y)):
        a = math.radians(-10 + 20 * float(draws[k]))
        s = 0.8 + 0.4 * float(draws[3 + k])
        t = math.tan(math.radians(-15 + 30 * float(draws[6 + k])))
        rotate = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        matrix = rotate @ torch.tensor([[1 / s, 0.0], [0.0, 1 / s]]) @ torch.tensor([[1.0, t], [0.0, 1.0]])
        assert torch.allclose(out, _sample(image, matrix), atol=1e-4)


def test_noise_adds_gaussian_noise_of_the_given_spread_per_pixel() -> None:
    # On a mid-grey float batch the change is the generator's normal draws times std; for uint8 the
    # noise is in 0..255 units, rounded and clamped; every image gets different noise.
    x = torch.full((16, 3, 32, 32), 0.5)
    y = gaussian_noise(x, 0.1, generator=torch.Generator().manual_seed(16))
    expected = torch.randn(x.shape, generator=torch.Generator().manual_seed(16)) * 0.1 + 0.5
    assert torch.allclose(y, expected.clamp(0, 1), atol=1e-6)
    assert abs(float((y - x).std()) - 0.1) < 0.005
    u = gaussian_noise(_batch(4), 0.05, generator=torch.Generator().manual_seed(17))
    assert u.dtype == torch.uint8 and not torch.equal(u[0], _batch(4)[0])


def test_new_augmentations_follow_the_hyperparameters_and_old_ones_are_untouched() -> None:
    # Each new switch turns its transform on; with them all off a batch is augmented exactly as before
    # (the new transforms draw no random numbers then), so existing studies are reproduced.
    hp = HYPERPARAMETERS.resolve({})
    new = {"augment_vflip": True, "augment_zoom": 0.2, "augment_shear": 10.0, "augment_noise": 0.05}
    on = BatchAugment.from_hyperparameters({**hp, **new}, fill=(0.5, 0.5, 0.5))
    assert on is not None and (on.vflip, on.zoom, on.shear, on.noise) == (True, 0.2, 10.0, 0.05)
    x = _batch(8)
    assert not torch.equal(on(x, torch.Generator().manual_seed(18)), x)
    old = {**hp, "augment_flip": True, "augment_rotation": 10.0}
    with_off = BatchAugment.from_hyperparameters(
        {**old, **{k: type(v)() for k, v in new.items()}}, fill=(0.5, 0.5, 0.5)
    )
    plain = BatchAugment.from_hyperparameters(old, fill=(0.5, 0.5, 0.5))
    assert with_off is not None and plain is not None
    assert torch.equal(with_off(x, torch.Generator().manual_seed(19)), plain(x, torch.Generator().manual_seed(19)))
