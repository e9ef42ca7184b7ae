"""The CIFAR-10 objective's own study check: no model it may sample can shrink a 32x32 image to nothing.

The worst case of the space (most pooling and stride stages, largest kernels and pooling windows, least
padding, a padding mode that cannot pad a small map) must
still leave at least 1x1; a flattened head must stay a sane size; a residual network needs odd
kernels. Plain arithmetic of :mod:`hpo.config.cnn_shapes` (what the CNN builder uses), no torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from hpo.config.cnn_shapes import SHAPE_PARAMETERS, ArchitectureError, block_channels, cnn_shape

MAX_FLAT_FEATURES = 1 << 18  # a flattened CNN head wider than this needs gigabytes for its first layer


def _candidates(
    name: str, params: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[Any]:
    """Values `name` can take in the study: its choices or range (ends and, for small ranges, every
    step), the fixed value, else the default; a conditional parameter may also keep its default."""
    if name in fixed:
        return [fixed[name]]
    spec = params.get(name)
    if spec is None:
        return [defaults[name]]
    values: list[Any]
    if spec["type"] == "categorical":
        values = list(spec["choices"])
    elif spec["type"] == "int":
        step = int(spec.get("step") or 1)
        span = range(int(spec["low"]), int(spec["high"]) + 1, step)
        values = list(span) if len(span) <= 16 else sorted({span[0], span[1], span[-2], span[-1]})
    else:
        values = [spec["low"], spec["high"]]
    if spec.get("when"):
        values.append(defaults[name])
    return values


# Taken at their ends only: the final side moves monotonically with each (adding a block repeats the
# same map; a wider or further-moved pooling window leaves a smaller one), so the ends hold both the
# smallest and the largest side the range can give.
_MONOTONE = ("conv_blocks", "convs_per_block", "pool_size", "pool_stride")


def _ends(values: list[Any]) -> list[Any]:
    """The smallest and largest number among `values`, and null when it is one of them (pool_stride)."""
    numbers = [int(v) for v in values if v is not None]
    return sorted({min(numbers), max(numbers)}) + ([None] if None in values else []) if numbers else list(values)


def _spatial_cases(values: Mapping[str, list[Any]], defaults: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every combination of the values that decide the spatial size, monotone ones at their ends."""
    names = list(SHAPE_PARAMETERS)
    ranges = [_ends(values[n]) if n in _MONOTONE else values[n] for n in names]
    for combination in itertools.product(*ranges):
        yield {**defaults, **dict(zip(names, combination))}


def _blame(field: str, params: Mapping[str, Any], fixed: Mapping[str, Any]) -> str:
    """The study-file field to point at: the given one if the study sets it, else the first shape
    parameter it searches or fixes."""
    for name in (field, *SHAPE_PARAMETERS):
        if name in params:
            return f"params.{name}"
        if name in fixed:
            return f"fixed.{name}"
    return f"fixed.{field}"


def _field(name: str, params: Mapping[str, Any]) -> str:
    return f"params.{name}" if name in params else f"fixed.{name}"


def check_search_space(
    params: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Any], defaults: Mapping[str, Any]
) -> tuple[str, str] | None:
    """(field, message) for the first impossible architecture the study could sample, else None.

    `params` are the study's parameter specs as plain dicts (type, low, high, step, choices, when);
    the value ranges themselves were already checked against the hyperparameter table.
    """
    models = set(_candidates("model", params, fixed, defaults))
    if "resnet" in models:
        for kernel in _candidates("kernel_size", params, fixed, defaults):
            if int(kernel) % 2 == 0:
                return _field(
                    "kernel_size", params
                ), f"{kernel} is even; the resnet model needs an odd kernel_size so residual sums keep their shape"
    if "cnn" not in models:
        return None
    values = {
        name: _candidates(name, params, fixed, defaults)
        for name in (*SHAPE_PARAMETERS, "global_pool", "filters", "filters_growth")
    }
    largest: dict[int, int] = {}  # conv_blocks -> the largest final side seen
    for hp in _spatial_cases(values, defaults):
        try:
            shape = cnn_shape({**hp, "global_pool": True})
        except ArchitectureError as exc:
            return (
                _blame(exc.field, params, fixed),
                f"{exc.message}; lower conv_blocks, convs_per_block, stride, kernel_size, dilation or pool_size, "
                "or use more padding, padding_mode: zeros or pooling: none",
            )
        blocks = int(hp["conv_blocks"])
        largest[blocks] = max(largest.get(blocks, 0), shape.sizes[-1])
    if False in values["global_pool"]:
        for blocks, side in largest.items():
            channels = max(
                block_channels(int(f), float(g), blocks)[-1]
                for f in values["filters"]
                for g in values["filters_growth"]
            )
            if channels * side * side > MAX_FLAT_FEATURES:
                return (
                    _blame("global_pool", params, fixed),
                    f"with global_pool=false, conv_blocks={blocks} can flatten {channels} channels of {side}x{side} "
                    f"into {channels * side * side:,} head inputs (at most {MAX_FLAT_FEATURES:,}); "
                    "use global_pool: true, more pooling or fewer filters",
                )
    return None


__all__ = ["MAX_FLAT_FEATURES", "check_search_space"]
