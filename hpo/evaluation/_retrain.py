"""Retraining a chosen configuration on train+validation over several seeds, before the test is read.

The search used validation to pick hyperparameters and the best epoch; once they are fixed, the
validation rows are more useful as training data. Each retrain runs for the trial's best epoch count
(no early stopping: there is no held-out data left to stop on) and keeps the last epoch's weights.
The spread over seeds is the seed noise reports and comparisons weigh gaps against.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from hpo.config import DataConfig
from hpo.errors import HpoError, UsageError
from hpo.evaluation._checkpoints import Member
from hpo.training.loop import NonFiniteLoss, train


def retrain_seeds(trial_seed: int, n: int) -> list[int]:
    """Seeds distinct from the one the trial trained with, derived from it so they are reproducible."""
    return [(trial_seed + 104_729 * (i + 1)) % (2**31 - 1) for i in range(n)]


def retrain(
    member: Member, data: DataConfig, *, seeds: list[int], device: torch.device
) -> list[tuple[nn.Module, dict[str, Any]]]:
    """One (model, meta) per seed, trained on train+validation through the objective's `retrain_task`."""
    hooks = member.hooks()
    retrain_task = getattr(hooks, "retrain_task", None)
    if retrain_task is None:
        raise UsageError(
            f"--retrain-seeds: objective {member.objective} cannot train on train+validation "
            "(its evaluation hooks have no retrain_task); use --retrain-seeds 0"
        )
    task, meta = retrain_task(data, member.meta, device)
    meta = dict(meta)
    epochs = member.best_epoch + 1 if member.best_epoch is not None else int(member.hyperparameters["epochs"])
    hp = {**member.hyperparameters, "epochs": epochs, "early_stopping_patience": 0}
    monitor = "val_loss"
    models: list[tuple[nn.Module, dict[str, Any]]] = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = hooks.build_model(hp, meta).to(device)
        last: dict[str, Any] = {}

        def keep_last(
            epoch: int, metrics: dict[str, float], model: nn.Module = model, last: dict[str, Any] = last
        ) -> None:
            if epoch == epochs - 1:
                last["state"] = copy.deepcopy(model.state_dict())

        try:
            fit = train(model, task, hp, monitor=monitor, maximize=False, device=device, seed=seed, on_epoch=keep_last)
        except NonFiniteLoss as exc:
            raise HpoError(f"retraining {member.name} with seed {seed} diverged: {exc}") from None
        fit.model.load_state_dict(last["state"])
        models.append((fit.model.eval(), meta))
    return models
