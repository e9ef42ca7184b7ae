"""Pieces shared by every model family: activations by name and weight initialisation."""

from __future__ import annotations

from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; accepted: {', '.join(_ACTIVATIONS)}") from None


def init_weights(model: nn.Module, scheme: str, *, nonlinearity: str = "relu") -> nn.Module:
    """Kaiming (He) or Xavier (Glorot) init of linear and conv weights; `default` keeps PyTorch's."""
    if scheme == "default":
        return model
    gain_name = "leaky_relu" if nonlinearity == "leaky_relu" else ("tanh" if nonlinearity == "tanh" else "relu")
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
