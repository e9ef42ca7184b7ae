"""Boston's training under cross-validation: each fold's model is standardized with its own training rows
only, and rewritten to share one input/output scale without changing what it computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpo.data.boston import BOSTON_FEATURES, TARGET
from hpo.models import MLP
from hpo.objectives import TrialContext, make_folds
from hpo.objectives.boston import HYPERPARAMETERS as BOSTON
from hpo.objectives.boston import BostonDataOptions
from hpo.objectives.boston import _model as boston_model


@pytest.mark.parametrize("hidden_layers", [0, 2])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_rescale_linear_ends_keeps_the_function(hidden_layers: int, batch_norm: bool) -> None:
    # f(x) = ys_to^-1 (ys_from * net((x - shift) / scale) + ym_from - ym_to) must equal the rewritten net(x).
    torch.manual_seed(0)
    net = MLP(5, 1, hidden_layers=hidden_layers, width=8, batch_norm=batch_norm).eval()
    if batch_norm:  # non-trivial running statistics, as after training
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    shift, scale = np.array([0.3, -1.0, 2.0, 0.0, 5.0]), np.array([2.0, 0.5, 1.0, 3.0, 0.1])
    x = torch.randn(16, 5)
    with torch.no_grad():
        expected = (
            net((x - torch.tensor(shift, dtype=torch.float32)) / torch.tensor(scale, dtype=torch.float32)) * 4.0
            + 20.0
            - 22.0
        ) / 9.0
        boston_model.rescale_linear_ends(net, x_shift=shift, x_scale=scale, y_from=(20.0, 4.0), y_to=(22.0, 9.0))
        assert torch.allclose(net(x), expected, atol=1e-5)


def _csv(path: Path, frame: pd.DataFrame) -> BostonDataOptions:
    frame.to_csv(path, index=False)
    return BostonDataOptions(path=str(path), cv_folds=3, test_fraction=0.2)


def test_a_fold_model_never_sees_its_validation_rows(tmp_path: Path) -> None:
    # Changing the features of fold 0's validation rows (wildly) must not change what fold 0 learns:
    # its standardization comes from its training rows only. Its predictions on the unchanged rows match.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, len(BOSTON_FEATURES))).astype(np.float32), columns=BOSTON_FEATURES)
    frame[TARGET] = (frame[BOSTON_FEATURES[0]] * 3 + 20).astype(np.float32)
    hp = BOSTON.resolve({"epochs": 3, "hidden_layers": 1, "width": 8, "batch_norm": True, "dropout": 0.0})
    data = _csv(tmp_path / "a.csv", frame)
    from hpo.data import boston as boston_data

    order = boston_data._cv_indices(len(frame), data)  # non-test rows, in fold-position order
    fold = make_folds(data, len(order))[0]
    changed = frame.copy()
    changed.loc[order[fold.val], BOSTON_FEATURES] *= 50.0
    other = _csv(tmp_path / "b.csv", changed)

    def predictions(options: BostonDataOptions) -> np.ndarray:
        ctx = TrialContext(
            hp,
            data=options,
            metrics=["val_rmse"],
            directions=["minimize"],
            seed=0,
            device="cpu",
            report=lambda epoch, metrics: None,
            fold=fold,
        )
        result = boston_model.train(ctx)
        model = result.models[0]
        x, _ = boston_model.val_split(options, result.meta)  # every non-test row, scaled by this meta
        with torch.no_grad():
            return boston_model.to_predictions(model.eval()(x[fold.train]), result.meta)

    assert np.allclose(predictions(data), predictions(other), atol=1e-3)
