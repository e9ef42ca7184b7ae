"""Pictures of every convolutional layer: one filter grid and one feature-map grid per layer, capped
for wide layers and deep models, with an index the report reads back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hpo.evaluation import _plots as plots


def test_every_convolutional_layer_gets_its_filters_and_feature_maps(tmp_path: Path) -> None:
    # Three convolutions (one with 3 inputs, one wide, one 1x1): the input picture, then two pictures
    # per layer in module order, saved with an index of captions in the same order.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 40, 1),
        nn.Flatten(),
    )
    pictures = plots.conv_pictures(model, torch.randn(3, 8, 8), label="trial 1", image_name="validation image 0")
    assert [p.file for p in pictures] == [
        "input.png",
        "layer01-0-filters.png",
        "layer01-0-feature-maps.png",
        "layer02-2-filters.png",
        "layer02-2-feature-maps.png",
        "layer03-4-filters.png",
        "layer03-4-feature-maps.png",
    ]
    captions = [p.caption for p in pictures]
    assert "all 8 filters" in captions[1]
    assert "32 of 64 channels, 8x8" in captions[4]  # feature maps of the wide layer: its first 32
    assert "32 of 40 filters (rows) x 16 of 64 input channels (columns)" in captions[5]
    saved = plots.save_conv_pictures(pictures, tmp_path / "conv")
    index = json.loads((tmp_path / "conv" / plots.CONV_INDEX).read_text())
    assert [e["file"] for e in index] == saved == [p.file for p in pictures]
    assert all((tmp_path / "conv" / name).read_bytes()[:4] == b"\x89PNG" for name in saved)


def test_feature_maps_are_the_layer_outputs_for_the_image() -> None:
    # The mosaic tiles are each channel of the convolution's output, scaled to 0..1.
    conv = nn.Conv2d(3, 2, 3)
    image = torch.randn(3, 6, 6)
    figure, shown = plots.layer_feature_maps(conv(image[None])[0].detach().numpy(), title="t")
    mosaic = figure.axes[0].images[0].get_array()
    expected = conv(image[None])[0].detach().numpy()
    first = (expected[0] - expected[0].min()) / (expected[0].max() - expected[0].min())
    assert abs(mosaic[:4, :4] - first).max() < 1e-6 and shown == "all 2 channels, 4x4"


def test_deep_models_show_evenly_spaced_layers_including_first_and_last() -> None:
    model = nn.Sequential(*[nn.Conv2d(2, 2, 1) for _ in range(50)])
    layers, total = plots.conv_layers(model)
    names = [name for name, _ in layers]
    assert total == 50 and len(layers) == plots.MAX_CONV_LAYERS
    assert names[0] == "0" and names[-1] == "49" and len(set(names)) == len(names)


def test_models_without_convolutions_get_no_pictures(tmp_path: Path) -> None:
    assert (
        plots.conv_pictures(
            nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(3, 2, 2), label="x", image_name="y"
        )
        == []
    )
    assert plots.save_conv_pictures([], tmp_path / "conv") == [] and not (tmp_path / "conv").exists()
