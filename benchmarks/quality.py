"""Model quality: what a study's best model and ensemble score on the test split, beside simple baselines.

Boston: a study over the space of `studies/boston-mlp.yaml`, then `hpo evaluate` (hpo.evaluation.evaluate:
the top-k checkpoints, a greedy ensemble chosen on validation predictions, and scikit-learn linear
regression, random forest and gradient boosting fitted on the same training rows) on the seeded 20%
test split. CIFAR-10: a CNN study within a stated budget (2 CPU cores: 30 minutes; GPU: 50 trials), then
the same evaluation on the official 10,000 test images; data from `--cifar-source` (default: the
project's shared cifar10-jpeg.tar.gz, imported through `hpo.data.cifar10.import_dataset`).

Everything goes through the code a user runs (`StudyRunner` as `hpo run` builds it, then
`hpo evaluate`'s function); the test split is read once per study, by the evaluation.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
import _report  # noqa: E402

BOSTON_STUDY = _report.REPO / "studies" / "boston-mlp.yaml"

# A CNN search space for CIFAR-10 small enough to train on CPU cores, broad enough to matter on a GPU.
CIFAR_STUDY: dict[str, Any] = {
    "name": "cifar10-quality",
    "objective": "cifar10",
    "metric": "val_acc",
    "direction": "maximize",
    "sampler": {"type": "tpe", "multivariate": True, "n_startup_trials": 8},
    "pruner": {"type": "hyperband", "min_resource": 2, "reduction_factor": 3},
    "params": {
        "conv_blocks": {"type": "int", "low": 2, "high": 3},
        "filters": {"type": "int", "low": 16, "high": 64, "log": True},
        "batch_norm": {"type": "categorical", "choices": [True, False]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.4},
        "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        "momentum": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": ["sgd"]}},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "augment_flip": {"type": "categorical", "choices": [True, False]},
        "augment_crop": {"type": "categorical", "choices": [0, 4]},
        "lr_schedule": {"type": "categorical", "choices": ["none", "cosine", "onecycle"]},
    },
    "fixed": {"model": "cnn", "batch_size": 128, "hidden_layers": 0, "early_stopping_patience": 4},
    "evaluation": {"top_k": 5, "ensemble": "greedy", "checkpoints": "top_k"},
}


def run_and_evaluate(study: dict[str, Any], workdir: Path, *, n_trials: int | None, timeout: float | None, top_k: int) -> dict[str, Any]:
    """Run the study (as `hpo run` does), then evaluate it (as `hpo evaluate` does); return the figures."""
    from hpo.config import parse_study
    from hpo.evaluation import evaluate
    from hpo.results import StudyRef
    from hpo.runner import StudyRunner
    from hpo.settings import Settings

    config = parse_study(study, source="quality benchmark")
    settings = Settings(storage=f"sqlite:///{workdir / 'hpo.db'}", tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", data_dir=workdir)
    started = time.perf_counter()
    summary = StudyRunner(config, settings).run(n_trials=n_trials, timeout=timeout)
    search_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate(StudyRef(name=config.name, settings=settings, config=config), top_k=top_k)
    evaluate_seconds = time.perf_counter() - started
    rows = [{"model": r.label, "kind": r.kind, "rank": r.rank, **{k: v for k, v in r.metrics.items() if k.startswith(("test_", "val_")) and k in set(result.headline) | {config.metrics[0]}}} for r in result.results]
    return {
        "study": config.name,
        "complete": summary.completed,
        "pruned": summary.pruned,
        "failed": summary.failed,
        "best_value": summary.best_value,
        "search_seconds": search_seconds,
        "evaluate_seconds": evaluate_seconds,
        "headline": result.headline,
        "rows": rows,
        "notes": result.notes,
    }


def boston_study(seed: int, epochs: int | None, threads: int | None) -> dict[str, Any]:
    study = yaml.safe_load(BOSTON_STUDY.read_text())
    study.update(name=f"boston-quality-seed{seed}-{int(time.time())}", seed=seed, storage=None, tracking_uri=None)
    if epochs:
        scale = epochs / study["fixed"]["epochs"]
        study["fixed"] = {**study["fixed"], "epochs": epochs, "early_stopping_patience": max(1, round(study["fixed"]["early_stopping_patience"] * scale))}
        study["pruner"] = {**study["pruner"], "min_resource": max(1, round(study["pruner"]["min_resource"] * scale))}
    if threads:
        study["execution"] = {"threads": threads}
    return study


def cifar_study(*, epochs: int, subset: float, threads: int | None) -> dict[str, Any]:
    study = copy.deepcopy(CIFAR_STUDY)
    study["name"] = f"cifar10-quality-{int(time.time())}"
    study["fixed"] = {**study["fixed"], "epochs": epochs}
    study["data"] = {"subset": subset}
    study["pruner"] = {**study["pruner"], "min_resource": max(1, min(2, epochs // 3))}
    if threads:
        study["execution"] = {"threads": threads}
    return study


def section(title: str, result: dict[str, Any], budget: str) -> str:
    return "\n".join(
        [
            f"### {title}",
            "",
            f"Budget: {budget}. Study `{result['study']}`: {result['complete']} complete, {result['pruned']} pruned, {result['failed']} failed trials "
            f"in {result['search_seconds']:.0f} s; evaluation {result['evaluate_seconds']:.0f} s.",
            "",
            _report.table(result["rows"]),
            *(f"- note: {n}" for n in result["notes"]),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 CPU cores: Boston 40 trials; CIFAR-10 a 30-minute study on 20%% of the training images")
    parser.add_argument("--boston-trials", type=int, help="trials of the Boston study (default 40 quick, 100 full)")
    parser.add_argument("--boston-seeds", type=int, help="Boston studies with different seeds (default 1 quick, 3 full)")
    parser.add_argument("--boston-epochs", type=int, help="override the study file's epochs (for smoke tests)")
    parser.add_argument("--skip-cifar", action="store_true", help="Boston only")
    parser.add_argument("--cifar-trials", type=int, help="trial cap of the CIFAR-10 study (default: none quick, 50 full)")
    parser.add_argument("--cifar-minutes", type=float, help="wall budget of the CIFAR-10 study (default 30 quick, none full)")
    parser.add_argument("--cifar-epochs", type=int, help="epochs per CIFAR-10 trial (default 6 quick, 30 full)")
    parser.add_argument("--cifar-subset", type=float, help="fraction of the training images (default 0.2 quick, 1.0 full)")
    parser.add_argument("--cifar-source", help="CIFAR-10 archive to import into HPO_DATA_DIR (default: the cached copy, else the shared one)")
    parser.add_argument("--top-k", type=int, default=5, help="models evaluated and offered to the ensemble")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--workdir", help="folder for the SQLite files and artifacts (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quick = args.quick
    payload: dict[str, Any] = {"command": _report.command_line(argv), "boston": [], "cifar10": None}
    parts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hpo-quality-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        boston_trials = args.boston_trials or (40 if quick else 100)
        for seed in range(args.boston_seeds or (1 if quick else 3)):
            result = run_and_evaluate(boston_study(seed, args.boston_epochs, args.threads), workdir, n_trials=boston_trials, timeout=None, top_k=args.top_k)
            payload["boston"].append(result)
            parts.append(section(f"Boston housing, seed {seed} (test RMSE in k$, 101 test rows)", result, f"{boston_trials} trials of `{BOSTON_STUDY.relative_to(_report.REPO)}`" + (f" with {args.boston_epochs} epochs" if args.boston_epochs else "")))
            print(parts[-1], file=sys.stderr, flush=True)
        if args.skip_cifar:
            parts.append("### CIFAR-10\n\nNot run (--skip-cifar).\n")
        else:
            why = _data.ensure_cifar10(args.cifar_source)
            if why is not None:
                parts.append(f"### CIFAR-10\n\nNot run: {why}.\n")
            else:
                minutes = args.cifar_minutes or (30.0 if quick else None)
                trials = args.cifar_trials or (None if quick else 50)
                epochs = args.cifar_epochs or (6 if quick else 30)
                subset = args.cifar_subset or (0.2 if quick else 1.0)
                study = cifar_study(epochs=epochs, subset=subset, threads=args.threads)
                result = run_and_evaluate(study, workdir, n_trials=trials, timeout=minutes * 60 if minutes else None, top_k=args.top_k)
                payload["cifar10"] = result
                budget = " and ".join(filter(None, [f"{minutes:g} minutes" if minutes else "", f"{trials} trials" if trials else ""])) + f", {epochs} epochs per trial, {subset:.0%} of the 45,000 training images"
                parts.append(section("CIFAR-10 (test accuracy on the official 10,000 test images)", result, budget))
    info = _report.machine()
    payload["machine"] = info
    text = _report.header("Model quality: best model and ensemble against baselines", argv, info) + "\n" + "\n".join(parts)
    print(text)
    _report.save(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
