"""torchvision backbones on 32x32 inputs: shapes, parameter counts, local weights, freezing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from hpo.errors import UsageError
from hpo.models import BACKBONES, build_backbone, load_backbone_weights
from hpo.objectives.cifar10 import HYPERPARAMETERS
from hpo.training.loop import count_parameters

# torchvision's counts with a 10-class head (resnet18: 11,689,512 - 513,000 + 5,130), and VGG-11-BN's
# convolutional features (9,225,984) plus a 512 -> 10 classifier.
EXPECTED_PARAMETERS = {
    "resnet18": 11_181_642,
    "vgg11_bn": 9_231_114,
    "mobilenet_v3_small": 1_528_106,
    "efficientnet_b0": 4_020_358,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_forward_shape_and_parameter_count(name: str) -> None:
    # Ten logits for a 32x32 batch, with no hub download (weights=None).
    model = build_backbone(name, HYPERPARAMETERS.resolve({"model": name}))
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == EXPECTED_PARAMETERS[name]


def test_resnet18_keeps_32x32_into_the_first_stage() -> None:
    model = build_backbone("resnet18", HYPERPARAMETERS.resolve({"model": "resnet18"}))
    x = model.maxpool(model.relu(model.bn1(model.conv1(torch.zeros(1, 3, 32, 32)))))
    assert x.shape[-2:] == (32, 32)


def test_local_imagenet_weights_load_into_all_but_the_head(tmp_path: Path) -> None:
    # A torchvision-format state dict (1000-class head) fills every backbone tensor; only fc is skipped.
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_backbone("resnet18", HYPERPARAMETERS.resolve({"model": "resnet18"}))
    loaded, skipped = load_backbone_weights(model, path, name="resnet18")
    assert skipped == ["fc.bias", "fc.weight"]
    assert loaded == len(source.state_dict()) - 2
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_freeze_backbone_trains_only_the_head() -> None:
    model = build_backbone(
        "mobilenet_v3_small", HYPERPARAMETERS.resolve({"model": "mobilenet_v3_small", "freeze_backbone": True})
    )
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("classifier.") for name in trainable)


@pytest.mark.parametrize("content", [None, b"not a checkpoint", "unrelated"])
def test_bad_weights_files_name_backbone_weights(tmp_path: Path, content: object) -> None:
    # A missing file, a non-checkpoint, or a state dict of another network: one UsageError naming the field.
    path = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "unrelated":
        torch.save({"something.else": torch.zeros(3)}, path)
    model = build_backbone("resnet18", HYPERPARAMETERS.resolve({"model": "resnet18"}))
    with pytest.raises(UsageError, match=r"^backbone_weights: "):
        load_backbone_weights(model, path, name="resnet18")
