"""Device selection (CUDA when present, else the CPU with a thread budget) and numeric precision.

Precision (`execution.precision`): ``auto`` trains in bf16 autocast on a GPU that supports bf16 (the
exponent range of fp32, so no loss scaling), in fp16 autocast with a gradient scaler on an older GPU,
and on the CPU in bf16 only where both hold: the CPU has oneDNN's bf16 kernels (AVX-512 BF16 or AMX), and
the objective says its models tolerate bf16 (``cpu_bf16=True``: CIFAR-10's classifiers, about twice as fast
there; Boston's regression stays fp32 for exact numerics); otherwise fp32. ``bf16`` asks for bf16 autocast
anywhere: on a CPU without those kernels (AVX2 only) it is emulated and several times slower than fp32,
which is warned about. ``fp16`` asks for fp16 with a scaler (CUDA only), ``fp32`` for none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hpo.config import PRECISIONS
from hpo.config.settings import env_setting
from hpo.errors import UsageError


def pick_device(name: str = "auto", *, threads: int | None = None) -> torch.device:
    """`auto` takes the first visible GPU, else the CPU; `threads` caps intra-op CPU threads."""
    if threads is None:
        threads = env_setting("HPO_THREADS")
    if threads:
        torch.set_num_threads(threads)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"execution.device: unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"execution.device: {name!r} was asked for but no CUDA device is visible; use auto or cpu")
    return device


@dataclass(frozen=True)
class Precision:
    """How the training loop computes: an autocast dtype (None: plain fp32) and whether gradients are scaled."""

    dtype: torch.dtype | None = None
    scaled: bool = False

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(
            device_type=device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


FP32 = Precision()


def _native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (CUDA), or has oneDNN bf16 kernels (CPU)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def select_precision(
    requested: str,
    device: torch.device,
    *,
    cpu_bf16: bool = False,
    bf16_supported: Callable[[torch.device], bool] = _native_bf16,
) -> Precision:
    """The precision `requested` (one of PRECISIONS) means on `device`; `cpu_bf16` lets ``auto`` take bf16 on
    a CPU with native bf16 kernels (the objective's models tolerate it); `bf16_supported(device)` says whether
    the device computes bf16 natively (tests pass a fake)."""
    if requested not in PRECISIONS:
        raise UsageError(f"execution.precision: unknown precision {requested!r}; accepted: {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if requested == "fp32":
        return FP32
    if requested == "auto" and not cuda:
        return Precision(torch.bfloat16) if cpu_bf16 and bf16_supported(device) else FP32
    if requested == "fp16":
        if not cuda:
            raise UsageError(
                f"execution.precision: fp16 (with a gradient scaler) needs a CUDA device, not {device}; "
                "use bf16, fp32 or auto"
            )
        return Precision(torch.float16, scaled=True)
    if cuda and not bf16_supported(device):
        if requested == "bf16":
            raise UsageError(
                f"execution.precision: {device} does not support bf16; "
                "use fp16 or auto (fp16 with a gradient scaler there)"
            )
        return Precision(torch.float16, scaled=True)
    if not cuda and not bf16_supported(device):
        warnings.warn(
            "execution.precision: bf16 on this CPU has no oneDNN bf16 kernels (no AVX-512/AMX): it is emulated and "
            "typically several times slower than fp32; use auto or fp32 here",
            RuntimeWarning,
            stacklevel=2,
        )
    return Precision(torch.bfloat16)


__all__ = ["FP32", "PRECISIONS", "Precision", "pick_device", "select_precision"]
