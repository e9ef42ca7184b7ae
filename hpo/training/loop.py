"""The one training loop every objective shares: mini-batches from in-memory tensors, early stopping with
best-epoch restore, per-epoch metrics handed to a callback (which logs and may prune).

An objective supplies a :class:`Task` (data already on the device, a loss, and how to score validation
outputs); :func:`train` returns a :class:`FitResult` whose `best_metrics` hold the study metric.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hpo.objectives._context import NonFiniteLoss
from hpo.training.device import FP32, Precision, select_precision
from hpo.training.optim import Schedule, build_optimizer, l1_penalty

EpochCallback = Callable[[int, dict[str, float]], None]  # e.g. TrialContext.report


@dataclass
class Task:
    """What differs between objectives. Tensors are expected on the training device already."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # validation outputs and targets -> named metrics (val_loss is added by the loop)
    score: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
    # whole-batch augmentation of raw training batches (e.g. uint8 images), before `prepare`; none when None
    augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None
    # per-batch training statistics (e.g. accuracy) from outputs and targets: floats or 0-d tensors
    # (tensors are summed on the device, so a GPU is not synchronised every batch)
    train_stats: Callable[[torch.Tensor, torch.Tensor], dict[str, float | torch.Tensor]] | None = None
    # whole-batch input transform applied before the model sees any batch (e.g. uint8 -> normalized float)
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
    # called with the model (on the device) before training starts, e.g. to set weights from training data
    init_model: Callable[[nn.Module], None] | None = None
    eval_batch_size: int = 2048
    # name of the per-epoch training throughput metric (examples per second of training, validation excluded)
    throughput_metric: str = "samples_per_second"


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    val_outputs: torch.Tensor | None
    train_seconds: float
    model: nn.Module = field(repr=False)


def train(
    model: nn.Module,
    task: Task,
    hp: dict[str, Any],
    *,
    monitor: str,
    maximize: bool,
    device: torch.device,
    seed: int,
    on_epoch: EpochCallback | None = None,
    precision: Precision | None = None,
    compile: bool = False,
) -> FitResult:
    """Train for hp['epochs'] epochs (fewer if early stopping fires); return the best epoch's model and metrics.

    Early stopping fires after `early_stopping_patience` epochs without an improvement of more than
    `early_stopping_min_delta` (in the monitored metric's units; 0: any improvement counts).
    `precision` defaults to what ``auto`` means on `device`; `compile` runs the model through
    ``torch.compile`` (the returned model and its state dict stay the uncompiled module). With
    ``ema_decay`` > 0 the weights are averaged after every step (an exponential moving average, batch
    norm statistics included) and the average is what is validated, kept and returned.
    """
    torch.manual_seed(seed)
    generator = torch.Generator(device=task.x_train.device).manual_seed(seed)
    precision = precision if precision is not None else select_precision("auto", device)
    if task.init_model is not None:
        task.init_model(model)
    if precision.dtype is not None and task.x_train.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(hp, [p for p in model.parameters() if p.requires_grad])
    batch_size = int(hp["batch_size"])
    n = task.x_train.shape[0]
    steps_per_epoch = _batches_per_epoch(n, batch_size)  # OneCycleLR must know the exact count
    schedule = Schedule(hp, optimizer, steps_per_epoch=steps_per_epoch, maximize=maximize)
    scaler = precision.scaler(device)
    # torch.compile is typed as returning a callable; what it returns is the model, wrapped.
    forward: nn.Module = torch.compile(model) if compile else model  # type: ignore[assignment]
    ema_decay = float(hp.get("ema_decay") or 0.0)
    averaged = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) if ema_decay else None
    )
    evaluated = averaged.module if averaged is not None else forward
    l1 = float(hp["l1"])
    patience = int(hp["early_stopping_patience"] or 0)
    min_delta = float(hp.get("early_stopping_min_delta") or 0.0)

    best_value, best_epoch, best_state, best_outputs = -math.inf if maximize else math.inf, -1, None, None
    # Patience counts from the last epoch that beat the best by more than min_delta; the best epoch
    # itself (kept, restored and reported) is the true best, however small its lead.
    progress_value, progress_epoch = best_value, -1
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(int(hp["epochs"])):
        epoch_start = time.perf_counter()
        lr = schedule.lr
        train_metrics = _train_epoch(
            model,
            forward,
            task,
            optimizer,
            schedule,
            scaler,
            generator,
            batch_size=batch_size,
            l1=l1,
            precision=precision,
            epoch=epoch,
            averaged=averaged,
        )
        train_time = time.perf_counter() - epoch_start  # _train_epoch ends on a device sync (float of the loss)
        outputs = predict(evaluated, task.x_val, task=task, precision=precision)
        metrics = {
            **train_metrics,
            "val_loss": float(task.loss_fn(outputs, task.y_val)),
            **task.score(outputs, task.y_val),
        }
        seconds = time.perf_counter() - epoch_start
        metrics.update(
            {"lr": lr, "epoch_seconds": seconds, task.throughput_metric: n / train_time if train_time > 0 else 0.0}
        )
        history.append(metrics)
        value = metrics[monitor]
        improved = value > best_value if maximize else value < best_value
        if improved or best_state is None:
            best_value, best_epoch, best_metrics, best_outputs = value, epoch, dict(metrics), outputs
            best_state = copy.deepcopy((averaged.module if averaged is not None else model).state_dict())
        if (value - progress_value if maximize else progress_value - value) > min_delta or progress_epoch < 0:
            progress_value, progress_epoch = value, epoch
        schedule.after_epoch(value)
        if on_epoch is not None:
            on_epoch(epoch, metrics)  # may raise optuna.TrialPruned
        if patience and epoch - progress_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        history=history,
        val_outputs=best_outputs,
        train_seconds=time.perf_counter() - started,
        model=model,
    )


def _batches_per_epoch(n: int, batch_size: int) -> int:
    """The optimizer steps _train_epoch takes: every full batch, plus the remainder unless it is a single
    example (which batch norm cannot take) after at least one full batch."""
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if rest >= 2 or (rest == 1 and full == 0) else 0))


def _train_epoch(
    model: nn.Module,
    forward: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    *,
    batch_size: int,
    l1: float,
    precision: Precision,
    epoch: int,
    averaged: AveragedModel | None = None,
) -> dict[str, float]:
    model.train()
    n = task.x_train.shape[0]
    order = torch.randperm(n, generator=generator, device=task.x_train.device)
    total_loss = torch.zeros((), device=task.x_train.device)
    stats: dict[str, float | torch.Tensor] = {}
    seen = 0
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if index.numel() == 1 and batch_size > 1 and start > 0:
            break  # a leftover single example breaks batch norm and adds nothing
        xb, yb = task.x_train[index], task.y_train[index]
        if task.augment is not None:
            xb = task.augment(xb, generator)
        if task.prepare is not None:
            xb = task.prepare(xb)
        with precision.autocast(xb.device):
            out = forward(xb)
            loss = task.loss_fn(out, yb)
        if l1:
            loss = loss + l1 * l1_penalty(model)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if averaged is not None:
            averaged.update_parameters(model)
        schedule.after_batch()
        total_loss += loss.detach() * index.numel()
        seen += index.numel()
        if task.train_stats is not None:
            for k, v in task.train_stats(out.detach(), yb).items():
                stats[k] = stats.get(k, 0.0) + v * index.numel()
    train_loss = float(total_loss) / max(seen, 1)
    if not math.isfinite(train_loss):
        raise NonFiniteLoss(epoch, train_loss)
    return {"train_loss": train_loss, **{k: float(v) / max(seen, 1) for k, v in stats.items()}}


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, *, task: Task | None = None, precision: Precision = FP32, batch_size: int = 2048
) -> torch.Tensor:
    """Model outputs for `x` in evaluation mode, in batches, as float32."""
    model.eval()
    size = task.eval_batch_size if task is not None else batch_size
    outs = []
    for start in range(0, x.shape[0], size):
        xb = x[start : start + size]
        if task is not None and task.prepare is not None:
            xb = task.prepare(xb)
        with precision.autocast(xb.device):
            outs.append(model(xb).float())
    return torch.cat(outs) if outs else torch.empty(0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["EpochCallback", "FitResult", "NonFiniteLoss", "Task", "count_parameters", "predict", "train"]
