"""The one checkpoint shape the runner writes and evaluation and the pyfunc model read: one model, or
several (one per fold) whose predictions are averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hpo.objectives._checkpoint import MODEL_FILE, Checkpoint, predictions
from hpo.objectives.boston import HYPERPARAMETERS
from hpo.objectives.boston import _model as boston

META = {"in_features": 3, "y_mean": 20.0, "y_std": 5.0}


def _models(n: int) -> list[torch.nn.Module]:
    hp = HYPERPARAMETERS.resolve({"hidden_layers": 1, "width": 4})
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(boston.build_model(hp, META))
    return models


def test_a_checkpoint_round_trips_and_rebuilds_its_models(tmp_path: Path) -> None:
    # Saved and loaded again, a checkpoint rebuilds models that give the same predictions, through the
    # objective it names (its resolved spec).
    hp = HYPERPARAMETERS.resolve({"hidden_layers": 1, "width": 4})
    (model,) = _models(1)
    inputs = torch.randn(6, 3)
    checkpoint = Checkpoint.of(
        [model],
        objective="boston",
        hyperparameters=hp,
        meta=META,
        val_predictions=np.arange(3.0),
        metrics={"val_rmse": 2.0},
    )
    checkpoint.save(tmp_path)
    loaded = Checkpoint.load(tmp_path)
    assert (loaded.objective, loaded.meta, loaded.metrics) == ("boston", META, {"val_rmse": 2.0})
    np.testing.assert_array_equal(loaded.val_predictions, np.arange(3.0))
    assert "state_dict" in torch.load(tmp_path / MODEL_FILE, weights_only=True)  # the format of earlier hpo versions
    np.testing.assert_allclose(
        predictions(loaded.hooks(), loaded.models(), inputs, META),
        boston.to_predictions(model.eval()(inputs), META),
        rtol=1e-6,
    )


def test_several_models_are_kept_together_and_averaged(tmp_path: Path) -> None:
    # A trial of several models (K folds) keeps them all; its prediction is the mean of theirs.
    hp = HYPERPARAMETERS.resolve({"hidden_layers": 1, "width": 4})
    models = _models(3)
    inputs = torch.randn(5, 3)
    Checkpoint.of(models, objective="boston", hyperparameters=hp, meta=META).save_model(tmp_path / "folds.pt")
    loaded = Checkpoint.load_model(tmp_path / "folds.pt")
    assert len(loaded.state_dicts) == 3
    expected = np.mean([boston.to_predictions(m.eval()(inputs), META) for m in models], axis=0)
    np.testing.assert_allclose(predictions(loaded.hooks(), loaded.models(), inputs, META), expected, rtol=1e-6)
