"""Network builders, one family per module, chosen by the `model` hyperparameter."""

from hpo.models._layers import POOLINGS, activation, init_weights, pooling
from hpo.models.backbones import BACKBONES, build_backbone, load_backbone_weights
from hpo.models.cnn import CNN
from hpo.models.mlp import MLP
from hpo.models.resnet import ResNet

__all__ = ["BACKBONES", "CNN", "MLP", "POOLINGS", "ResNet", "activation", "build_backbone", "init_weights", "load_backbone_weights", "pooling"]
