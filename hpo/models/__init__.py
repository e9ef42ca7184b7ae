"""Network builders, one family per module, chosen by the `model` hyperparameter."""

from hpo.models._layers import activation, init_weights
from hpo.models.mlp import MLP

__all__ = ["MLP", "activation", "init_weights"]
