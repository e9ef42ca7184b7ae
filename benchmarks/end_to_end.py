"""A whole Boston study from a fresh process, fixed costs included: `hpo run` against the same training in a bare loop.

overhead.py measures per-trial costs inside one warm process; this is what a user waits for. Both ways
are fresh Python processes that train the very same configurations with the same seeds (the trials of
overhead.py's boston-short group, with `--epochs` each, on one validation split):

- `bare`: a plain loop calling the Boston objective's training function (imports torch and the
  objective, nothing else: no Optuna, no MLflow);
- `hpo run`: `python -m hpo run study.yaml` on SQLite files (the default embedded stores), the
  configurations enqueued, random sampler, no pruner, so every trial trains every epoch.

Ways alternate (bare, hpo, bare, hpo, ...); the ratio is taken within a round, the median over rounds is
quoted. The final metrics of both ways are compared, which proves they trained the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report
import overhead


def study_file(folder: Path, *, trials: int, epochs: int, threads: int) -> Path:
    """The study `hpo run` runs: the configurations enqueued, every epoch trained."""
    group = overhead.boston_short(trials)
    # overhead.py's configurations repeat every few trials and hpo enqueues a configuration once: a
    # per-trial nudge of the learning rate keeps all of them (else random ones would replace repeats).
    configs = [
        {**t.params, "epochs": epochs, "lr": t.params["lr"] * (1 + i / 1000)} for i, t in enumerate(group.trials)
    ]
    space = {k: v for k, v in overhead.SPACE.items() if any(k in c for c in configs) and k != "epochs"}
    study = {
        "name": "end-to-end",
        "objective": group.objective,
        "metric": group.metric,
        "direction": group.direction,
        "seed": 0,
        "n_trials": trials,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "data": group.data,
        "params": space,
        "fixed": {**group.fixed, "epochs": epochs},
        "enqueue": [{k: v for k, v in c.items() if k != "epochs"} for c in configs],
        "execution": {"threads": threads},
        "evaluation": {"checkpoints": "none"},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def bare_worker(path: Path) -> None:
    """The bare way, in its own process: train each enqueued configuration with hpo's trial seed; print the metrics."""
    from hpo.objectives import TrialContext, load_objective
    from hpo.running.runner import trial_seed
    from hpo.training.device import pick_device

    study = yaml.safe_load(path.read_text())
    objective = load_objective(study["objective"]).objective
    device = pick_device("auto", threads=study["execution"]["threads"])
    values = []
    for number, params in enumerate(study["enqueue"]):
        ctx = TrialContext(
            objective.resolve({**study["fixed"], **params}),
            data=objective.data_options(**study["data"]),
            metrics=[study["metric"]],
            directions=[study["direction"]],
            seed=trial_seed(study["seed"], number),
            trial_number=number,
            report=lambda epoch, metrics: None,
            resolve_device=lambda: device,
        )
        values.append(objective.train(ctx).metrics[study["metric"]])
    print(json.dumps(values))


def run_bare(path: Path, env: dict[str, str]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--bare-worker", str(path)], capture_output=True, text=True, env=env, check=True
    )
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])


def run_hpo(path: Path, folder: Path, env: dict[str, str]) -> tuple[float, list[float]]:
    import optuna

    storage = f"sqlite:///{folder / 'hpo.db'}"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo",
            "run",
            str(path),
            "--storage",
            storage,
            "--tracking-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=folder,
    )
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name="end-to-end", storage=storage).get_trials(deepcopy=False)
    return wall, [float(t.value) for t in sorted(trials, key=lambda t: t.number)]  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 CPU cores: 2 rounds of 20 trials of 60 epochs on one torch thread"
    )
    parser.add_argument("--rounds", type=int, default=2, help="bare/hpo rounds")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in both ways")
    parser.add_argument("--workdir", help="folder for the study files and databases (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--bare-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_worker:
        bare_worker(Path(args.bare_worker))
        return {}

    env = {**os.environ, "HPO_PROGRESS": "plain"}
    env.pop("HPO_STORAGE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpo-end-to-end-") as tmp:
        root = Path(args.workdir or tmp).resolve()
        for round_ in range(args.rounds):
            folder = root / f"round-{round_}"
            folder.mkdir(parents=True, exist_ok=True)
            path = study_file(folder, trials=args.trials, epochs=args.epochs, threads=args.threads)
            env["HPO_DATA_DIR"] = str(root / "data")
            bare_s, bare_values = run_bare(path, env)
            hpo_s, hpo_values = run_hpo(path, folder, env)
            rows.append(
                {
                    "round": round_,
                    "bare s": bare_s,
                    "hpo run s": hpo_s,
                    "hpo / bare": hpo_s / bare_s,
                    "largest metric difference": max(abs(a - b) for a, b in zip(bare_values, hpo_values)),
                }
            )
            print(
                f"round {round_}: bare {bare_s:.2f} s, hpo run {hpo_s:.2f} s, ratio {hpo_s / bare_s:.3f}",
                file=sys.stderr,
                flush=True,
            )
    summary = {
        "trials": args.trials,
        "epochs": args.epochs,
        "median bare s": statistics.median(r["bare s"] for r in rows),
        "median hpo run s": statistics.median(r["hpo run s"] for r in rows),
        "hpo / bare (median)": statistics.median(r["hpo / bare"] for r in rows),
        "hpo / bare (per round)": " ".join(f"{r['hpo / bare']:.3f}" for r in rows),
    }
    info = _report.machine()
    text = "\n".join(
        [
            _report.header("End to end: `hpo run` of a Boston study vs the same training in a bare loop", argv, info),
            f"{args.trials} trials of {args.epochs} epochs, one validation split, torch on {args.threads} "
            "thread(s); each way a fresh process (fixed costs included).",
            "",
            _report.table([summary]),
            _report.table(rows),
        ]
    )
    print(text)
    payload = {"machine": info, "command": _report.command_line(argv), "rounds": rows, "summary": summary}
    _report.save(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
