"""Fixed cost of a command: what a user waits for before hpo does any work, measured from a fresh folder.

Each figure is a fresh `python -m hpo` process in a new empty folder (SQLite defaults), the median of
`--repeats`, commands interleaved so that a busy machine slows them alike:

- `validate`: `hpo validate studies/boston-mlp.yaml` (file, search space, data and stores checked);
- `run to first trial`: `hpo run` of a one-trial, one-epoch Boston study, from process start to the
  trial's start as Optuna records it; `run` is the whole process;
- `status`: `hpo status` of that folder's storage after the run (every study, counted);
- `import torch`: `python -c "import torch"`, the yardstick of the goal "first trial within the torch
  import time + 2 s".

    python benchmarks/fixed_cost.py                      # 3 repeats, about a minute on a quiet 2-core machine
    python benchmarks/fixed_cost.py --pythonpath OLD/    # the same for another checkout of hpo (before/after)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report

ONE_TRIAL = """name: one-trial
objective: boston
metric: val_rmse
direction: minimize
seed: 0
n_trials: 1
sampler: {type: tpe}
pruner: {type: none}
params:
  lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
fixed:
  epochs: 1
"""


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, the wall clock when the process started) of one process; a failure stops the benchmark."""
    wall, started = time.time(), time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - started, wall


def first_trial_start(folder: Path) -> float:
    """The one trial's start (Unix time) as the study's storage recorded it."""
    import sqlite3

    with sqlite3.connect(folder / "hpo.db") as conn:
        (text,) = conn.execute("SELECT datetime_start FROM trials ORDER BY number LIMIT 1").fetchone()
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()  # Optuna stores UTC


def measure_once(env: dict[str, str]) -> dict[str, float]:
    hpo = [sys.executable, "-m", "hpo"]
    with tempfile.TemporaryDirectory(prefix="hpo-fixed-cost-") as tmp:
        folder = Path(tmp)
        (folder / "one.yaml").write_text(ONE_TRIAL)
        row = {
            "validate": _timed([*hpo, "validate", str(_report.REPO / "studies" / "boston-mlp.yaml")], folder, env)[0]
        }
        run, started = _timed([*hpo, "run", "one.yaml", "--quiet"], folder, env)
        row.update(run=run, **{"run to first trial": first_trial_start(folder) - started})
        row["status"] = _timed([*hpo, "status"], folder, env)[0]
        row["import torch"] = _timed([sys.executable, "-c", "import torch"], folder, env)[0]
    return row


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pythonpath", help="import hpo from this checkout instead (e.g. `git archive` of an older commit)"
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    env = {**os.environ, "HPO_PROGRESS": "plain"}
    for name in ("HPO_STORAGE", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)  # the embedded defaults in the fresh folder
    if args.pythonpath:
        env["PYTHONPATH"] = str(Path(args.pythonpath).resolve())
    samples = [measure_once(env) for _ in range(args.repeats)]
    row = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    row["first trial - import torch"] = row["run to first trial"] - row["import torch"]
    info = _report.machine()
    payload = {"command": _report.command_line(argv), "machine": info, "row": row, "samples": samples}
    print(_report.header("Fixed cost of a command", argv, info))
    print(_report.table([row]))
    print("Goals (issue 15, quiet machine): validate <= 1.5 s, status <= 1.5 s, first trial - import torch <= 2 s.")
    _report.save(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
