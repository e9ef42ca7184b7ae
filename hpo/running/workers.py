"""Where local workers train: their GPU or share of CPU threads, and how this worker names its device."""

from __future__ import annotations

import os
from typing import Any

from hpo.config import ExecutionConfig


class WorkerDevice:
    """The torch device of execution.device, resolved once per worker (resolving imports torch)."""

    def __init__(self, execution: ExecutionConfig) -> None:
        self.execution = execution
        self._device: Any = None

    def resolve(self) -> Any:
        if self._device is None:
            from hpo.training.device import pick_device

            self._device = pick_device(self.execution.device, threads=self.execution.threads)
        return self._device

    def describe(self) -> str:
        """This worker's device as `hpo status` shows it: which physical GPU (CUDA_VISIBLE_DEVICES), or
        the CPU and its threads, and the worker's process id (trials sharing a GPU have different ones)."""
        import torch

        device = self.resolve()
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
            physical = visible[index] if index < len(visible) else str(index)
            where = f"cuda:{index} (GPU {physical}, {torch.cuda.get_device_name(index)})"
        else:
            where = f"{device} ({torch.get_num_threads()} threads)"
        return f"{where}, pid {os.getpid()}"


def visible_gpus() -> list[str]:
    """The GPUs local workers may use (CUDA_VISIBLE_DEVICES, else every one torch sees)."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in visible.split(",") if g] if visible else [str(i) for i in range(torch.cuda.device_count())]


def default_workers(trials_per_device: int) -> int:
    """`hpo run`'s worker count without --workers: execution.trials_per_device per GPU, or on the CPU."""
    return trials_per_device * max(1, len(visible_gpus())) if trials_per_device > 1 else 1


def default_workers_env(index: int, workers: int) -> dict[str, str]:
    """Environment for local worker `index` of `workers`: a GPU (round robin, so workers beyond the GPU
    count share them), or its share of CPU threads."""
    env: dict[str, str] = {}
    gpus = visible_gpus()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // workers)
    env.update(HPO_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return env


__all__ = ["WorkerDevice", "default_workers", "default_workers_env", "visible_gpus"]
