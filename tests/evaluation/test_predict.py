"""`hpo predict`: a study's best model, a registered best model or an ensemble on the user's own files —
CSV rows for Boston, images of any size for CIFAR-10 — through the objective's `read_inputs` hook, and
one-line errors (exit 2) for every bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from hpo.data import boston as boston_data
from hpo.objectives.boston import FEATURES, BostonDataOptions
from hpo.objectives.cifar10 import Cifar10DataOptions
from tests.conftest import EvaluatedStudy
from tests.objectives.test_cifar10 import tiny_cifar10_study
from tests.test_examples import _example_study


def _predict_json(cli: Any, *args: Any) -> dict[str, Any]:
    result = cli("predict", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_line_error(cli: Any, *args: Any) -> str:
    result = cli("predict", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def _checkpoint_predictions(tracking_uri: str, storage: str, study: str, tmp_path: Path) -> np.ndarray:
    """The best trial's validation predictions as `hpo run` stored them with its checkpoint."""
    best = optuna.load_study(study_name=study, storage=storage).best_trial
    client = MlflowClient(tracking_uri)
    path = client.download_artifacts(best.user_attrs["mlflow_run_id"], "checkpoint/val_predictions.npy", str(tmp_path))
    return np.load(path)


def _validation_rows(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` validation rows of the shipped CSV, unscaled (as a user would have them), and MEDV."""
    data = boston_data.load(BostonDataOptions())
    raw = data.val.x[:count].astype(np.float64) * data.x_std + data.x_mean
    return raw, data.val.y[:count]


def test_a_study_name_predicts_csv_rows_with_its_best_checkpoint(
    evaluated_boston: EvaluatedStudy, cli: Any, tmp_path: Path
) -> None:
    # Validation rows written as a user's CSV (header, extra MEDV column, another column order) come back
    # as the best trial's own validation predictions: the hook scales them as training did.
    raw, medv = _validation_rows(4)
    order = list(reversed(FEATURES))
    lines = [",".join(["MEDV", *order])] + [
        ",".join([f"{y:.1f}", *(repr(float(row[FEATURES.index(f)])) for f in order)]) for row, y in zip(raw, medv)
    ]
    (tmp_path / "houses.csv").write_text("\n".join(lines) + "\n")
    out = _predict_json(cli, evaluated_boston.name, tmp_path / "houses.csv", *evaluated_boston.flags)
    expected = _checkpoint_predictions(
        evaluated_boston.tracking_uri, evaluated_boston.storage, evaluated_boston.name, tmp_path
    )[:4]
    assert [p["input"] for p in out["predictions"]] == [f"{tmp_path / 'houses.csv'} row {i}" for i in range(1, 5)]
    np.testing.assert_allclose([p["value"] for p in out["predictions"]], expected, rtol=1e-4, atol=1e-3)
    assert out["model"].startswith(f"study {evaluated_boston.name}, trial ")
    # Rows without a header: exactly the 13 features in order; the same values.
    (tmp_path / "bare.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in raw) + "\n")
    bare = _predict_json(cli, evaluated_boston.name, tmp_path / "bare.csv", *evaluated_boston.flags)
    np.testing.assert_allclose([p["value"] for p in bare["predictions"]], expected, rtol=1e-4, atol=1e-3)
    # Text output: one line per row after the model line.
    result = cli("predict", evaluated_boston.name, tmp_path / "bare.csv", *evaluated_boston.flags)
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 5
    assert result.output.splitlines()[1].startswith(f"{tmp_path / 'bare.csv'} row 1: ")


def test_registered_best_model_and_ensemble_predict_csv_rows(
    evaluated_boston: EvaluatedStudy, cli: Any, tmp_path: Path
) -> None:
    # models:/<study>-best/1 is the best checkpoint; models:/<study>-ensemble/1 blends its members' predictions
    # with the weights `hpo evaluate` chose on validation.
    raw, _ = _validation_rows(3)
    (tmp_path / "rows.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in raw) + "\n")
    best = _predict_json(cli, f"models:/{evaluated_boston.name}-best/1", tmp_path / "rows.csv", *evaluated_boston.flags)
    expected = _checkpoint_predictions(
        evaluated_boston.tracking_uri, evaluated_boston.storage, evaluated_boston.name, tmp_path / "best"
    )[:3]
    np.testing.assert_allclose([p["value"] for p in best["predictions"]], expected, rtol=1e-4, atol=1e-3)

    client = MlflowClient(evaluated_boston.tracking_uri)
    experiment = client.get_experiment_by_name(evaluated_boston.name)
    ensemble_run = client.search_runs(
        [experiment.experiment_id], "tags.`hpo.role` = 'ensemble'", order_by=["attributes.start_time ASC"]
    )[0]
    spec = json.loads(
        Path(client.download_artifacts(ensemble_run.info.run_id, "ensemble.json", str(tmp_path))).read_text()
    )
    blended = sum(
        weight
        * np.load(
            client.download_artifacts(
                spec["member_runs"][trial], "checkpoint/val_predictions.npy", str(tmp_path / trial)
            )
        )[:3]
        for trial, weight in spec["weights"].items()
    ) / sum(spec["weights"].values())
    ensemble = _predict_json(
        cli, f"models:/{evaluated_boston.name}-ensemble/1", tmp_path / "rows.csv", *evaluated_boston.flags
    )
    np.testing.assert_allclose([p["value"] for p in ensemble["predictions"]], blended, rtol=1e-4, atol=1e-3)
    assert "ensemble" in ensemble["model"]


def test_bad_csv_inputs_and_unknown_models_are_one_line_errors(
    evaluated_boston: EvaluatedStudy, cli: Any, tmp_path: Path
) -> None:
    # Each names the input (file and row) or the model, and what is accepted; exit 2.
    flags = evaluated_boston.flags
    raw, _ = _validation_rows(2)
    short = tmp_path / "short.csv"
    short.write_text(
        ",".join(repr(float(v)) for v in raw[0]) + "\n" + ",".join(repr(float(v)) for v in raw[1][:12]) + "\n"
    )
    line = _one_line_error(cli, evaluated_boston.name, short, *flags)
    assert f"{short} row 2: 12 values where 13 are expected" in line and "rows of exactly 13 numbers" in line
    header = tmp_path / "header.csv"
    header.write_text("CRIM,ZN\n0.1,0\n")
    line = _one_line_error(cli, evaluated_boston.name, header, *flags)
    assert (
        f"{header}: the header row lacks INDUS" in line and "accepted: CSV files with a header row naming CRIM" in line
    )
    text = tmp_path / "text.csv"
    text.write_text(",".join(["1"] * 12 + ["many"]) + "\n")
    assert "LSTAT is 'many', not a finite number" in _one_line_error(cli, evaluated_boston.name, text, *flags)
    picture = tmp_path / "house.png"
    Image.new("RGB", (8, 8)).save(picture)
    assert f"{picture}: not a text CSV file; accepted: CSV files" in _one_line_error(
        cli, evaluated_boston.name, picture, *flags
    )
    assert f"{tmp_path / 'missing.csv'}: file not found; accepted: CSV files" in _one_line_error(
        cli, evaluated_boston.name, tmp_path / "missing.csv", *flags
    )
    line = _one_line_error(cli, "models:/no-such-model/1", short, *flags)
    assert "models:/no-such-model/1 not found" in line and f"{evaluated_boston.name}-best" in line
    assert "'no-such-study' not found" in _one_line_error(cli, "no-such-study", short, *flags)
    assert "accepted: models:/<name>/<version>" in _one_line_error(cli, "runs:/abc/model", short, *flags)


def _flat_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int], *, mode: str = "RGB") -> Path:
    Image.new("RGB", size, colour).convert(mode).save(path)
    return path


def test_images_of_any_size_through_a_tiny_cifar10_study_and_its_registered_model(
    cli: Any, write_study: Any, tiny_cifar10: Any, tmp_path: Path
) -> None:
    # A CNN trained by a tiny study classifies a 50x37 PNG (resized, centre-cropped) exactly as it
    # classified the same (flat-colour) validation image at 32x32, with the top classes most probable
    # first; grey JPEGs and RGBA PNGs are converted to RGB; the registered best model agrees.
    from hpo.data import cifar10

    tiny_cifar10(train_per_class=8, test_per_class=1)
    study = tiny_cifar10_study(
        n_trials=1,
        params={},
        fixed={
            "model": "cnn",
            "epochs": 2,
            "batch_size": 16,
            "filters": 4,
            "conv_blocks": 2,
            "hidden_layers": 0,
            "lr": 0.01,
        },
        evaluation={"top_k": 1, "ensemble": "none"},
        # fp32: the stored validation predictions are computed in the training precision, and `auto` trains
        # CIFAR-10 in bf16 on a CPU with bf16 kernels (then they differ from fp32 inference by ~1e-4)
        execution={"precision": "fp32"},
    )
    assert cli("run", write_study(study), "-q").exit_code == 0
    val = cifar10.load(Cifar10DataOptions(subset=0.5)).val  # the study's validation split
    image = val.images[0].numpy()
    assert (image == image[:, :1, :1]).all()  # a flat colour: resizing it changes nothing
    colour = tuple(int(c) for c in image[:, 0, 0])
    odd = _flat_png(tmp_path / "odd.png", colour, (50, 37))
    grey = tmp_path / "grey.jpg"
    Image.new("L", (20, 64), 128).save(grey)
    rgba = _flat_png(tmp_path / "alpha.png", colour, (33, 90), mode="RGBA")

    out = _predict_json(cli, "tiny-cifar10", odd, grey, rgba)
    expected = _checkpoint_predictions(
        f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'hpo.db'}", "tiny-cifar10", tmp_path / "ckpt"
    )[0]
    first = out["predictions"][0]
    assert first["input"] == str(odd) and len(first["top"]) == 3
    top = np.argsort(-expected)[:3]
    assert [t["class"] for t in first["top"]] == [cifar10.CLASSES[i] for i in top]
    np.testing.assert_allclose([t["probability"] for t in first["top"]], expected[top], rtol=1e-4, atol=1e-5)
    for prediction in out["predictions"]:
        probabilities = [t["probability"] for t in prediction["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
        assert prediction["predicted"] == prediction["top"][0]["class"]
    assert out["predictions"][2]["top"] == first["top"]  # the alpha channel is dropped, the colour kept

    result = cli("predict", "tiny-cifar10", odd, "--top-k", "1")
    assert (
        result.exit_code == 0
        and result.output.splitlines()[1] == f"{odd}: {first['top'][0]['class']} {first['top'][0]['probability']:.3f}"
    )

    assert cli("evaluate", "tiny-cifar10").exit_code == 0
    registered = _predict_json(cli, "models:/tiny-cifar10-best/1", odd)
    np.testing.assert_allclose(
        [t["probability"] for t in registered["predictions"][0]["top"]], expected[top], rtol=1e-4, atol=1e-5
    )

    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    line = _one_line_error(cli, "tiny-cifar10", fake)
    assert f"{fake}: not an image hpo can decode" in line and "accepted: PNG or JPEG image files of any size" in line
    rows = tmp_path / "rows.csv"
    rows.write_text("1,2,3\n")
    assert f"{rows}: not an image hpo can decode" in _one_line_error(cli, "tiny-cifar10", rows)
    assert f"{tmp_path}: is a folder; accepted: PNG or JPEG" in _one_line_error(cli, "tiny-cifar10", tmp_path)


def test_an_objective_without_the_hook_gets_a_one_line_error(cli: Any, tmp_path: Path) -> None:
    # examples/digits_full.py is a full objective without read_inputs: hpo predict says what to add.
    study = _example_study(tmp_path, "digits-full.yaml", n_trials=1, fixed={"epochs": 1})
    assert cli("run", study, "-q").exit_code == 0
    picture = _flat_png(tmp_path / "digit.png", (0, 0, 0), (8, 8))
    line = _one_line_error(cli, "digits-full", picture)
    assert "digits_full.py:digits has no read_inputs hook" in line and "add read_inputs(paths, meta)" in line


@pytest.mark.parametrize("size", [(1, 1), (50, 37), (37, 50), (300, 100), (100, 300)])
def test_read_image_resizes_the_shorter_side_and_crops_the_centre(size: tuple[int, int], tmp_path: Path) -> None:
    # Any size becomes 3 x 32 x 32 uint8 RGB. Proportions are kept: the shorter side goes to 32 and the
    # centre is cropped, so a red band on the outer sixth of the longer side is cut off (a squashed
    # picture would keep it), while the centre, green, stays green.
    from hpo.data.cifar10 import read_image

    width, height = size
    picture = Image.new("RGB", size, (0, 255, 0))
    if width >= 3 * height:
        picture.paste((255, 0, 0), (0, 0, width // 6, height))
    if height >= 3 * width:
        picture.paste((255, 0, 0), (0, 0, width, height // 6))
    picture.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert (image[1] == 255).all() and (image[0] == 0).all()
