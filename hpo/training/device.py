"""Device selection: CUDA (with AMP and channels_last) when present, else the CPU with a thread budget."""

from __future__ import annotations

import torch

from hpo.errors import UsageError
from hpo.settings import env_setting


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


def uses_amp(device: torch.device) -> bool:
    """Mixed precision pays off on CUDA only; on the CPU it is slower and less exact."""
    return device.type == "cuda"
