"""Challenge task 1 end to end: the shipped CPU-sized regularizer pair, run, evaluated and compared by the
README's command sequence on tiny generated CIFAR-10 data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from PIL import Image

from hpo.report import gather_facts
from hpo.running.results import load
from hpo.running.study_ref import resolve_study_ref
from hpo.running.tracking import Tracker

STUDIES = Path(__file__).resolve().parents[2] / "studies"
PAIR = ("cifar10-dropout-cpu", "cifar10-l2-cpu")


def _tiny_version(name: str, folder: Path) -> Path:
    """The shipped study with a tiny budget, changed identically in both halves of the pair (so they still
    differ in the regularizer alone): 2 trials of 2 epochs, all of the tiny training images."""
    study = yaml.safe_load((STUDIES / f"{name}.yaml").read_text())
    study["n_trials"] = 2
    study["data"] = {**study["data"], "subset": 1.0, "val_fraction": 0.2}
    study["params"]["filters"] = {"type": "categorical", "choices": [4, 8]}
    study["fixed"] = {**study["fixed"], "epochs": 2, "batch_size": 16}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_the_cpu_sized_pair_runs_evaluates_and_compares_end_to_end(cli: Any, tiny_cifar10: Any, tmp_path: Path) -> None:
    # hpo run A B; hpo evaluate A; hpo evaluate B; hpo compare A B. The verdict says the comparison is
    # controlled (the regularizer is the only difference) and whether the evidence separates them, states
    # the test results with their seed noise and each study's generalization gap at its best epoch; the
    # curves page shows training and validation loss and accuracy of both.
    tiny_cifar10(train_per_class=10, test_per_class=2)
    paths = [_tiny_version(name, tmp_path) for name in PAIR]
    result = cli("run", *paths, "--quiet")
    assert result.exit_code == 0, result.output
    for name in PAIR:
        result = cli("evaluate", name)
        assert result.exit_code == 0, result.output
        assert f"registered model {name}-best: models:/{name}-best/1" in result.output
    out = tmp_path / "cmp"
    result = cli("compare", *PAIR, "--out", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console may wrap long lines

    assert (
        "Setup: a controlled comparison — the study files differ only in regularization: cifar10-dropout-cpu uses "
        "dropout searched 0.1 to 0.5; "
        "cifar10-l2-cpu uses weight_decay searched 0.0001 to 0.01 (log). Network, data, budget, optimizer search "
        "and every other setting are the same."
    ) in text
    assert ("The regularizer is the only difference, so it decides the result" in text) != (
        "The evidence does not separate dropout searched 0.1 to 0.5 (cifar10-dropout-cpu) from weight_decay" in text
    )
    assert "On the test split (read once by `hpo evaluate`)" in text and "the larger seed std" in text
    for name in PAIR:
        assert f"{name}: validation minus training loss" in text
    assert text.count("train_acc") >= 2 and "better on training data" in text

    assert {p.name for p in out.iterdir()} == {"index.html", "learning_curves.png", "verdict.md"}
    page = (out / "index.html").read_text()
    assert "<td>dropout</td>" in page and "<td>weight_decay</td>" in page and "std over retrain seeds" in page
    with Image.open(out / "learning_curves.png") as picture:
        width, height = picture.size
    assert abs(width / height - 1.0) < 0.05  # three rows of panels (metric, loss, accuracy), not two
    for name in PAIR:
        ref = resolve_study_ref(name)
        facts = gather_facts(load(ref), Tracker(ref.settings.tracking_uri, name))
        assert facts.curves is not None
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            steps, _ = facts.curves.get(key)
            assert list(steps) == [0, 1], (name, key)
        assert facts.seed_std is not None and facts.test_value is not None
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # absolute: MLflow caches stores per URI string
    for name in PAIR:
        experiment = client.get_experiment_by_name(name)
        parent = client.search_runs([experiment.experiment_id], "tags.`hpo.role` = 'study'")[0]
        logged = {a.path for a in client.list_artifacts(parent.info.run_id, f"compare/{PAIR[0]}-vs-{PAIR[1]}")}
        assert f"compare/{PAIR[0]}-vs-{PAIR[1]}/learning_curves.png" in logged
