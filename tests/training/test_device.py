"""Precision selection: bf16 autocast where the device has it, fp16 with a gradient scaler where it does
not, fp32 on the CPU unless bf16 is asked for; checked with a fake CUDA capability (no GPU needed)."""

from __future__ import annotations

import warnings

import pytest
import torch

from hpo.errors import UsageError
from hpo.training.device import select_precision

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
HAS_BF16 = lambda device: True
NO_BF16 = lambda device: False


@pytest.mark.parametrize(
    ("requested", "device", "capable", "dtype", "scaled"),
    [
        ("auto", CUDA, HAS_BF16, torch.bfloat16, False),  # bf16 keeps fp32's exponent range: no scaler
        ("auto", CUDA, NO_BF16, torch.float16, True),
        ("auto", CPU, HAS_BF16, None, False),  # the CPU stays fp32 unless the objective allows bf16
        ("bf16", CPU, HAS_BF16, torch.bfloat16, False),  # asked for on a CPU with oneDNN bf16 kernels
        ("bf16", CUDA, HAS_BF16, torch.bfloat16, False),
        ("fp16", CUDA, HAS_BF16, torch.float16, True),
        ("fp32", CUDA, HAS_BF16, None, False),
    ],
)
def test_precision_follows_the_request_and_the_device(
    requested: str, device: torch.device, capable: object, dtype: torch.dtype | None, scaled: bool
) -> None:
    precision = select_precision(requested, device, bf16_supported=capable)  # type: ignore[arg-type]
    assert (precision.dtype, precision.scaled) == (dtype, scaled)
    assert precision.name == {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


@pytest.mark.parametrize(("capable", "dtype"), [(HAS_BF16, torch.bfloat16), (NO_BF16, None)])
def test_auto_takes_bf16_on_a_cpu_only_with_its_kernels_and_the_objectives_consent(
    capable: object, dtype: torch.dtype | None
) -> None:
    # cpu_bf16=True (CIFAR-10's classifiers): bf16 where oneDNN has bf16 kernels, never emulated bf16 on AVX2.
    precision = select_precision("auto", CPU, cpu_bf16=True, bf16_supported=capable)  # type: ignore[arg-type]
    assert precision.dtype == dtype
    # The consent does not change a GPU's choice or an explicit request.
    assert select_precision("fp32", CPU, cpu_bf16=True, bf16_supported=HAS_BF16).dtype is None
    cuda = select_precision("auto", CUDA, cpu_bf16=True, bf16_supported=NO_BF16)
    assert (cuda.dtype, cuda.scaled) == (torch.float16, True)


@pytest.mark.parametrize(
    ("requested", "device", "message"),
    [
        ("bf16", CUDA, "does not support bf16; use fp16 or auto"),
        ("fp16", CPU, "fp16 \\(with a gradient scaler\\) needs a CUDA device"),
        ("fp8", CPU, "accepted: auto, fp32, bf16, fp16"),
    ],
)
def test_an_impossible_precision_is_refused_naming_the_field(
    requested: str, device: torch.device, message: str
) -> None:
    with pytest.raises(UsageError, match=f"execution.precision: .*{message}"):
        select_precision(requested, device, bf16_supported=NO_BF16)


def test_bf16_on_a_cpu_without_bf16_kernels_is_kept_but_warned_about() -> None:
    # An AVX2-only CPU emulates bf16 (about ten times slower than fp32 for a conv net): the user is told so,
    # and gets what was asked; a CPU with the kernels is not warned about.
    with pytest.warns(RuntimeWarning, match="execution.precision: bf16 on this CPU .* use auto or fp32"):
        assert select_precision("bf16", CPU, bf16_supported=NO_BF16).dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_precision("bf16", CPU, bf16_supported=HAS_BF16).dtype == torch.bfloat16


def test_bf16_autocast_on_the_cpu_computes_in_bf16() -> None:
    # What the loop's autocast context does with the chosen precision on this machine's CPU.
    layer = torch.nn.Linear(4, 4)
    with select_precision("bf16", CPU).autocast(CPU):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with select_precision("auto", CPU).autocast(CPU):
        assert layer(torch.randn(2, 4)).dtype == torch.float32
