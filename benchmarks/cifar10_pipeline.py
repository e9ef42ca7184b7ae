"""Training images per second: hpo's CIFAR-10 input pipeline against the usual DataLoader loop.

Both train the same model (by default the MLP, then the CNN of studies/cifar10-quick.yaml) with the
same batch size, optimizer, loss, augmentations (random crop with 4 px reflect padding + horizontal
flip) and memory format (channels_last, as hpo's objective uses), on the same images, in one process,
so the difference is the input pipeline alone:

- `hpo`: the objective's task (uint8 images in memory, on the GPU when there is one; whole-batch
  augmentation and normalisation on the device) run through hpo's training loop (hpo.training.loop);
- `dataloader-wN`: a torchvision.datasets.CIFAR10-style dataset (HWC uint8 array -> PIL image ->
  per-sample RandomCrop, RandomHorizontalFlip, ToTensor, Normalize) behind a DataLoader with N workers,
  and a plain training loop.

Each round runs one epoch of every way, in turn, so a busy shared machine slows them alike; the ratio
is hpo's images/second over the best DataLoader variant's, taken per round, and its median is reported.

    python benchmarks/cifar10_pipeline.py --quick          # tiny generated data, a minute on 2 cores
    python benchmarks/cifar10_pipeline.py          # real CIFAR-10 (the cache, or ../shared/datasets imported into it)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _report
import numpy as np
import torch

SHARED_JPEG = _report.REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
QUICK_MODEL = {
    "model": "cnn",
    "conv_blocks": 3,
    "filters": 16,
    "filters_growth": 2.0,
    "batch_norm": True,
    "hidden_layers": 0,
    "pooling": "max",
}


def load_images(*, quick: bool, images: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(N x 3 x 32 x 32 uint8, N labels, description): generated noise, or real CIFAR-10 training images."""
    rng = np.random.default_rng(seed)
    if quick:
        return (
            rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, images),
            "generated (random pixels)",
        )
    from hpo.data import cifar10

    if cifar10.read_manifest() is None:
        if not SHARED_JPEG.exists():
            raise SystemExit(
                f"CIFAR-10 is not cached in {cifar10.cache_dir()}; import it (`hpo data import cifar10 PATH`) or "
                "use --quick"
            )
        print(f"importing {SHARED_JPEG} into {cifar10.cache_dir()} (once)", file=sys.stderr)
        cifar10.import_dataset(SHARED_JPEG)
    all_images, all_labels = cifar10._load_arrays("train")
    chosen = np.sort(rng.choice(len(all_labels), size=min(images, len(all_labels)), replace=False))
    return all_images[chosen], all_labels[chosen], f"CIFAR-10 training images ({cifar10.describe()['source_format']})"


class Cifar10Style(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 -> PIL image -> transform."""

    def __init__(self, data_hwc: np.ndarray, targets: list[int], transform: Any) -> None:
        self.data, self.targets, self.transform = data_hwc, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def dataloader_epoch(
    model: torch.nn.Module, loader: Any, hp: dict[str, Any], device: torch.device
) -> tuple[float, float]:
    """One epoch of the plain loop; returns (images/second, train accuracy)."""
    from hpo.training.optim import build_optimizer

    optimizer = build_optimizer(hp, model.parameters())
    model.train()
    seen, correct = 0, torch.zeros((), device=device)
    started = time.perf_counter()
    for xb, yb in loader:
        xb = xb.to(device, non_blocking=True).contiguous(
            memory_format=torch.channels_last
        )  # as hpo does: same model speed
        yb = yb.to(device, non_blocking=True)
        out = model(xb)
        loss = torch.nn.functional.cross_entropy(out, yb, label_smoothing=float(hp["label_smoothing"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += (out.detach().argmax(1) == yb).sum()
        seen += yb.numel()
    accuracy = float(correct) / seen  # also waits for the device
    return seen / (time.perf_counter() - started), accuracy


def hpo_epoch(
    images: torch.Tensor, labels: torch.Tensor, hp: dict[str, Any], device: torch.device, seed: int
) -> tuple[float, float]:
    """One epoch through hpo's training loop; returns (images/second of training, train accuracy)."""
    from hpo.data.cifar10 import Split
    from hpo.objectives.cifar10 import _model as objective
    from hpo.training.loop import train

    meta = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
    val = Split(images[:256], labels[:256])  # scored each epoch, but not part of the images/second
    task = objective.make_task(Split(images, labels), val, hp, meta, device)
    torch.manual_seed(seed)
    model = objective.build_model(hp, meta).to(device, memory_format=torch.channels_last)  # as the objective does
    fit = train(
        model,
        task,
        {**hp, "epochs": 1, "early_stopping_patience": 0},
        monitor="val_acc",
        maximize=True,
        device=device,
        seed=seed,
    )
    return fit.history[0]["images_per_second"], fit.history[0]["train_acc"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print its Markdown section and return the figures (what --json writes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny generated data instead of real CIFAR-10")
    parser.add_argument("--images", type=int, help="training images per epoch (default 2,048 quick, 10,000 full)")
    parser.add_argument("--rounds", type=int, default=3, help="epochs of each way, interleaved")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", default="0,2", help="DataLoader num_workers variants, comma separated")
    parser.add_argument(
        "--model",
        default="mlp,quick-cnn",
        help="comma list: quick-cnn (studies/cifar10-quick.yaml's CNN) "
        "or any `model` value (mlp, cnn, resnet, resnet18, ...)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the training process")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from torchvision import transforms

    from hpo.objectives.cifar10 import HYPERPARAMETERS
    from hpo.objectives.cifar10 import _model as objective
    from hpo.training.device import pick_device

    device = pick_device("auto", threads=args.threads)
    n = args.images or (2048 if args.quick else 10_000)
    data_dir = os.environ.get("HPO_DATA_DIR")
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            os.environ["HPO_DATA_DIR"] = scratch  # never touch the user's cache in quick mode
        try:
            images, labels, source = load_images(quick=args.quick, images=n, seed=0)
        finally:  # not left pointing at the removed scratch folder (the script may run in a test's process)
            if data_dir is None:
                os.environ.pop("HPO_DATA_DIR", None)
            else:
                os.environ["HPO_DATA_DIR"] = data_dir
    normalize = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    per_sample = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    dataset = Cifar10Style(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels.tolist(), per_sample)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    loaders = {
        f"dataloader-w{w}": torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=w,
            pin_memory=device.type == "cuda",
            persistent_workers=w > 0,
        )
        for w in workers
    }
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    print(
        f"{source}: {n:,} images, batch {args.batch_size}, device {device}, torch threads {torch.get_num_threads()}",
        file=sys.stderr,
    )

    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {}
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    for model_name in models:
        model_hp = QUICK_MODEL if model_name == "quick-cnn" else {"model": model_name}
        hp = HYPERPARAMETERS.resolve(
            {
                **model_hp,
                "batch_size": args.batch_size,
                "optimizer": "sgd",
                "lr": 0.05,
                "momentum": 0.9,
                "nesterov": True,
                "augment_crop": 4,
                "augment_flip": True,
                "label_smoothing": 0.1,
            }
        )
        n_params = sum(p.numel() for p in objective.build_model(hp, {}).parameters())
        # A warm-up epoch of each way on a few batches, not recorded: the first optimizer step of a
        # process imports parts of torch (seconds), and DataLoader workers start.
        hpo_epoch(images_t[: 4 * args.batch_size], labels_t[: 4 * args.batch_size], hp, device, seed=0)
        for loader in loaders.values():
            warm = torch.utils.data.DataLoader(
                torch.utils.data.Subset(dataset, range(min(4 * args.batch_size, n))),
                batch_size=args.batch_size,
                num_workers=loader.num_workers,
            )
            dataloader_epoch(
                objective.build_model(hp, {}).to(device, memory_format=torch.channels_last), warm, hp, device
            )
        for round_ in range(args.rounds):
            speed, accuracy = hpo_epoch(images_t, labels_t, hp, device, seed=round_)
            records.append(
                {"model": model_name, "round": round_, "way": "hpo", "images_per_second": speed, "train_acc": accuracy}
            )
            for name, loader in loaders.items():
                torch.manual_seed(round_)
                model = objective.build_model(hp, {}).to(device, memory_format=torch.channels_last)
                speed, accuracy = dataloader_epoch(model, loader, hp, device)
                records.append(
                    {
                        "model": model_name,
                        "round": round_,
                        "way": name,
                        "images_per_second": speed,
                        "train_acc": accuracy,
                    }
                )
            mine = {
                r["way"]: r["images_per_second"] for r in records if r["model"] == model_name and r["round"] == round_
            }
            ratios.setdefault(model_name, []).append(mine["hpo"] / max(mine[w] for w in loaders))
            print(
                f"{model_name} round {round_}: " + " | ".join(f"{w} {v:.0f}/s" for w, v in mine.items()),
                file=sys.stderr,
            )
        for way in ["hpo", *loaders]:
            mine = [r for r in records if r["model"] == model_name and r["way"] == way]
            rows.append(
                {
                    "model": f"{model_name} ({n_params:,} params)",
                    "way": way,
                    "images/s (median)": statistics.median(r["images_per_second"] for r in mine),
                    "images/s (best)": max(r["images_per_second"] for r in mine),
                    "train_acc (last round)": mine[-1]["train_acc"],
                    "hpo / best DataLoader": statistics.median(ratios[model_name]) if way == "hpo" else None,
                }
            )
    info = _report.machine()
    print(_report.header("CIFAR-10 input pipeline: hpo vs DataLoader", argv, info))
    print(
        f"{source}, {n:,} images per epoch, batch size {args.batch_size}, crop (4 px reflect) + flip, SGD, device "
        f"{device}, "
        f"{torch.get_num_threads()} torch threads, {args.rounds} interleaved rounds per model.\n"
    )
    print(_report.table(rows))
    for model_name, values in ratios.items():
        print(
            f"**{model_name}: hpo / best DataLoader loop = {statistics.median(values):.2f}x** (per round: "
            f"{', '.join(f'{r:.2f}' for r in values)})"
        )
    payload = {
        "machine": info,
        "command": _report.command_line(argv),
        "records": records,
        "summary": rows,
        "ratios": ratios,
    }
    _report.save(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
