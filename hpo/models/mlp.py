"""A multilayer perceptron: depth, width, activation, dropout and batch norm from the hyperparameters."""

from __future__ import annotations

from typing import Any

from torch import nn

from hpo.models._layers import activation, init_weights


class MLP(nn.Sequential):
    """Flatten -> [Linear -> (BatchNorm) -> activation -> (Dropout)] x hidden_layers -> Linear."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden_layers: int = 2,
        width: int = 64,
        activation_name: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for _ in range(hidden_layers):
            layers.append(nn.Linear(size, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation(activation_name))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            size = width
        layers.append(nn.Linear(size, out_features))
        super().__init__(*layers)

    @classmethod
    def from_hyperparameters(cls, hp: dict[str, Any], *, in_features: int, out_features: int) -> MLP:
        model = cls(
            in_features,
            out_features,
            hidden_layers=int(hp["hidden_layers"]),
            width=int(hp["width"]),
            activation_name=str(hp["activation"]),
            dropout=float(hp["dropout"]),
            batch_norm=bool(hp["batch_norm"]),
        )
        return init_weights(model, str(hp["init"]), nonlinearity=str(hp["activation"]))
