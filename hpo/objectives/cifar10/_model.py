"""CIFAR-10 image classification: training a trial on an in-memory uint8 dataset, and the evaluation hooks.

The images stay uint8 on the training device (the GPU when there is one); each batch is augmented
there as a whole (:mod:`hpo.objectives.cifar10.augment`), then normalised to float. Nothing per image runs in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from hpo.data import cifar10 as cifar10_data
from hpo.models import BACKBONES, CNN, MLP, Airbench, ResNet, build_backbone, load_backbone_weights, with_tta
from hpo.models.airbench import WHITENING_IMAGES
from hpo.objectives import TTA_META_KEY, DataConfig, TrialContext, TrialResult
from hpo.objectives.cifar10.augment import BatchAugment
from hpo.training.device import select_precision
from hpo.training.loop import Task, count_parameters
from hpo.training.loop import train as fit
from hpo.training.losses import classification_loss
from hpo.training.pixels import scale_pixels

NUM_CLASSES = len(cifar10_data.CLASSES)
# What the training task (not the model) depends on; kept in the checkpoint meta for `retrain_task`.
TASK_HYPERPARAMETERS = (
    "loss",
    "label_smoothing",
    "augment_flip",
    "augment_vflip",
    "augment_crop",
    "augment_cutout",
    "augment_jitter",
    "augment_rotation",
    "augment_zoom",
    "augment_shear",
    "augment_noise",
)
# Checkpoints written before pixel_scaling and loss existed were trained with these.
DEFAULT_PIXEL_SCALING = "standardize"
DEFAULT_LOSS = "cross_entropy"


def build_model(hp: Mapping[str, Any], meta: Mapping[str, Any]) -> nn.Module:
    """The network `hp["model"]` names, randomly initialised (backbone weights are loaded and the
    airbench stem whitened by the objective), wrapped for the trial's test-time augmentation, or for the
    one `hpo evaluate` tested it with (`meta[TTA_META_KEY]`)."""
    return with_tta(_network(hp), str(meta.get(TTA_META_KEY) or hp.get("tta") or "none"))


def _network(hp: Mapping[str, Any]) -> nn.Module:
    name = str(hp["model"])
    if name == "mlp":
        return MLP.from_hyperparameters(
            dict(hp), in_features=int(np.prod(cifar10_data.IMAGE_SHAPE)), out_features=NUM_CLASSES
        )
    if name == "cnn":
        return CNN(dict(hp), num_classes=NUM_CLASSES)
    if name == "resnet":
        return ResNet(dict(hp), num_classes=NUM_CLASSES)
    if name == "airbench":
        return Airbench(dict(hp), num_classes=NUM_CLASSES)
    if name in BACKBONES:
        return build_backbone(name, dict(hp), num_classes=NUM_CLASSES)
    raise ValueError(f"unknown model {name!r}; accepted: mlp, cnn, resnet, airbench, {', '.join(BACKBONES)}")


def test_time_augmentation(model: nn.Module, mode: str) -> nn.Module:
    """`hpo evaluate --tta MODE` (or `evaluation.tta`): the trained `model` predicting with test-time
    augmentation `mode` in place of the one it was validated with, if any (evaluate recomputes its
    validation predictions with it, so the ensemble is chosen on what the test will see)."""
    from hpo.models import TestTimeAugment

    return with_tta(model.net if isinstance(model, TestTimeAugment) else model, mode)


def normalize(images: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float32 scaled as the trial's pixel_scaling says (kept in `meta`, so
    evaluation and prediction scale exactly as training did), channels_last."""
    mode = str(meta.get("pixel_scaling", DEFAULT_PIXEL_SCALING))
    return scale_pixels(images, mode, mean=meta["mean"], std=meta["std"])


def make_task(
    train_split: cifar10_data.Split,
    val_split: cifar10_data.Split,
    hp: Mapping[str, Any],
    meta: Mapping[str, Any],
    device: torch.device,
) -> Task:
    loss = classification_loss(str(hp.get("loss", DEFAULT_LOSS)), label_smoothing=float(hp["label_smoothing"]))

    def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float | torch.Tensor]:
        return {"train_acc": (outputs.argmax(1) == targets).float().mean()}

    def score(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"val_acc": float((outputs.argmax(1) == targets).float().mean())}

    return Task(
        x_train=train_split.images.to(device),  # no copy when already there (the per-process device cache)
        y_train=train_split.labels.to(device),
        x_val=val_split.images.to(device),
        y_val=val_split.labels.to(device),
        loss_fn=loss,
        score=score,
        augment=BatchAugment.from_hyperparameters(hp, fill=meta["mean"]),
        train_stats=accuracy,
        prepare=lambda images: normalize(images, meta),
        init_model=lambda model: _whiten(model, train_split.images, meta),
        eval_batch_size=1024,
        throughput_metric="images_per_second",
    )


def _whiten(model: nn.Module, images: torch.Tensor, meta: Mapping[str, Any]) -> None:
    """Set an airbench stem's whitening from the first of the training images the task trains on
    (never validation or test images), scaled as the model sees them."""
    network = getattr(model, "net", model)
    if isinstance(network, Airbench):
        network.init_whitening(normalize(images[:WHITENING_IMAGES], meta))


def _meta(data: cifar10_data.Cifar10Data) -> dict[str, Any]:
    return {
        "classes": list(cifar10_data.CLASSES),
        "num_classes": NUM_CLASSES,
        "mean": list(cifar10_data.MEAN),
        "std": list(cifar10_data.STD),
        "n_train": len(data.train),
        "n_val": len(data.val),
    }


def test_split(data: DataConfig, meta: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """The official test images, normalised, and their labels. Only `hpo evaluate` may call this."""
    split = cifar10_data.load_test()
    return normalize(split.images, meta), split.labels.numpy()


def val_split(data: DataConfig, meta: Mapping[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """The validation images (from the training set), normalised, and their labels."""
    split = cifar10_data.load(data).val
    return normalize(split.images, meta), split.labels.numpy()


def read_inputs(paths: Sequence[Path], meta: Mapping[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """PNG or JPEG files of any size, resized to 32x32 RGB and normalised as the model's inputs were, for
    `hpo predict`."""
    images = torch.stack([cifar10_data.read_image(Path(path)) for path in paths])
    return normalize(images, meta), [str(path) for path in paths]


def retrain_task(data: DataConfig, meta: Mapping[str, Any], device: torch.device) -> tuple[Task, Mapping[str, Any]]:
    """Training on train+validation for `hpo evaluate --retrain-seeds` (validation is still scored)."""
    loaded = cifar10_data.load(data)
    both = cifar10_data.Split(
        torch.cat([loaded.train.images, loaded.val.images]), torch.cat([loaded.train.labels, loaded.val.labels])
    )
    return make_task(both, loaded.val, meta["task_hyperparameters"], meta, device), meta


def model_family(hp: Mapping[str, Any]) -> str:
    """The evaluation hook that names a trial's model family (`hpo evaluate` compares the best MLP and CNN)."""
    return str(hp.get("model", "model"))


def to_predictions(outputs: torch.Tensor, meta: Mapping[str, Any]) -> np.ndarray:
    """Raw outputs (logits) -> class probabilities, N x 10: what is saved, ensembled and scored."""
    return torch.softmax(outputs.detach().float(), dim=1).cpu().numpy()


def train(ctx: TrialContext) -> TrialResult:
    """Train one classifier on the training images; score it on the validation images."""
    hp = ctx.hyperparameters
    # an unusable precision fails before any work; classifiers tolerate bf16, so `auto` takes it on a CPU
    # with bf16 kernels too (about twice fp32's images/s there, BENCHMARKS.md section 9)
    precision = select_precision(ctx.precision, ctx.device, cpu_bf16=True)
    data = cifar10_data.load(ctx.data, device=ctx.device)
    meta = {
        **_meta(data),
        "pixel_scaling": hp["pixel_scaling"],
        "task_hyperparameters": {k: hp[k] for k in TASK_HYPERPARAMETERS},
    }
    task = make_task(data.train, data.val, hp, meta, ctx.device)
    torch.manual_seed(ctx.seed)
    model = build_model(hp, meta)
    network = model.net if hasattr(model, "net") else model
    if hp["backbone_weights"] and hp["model"] in BACKBONES:
        load_backbone_weights(cast(nn.Module, network), hp["backbone_weights"], name=str(hp["model"]))
    model = model.to(ctx.device).to(memory_format=torch.channels_last)
    monitor, maximize = ctx.monitor
    result = fit(
        model,
        task,
        dict(hp),
        monitor=monitor,
        maximize=maximize,
        device=ctx.device,
        seed=ctx.seed,
        on_epoch=ctx.report,
        precision=precision,
        compile=ctx.compile,
    )
    n_params = count_parameters(model)
    predictions = (
        to_predictions(result.val_outputs, meta) if result.val_outputs is not None else np.empty((0, NUM_CLASSES))
    )
    metrics = {**result.best_metrics, "n_params": float(n_params), "train_seconds": result.train_seconds}
    return TrialResult.of(metrics, result.model, meta=meta, val_predictions=predictions, best_epoch=result.best_epoch)
