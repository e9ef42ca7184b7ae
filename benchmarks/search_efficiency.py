"""Search efficiency on Boston: hpo's sampler and pruner against random search without pruning, same wall budget.

Each variant runs the search space of `studies/boston-mlp.yaml` through `hpo.running.runner.StudyRunner` (what
`hpo run` calls) with `timeout` = the budget, for several seeds, interleaved (seed 0: hpo, random;
seed 1: hpo, random; ...) so that a busy shared machine slows both alike. From the stored trials it
reports the best validation RMSE so far against wall time, and how much of random search's budget hpo
needs to reach random search's final best (the target is at most one third).

Variants: `hpo` = the study file's sampler and pruner (TPE multivariate with 10 random start-up
trials, Hyperband from epoch 10, reduction factor 3); `random` = RandomSampler without pruning;
`tpe` = the same TPE without pruning; `tpe-median` = TPE with the median pruner.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report

STUDY_FILE = _report.REPO / "studies" / "boston-mlp.yaml"
FRACTIONS = (0.1, 0.25, 1 / 3, 0.5, 0.75, 1.0)
TARGET = 1 / 3


def variant_study(base: dict[str, Any], variant: str) -> dict[str, Any]:
    study = copy.deepcopy(base)
    if variant == "random":
        study["sampler"], study["pruner"] = {"type": "random"}, {"type": "none"}
    elif variant == "tpe":
        study["pruner"] = {"type": "none"}
    elif variant == "tpe-median":
        study["pruner"] = {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 10}
    elif variant != "hpo":
        raise SystemExit(f"--variants: unknown variant {variant!r}; accepted: hpo, random, tpe, tpe-median")
    return study


def run_study(study: dict[str, Any], workdir: Path, budget: float) -> dict[str, Any]:
    """Run one study for `budget` seconds; return its trials as (seconds since start, state, value)."""
    from hpo.config import parse_study
    from hpo.config.settings import Settings
    from hpo.running.runner import StudyRunner

    settings = Settings(
        storage=f"sqlite:///{workdir / 'hpo.db'}", tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", data_dir=workdir
    )
    runner = StudyRunner(parse_study(study, source="search-efficiency benchmark"), settings)
    started = time.time()
    summary = runner.run(timeout=budget)
    trials = []
    for t in runner.study.get_trials(deepcopy=False):
        if t.datetime_complete is None:
            continue
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "seconds": t.datetime_complete.timestamp() - started,
            }
        )
    return {
        "trials": trials,
        "elapsed": summary.seconds,
        "complete": summary.completed,
        "pruned": summary.pruned,
        "failed": summary.failed,
    }


def best_so_far(trials: list[dict[str, Any]], until: float) -> float:
    values = [
        t["value"] for t in trials if t["state"] == "COMPLETE" and t["seconds"] <= until and t["value"] is not None
    ]
    return min(values) if values else math.inf


def time_to_reach(trials: list[dict[str, Any]], target: float) -> float | None:
    for t in sorted(trials, key=lambda t: t["seconds"]):
        if t["state"] == "COMPLETE" and t["value"] is not None and t["value"] <= target:
            return float(t["seconds"])
    return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 CPU cores: 3 seeds, 150 s per study, one torch thread")
    parser.add_argument("--seeds", type=int, help="seeds per variant (default 3 quick, 5 full)")
    parser.add_argument("--budget", type=float, help="wall seconds per study (default 150 quick, 600 full)")
    parser.add_argument(
        "--variants",
        default="hpo,random",
        help="comma list of hpo, random, tpe, tpe-median; the first is compared with `random`",
    )
    parser.add_argument(
        "--epochs", type=int, help="override the study file's epochs (and scale patience and min_resource to it)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default 1 with --quick)")
    parser.add_argument("--workdir", help="folder for the SQLite files (default: a temporary folder)")
    parser.add_argument("--plot", help="save the best-so-far curves as this PNG file")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quick = args.quick
    seeds = args.seeds or (3 if quick else 5)
    budget = args.budget or (150.0 if quick else 600.0)
    threads = args.threads or (1 if quick else None)
    variants = args.variants.split(",")
    if "random" not in variants:
        raise SystemExit("--variants: must include random (the reference)")
    challenger = next(v for v in variants if v != "random")

    base = yaml.safe_load(STUDY_FILE.read_text())
    base.pop("n_trials", None)
    base.update(storage=None, tracking_uri=None)
    base["evaluation"] = {**base.get("evaluation", {}), "checkpoints": "top_k"}
    if threads:
        base["execution"] = {"threads": threads}
    if args.epochs:
        scale = args.epochs / base["fixed"]["epochs"]
        base["fixed"] = {
            **base["fixed"],
            "epochs": args.epochs,
            "early_stopping_patience": max(1, round(base["fixed"]["early_stopping_patience"] * scale)),
        }
        base["pruner"] = {**base["pruner"], "min_resource": max(1, round(base["pruner"]["min_resource"] * scale))}

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="hpo-search-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for seed in range(seeds):
            for variant in variants:
                study = variant_study(base, variant)
                study.update(name=f"{variant}-seed{seed}-{int(time.time())}", seed=seed)
                result = run_study(study, workdir, budget)
                result["seed"] = seed
                runs[variant].append(result)
                best = best_so_far(result["trials"], budget)
                print(
                    f"seed {seed} {variant:10s} {result['complete']:3d} complete {result['pruned']:3d} pruned "
                    f"{result['failed']:2d} failed; best val_rmse {best:.4f}",
                    file=sys.stderr,
                    flush=True,
                )

    curve_rows = []
    for variant in variants:
        row: dict[str, Any] = {"variant": variant}
        for f in FRACTIONS:
            row[f"best at {f:.0%} of budget"] = statistics.median(
                best_so_far(r["trials"], f * budget) for r in runs[variant]
            )
        row["trials (median)"] = statistics.median(len(r["trials"]) for r in runs[variant])
        row["pruned (median)"] = statistics.median(r["pruned"] for r in runs[variant])
        curve_rows.append(row)

    seed_rows = []
    fractions = []
    for mine, reference in zip(runs[challenger], runs["random"]):
        target = best_so_far(reference["trials"], budget)
        reached = time_to_reach(mine["trials"], target) if math.isfinite(target) else None
        fraction = reached / budget if reached is not None and reached <= budget else None
        fractions.append(fraction if fraction is not None else math.inf)
        seed_rows.append(
            {
                "seed": mine["seed"],
                "random: final best": target,
                f"{challenger}: final best": best_so_far(mine["trials"], budget),
                f"{challenger}: s to reach random's best": reached,
                "fraction of random's budget": fraction,
            }
        )
    median_fraction = statistics.median(fractions) if fractions else math.inf

    info = _report.machine()
    verdict = "met" if median_fraction <= TARGET else "not met"
    shown = "not reached within the budget" if not math.isfinite(median_fraction) else f"{median_fraction:.2f}"
    text = "\n".join(
        [
            _report.header(
                f"Search efficiency: {challenger} vs random search (Boston, {budget:.0f} s per study)", argv, info
            ),
            f"Search space and settings: `{STUDY_FILE.relative_to(_report.REPO)}`"
            + (f" with epochs {args.epochs}" if args.epochs else "")
            + f"; {seeds} seeds; torch threads {threads or 'default'}. "
            + "Best validation RMSE (k$) so far, median over seeds:",
            "",
            _report.table(curve_rows),
            "Per seed: how long the challenger needs to match random search's final best:",
            "",
            _report.table(seed_rows),
            f"Median fraction of random search's budget {challenger} needs: **{shown}** (target at most "
            f"{TARGET:.2f}: {verdict}).",
            "",
        ]
    )
    print(text)
    if args.plot:
        plot(runs, budget, args.plot)
    payload = {
        "machine": info,
        "command": _report.command_line(argv),
        "budget": budget,
        "runs": runs,
        "curves": curve_rows,
        "seeds": seed_rows,
        "median_fraction": median_fraction,
    }
    _report.save(args.json, payload)
    return payload


def plot(runs: dict[str, list[dict[str, Any]]], budget: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    grid = [budget * i / 200 for i in range(1, 201)]
    for i, (variant, results) in enumerate(runs.items()):
        color = f"C{i}"
        for r in results:
            ax.plot(grid, [best_so_far(r["trials"], t) for t in grid], color=color, alpha=0.25, lw=1)
        ax.plot(
            grid,
            [statistics.median(best_so_far(r["trials"], t) for r in results) for t in grid],
            color=color,
            lw=2,
            label=f"{variant} (median of {len(results)})",
        )
    ax.set(
        xlabel="wall seconds", ylabel="best validation RMSE so far (k$)", title="Boston: best-so-far against wall time"
    )
    ax.set_ylim(top=min(8.0, ax.get_ylim()[1]))
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
