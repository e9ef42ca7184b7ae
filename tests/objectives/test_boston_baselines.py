"""Boston's classical models: which features the kernel models see on a log scale, and the library
fitted on cross-validation folds (hpo/objectives/boston/_baselines.py)."""

from __future__ import annotations

import pickle

import numpy as np

from hpo.objectives.boston import BostonDataOptions
from hpo.objectives.boston._baselines import LogSkewed, baselines


def test_only_skewed_non_negative_features_are_logged_in_raw_units() -> None:
    # Inputs arrive standardized; the transform undoes that, logs the columns that are skewed and never
    # negative on the rows it was fitted on, and passes the others through in raw units.
    rng = np.random.default_rng(0)
    raw = np.column_stack(
        [
            rng.exponential(2.0, 400),  # skewed, >= 0: logged
            rng.normal(5.0, 1.0, 400),  # symmetric: kept
            rng.exponential(2.0, 400) - 1.0,  # skewed but negative values: kept
            (rng.random(400) < 0.1).astype(float),  # a rare 0/1 flag is skewed too: logged (stays two-valued)
        ]
    )
    shift, scale = raw.mean(axis=0), raw.std(axis=0)
    fitted = LogSkewed(shift, scale).fit((raw - shift) / scale)
    assert fitted.columns_.tolist() == [0, 3]
    out = fitted.transform((raw - shift) / scale)
    np.testing.assert_allclose(out[:, [0, 3]], np.log1p(raw[:, [0, 3]]), atol=1e-12)
    np.testing.assert_allclose(out[:, [1, 2]], raw[:, [1, 2]], atol=1e-12)
    # A new row below the fitted rows' range is floored at log1p(0), not turned into NaN.
    below = (np.array([[-3.0, 5.0, 0.0, 0.0]]) - shift) / scale
    assert fitted.transform(below)[0, 0] == 0.0


def test_the_library_is_cross_validated_on_the_trials_folds_and_pickles() -> None:
    # Every model's validation predictions are out of fold over all non-test rows (what greedy selection
    # weighs), and each fitted model survives a pickle round trip (evaluate logs them with joblib).
    options = BostonDataOptions(cv_folds=3, subset=0.3, drop_features=["B"])
    library = baselines(options, with_validation=False)
    names = [b.name for b in library]  # the full set of tags is checked by tests/evaluation/test_evaluate.py
    assert names[:3] == ["linear_regression", "random_forest", "gradient_boosting"]  # the yardsticks first
    assert len(set(names)) == len(names) and "gaussian_process" in names
    rows = library[0].val_predictions
    assert rows is not None
    for baseline in library:
        assert baseline.val_predictions is not None and baseline.val_predictions.shape == rows.shape
        assert np.isfinite(baseline.val_predictions).all()
        restored = pickle.loads(pickle.dumps(baseline.estimator))
        probe = np.zeros((2, 12), np.float32)  # the features' means
        np.testing.assert_allclose(restored.predict(probe), baseline.estimator.predict(probe))
