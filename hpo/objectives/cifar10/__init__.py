"""CIFAR-10 image classification: the declaration (no torch; the training code is in ``._model``).

Models (`model`): an MLP on the flattened pixels, a configurable CNN, a small ResNet, an airbench-style
net (patch-whitening stem, three BN conv blocks) or a torchvision backbone adapted to 32x32. The data comes
from the checksummed cache `hpo data import cifar10` fills.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import model_validator

from hpo.config.cnn_shapes import IMAGE_SIZE, PADDING_MODES, POOLINGS
from hpo.objectives import (
    MLP,
    TRAINING,
    DataConfig,
    FieldError,
    Hyperparameter,
    HyperparameterTable,
    ModuleDataset,
    Objective,
    TrialContext,
    TrialResult,
    check_batch_statistics,
    check_schedule,
    choice,
    flag,
    integer,
    number,
    text,
)
from hpo.objectives._fragments import CLASSIFICATION_LOSSES, PIXEL_SCALINGS, TTA_MODES

if TYPE_CHECKING:
    from hpo.config import StudyConfig

BACKBONES: tuple[str, ...] = ("resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0")
MODELS: tuple[str, ...] = ("mlp", "cnn", "resnet", "airbench", *BACKBONES)
CONV = ("cnn", "resnet")
# Models built with batch norm whatever batch_norm says.
NORMALIZED = ("airbench", *BACKBONES)

HYPERPARAMETERS = (
    HyperparameterTable(
        Hyperparameter(
            "model",
            choice(*MODELS),
            "cnn",
            "the network: an MLP on the pixels, a CNN, a small ResNet, an airbench-style net or a torchvision backbone",
        )
    )
    + MLP.applying_to(("mlp", "cnn"), "hidden_layers", "width")
    .applying_to(("mlp", *CONV), "activation", "batch_norm", "init")
    .applying_to(("mlp", *CONV, *BACKBONES), "dropout")
    + TRAINING.with_defaults(batch_size=128, epochs=10, early_stopping_patience=5)
    + HyperparameterTable(
        Hyperparameter(
            "loss",
            choice(*CLASSIFICATION_LOSSES),
            "cross_entropy",
            "softmax cross-entropy or the multiclass SVM (hinge) loss",
        ),
        Hyperparameter("label_smoothing", number(ge=0, lt=1), 0.0, "label smoothing of the cross-entropy loss"),
        Hyperparameter(
            "pixel_scaling",
            choice(*PIXEL_SCALINGS),
            "standardize",
            "pixels to [0, 1] (unit), minus the channel means (center), or also / their std (standardize)",
        ),
        Hyperparameter("conv_blocks", integer(ge=1, le=12), 3, "convolution blocks (resnet: stages)", applies_to=CONV),
        Hyperparameter(
            "convs_per_block",
            integer(ge=1, le=8),
            1,
            "convolutions per block (resnet: residual blocks per stage)",
            applies_to=CONV,
        ),
        Hyperparameter("filters", integer(ge=1, le=4096), 32, "channels of the first block", applies_to=CONV),
        Hyperparameter(
            "filters_growth", number(ge=0.25, le=4), 2.0, "channel factor from one block to the next", applies_to=CONV
        ),
        Hyperparameter(
            "kernel_size", integer(ge=1, le=IMAGE_SIZE), 3, "convolution kernel side (resnet: odd)", applies_to=CONV
        ),
        Hyperparameter("stride", integer(ge=1, le=4), 1, "stride of a block's first convolution", applies_to=("cnn",)),
        Hyperparameter(
            "padding",
            integer(ge=0, le=32, also=("same",)),
            "same",
            "padding in pixels, or same (keeps the size at stride 1)",
            applies_to=("cnn",),
        ),
        Hyperparameter(
            "padding_mode",
            choice(*PADDING_MODES),
            "zeros",
            "what the padding holds: zeros, the mirrored border (reflect), the edge pixel repeated (replicate) "
            "or the opposite side (circular)",
            applies_to=("cnn",),
        ),
        Hyperparameter("dilation", integer(ge=1, le=8), 1, "dilation of the convolutions", applies_to=("cnn",)),
        Hyperparameter(
            "pooling",
            choice(*POOLINGS),
            "max",
            "pooling after each block (sum: avg times the window area; min: the smallest value)",
            applies_to=("cnn",),
        ),
        Hyperparameter("pool_size", integer(ge=1, le=IMAGE_SIZE), 2, "pooling window side", applies_to=("cnn",)),
        Hyperparameter(
            "pool_stride",
            integer(ge=1, le=IMAGE_SIZE, nullable=True),
            None,
            "pooling step (null: the window side, windows do not overlap)",
            applies_to=("cnn",),
        ),
        Hyperparameter(
            "global_pool",
            flag(),
            True,
            "true: global average pooling into the head; false: flatten",
            applies_to=("cnn",),
        ),
        Hyperparameter(
            "width_scale",
            number(ge=0.0625, le=4),
            0.5,
            "block widths 64/256/256 times this (0.5: 32/128/128)",
            applies_to=("airbench",),
        ),
        Hyperparameter(
            "whiten",
            flag(),
            True,
            "a frozen first convolution that whitens 2x2 patches (from the trial's training images); "
            "false: a learned one",
            applies_to=("airbench",),
        ),
        Hyperparameter(
            "identity_init",
            flag(),
            False,
            "start each block convolution as a partial identity (Dirac filters for its first input channels)",
            applies_to=("airbench",),
        ),
        Hyperparameter(
            "tta",
            choice(*TTA_MODES),
            "none",
            "test-time augmentation of validation and test predictions: none, flip (mirror average) "
            "or flip_translate (also 1-pixel shifts)",
        ),
        Hyperparameter("augment_flip", flag(), False, "random horizontal flips"),
        Hyperparameter(
            "augment_vflip",
            flag(),
            False,
            "random vertical flips (upside down: only for data where that keeps the class)",
        ),
        Hyperparameter(
            "augment_crop",
            integer(ge=0, le=IMAGE_SIZE - 1),
            0,
            "random crops after padding by this many pixels (0: off)",
        ),
        Hyperparameter(
            "augment_cutout", integer(ge=0, le=IMAGE_SIZE), 0, "side of a random erased square in pixels (0: off)"
        ),
        Hyperparameter(
            "augment_jitter",
            number(ge=0, le=1),
            0.0,
            "colour jitter strength: brightness, contrast, saturation (0: off)",
        ),
        Hyperparameter(
            "augment_rotation", number(ge=0, le=180), 0.0, "random rotations up to this many degrees (0: off)"
        ),
        Hyperparameter(
            "augment_zoom", number(ge=0, lt=1), 0.0, "random zoom by a factor in [1 - zoom, 1 + zoom] (0: off)"
        ),
        Hyperparameter(
            "augment_shear", number(ge=0, le=45), 0.0, "random horizontal shear up to this many degrees (0: off)"
        ),
        Hyperparameter(
            "augment_noise",
            number(ge=0, le=1),
            0.0,
            "standard deviation of added Gaussian pixel noise, as a share of the 0..1 range (0: off)",
        ),
        Hyperparameter(
            "backbone_weights",
            text(nullable=True),
            None,
            "a local state-dict file to start a backbone from",
            applies_to=BACKBONES,
        ),
        Hyperparameter("freeze_backbone", flag(), False, "train the new head only", applies_to=BACKBONES),
    )
)

# hpo versions before objectives had data options of their own stored Boston's keys with every
# cifar10 study; with their default values they load again, with any other they are refused.
_NOT_CIFAR10 = {
    "test_fraction": (0.2, "CIFAR-10 is tested on its official 10,000 test images"),
    "drop_features": ([], "CIFAR-10 has no tabular features"),
    "path": (None, "CIFAR-10 is read from the cache `hpo data import` fills"),
}


class Cifar10DataOptions(DataConfig):
    """The generic `data:` keys; validation comes from the official training images."""

    @model_validator(mode="before")
    @classmethod
    def _no_tabular_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, (default, why) in _NOT_CIFAR10.items():
            if key in data:
                if data[key] != default:
                    raise FieldError(
                        key,
                        f"not used by objective cifar10 ({why}); remove it. "
                        f"cifar10 accepts: {', '.join(DataConfig.model_fields)}",
                    )
                del data[key]
        return data


def train(ctx: TrialContext) -> TrialResult:
    """Train one classifier on the training images; score it on the validation images."""
    from hpo.objectives.cifar10 import _model

    return _model.train(ctx)


def validate(config: StudyConfig) -> None:
    """Refuse a search space whose worst case cannot be built (e.g. too much pooling for 32x32), batch
    norm (of the model or a backbone) on batches of one, exponential decay by the default factor, and
    label smoothing with the hinge loss (which has no probabilities to smooth)."""
    check_batch_statistics(config, normalized_models=NORMALIZED)
    check_schedule(config)
    if config.may_take("loss", "hinge") and _may_smooth(config):
        where = "fixed.loss" if "loss" in config.fixed else "params.loss"
        raise FieldError(
            where, "label_smoothing applies to the cross_entropy loss only; with loss hinge keep label_smoothing 0"
        )
    from hpo.objectives.cifar10._space import check_search_space

    problem = check_search_space(
        {name: param.model_dump() for name, param in config.params.items()}, config.fixed, HYPERPARAMETERS.defaults()
    )
    if problem is not None:
        raise FieldError(*problem)


def _may_smooth(config: StudyConfig) -> bool:
    """Whether a trial may train with a nonzero label_smoothing (a conditional search may keep 0)."""
    if "label_smoothing" in config.fixed:
        return bool(config.fixed["label_smoothing"])
    param = config.params.get("label_smoothing")
    if param is None:
        return False
    when = (param.when or {}).get("loss")
    return when is None or "hinge" in when


def preflight(config: StudyConfig) -> None:
    """Fail before anything is written: data not imported or corrupt, no validation image, weights missing."""
    from hpo.config import CategoricalParam
    from hpo.data import cifar10 as cifar10_data

    cifar10_data.check(config.data)  # verifies the checksums (no torch); the arrays stay in memory for the trials
    param = config.params.get("backbone_weights")
    values = (
        [config.fixed["backbone_weights"]]
        if "backbone_weights" in config.fixed
        else list(param.choices)
        if isinstance(param, CategoricalParam)
        else []
    )
    for value in values:
        if value and not Path(str(value)).expanduser().is_file():
            raise FieldError(
                "backbone_weights", f"file not found: {value} (a local state dict; hub downloads are not used)"
            )


def data_fingerprint(config: StudyConfig) -> str:
    """What the study's trials were scored on, stored with the study: `hpo evaluate` refuses other data."""
    from hpo.data import cifar10 as cifar10_data

    return cifar10_data.fingerprint()


objective = Objective(
    train,
    name="cifar10",
    metrics={"val_acc": "maximize", "val_loss": "minimize", "n_params": "minimize", "train_seconds": "minimize"},
    default_metric="val_acc",
    hyperparameters=HYPERPARAMETERS,
    data_options=Cifar10DataOptions,
    evaluation="hpo.objectives.cifar10._model",
    validate=validate,
    preflight=preflight,
    data_fingerprint=data_fingerprint,
    datasets=(ModuleDataset("cifar10", "hpo.data.cifar10"),),
    test_time_augmentations=tuple(mode for mode in TTA_MODES if mode != "none"),
    description="CIFAR-10 image classification: MLP, CNN, ResNet, airbench-style net or a torchvision backbone",
)

__all__ = ["BACKBONES", "HYPERPARAMETERS", "MODELS", "Cifar10DataOptions", "objective"]
