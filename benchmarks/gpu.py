"""CIFAR-10 on one GPU: training throughput, the airbench-style configuration's time and test accuracy,
concurrent trials on one device, and what a 5-minute study finds. Under 8 minutes on one GPU.

Sections (each prints a Markdown table; the header names the device):

1. training images/s of the airbench-style net (studies/cifar10-hour.yaml's warm-start
   configuration) and of studies/cifar10-cnn.yaml's median configuration, each as fp32 without
   channels_last, fp32 channels_last, bf16 (fp16 with a scaler where bf16 is missing) channels_last,
   and the same compiled with torch.compile; measured on the second of two epochs over a slice of the
   training images, through hpo's own training loop;
2. the airbench-style configuration cifar10-hour.yaml starts from (its warm start: 48/192/192,
   16 epochs) trained on the full training split over 3 seeds: seconds and test accuracy (with the flip
   test-time augmentation it is validated with);
3. 1, 2 and 4 (smoke: 1 and 2) trials training at once on the device (separate processes, as
   `execution.trials_per_device` runs them): images/s summed over the trials;
4. a 5-minute study (cifar10-hour.yaml with timeout 300, one worker per trial slot): best validation
   accuracy, then `hpo evaluate` (top 3, greedy ensemble) with its test accuracies and time.

    python benchmarks/gpu.py  # needs CIFAR-10 in HPO_DATA_DIR (`hpo data import cifar10 PATH`), or --cifar-source
    python benchmarks/gpu.py --smoke         # seconds on a CPU: generated tiny data, tiny widths, 1-2 epochs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
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
import yaml

STUDIES = _report.REPO / "studies"
HOUR_STUDY = STUDIES / "cifar10-hour.yaml"
CNN_STUDY = STUDIES / "cifar10-cnn.yaml"
VARIANTS = (  # (label, channels_last, precision, compile)
    ("fp32", False, "fp32", False),
    ("fp32 + channels_last", True, "fp32", False),
    ("bf16 + channels_last", True, "bf16", False),
    ("bf16 + channels_last + compile", True, "bf16", True),
)
SECTIONS = ("throughput", "seeds", "concurrent", "study")
SMOKE_MODEL = {"width_scale": 0.0625, "filters": 4, "conv_blocks": 2, "hidden_layers": 0, "width": 8}


# -- configurations -----------------------------------------------------------------------------------
def warm_start_configuration(study: Path = HOUR_STUDY, *, index: int = 0) -> dict[str, Any]:
    """The study's fixed values and its `enqueue:` entry `index` (0: the configuration it starts from)."""
    spec = yaml.safe_load(study.read_text())
    return {**spec.get("fixed", {}), **(spec.get("enqueue") or [{}])[index]}


def median_configuration(study: Path = CNN_STUDY) -> dict[str, Any]:
    """The study's fixed values, and each searched parameter at the middle of its range (the geometric
    middle on a log scale, rounded to the step or an integer) or its middle choice (the first of two);
    a conditional parameter only when its condition holds for the chosen values."""
    spec = yaml.safe_load(study.read_text())
    chosen: dict[str, Any] = dict(spec.get("fixed", {}))
    for name, param in spec.get("params", {}).items():
        if param["type"] == "categorical":
            value: Any = param["choices"][(len(param["choices"]) - 1) // 2]
        else:
            low, high = float(param["low"]), float(param["high"])
            value = math.sqrt(low * high) if param.get("log") else (low + high) / 2
            if param.get("step"):
                value = low + round((value - low) / float(param["step"])) * float(param["step"])
            if param["type"] == "int":
                value = round(value)
        chosen[name] = value
    for name, param in spec.get("params", {}).items():
        for parent, allowed in (param.get("when") or {}).items():
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if chosen.get(parent) not in allowed:
                chosen.pop(name, None)
    return chosen


def resolved(chosen: dict[str, Any], *, smoke: bool, epochs: int | None = None) -> dict[str, Any]:
    from hpo.objectives.cifar10 import HYPERPARAMETERS

    overrides = {k: v for k, v in SMOKE_MODEL.items() if k in HYPERPARAMETERS.names} if smoke else {}
    if smoke:
        overrides["batch_size"] = 32
    hp = HYPERPARAMETERS.resolve({**chosen, **overrides})
    if epochs is not None:
        hp.update(epochs=epochs, early_stopping_patience=0)
    return hp


# -- data ---------------------------------------------------------------------------------------------
def write_tiny_official(folder: Path, *, per_class: int = 24, test_per_class: int = 4, seed: int = 0) -> Path:
    """A tiny CIFAR-10 in the official pickled-batch layout (random pixels with a class-coloured square)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)

    def make(n_per_class: int) -> tuple[Any, Any]:
        labels = np.repeat(np.arange(10), n_per_class)
        images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        images[:, 0, 8:24, 8:24] = (labels * 25)[:, None, None]  # something to learn
        return images.reshape(len(labels), -1), labels

    train_images, train_labels = make(per_class)
    parts = np.array_split(rng.permutation(len(train_labels)), 5)
    for i, part in enumerate(parts, start=1):
        (batches / f"data_batch_{i}").write_bytes(
            pickle.dumps({b"data": train_images[part], b"labels": train_labels[part].tolist()})
        )
    test_images, test_labels = make(test_per_class)
    (batches / "test_batch").write_bytes(pickle.dumps({b"data": test_images, b"labels": test_labels.tolist()}))
    return batches.parent


def ensure_data(args: argparse.Namespace, scratch: Path) -> str:
    """Make CIFAR-10 available in HPO_DATA_DIR (a scratch one in --smoke); return what was used."""
    from _data import ensure_cifar10

    from hpo.data import cifar10 as cifar10_data

    source = args.cifar_source
    if args.smoke:
        os.environ["HPO_DATA_DIR"] = str(scratch / "data")
        source = source or str(write_tiny_official(scratch / "tiny"))
    problem = ensure_cifar10(source)
    if problem:
        raise SystemExit(problem)
    info = cifar10_data.describe()
    return f"{info.get('source_format', '?')} from {info.get('source', '?')}"


# -- 1. throughput --------------------------------------------------------------------------------------
def measure_throughput(
    hp: dict[str, Any], *, device: Any, images: int, channels_last: bool, precision: str, compile: bool
) -> dict[str, Any]:
    """Training images/s of the second of two epochs over the first `images` training images."""
    import torch

    from hpo.config import DataConfig
    from hpo.data import cifar10 as cifar10_data
    from hpo.objectives.cifar10 import _model as objective
    from hpo.training.device import select_precision
    from hpo.training.loop import train as fit

    data = cifar10_data.load(DataConfig(), device=device)
    train = cifar10_data.Split(data.train.images[:images], data.train.labels[:images])
    val = cifar10_data.Split(data.val.images[:256], data.val.labels[:256])
    meta = {**objective._meta(data), "pixel_scaling": hp["pixel_scaling"]}
    task = objective.make_task(train, val, hp, meta, device)
    if not channels_last:
        prepare = task.prepare
        task.prepare = lambda x: prepare(x).contiguous()  # type: ignore[misc,operator]
    try:
        chosen = select_precision(precision, device)
    except Exception:
        chosen = select_precision("auto", device)
    torch.manual_seed(0)
    model = objective.build_model(hp, meta).to(
        device, memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    result = fit(
        model,
        task,
        {**hp, "epochs": 2, "early_stopping_patience": 0},
        monitor="val_acc",
        maximize=True,
        device=device,
        seed=0,
        precision=chosen,
        compile=compile,
    )
    return {"images/s": result.history[-1]["images_per_second"], "precision": chosen.name}


# -- 2. airbench-style configuration over seeds ----------------------------------------------------------
def train_and_test(hp: dict[str, Any], *, seed: int, precision: str) -> dict[str, Any]:
    """One trial of `hp` through the objective on the full split, then its test accuracy."""
    import numpy as np

    from hpo.config import DataConfig
    from hpo.objectives import TrialContext
    from hpo.objectives._checkpoint import predictions
    from hpo.objectives.cifar10 import _model as objective

    ctx = TrialContext(
        hp, data=DataConfig(), seed=seed, metrics=["val_acc"], directions=["maximize"], precision=precision
    )
    started = time.perf_counter()
    result = objective.train(ctx)
    seconds = time.perf_counter() - started
    inputs, labels = objective.test_split(DataConfig(), result.meta)
    probabilities = predictions(objective, [result.models[0]], inputs, result.meta)
    return {
        "seed": seed,
        "seconds": seconds,
        "val_acc": result.metrics["val_acc"],
        "test_acc": float(np.mean(probabilities.argmax(1) == labels)),
    }


# -- 3. concurrent trials -----------------------------------------------------------------------------
def concurrent_worker(spec: dict[str, Any]) -> None:
    """One of several processes training at once (run by `--concurrent-worker`): prints its images/s."""
    from hpo.training.device import pick_device

    device = pick_device("auto", threads=spec.get("threads"))
    row = measure_throughput(
        spec["hp"], device=device, images=spec["images"], channels_last=True, precision=spec["precision"], compile=False
    )
    print(json.dumps(row), flush=True)


def measure_concurrency(
    hp: dict[str, Any], *, counts: Sequence[int], images: int, precision: str, on_gpu: bool
) -> list[dict[str, Any]]:
    rows = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for count in counts:
        spec = {
            "hp": hp,
            "images": images,
            "precision": precision,
            "threads": None if on_gpu else max(1, cores // count),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--concurrent-worker", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
                env=os.environ.copy(),
            )
            for _ in range(count)
        ]
        outputs = [proc.communicate()[0] for proc in procs]
        if any(proc.returncode for proc in procs):
            raise SystemExit(f"a concurrent trial process failed (exit codes {[p.returncode for p in procs]})")
        speeds = [json.loads(out.strip().splitlines()[-1])["images/s"] for out in outputs]
        rows.append(
            {"trials at once": count, "images/s (sum)": sum(speeds), "images/s per trial": statistics.mean(speeds)}
        )
    base = rows[0]["images/s (sum)"]
    for row in rows:
        row["sum / one trial"] = row["images/s (sum)"] / base if base else float("nan")
    return rows


# -- 4. a short study -----------------------------------------------------------------------------------
def short_study(folder: Path, *, seconds: float, smoke: bool) -> dict[str, Any]:
    """Run cifar10-hour.yaml with `seconds` of budget in `folder` (its own storage), then evaluate it."""
    spec = yaml.safe_load(HOUR_STUDY.read_text())
    spec.update(name="gpu-benchmark-study", timeout=seconds)
    spec["execution"] = {**spec.get("execution", {}), "precision": "auto"}
    if smoke:
        spec["n_trials"] = 1  # the budget that ends the smoke run (its timeout only guards it)
        spec["params"] = {"lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True}}
        spec["enqueue"] = [{"lr": 0.2}]
        spec["fixed"] = {
            **spec["fixed"],
            **{k: v for k, v in SMOKE_MODEL.items() if k == "width_scale"},
            "epochs": 2,
            "batch_size": 32,
        }
        spec["pruner"] = {"type": "none"}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {
        **os.environ,
        "HPO_STORAGE": f"sqlite:///{folder / 'hpo.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
    }
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpo", "run", str(path), "--quiet"], check=True, env=env, cwd=folder)
    run_seconds = time.perf_counter() - started

    import optuna

    study = optuna.load_study(study_name=spec["name"], storage=env["HPO_STORAGE"])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "hpo", "evaluate", spec["name"], "--top-k", "3", "--ensemble", "greedy"],
        check=True,
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
    )
    evaluate_seconds = time.perf_counter() - started
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(spec["name"])
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    tests = {
        run.info.run_name: run.data.metrics.get("test_acc")
        for run in runs
        if run.data.tags.get("hpo.role") in ("evaluation", "ensemble")
    }
    return {
        "trials complete": len(complete),
        "trials pruned": sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED),
        "best val_acc": max((t.value for t in complete), default=float("nan")),
        "best test accuracy (single model)": max(
            (v for k, v in tests.items() if v is not None and k.startswith("eval-trial")), default=float("nan")
        ),
        "ensemble test accuracy": next((v for k, v in tests.items() if k.startswith("ensemble")), float("nan")),
        "study seconds": run_seconds,
        "evaluate seconds": evaluate_seconds,
        "evaluate output": out.stdout[-2000:],
    }


# -- the script ---------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on a CPU: generated tiny data, tiny models (checks the script, not the GPU)",
    )
    parser.add_argument(
        "--cifar-source", help="a CIFAR-10 archive to import first (official or the JPEG image-folder tarball)"
    )
    parser.add_argument(
        "--images", type=int, help="training images per throughput measurement (default 10,240; smoke 64)"
    )
    parser.add_argument(
        "--warm-start",
        type=int,
        default=0,
        help="which of cifar10-hour.yaml's enqueue: entries the throughput rows train (0: the warm start)",
    )
    parser.add_argument("--seeds", type=int, help="seeds of the airbench-style configuration (default 3; smoke 1)")
    parser.add_argument("--study-seconds", type=float, help="budget of the short study (default 300; smoke: one trial)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)} (default: all)"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--concurrent-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if any(s not in SECTIONS for s in sections):
        parser.error(f"--sections: accepted: {', '.join(SECTIONS)}")
    if args.concurrent_worker:
        concurrent_worker(json.loads(args.concurrent_worker))
        return {}

    from hpo.training.device import pick_device

    started = time.perf_counter()
    images = args.images or (64 if args.smoke else 10_240)
    study_seconds = args.study_seconds or (600.0 if args.smoke else 300.0)
    seed_count = args.seeds if args.seeds is not None else (1 if args.smoke else 3)
    counts = (1, 2) if args.smoke else (1, 2, 4)
    data_dir = os.environ.get("HPO_DATA_DIR")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hpo-gpu-bench-") as tmp:
        scratch = Path(tmp)
        try:
            source = ensure_data(args, scratch)
            device = pick_device("auto")
            import torch

            device_name = (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else f"CPU ({torch.get_num_threads()} threads)"
            )
            print(f"device: {device_name}; data: {source}", file=sys.stderr, flush=True)
            airbench_chosen, cnn_chosen = warm_start_configuration(index=args.warm_start), median_configuration()

            section = time.perf_counter()
            throughput: list[dict[str, Any]] = []
            for label, chosen in (
                ("airbench-style (cifar10-hour warm start)", airbench_chosen),
                ("cnn (cifar10-cnn median)", cnn_chosen),
            ):
                if "throughput" not in sections:
                    break
                hp = resolved(chosen, smoke=args.smoke)
                for variant, channels_last, precision, compiled in VARIANTS:
                    if compiled and device.type != "cuda":
                        throughput.append(
                            {
                                "model": label,
                                "variant": variant,
                                "images/s": None,
                                "precision": "skipped on the CPU (compiling takes minutes there)",
                            }
                        )
                        continue
                    row = measure_throughput(
                        hp,
                        device=device,
                        images=images,
                        channels_last=channels_last,
                        precision=precision,
                        compile=compiled,
                    )
                    throughput.append({"model": label, "variant": variant, **row})
                    print(f"throughput {label} {variant}: {row['images/s']:.0f} images/s", file=sys.stderr, flush=True)
            timings["throughput"] = time.perf_counter() - section

            section = time.perf_counter()
            airbench_hp = resolved(
                warm_start_configuration(index=0), smoke=args.smoke, epochs=1 if args.smoke else None
            )
            seeds = [
                train_and_test(airbench_hp, seed=seed, precision="auto" if device.type == "cuda" else "fp32")
                for seed in range(seed_count if "seeds" in sections else 0)
            ]
            timings["airbench seeds"] = time.perf_counter() - section

            section = time.perf_counter()
            concurrent = (
                measure_concurrency(
                    resolved(airbench_chosen, smoke=args.smoke),
                    counts=counts,
                    images=images,
                    precision="bf16" if device.type == "cuda" else "fp32",
                    on_gpu=device.type == "cuda",
                )
                if "concurrent" in sections
                else []
            )
            timings["concurrent trials"] = time.perf_counter() - section

            section = time.perf_counter()
            (scratch / "study").mkdir()
            study = (
                short_study(scratch / "study", seconds=study_seconds, smoke=args.smoke) if "study" in sections else {}
            )
            timings["short study + evaluate"] = time.perf_counter() - section
        finally:
            if data_dir is None:
                os.environ.pop("HPO_DATA_DIR", None)
            else:
                os.environ["HPO_DATA_DIR"] = data_dir
    timings["total"] = time.perf_counter() - started

    info = _report.machine()
    test_accs = [s["test_acc"] for s in seeds]
    summary_seeds = (
        {
            "seeds": len(seeds),
            "seconds (mean)": statistics.mean(s["seconds"] for s in seeds),
            "test accuracy (mean)": statistics.mean(test_accs),
            "test accuracy (min)": min(test_accs),
            "test accuracy (max)": max(test_accs),
        }
        if seeds
        else {}
    )
    payload = {
        "machine": info,
        "device": device_name,
        "smoke": args.smoke,
        "throughput": throughput,
        "airbench_seeds": seeds,
        "airbench_summary": summary_seeds,
        "airbench_hyperparameters": airbench_hp,
        "cnn_median": cnn_chosen,
        "concurrent": concurrent,
        "study": {k: v for k, v in study.items() if k != "evaluate output"},
        "timings": timings,
    }
    lines = [
        _report.header(f"CIFAR-10 on one GPU ({device_name})", argv, info),
        f"Data: {source}.{' SMOKE RUN: tiny generated data and models, figures meaningless.' if args.smoke else ''}",
        "",
        "### Training images/s (second of two epochs, hpo's loop)",
        "",
        _report.table(throughput, ["model", "variant", "precision", "images/s"]),
        f"### Airbench-style configuration ({airbench_hp['epochs']} epochs, width_scale "
        f"{airbench_hp['width_scale']}, tta {airbench_hp['tta']}), {len(seeds)} seeds",
        "",
        _report.table(seeds, ["seed", "seconds", "val_acc", "test_acc"]),
        _report.table([summary_seeds] if summary_seeds else []),
        "### Trials training at once on the device",
        "",
        _report.table(concurrent),
        f"### A {'one-trial' if args.smoke else f'{study_seconds:.0f}-second'} study (studies/cifar10-hour.yaml, "
        f"timeout {study_seconds:.0f}), then `hpo evaluate --top-k 3`",
        "",
        _report.table([payload["study"]] if payload["study"] else []),
        "### Time per section (s)",
        "",
        _report.table([timings]),
    ]
    if not args.smoke and timings["total"] > 480:
        lines.append(f"**Took {timings['total'] / 60:.1f} min, over the 8-minute target**: see the time per section.")
    print("\n".join(lines))
    _report.save(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
