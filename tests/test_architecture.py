"""Architecture arithmetic without torch, and the CIFAR-10 objective's validation that rejects impossible
CNN search spaces."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch

from hpo.config import cnn_shapes as architecture
from hpo.config import parse_study
from hpo.errors import UsageError
from hpo.objectives.cifar10 import HYPERPARAMETERS as CIFAR10
from hpo.objectives.cifar10 import _space as cifar10_space


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation"),
    [
        (32, 3, 1, "same", 1),
        (32, 4, 1, "same", 2),
        (32, 5, 2, "same", 1),
        (32, 4, 2, "same", 1),
        (31, 3, 2, 0, 1),
        (32, 7, 3, 2, 2),
        (9, 3, 1, 0, 3),
    ],
)
def test_conv_output_size_matches_torch(size: int, kernel: int, stride: int, padding: Any, dilation: int) -> None:
    pad = architecture.conv_padding(kernel, stride=stride, padding=padding, dilation=dilation)
    conv = torch.nn.Conv2d(1, 1, kernel, stride=stride, padding=pad, dilation=dilation)
    expected = conv(torch.zeros(1, 1, size, size)).shape[-1]
    assert (
        architecture.conv_output_size(size, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
        == expected
    )


def test_architecture_and_config_import_no_torch() -> None:
    # Validation must stay instant: hpo.config, the architecture arithmetic and the built-in objectives'
    # declarations (with the CNN check) import no torch/optuna, even when a CIFAR-10 study is checked.
    code = (
        "import sys, hpo.config, hpo.config.cnn_shapes; "
        "hpo.config.parse_study({'name': 'c', 'objective': 'cifar10', 'fixed': {'conv_blocks': 4}}); "
        "hpo.config.parse_study({'name': 'b', 'objective': 'boston'}); "
        "assert not {'torch', 'optuna'} & set(sys.modules), sorted(m for m in sys.modules if m in ('torch', 'optuna'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _study(**changes: Any) -> dict[str, Any]:
    return {"name": "arch", "objective": "cifar10", **changes}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        # 6 blocks of max pooling are fine for 5 of their values but not for 6: the worst case counts.
        ({"params": {"conv_blocks": {"type": "int", "low": 2, "high": 6}}}, "params.conv_blocks", "block 6"),
        # stride 2 alone is fine with 3 blocks, pooling alone too; both together are not.
        (
            {
                "params": {
                    "stride": {"type": "int", "low": 1, "high": 2},
                    "pooling": {"type": "categorical", "choices": ["none", "max"]},
                }
            },
            "params.stride",
            "stride=2",
        ),
        (
            {"fixed": {"conv_blocks": 2, "kernel_size": 9, "padding": 0, "pooling": "none", "convs_per_block": 4}},
            "fixed.conv_blocks",
            "nothing",
        ),
        ({"fixed": {"pooling": "none", "global_pool": False, "filters": 128}}, "fixed.global_pool", "head inputs"),
        (
            {
                "params": {
                    "model": {"type": "categorical", "choices": ["mlp", "resnet"]},
                    "kernel_size": {"type": "int", "low": 3, "high": 4},
                }
            },
            "params.kernel_size",
            "odd",
        ),
        ({"fixed": {"augment_crop": 32}}, "fixed.augment_crop", "[0, 31]"),
    ],
)
def test_impossible_search_spaces_are_rejected_naming_the_field(
    changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(UsageError) as error:
        parse_study(_study(**changes), source="s.yaml")
    message = str(error.value)
    assert message.startswith(f"s.yaml: {field}: ") and words in message and "\n" not in message


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "params": {
                "conv_blocks": {"type": "int", "low": 1, "high": 5},
                "pooling": {"type": "categorical", "choices": ["max", "avg", "none"]},
            }
        },
        # A deep stack is fine when the model that would collapse is not among the choices.
        {"params": {"model": {"type": "categorical", "choices": ["mlp", "resnet"]}}, "fixed": {"conv_blocks": 8}},
        # Padding 4 offsets the widest 5x5 kernel at dilation 2; "same" keeps every size.
        {
            "params": {
                "kernel_size": {"type": "int", "low": 1, "high": 5},
                "dilation": {"type": "int", "low": 1, "high": 2},
                "padding": {"type": "categorical", "choices": [4, "same"]},
            }
        },
    ],
)
def test_possible_search_spaces_pass(changes: dict[str, Any]) -> None:
    assert parse_study(_study(**changes)).objective == "cifar10"


def test_boston_studies_are_not_checked_for_convolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    # A shape check that refuses everything: it must stop the CIFAR-10 study (so it is the check validation
    # runs) and never be reached for a Boston study, whose models have no convolutions to check.
    calls: list[str] = []

    def refuse_all(params: Any, fixed: Any, defaults: Any) -> tuple[str, str]:
        calls.append(str(defaults.get("model")))
        return "fixed.conv_blocks", "checked for convolutions"

    monkeypatch.setattr(cifar10_space, "check_search_space", refuse_all)
    with pytest.raises(UsageError, match="checked for convolutions"):
        parse_study(_study())
    calls.clear()
    assert parse_study({"name": "b", "objective": "boston", "fixed": {"epochs": 2}}).objective == "boston"
    assert calls == []


@pytest.mark.parametrize(("size", "window", "stride"), [(32, 2, None), (32, 3, 2), (15, 3, 1), (7, 4, 3), (5, 5, None)])
def test_pool_output_size_matches_torch(size: int, window: int, stride: int | None) -> None:
    expected = torch.nn.MaxPool2d(window, stride)(torch.zeros(1, 1, size, size)).shape[-1]
    assert architecture.pool_output_size(size, pool_size=window, pool_stride=stride) == expected


@pytest.mark.parametrize(("kernel", "padding", "dilation"), [(3, "same", 1), (4, "same", 1), (5, "same", 3), (3, 2, 1)])
def test_side_padding_is_the_widest_side_torch_pads(kernel: int, padding: Any, dilation: int) -> None:
    # Reflect padding by the widest side fits a map one pixel wider than that side and fails on one
    # exactly that wide, which is the limit the shape check enforces.
    side = architecture.conv_side_padding(kernel=kernel, stride=1, padding=padding, dilation=dilation)
    conv = torch.nn.Conv2d(1, 1, kernel, padding=padding, dilation=dilation, padding_mode="reflect")
    conv(torch.zeros(1, 1, side + 1, side + 1))
    with pytest.raises(RuntimeError):
        conv(torch.zeros(1, 1, side, side))


def test_cnn_shape_rejects_pooling_windows_and_reflect_padding_that_do_not_fit() -> None:
    # Four blocks of 4x4 pooling leave 32 -> 8 -> 2 -> nothing; reflect padding of 2 cannot pad a 2x2 map.
    base = {**CIFAR10.resolve({"model": "cnn"}), "conv_blocks": 3, "pool_size": 4}
    with pytest.raises(architecture.ArchitectureError, match="needs at least 4x4") as caught:
        architecture.cnn_shape(base)
    assert caught.value.field == "conv_blocks"
    deep = {**CIFAR10.resolve({"model": "cnn"}), "conv_blocks": 5, "kernel_size": 5, "padding_mode": "reflect"}
    with pytest.raises(architecture.ArchitectureError, match="more than reflect padding can take") as caught:
        architecture.cnn_shape(deep)
    assert caught.value.field == "padding_mode"
    assert architecture.cnn_shape({**deep, "padding_mode": "replicate"}).sizes == [16, 8, 4, 2, 1]
