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
import _data
import _report

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


def run_and_evaluate(
    study: dict[str, Any], workdir: Path, *, n_trials: int | None, timeout: float | None, top_k: int
) -> dict[str, Any]:
    """Run the study (as `hpo run` does), then evaluate it (as `hpo evaluate` does); return the figures."""
    from hpo.config import parse_study
    from hpo.config.settings import Settings
    from hpo.evaluation import evaluate
    from hpo.running.results import StudyRef
    from hpo.running.runner import StudyRunner

    config = parse_study(study, source="quality benchmark")
    settings = Settings(
        storage=f"sqlite:///{workdir / 'hpo.db'}", tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", data_dir=workdir
    )
    started = time.perf_counter()
    summary = StudyRunner(config, settings).run(n_trials=n_trials, timeout=timeout)
    search_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate(StudyRef(name=config.name, settings=settings, config=config), top_k=top_k)
    evaluate_seconds = time.perf_counter() - started
    shown = (
        set(result.headline)
        | {config.metrics[0]}
        | {f"{m}{suffix}" for m in result.headline[:1] for suffix in ("_ci_low", "_ci_high")}
    )
    rows = [
        {
            "model": r.label,
            "kind": r.kind,
            "rank": r.rank,
            "baseline": r.baseline,
            "detail": r.detail,
            **{k: v for k, v in r.metrics.items() if k in shown},
        }
        for r in result.results
    ]
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


def boston_study(
    seed: int, epochs: int | None, threads: int | None, *, split_seed: int | None = None
) -> dict[str, Any]:
    study = yaml.safe_load(BOSTON_STUDY.read_text())
    study.update(name=f"boston-quality-seed{seed}-{int(time.time())}", seed=seed, storage=None, tracking_uri=None)
    if split_seed is not None:
        study["name"] = f"boston-quality-split{split_seed}-{int(time.time())}"
        study["data"] = {**study.get("data", {}), "split_seed": split_seed}
    if epochs:
        scale = epochs / study["fixed"]["epochs"]
        study["fixed"] = {
            **study["fixed"],
            "epochs": epochs,
            "early_stopping_patience": max(1, round(study["fixed"]["early_stopping_patience"] * scale)),
        }
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


BOSTON_MODELS = {
    "best trial": None,
    "ensemble": None,
    "gradient boosting": "gradient_boosting",
    "random forest": "random_forest",
    "gradient boosting, 800 trees": "gradient_boosting_slow",
    "extra trees (log prices)": "extra_trees",
    "support-vector regression (log prices, log features)": "support_vectors",
    "Gaussian process (log prices, log features)": "gaussian_process",
    "linear regression": "linear_regression",
}


def _rmse_of(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The row of `name` (a BOSTON_MODELS key) in one study's evaluation."""
    for row in result["rows"]:
        if name == "best trial" and row["kind"] == "trial" and row["rank"] == 1:
            return row
        if name == "ensemble" and row["kind"] == "ensemble":
            return row
        if BOSTON_MODELS.get(name) and row.get("baseline") == BOSTON_MODELS[name]:
            return row
    return None


def _ensemble_vs_best_member(result: dict[str, Any]) -> dict[str, Any] | None:
    """The ensemble's test RMSE against its best member's, and the ensemble's CI half-width above its value."""
    ensemble = _rmse_of(result, "ensemble")
    if ensemble is None:
        return None
    by_name = {row["model"]: row for row in result["rows"] if row["kind"] == "trial"}
    by_name.update({row["baseline"]: row for row in result["rows"] if row.get("baseline")})
    members = [
        by_name[part.rsplit(":", 1)[0].strip()]
        for part in ensemble["detail"].split(",")
        if part.rsplit(":", 1)[0].strip() in by_name
    ]
    best = min(members, key=lambda row: row["test_rmse"])
    weights = {
        part.rsplit(":", 1)[0].strip(): float(part.rsplit(":", 1)[1])
        for part in ensemble["detail"].split(",")
        if ":" in part
    }
    trials = {row["model"] for row in result["rows"] if row["kind"] == "trial"}
    return {
        "networks_weight": sum(w for name, w in weights.items() if name in trials) / (sum(weights.values()) or 1.0),
        "best_member": best["model"],
        "best_member_rmse": best["test_rmse"],
        "ensemble_rmse": ensemble["test_rmse"],
        "ensemble_ci_upper_half": ensemble["test_rmse_ci_high"] - ensemble["test_rmse"],
        "within_ci": ensemble["test_rmse"] - best["test_rmse"] <= ensemble["test_rmse_ci_high"] - ensemble["test_rmse"],
    }


def boston_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread (min, max) of test RMSE per model over the studies' split seeds."""
    import statistics

    per_model: dict[str, list[float]] = {}
    for name in BOSTON_MODELS:
        values = [row["test_rmse"] for row in (_rmse_of(r, name) for r in results) if row is not None]
        per_model[name] = values
    stats = {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v), "values": v}
        for name, v in per_model.items()
        if v
    }
    ratio = (
        stats["ensemble"]["median"] / stats["gradient boosting"]["median"]
        if "ensemble" in stats and "gradient boosting" in stats
        else None
    )
    trials = sum(r["complete"] + r["pruned"] + r["failed"] for r in results)
    return {
        "split_seeds": [r["split_seed"] for r in results],
        "test_rmse": stats,
        "ensemble_over_gradient_boosting": ratio,
        "ensemble_vs_best_member": [_ensemble_vs_best_member(r) for r in results],
        "pruned_share": sum(r["pruned"] for r in results) / trials if trials else None,
        "search_seconds": [r["search_seconds"] for r in results],
    }


def summary_section(summary: dict[str, Any]) -> str:
    rows = [
        {
            "model": name,
            "median test RMSE": s["median"],
            "min": s["min"],
            "max": s["max"],
            "per split seed": " / ".join(f"{v:.2f}" for v in s["values"]),
        }
        for name, s in summary["test_rmse"].items()
    ]
    checks = [
        f"split {seed}: ensemble {c['ensemble_rmse']:.2f} vs best member {c['best_member']} "
        f"{c['best_member_rmse']:.2f} "
        f"(CI upper half-width {c['ensemble_ci_upper_half']:.2f}; {'within' if c['within_ci'] else 'OUTSIDE'} its CI)"
        for seed, c in zip(summary["split_seeds"], summary["ensemble_vs_best_member"])
        if c
    ]
    ratio = summary["ensemble_over_gradient_boosting"]
    return "\n".join(
        [
            f"### Boston over split seeds {', '.join(map(str, summary['split_seeds']))}",
            "",
            _report.table(rows),
            "",
            f"Median ensemble / median gradient boosting: {ratio:.3f}." if ratio else "",
            f"Pruned share of trials: {summary['pruned_share']:.0%}." if summary["pruned_share"] is not None else "",
            *(f"- {line}" for line in checks),
            "",
        ]
    )


def section(title: str, result: dict[str, Any], budget: str) -> str:
    return "\n".join(
        [
            f"### {title}",
            "",
            f"Budget: {budget}. Study `{result['study']}`: {result['complete']} complete, {result['pruned']} "
            f"pruned, {result['failed']} failed trials "
            f"in {result['search_seconds']:.0f} s; evaluation {result['evaluate_seconds']:.0f} s.",
            "",
            _report.table(result["rows"]),
            *(f"- note: {n}" for n in result["notes"]),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 CPU cores: Boston 40 trials; CIFAR-10 a 30-minute study on 20%% of the training images",
    )
    parser.add_argument("--boston-trials", type=int, help="trials of the Boston study (default 40 quick, 100 full)")
    parser.add_argument(
        "--boston-seeds", type=int, help="Boston studies with different seeds (default 1 quick, 3 full)"
    )
    parser.add_argument(
        "--split-seeds",
        help="comma-separated data.split_seed values: one Boston study per test split "
        "(study seed = split seed), summarized by median and spread",
    )
    parser.add_argument("--boston-epochs", type=int, help="override the study file's epochs (for smoke tests)")
    parser.add_argument("--skip-cifar", action="store_true", help="Boston only")
    parser.add_argument(
        "--cifar-trials", type=int, help="trial cap of the CIFAR-10 study (default: none quick, 50 full)"
    )
    parser.add_argument(
        "--cifar-minutes", type=float, help="wall budget of the CIFAR-10 study (default 30 quick, none full)"
    )
    parser.add_argument("--cifar-epochs", type=int, help="epochs per CIFAR-10 trial (default 6 quick, 30 full)")
    parser.add_argument(
        "--cifar-subset", type=float, help="fraction of the training images (default 0.2 quick, 1.0 full)"
    )
    parser.add_argument(
        "--cifar-source",
        help="CIFAR-10 archive to import into HPO_DATA_DIR (default: the cached copy, else the shared one)",
    )
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
        split_seeds = [int(s) for s in args.split_seeds.split(",")] if args.split_seeds else None
        for seed in split_seeds or range(args.boston_seeds or (1 if quick else 3)):
            study = boston_study(seed, args.boston_epochs, args.threads, split_seed=seed if split_seeds else None)
            result = run_and_evaluate(study, workdir, n_trials=boston_trials, timeout=None, top_k=args.top_k)
            result["split_seed"] = seed if split_seeds else 0
            payload["boston"].append(result)
            what = f"split seed {seed}" if split_seeds else f"seed {seed}"
            parts.append(
                section(
                    f"Boston housing, {what} (test RMSE in k$, 101 test rows)",
                    result,
                    f"{boston_trials} trials of `{BOSTON_STUDY.relative_to(_report.REPO)}`"
                    + (f" with {args.boston_epochs} epochs" if args.boston_epochs else ""),
                )
            )
            print(parts[-1], file=sys.stderr, flush=True)
        if len(payload["boston"]) > 1:
            payload["boston_summary"] = boston_summary(payload["boston"])
            parts.append(summary_section(payload["boston_summary"]))
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
                result = run_and_evaluate(
                    study, workdir, n_trials=trials, timeout=minutes * 60 if minutes else None, top_k=args.top_k
                )
                payload["cifar10"] = result
                budget = (
                    " and ".join(
                        filter(None, [f"{minutes:g} minutes" if minutes else "", f"{trials} trials" if trials else ""])
                    )
                    + f", {epochs} epochs per trial, {subset:.0%} of the 45,000 training images"
                )
                parts.append(section("CIFAR-10 (test accuracy on the official 10,000 test images)", result, budget))
    info = _report.machine()
    payload["machine"] = info
    text = (
        _report.header("Model quality: best model and ensemble against baselines", argv, info) + "\n" + "\n".join(parts)
    )
    print(text)
    _report.save(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
