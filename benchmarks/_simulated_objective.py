"""A trial that trains nothing: it sleeps a drawn time per epoch and reports a made-up learning curve.

`benchmarks/scale.py` runs it in many `hpo worker` processes so that what is measured is hpo's own
bookkeeping (asking, telling, heartbeats, MLflow), not CPU. A plug-in like any user's objective, and
torch-free: a worker running it must never import torch. Each epoch sleeps `trial_seconds / epochs`
times a factor drawn in [0.8, 1.2] from the trial's seed; the curve falls towards a quality that
depends on `x` and `y`, so the sampler and the pruner have something real to work on.

With `HPO_SCALE_DIR` set, the trial's start (epoch -1), every epoch and a pruned trial's end (slept 0)
append {"pid", "trial", "epoch", "slept", "t", "done"} to `objective-<pid>.jsonl` there: the benchmark
reads the time slept and which worker is mid-trial.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from hpo.objectives import Hyperparameter, HyperparameterTable, TrialContext, integer, number, objective

HYPERPARAMETERS = HyperparameterTable(
    Hyperparameter("x", number(ge=-1, le=1), 0.0, "first coordinate of the configuration"),
    Hyperparameter("y", number(ge=-1, le=1), 0.0, "second coordinate of the configuration"),
    Hyperparameter("epochs", integer(ge=1, le=1000), 4, "epochs (reports) per trial"),
    Hyperparameter("trial_seconds", number(gt=0, le=3600), 2.0, "mean seconds a whole trial sleeps"),
)


@objective(metrics={"val_loss": "minimize"}, hyperparameters=HYPERPARAMETERS)
def simulate(ctx: TrialContext) -> dict[str, float]:
    """Sleep epoch by epoch and report a noisy curve that converges to the configuration's quality."""
    hp = ctx.hyperparameters
    best = simulated_trial(
        x=hp["x"],
        y=hp["y"],
        epochs=hp["epochs"],
        trial_seconds=hp["trial_seconds"],
        seed=ctx.seed,
        trial_number=ctx.trial_number,
        report=lambda epoch, val_loss: ctx.report(epoch, {"train_loss": val_loss * 0.9, "val_loss": val_loss}),
    )
    return {"val_loss": best}


def simulated_trial(
    *,
    x: float,
    y: float,
    epochs: int,
    trial_seconds: float,
    seed: int,
    trial_number: int,
    report: Callable[[int, float], None],
) -> float:
    """The simulated training, written once for hpo's plug-in and the bare Optuna loop (`_optuna_loop_worker`):
    `report(epoch, val_loss)` after each epoch's sleep (raising ends the trial, as pruning does); the best
    val_loss is returned."""
    rng = random.Random(seed)
    quality = (x - 0.3) ** 2 + (y + 0.2) ** 2
    log = _log_file()
    if log is not None:  # the trial has started: from here until "done" its worker is mid-trial
        _append(
            log, {"pid": os.getpid(), "trial": trial_number, "epoch": -1, "slept": 0.0, "t": time.time(), "done": False}
        )
    best = float("inf")
    for epoch in range(epochs):
        slept = trial_seconds / epochs * rng.uniform(0.8, 1.2)
        time.sleep(slept)
        val_loss = quality + 1.0 / (epoch + 1) + rng.gauss(0.0, 0.01)
        best = min(best, val_loss)
        if log is not None:
            record = {"pid": os.getpid(), "trial": trial_number, "epoch": epoch, "slept": slept}
            _append(log, {**record, "t": time.time(), "done": epoch == epochs - 1})
        try:
            report(epoch, val_loss)
        except BaseException:  # pruned (or stopped): the trial is over, its worker no longer mid-trial
            if log is not None:
                record = {"pid": os.getpid(), "trial": trial_number, "epoch": epoch, "slept": 0.0}
                _append(log, {**record, "t": time.time(), "done": True})
            raise
    return best


def _log_file() -> Path | None:
    folder = os.environ.get("HPO_SCALE_DIR")
    return Path(folder) / f"objective-{os.getpid()}.jsonl" if folder else None


def _append(path: Path, record: dict[str, object]) -> None:
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")
