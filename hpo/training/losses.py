"""Classification losses by name: softmax cross-entropy and the multiclass SVM (hinge) loss.

Both take raw class scores (N x C) and integer targets (N) and return the batch mean. An objective
picks one with its `loss` hyperparameter; the scores stay what the model outputs either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from hpo.objectives._fragments import CLASSIFICATION_LOSSES  # the names study files use, declared without torch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HINGE_MARGIN = 1.0


def multiclass_hinge(scores: torch.Tensor, targets: torch.Tensor, *, margin: float = HINGE_MARGIN) -> torch.Tensor:
    """The multiclass SVM loss (Weston & Watkins): for each example, the sum over wrong classes j of
    max(0, s_j - s_target + margin), averaged over the batch.

    PyTorch's multi_margin_loss computes the same sum divided by the number of classes; multiplying by
    it back gives the textbook value, so a loss of 0 means every wrong class trails by the margin.
    """
    scores = scores.float()
    return F.multi_margin_loss(scores, targets, margin=margin) * scores.shape[1]


def classification_loss(name: str, *, label_smoothing: float = 0.0) -> LossFn:
    """The loss function `name` picks. Label smoothing belongs to cross-entropy; the hinge loss has no
    probabilities to smooth, so a nonzero `label_smoothing` with it is refused."""
    if name == "cross_entropy":

        def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)

        return cross_entropy
    if name == "hinge":
        if label_smoothing:
            raise ValueError(
                f"label_smoothing applies to the cross_entropy loss only, not hinge (got {label_smoothing})"
            )
        return multiclass_hinge
    raise ValueError(f"unknown loss {name!r}; accepted: {', '.join(CLASSIFICATION_LOSSES)}")


__all__ = ["CLASSIFICATION_LOSSES", "HINGE_MARGIN", "LossFn", "classification_loss", "multiclass_hinge"]
