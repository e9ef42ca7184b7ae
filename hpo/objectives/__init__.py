"""Objectives: what a trial trains. The one module objective authors import; hpo's built-ins use it too.

A study file names its objective (``objective:``) as a registered name (``boston``, ``cifar10``, or an
entry point of group ``hpo.objectives``), as ``package.module:name``, or as ``path/to/file.py:name``
(relative to the study file). Naming an import path runs that code, as ``pytest`` or ``python -m`` would.

**Minimal objective** — a function of a :class:`TrialContext` that returns its final metrics
(a dict, or one number for a one-metric study), like Optuna's ``objective(trial)`` and Ray Tune's
function trainables, but given its hyperparameters instead of sampling them::

    def train(ctx: TrialContext) -> dict[str, float]:
        model = build(ctx.hyperparameters)                  # defaults < fixed < sampled
        for epoch in range(ctx.hyperparameters["epochs"]):
            ...
            ctx.report(epoch, {"train_loss": loss, "val_acc": acc})   # MLflow curve, pruning
        return {"val_acc": best_acc}

``ctx.report`` logs the epoch to MLflow (batched), feeds the pruner and raises ``optuna.TrialPruned``
when the pruner says stop (let it propagate). hpo then gives the trial everything that does not need
the model back: per-epoch curves, ``best_<metric>``/``best_epoch``, pruning, NaN and failure handling,
workers and schedules, ``hpo status|best|report|compare``. Without a declaration the study file must
give ``metric`` and ``direction``, and its params reach the trial unchecked.

**Declaring it** (:func:`objective` or :class:`Objective`) adds what hpo checks before anything runs:
the metrics and their directions, the default metric, a :class:`HyperparameterTable` (one row per
hyperparameter: rule, default, the models that use it, meaning; unknown names and out-of-range values
in a study file are refused, ``hpo validate`` and the README reference are generated from it), objective-
specific ``data:`` options (a :class:`DataConfig` subclass), a ``validate`` hook for what a table cannot
say, a ``preflight`` that checks the data is there, the datasets ``hpo data`` manages.

**Full objective** — also ``evaluation=``, :class:`EvaluationHooks` (like a Lightning module's hooks:
``build_model``, ``val_split``, ``test_split``, ``to_predictions``; optionally ``baselines``,
``retrain_task`` and ``read_inputs`` for ``hpo predict``), and its function returns a :class:`TrialResult`
with the trained model(s), their ``meta`` and validation predictions: hpo keeps them as the trial's
checkpoint, and ``hpo evaluate`` gives it the once-only test evaluation (the test reader counted),
greedy/mean ensembles, the registry and the pyfunc model. A result may carry several models (one per
cross-validation fold); predictions average them.

**Cross-validation** (``data.cv_folds: K``): an objective that declares ``cv_rows`` (the count, or the
class labels, of the non-test rows the folds split) is called once per fold with ``ctx.fold`` (a
:class:`Fold`: ``index``, ``count``, ``train`` and ``val`` positions); hpo makes the reported steps
cumulative epochs, averages the folds' metrics and keeps the out-of-fold validation predictions.

Declarations must stay cheap: hpo reads them on every ``hpo validate``. hpo's own objectives keep theirs
free of torch and import their training code when a trial runs (``evaluation="package.module"`` is
imported only when needed); hpo itself imports torch only for objectives that use it (``ctx.device``,
a checkpointed model, or a module that imports torch).

Workers load the objective the same way: the code must be importable where they run (an installed
package, or a file on a mounted path at the same place relative to the study file).
"""

from hpo.objectives._context import NonFiniteLoss, TrialContext, TrialResult
from hpo.objectives._data import DataConfig
from hpo.objectives._folds import Fold, make_folds
from hpo.objectives._fragments import MLP, TRAINING, check_batch_statistics, check_schedule
from hpo.objectives._inputs import read_input_file
from hpo.objectives._loader import LoadedObjective, load_objective
from hpo.objectives._protocol import (
    TTA_META_KEY,
    Baseline,
    Dataset,
    EvaluationHooks,
    ModuleDataset,
    Objective,
    objective,
)
from hpo.objectives._registry import registered
from hpo.objectives._table import (
    FieldError,
    Hyperparameter,
    HyperparameterTable,
    Rule,
    choice,
    flag,
    integer,
    number,
    text,
)

__all__ = [
    "MLP",
    "TRAINING",
    "TTA_META_KEY",
    "Baseline",
    "DataConfig",
    "Dataset",
    "EvaluationHooks",
    "FieldError",
    "Fold",
    "Hyperparameter",
    "HyperparameterTable",
    "LoadedObjective",
    "ModuleDataset",
    "NonFiniteLoss",
    "Objective",
    "Rule",
    "TrialContext",
    "TrialResult",
    "check_batch_statistics",
    "check_schedule",
    "choice",
    "flag",
    "integer",
    "load_objective",
    "make_folds",
    "number",
    "objective",
    "read_input_file",
    "registered",
    "text",
]
