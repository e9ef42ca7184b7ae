"""Pooling by name (max, avg, sum, min, none) with any window and stride, and the sigmoid activation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpo.models import MLP, activation, init_weights, pooling


def _windows(x: torch.Tensor, size: int, stride: int) -> list[list[torch.Tensor]]:
    """Every size x size window of a 2-D map moved by stride, in rows: the direct definition of pooling."""
    h, w = x.shape
    return [
        [x[i : i + size, j : j + size] for j in range(0, w - size + 1, stride)] for i in range(0, h - size + 1, stride)
    ]


@pytest.mark.parametrize(("size", "stride"), [(2, None), (3, 2), (2, 1), (3, 3)])
@pytest.mark.parametrize(
    ("kind", "reduce"), [("max", torch.amax), ("avg", torch.mean), ("sum", torch.sum), ("min", torch.amin)]
)
def test_pooling_reduces_each_window_as_its_name_says(kind: str, reduce: object, size: int, stride: int | None) -> None:
    # On a 7x7 map with mixed signs, each output is the max / mean / sum / min of its window, windows
    # moved by the stride (the window size when no stride is given), for every channel.
    x = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    layer = pooling(kind, size=size, stride=stride)
    assert layer is not None
    out = layer(x)
    step = size if stride is None else stride
    for n in range(2):
        for c in range(3):
            expected = torch.tensor(
                [[float(reduce(window)) for window in row] for row in _windows(x[n, c], size, step)]
            )  # type: ignore[operator]
            assert torch.allclose(out[n, c], expected, atol=1e-5), (kind, n, c)


def test_sum_pooling_is_average_pooling_times_the_window() -> None:
    # The two differ by exactly the window area (here 2x2 = 4), and min pooling by a sign flip of max.
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(pooling("sum")(x), nn.AvgPool2d(2)(x) * 4)  # type: ignore[misc]
    assert torch.equal(pooling("min")(x), torch.tensor([[[[0.0, 2.0], [8.0, 10.0]]]]))  # type: ignore[misc]


def test_no_pooling_and_unknown_pooling() -> None:
    assert pooling("none") is None
    with pytest.raises(ValueError, match="accepted: max, avg, sum, min, none"):
        pooling("median")


def test_sigmoid_activation_and_its_init_gain() -> None:
    # sigmoid is an activation like the others; Xavier init uses its gain (1), not ReLU's (sqrt 2).
    x = torch.linspace(-4, 4, 9)
    assert torch.equal(activation("sigmoid")(x), torch.sigmoid(x))
    model = MLP(400, 400, hidden_layers=0, activation_name="sigmoid")
    torch.manual_seed(0)
    init_weights(model, "xavier", nonlinearity="sigmoid")
    bound = (6 / (400 + 400)) ** 0.5  # xavier_uniform with gain 1
    weight = model[-1].weight.detach()
    assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.95 * bound
