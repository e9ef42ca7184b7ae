"""Network builders, one family per module, chosen by the `model` hyperparameter.

May import config (CNN shape rules) and the torch-free names of :mod:`hpo.objectives._fragments`; used by
the objectives' training code and by evaluation through them.
"""

from hpo.models._layers import POOLINGS, activation, init_weights, pooling
from hpo.models.airbench import Airbench
from hpo.models.backbones import BACKBONES, build_backbone, load_backbone_weights
from hpo.models.cnn import CNN
from hpo.models.mlp import MLP
from hpo.models.resnet import ResNet
from hpo.models.tta import TestTimeAugment, with_tta

__all__ = [
    "BACKBONES",
    "CNN",
    "MLP",
    "POOLINGS",
    "Airbench",
    "ResNet",
    "TestTimeAugment",
    "activation",
    "build_backbone",
    "init_weights",
    "load_backbone_weights",
    "pooling",
    "with_tta",
]
