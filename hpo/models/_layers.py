"""Pieces shared by every model family: activations and pooling by name, and weight initialisation."""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from hpo.config.cnn_shapes import POOLINGS

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
# The nonlinearity whose gain Kaiming/Xavier init uses for each activation (torch.nn.init.calculate_gain).
_M = TypeVar("_M", bound=nn.Module)
_Gain = Literal["relu", "leaky_relu", "tanh", "sigmoid"]
_GAINS: dict[str, _Gain] = {"leaky_relu": "leaky_relu", "tanh": "tanh", "sigmoid": "sigmoid"}


def activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; accepted: {', '.join(_ACTIVATIONS)}") from None


class MinPool2d(nn.Module):
    """The smallest value of each window: max pooling of the negated maps, negated back."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(-x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def pooling(kind: str, *, size: int = 2, stride: int | None = None) -> nn.Module | None:
    """A pooling layer over `size` x `size` windows moved by `stride` (None: the window size), or None
    for `none`. Sum pooling is average pooling with a divisor of 1; min pooling negates max pooling."""
    step = size if stride is None else stride
    if kind == "max":
        return nn.MaxPool2d(size, step)
    if kind == "avg":
        return nn.AvgPool2d(size, step)
    if kind == "sum":
        return nn.AvgPool2d(size, step, divisor_override=1)
    if kind == "min":
        return MinPool2d(size, step)
    if kind == "none":
        return None
    raise ValueError(f"unknown pooling {kind!r}; accepted: {', '.join(POOLINGS)}")


def init_weights(model: _M, scheme: str, *, nonlinearity: str = "relu") -> _M:
    """Kaiming (He) or Xavier (Glorot) init of linear and conv weights; `default` keeps PyTorch's."""
    if scheme == "default":
        return model
    gain_name = _GAINS.get(nonlinearity, "relu")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity=gain_name)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain(gain_name))
            else:
                raise ValueError(f"unknown init {scheme!r}; accepted: kaiming, xavier, default")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
