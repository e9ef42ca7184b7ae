"""The hand-written Optuna loop `scale.py --paths optuna` measures hpo against: no hpo, no MLflow.

What a user writes from Optuna's guide to distributed optimization: the study loaded from the same
PostgreSQL database, the same sampler, pruner, heartbeat and retry as the hpo study of the same run, the
same simulated training (`_simulated_objective.simulated_trial`), and `MaxTrialsCallback` for the budget
(checked after each trial, so workers can overshoot it: the benchmark reports that as it finds it). The
plug-in's module it shares the training with imports `hpo.objectives` for its decorator; no hpo code runs.

    python benchmarks/_optuna_loop_worker.py OUT.json STORAGE_URL STUDY N_TRIALS TRIAL_SECONDS EPOCHS HEARTBEAT SEED

At exit OUT.json holds what `_scale_worker.py` writes (no latencies: `optimize` hides ask and tell).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

import optuna
from _simulated_objective import simulated_trial
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.study import MaxTrialsCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("out", "storage", "study"):
        parser.add_argument(name)
    parser.add_argument("n_trials", type=int)
    parser.add_argument("trial_seconds", type=float)
    parser.add_argument("epochs", type=int)
    parser.add_argument("heartbeat", type=int)
    parser.add_argument("seed", type=int)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = RDBStorage(
        args.storage,
        heartbeat_interval=args.heartbeat,
        grace_period=3 * args.heartbeat,
        failed_trial_callback=RetryFailedTrialCallback(max_retry=1),
    )
    study = optuna.load_study(
        study_name=args.study,
        storage=storage,
        sampler=optuna.samplers.TPESampler(n_startup_trials=10, seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        x, y = trial.suggest_float("x", -1, 1), trial.suggest_float("y", -1, 1)

        def report(epoch: int, val_loss: float) -> None:
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        seed = args.seed * 1_000_003 + trial.number
        return simulated_trial(
            x=x,
            y=y,
            epochs=args.epochs,
            trial_seconds=args.trial_seconds,
            seed=seed,
            trial_number=trial.number,
            report=report,
        )

    study.optimize(objective, callbacks=[MaxTrialsCallback(args.n_trials, states=None)])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload = {
        "pid": os.getpid(),
        "ask": [],
        "tell": [],
        "mlflow": [],
        "mlflow_endpoints": {},
        "torch_imported": "torch" in sys.modules,
        "max_rss_mb": usage.ru_maxrss / 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    Path(args.out).write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
