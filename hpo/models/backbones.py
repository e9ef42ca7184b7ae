"""torchvision backbones adapted to 32x32 inputs, trained from scratch or from a local weights file.

Hub downloads are never attempted (``weights=None``): where internet is missing they would fail, so
transfer learning reads a state dict from ``backbone_weights`` (a path) instead. The adaptations keep
every pretrained tensor's shape, so ImageNet weights load into all layers but the new 10-class head:

- resnet18: stride-1 stem and no max-pool (32x32 stays 32x32 into the first stage);
- vgg11_bn: the convolutional features (five 2x2 pools take 32x32 to 1x1) and a 512 -> 10 classifier;
- mobilenet_v3_small, efficientnet_b0: a stride-1 first convolution (16x downsampling overall).

``freeze_backbone`` leaves only the head (``fc`` or ``classifier``) trainable.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpo.errors import UsageError

# The backbones this module builds, and the name of each one's classification head.
HEADS: dict[str, str] = {
    "resnet18": "fc",
    "vgg11_bn": "classifier",
    "mobilenet_v3_small": "classifier",
    "efficientnet_b0": "classifier",
}
BACKBONES: tuple[str, ...] = tuple(HEADS)


class VGG32(nn.Module):
    """VGG-11 with batch norm for 32x32 images; `features` keeps torchvision's layout and names."""

    def __init__(self, *, num_classes: int = 10, dropout: float = 0.0) -> None:
        from torchvision.models.vgg import cfgs, make_layers

        super().__init__()
        self.features = make_layers(cfgs["A"], batch_norm=True)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _stem_conv(model: nn.Module) -> nn.Conv2d:
    """The first convolution of a torchvision MobileNet/EfficientNet (``features[0][0]``)."""
    stem = model.get_submodule("features.0.0")
    assert isinstance(stem, nn.Conv2d)
    return stem


def build_backbone(name: str, hp: dict[str, Any], *, num_classes: int = 10) -> nn.Module:
    """The named backbone with a `num_classes` head, randomly initialised; frozen if hp says so."""
    import torchvision  # seconds to import: only when a backbone is really built

    dropout = float(hp["dropout"])
    model: nn.Module
    if name == "resnet18":
        resnet = torchvision.models.resnet18(weights=None, num_classes=num_classes)
        resnet.conv1.stride = (1, 1)  # 32x32 inputs: no stride-2 stem and no stem max-pool
        resnet.maxpool = nn.Identity()
        if dropout > 0:
            resnet.fc = nn.Sequential(nn.Dropout(dropout), resnet.fc)
        model = resnet
    elif name == "vgg11_bn":
        model = VGG32(num_classes=num_classes, dropout=dropout)
    elif name == "mobilenet_v3_small":
        model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes, dropout=dropout)
        _stem_conv(model).stride = (1, 1)
    elif name == "efficientnet_b0":
        model = torchvision.models.efficientnet_b0(weights=None, num_classes=num_classes, dropout=dropout)
        _stem_conv(model).stride = (1, 1)
    else:
        raise ValueError(f"unknown backbone {name!r}; accepted: {', '.join(BACKBONES)}")
    if hp.get("freeze_backbone"):
        head = HEADS[name]
        for parameter_name, parameter in model.named_parameters():
            parameter.requires_grad = parameter_name.startswith(head + ".")
    return model


def load_backbone_weights(model: nn.Module, path: str | Path, *, name: str) -> tuple[int, list[str]]:
    """Copy every tensor of the state dict at `path` whose name and shape fit `model`.

    Returns (tensors loaded, names skipped), e.g. an ImageNet checkpoint's 1000-class head. A missing
    or unreadable file, or one that fits nothing, is a UsageError naming `backbone_weights`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"backbone_weights: file not found: {path} (a local state dict; hub downloads are not used)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise UsageError(
            f"backbone_weights: {path} is not a PyTorch state dict "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"backbone_weights: {path} holds a {type(state).__name__}, not a state dict")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
    if not fitting:
        raise UsageError(f"backbone_weights: no tensor in {path} fits {name} (is it a {name} state dict?)")
    model.load_state_dict(fitting, strict=False)
    return len(fitting), sorted(set(state) - set(fitting))
