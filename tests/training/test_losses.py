"""Classification losses: the multiclass SVM (hinge) loss against its definition, cross-entropy unchanged."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from hpo.training.losses import classification_loss, multiclass_hinge


def test_hinge_loss_is_the_sum_of_margin_violations_over_wrong_classes() -> None:
    # Scores of 3 examples over 3 classes, computed by hand: for each example, sum over wrong classes
    # of max(0, s_j - s_y + 1), then the mean over examples.
    scores = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    targets = torch.tensor([0, 1, 2])
    by_hand = [
        max(0, 5.1 - 3.2 + 1) + max(0, -1.7 - 3.2 + 1),
        max(0, 1.3 - 4.9 + 1) + max(0, 2.0 - 4.9 + 1),
        max(0, 2.2 + 3.1 + 1) + max(0, 2.5 + 3.1 + 1),
    ]
    assert multiclass_hinge(scores, targets).item() == pytest.approx(sum(by_hand) / 3, rel=1e-6)
    assert classification_loss("hinge")(scores, targets).item() == pytest.approx(sum(by_hand) / 3, rel=1e-6)


def test_hinge_loss_on_random_scores_matches_a_direct_computation_and_its_gradient() -> None:
    scores = torch.randn(16, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    correct = scores.gather(1, targets[:, None])
    margins = (scores - correct + 1).clamp(min=0)
    direct = (margins.sum(1) - 1).mean()  # the target's own term is max(0, 1) = 1
    loss = multiclass_hinge(scores, targets)
    assert torch.allclose(loss, direct)
    (grad,) = torch.autograd.grad(loss, scores, retain_graph=True)
    (grad_direct,) = torch.autograd.grad(direct, scores)
    assert torch.allclose(grad, grad_direct)


def test_hinge_loss_is_zero_once_every_wrong_class_trails_by_the_margin() -> None:
    scores = torch.tensor([[5.0, 3.9, 0.0], [0.0, 0.0, 1.01]])
    assert multiclass_hinge(scores, torch.tensor([0, 2])).item() == 0.0


def test_cross_entropy_is_the_objective_s_loss_as_before() -> None:
    # The default choice computes what the CIFAR-10 objective always has, label smoothing included.
    scores = torch.randn(8, 10, generator=torch.Generator().manual_seed(2))
    targets = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(
        classification_loss("cross_entropy", label_smoothing=0.1)(scores, targets),
        F.cross_entropy(scores, targets, label_smoothing=0.1),
    )


def test_unknown_loss_and_label_smoothing_with_hinge_are_refused() -> None:
    with pytest.raises(ValueError, match="accepted: cross_entropy, hinge"):
        classification_loss("squared_hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        classification_loss("hinge", label_smoothing=0.1)
