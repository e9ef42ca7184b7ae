"""The airbench-style net: block widths, shapes, the frozen 2x2 patch-whitening stem checked against a
direct computation (NumPy's eigendecomposition of the patch covariance, patches gathered by loops), and the
partial identity init of the block convolutions checked on a feature map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hpo.models import Airbench
from hpo.models.airbench import STEM_CHANNELS, WHITENING_EPS, block_widths, identity_init_, whitening_filters
from hpo.objectives.cifar10 import HYPERPARAMETERS


def _patches_by_loops(images: np.ndarray) -> np.ndarray:
    """Every 2x2 patch of every image, flattened channel-major (as a 2x2 convolution sees it)."""
    n, _c, h, w = images.shape
    rows = [
        images[i, :, y : y + 2, x : x + 2].reshape(-1) for i in range(n) for y in range(h - 1) for x in range(w - 1)
    ]
    return np.stack(rows)


def test_whitening_filters_match_a_direct_eigendecomposition_and_whiten_the_patches() -> None:
    # The filters are the covariance's eigenvectors over sqrt(eigenvalue + eps), then the same negated;
    # the stem's first 12 outputs of the training patches then have (nearly) identity covariance.
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 3))
    images = np.einsum("dc,nchw->ndhw", mixing, rng.normal(size=(6, 3, 6, 6)))  # correlated channels
    filters, eigenvalues = whitening_filters(torch.tensor(images, dtype=torch.float32))

    patches = _patches_by_loops(images)
    covariance = patches.T @ patches / len(patches)
    expected_values, vectors = np.linalg.eigh(covariance)
    np.testing.assert_allclose(eigenvalues.numpy(), expected_values, rtol=1e-4, atol=1e-6)
    got = filters.reshape(STEM_CHANNELS, -1).numpy()
    expected = vectors.T / np.sqrt(expected_values + WHITENING_EPS)[:, None]
    for k in range(12):  # an eigenvector's sign is arbitrary
        sign = np.sign(got[k] @ expected[k])
        np.testing.assert_allclose(sign * got[k], expected[k], rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(got[12:], -got[:12])

    outputs = (
        F.conv2d(torch.tensor(images, dtype=torch.float32), filters[:12])
        .permute(0, 2, 3, 1)
        .reshape(-1, 12)
        .double()
        .numpy()
    )
    whitened = outputs.T @ outputs / len(outputs)
    np.testing.assert_allclose(whitened, np.diag(expected_values / (expected_values + WHITENING_EPS)), atol=1e-3)


@pytest.mark.parametrize(("scale", "widths"), [(0.5, (32, 128, 128)), (1.0, (64, 256, 256)), (0.0625, (4, 16, 16))])
def test_block_widths_scale_airbench94s(scale: float, widths: tuple[int, int, int]) -> None:
    assert block_widths(scale) == widths
    model = Airbench(HYPERPARAMETERS.resolve({"model": "airbench", "width_scale": scale}))
    assert [block[0].out_channels for block in model.blocks] == list(widths)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_whitened_stem_is_set_from_the_given_images_and_stays_frozen_while_training() -> None:
    # init_whitening sets the stem from the images it is given; a training step leaves the weights
    # alone (no gradient) while the rest of the net learns. whiten: false makes it an ordinary layer.
    torch.manual_seed(0)
    images = torch.randn(8, 3, 32, 32)
    model = Airbench(HYPERPARAMETERS.resolve({"model": "airbench", "width_scale": 0.0625}))
    model.init_whitening(images)
    torch.testing.assert_close(model.stem.weight, whitening_filters(images)[0])
    stem, head = model.stem.weight.clone(), model.head.weight.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(images), torch.arange(8) % 10).backward()
    optimizer.step()
    assert torch.equal(model.stem.weight, stem) and not torch.equal(model.head.weight, head)

    learned = Airbench(HYPERPARAMETERS.resolve({"model": "airbench", "width_scale": 0.0625, "whiten": False}))
    before = learned.stem.weight.clone()
    learned.init_whitening(images)
    assert learned.stem.weight.requires_grad and torch.equal(learned.stem.weight, before)


@pytest.mark.parametrize(("in_channels", "out_channels"), [(3, 5), (4, 4), (6, 2)])
def test_identity_init_passes_the_first_channels_through_and_keeps_the_rest_random(
    in_channels: int, out_channels: int
) -> None:
    # The first min(in, out) output channels of an identity-initialised 3x3 convolution (padding 1)
    # equal the matching input channels exactly; any further output channels are still random filters.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    random_filters = conv.weight.detach().clone()
    identity_init_(conv)
    x = torch.randn(2, in_channels, 7, 7)
    shared = min(in_channels, out_channels)
    torch.testing.assert_close(conv(x)[:, :shared], x[:, :shared])
    torch.testing.assert_close(conv.weight[shared:], random_filters[shared:])


def test_identity_init_is_a_hyperparameter_of_the_blocks_and_off_by_default() -> None:
    # identity_init: true sets every block convolution (both per block) to the partial identity;
    # the default keeps PyTorch's random init, so studies written before the flag train as they did.
    torch.manual_seed(0)
    on = Airbench(HYPERPARAMETERS.resolve({"model": "airbench", "width_scale": 0.0625, "identity_init": True}))
    off = Airbench(HYPERPARAMETERS.resolve({"model": "airbench", "width_scale": 0.0625}))
    convs_on = [m for m in on.blocks.modules() if isinstance(m, torch.nn.Conv2d)]
    convs_off = [m for m in off.blocks.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs_on) == 6
    for conv_on, conv_off in zip(convs_on, convs_off, strict=True):
        shared = min(conv_on.in_channels, conv_on.out_channels)
        dirac = torch.zeros(shared, shared, 3, 3)
        dirac[range(shared), range(shared), 1, 1] = 1
        assert torch.equal(conv_on.weight[:shared, :shared], dirac)
        assert not torch.equal(conv_off.weight[:shared, :shared], dirac)
