"""An objective without PyTorch: scikit-learn's gradient boosting on its bundled diabetes data.

Boosting adds trees in rounds (``warm_start``), and each round is reported like an epoch: MLflow gets a
validation curve over the stages and the pruner can stop a poor configuration after its first rounds.
Declared with a hyperparameter table, so a study file is checked against it before anything runs.
hpo never imports torch for it.
"""

import math

from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

from hpo.objectives import Hyperparameter, HyperparameterTable, TrialContext, integer, number, objective

HYPERPARAMETERS = HyperparameterTable(
    Hyperparameter("n_estimators", integer(ge=1, le=5000), 200, "boosting stages (trees) at most"),
    Hyperparameter("stages_per_report", integer(ge=1), 10, "stages added between two reports (one pruning step)"),
    Hyperparameter("learning_rate", number(gt=0, le=1), 0.1, "shrinkage of each tree's contribution"),
    Hyperparameter("max_depth", integer(ge=1, le=12), 3, "depth of each tree"),
    Hyperparameter("subsample", number(gt=0, le=1), 1.0, "share of the training rows each tree sees"),
    Hyperparameter("min_samples_leaf", integer(ge=1), 1, "training rows a leaf holds at least"),
)


@objective(metrics={"val_rmse": "minimize", "val_r2": "maximize"}, hyperparameters=HYPERPARAMETERS)
def boosting(ctx: TrialContext) -> dict[str, float]:
    """Add trees round by round; report the validation RMSE after each round."""
    hp = ctx.hyperparameters
    x, y = load_diabetes(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=ctx.data.val_fraction, random_state=ctx.data.split_seed
    )
    model = GradientBoostingRegressor(
        learning_rate=hp["learning_rate"],
        max_depth=hp["max_depth"],
        subsample=hp["subsample"],
        min_samples_leaf=hp["min_samples_leaf"],
        random_state=ctx.seed,
        warm_start=True,
        n_estimators=0,
    )
    best = {"val_rmse": math.inf, "val_r2": -math.inf}
    for stages in range(hp["stages_per_report"], hp["n_estimators"] + 1, hp["stages_per_report"]):
        model.set_params(n_estimators=stages).fit(x_train, y_train)  # warm start: only the new trees are fitted
        predicted = model.predict(x_val)
        metrics = {
            "train_loss": float(model.train_score_[-1]),
            "val_rmse": mean_squared_error(y_val, predicted) ** 0.5,
            "val_r2": r2_score(y_val, predicted),
        }
        ctx.report(stages, metrics)  # step = trees so far; may stop the trial here
        if metrics["val_rmse"] < best["val_rmse"]:
            best = {"val_rmse": metrics["val_rmse"], "val_r2": metrics["val_r2"]}
    return best
