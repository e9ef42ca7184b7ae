"""Issue 17's course vocabulary as study-file hyperparameters: `hpo validate` accepts every new value
and refuses a bad one with exit 2 and one line naming the field and what it accepts; the values reach
the model, loss, augmentation, pixel scaling, schedule and early stopping a trial trains with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from torch import nn

from hpo.config import parse_study
from hpo.models._layers import MinPool2d
from hpo.objectives import TrialContext
from hpo.objectives.boston import HYPERPARAMETERS as BOSTON
from hpo.objectives.cifar10 import HYPERPARAMETERS as CIFAR10
from hpo.objectives.cifar10 import _model as cifar10_model
from hpo.training.losses import multiclass_hinge


@dataclass(frozen=True)
class Row:
    objective: str
    name: str
    good: tuple[Any, ...]  # each must validate
    bad: Any  # must be refused
    accepted: str  # what the error line must say is accepted
    companions: tuple[tuple[str, Any], ...] = ()  # other fixed values the good ones need


ROWS = [
    Row("cifar10", "pooling", ("sum", "min", "max", "avg", "none"), "median", "accepted: max, avg, sum, min, none"),
    Row("cifar10", "pool_size", (1, 3), 0, "is not an integer in [1, 32]"),
    Row("cifar10", "pool_stride", (1, 3, None), 0, "is not an integer in [1, 32] or null"),
    Row(
        "cifar10",
        "padding_mode",
        ("zeros", "reflect", "replicate", "circular"),
        "mirror",
        "accepted: zeros, reflect, replicate, circular",
    ),
    Row("cifar10", "augment_vflip", (True, False), "yes", "is not true or false"),
    Row("cifar10", "augment_zoom", (0.0, 0.2, 0.9), 1.0, "is not a number in [0, 1)"),
    Row("cifar10", "augment_shear", (0.0, 10, 45), 60, "is not a number in [0, 45]"),
    Row("cifar10", "augment_noise", (0.0, 0.05, 1), 1.5, "is not a number in [0, 1]"),
    Row("cifar10", "activation", ("sigmoid",), "softsign", "accepted: relu, leaky_relu, elu, gelu, tanh, sigmoid"),
    Row("boston", "activation", ("sigmoid",), "softsign", "accepted: relu, leaky_relu, elu, gelu, tanh, sigmoid"),
    Row("cifar10", "loss", ("cross_entropy", "hinge"), "mse", "accepted: cross_entropy, hinge"),
    Row("cifar10", "pixel_scaling", ("standardize", "unit", "center"), "minmax", "accepted: standardize, unit, center"),
    Row(
        "cifar10",
        "lr_schedule",
        ("exponential", "linear"),
        "cyclic",
        "accepted: none, step, exponential, cosine, onecycle, plateau, linear",
        (("lr_gamma", 0.95),),
    ),
    Row(
        "boston",
        "lr_schedule",
        ("exponential", "linear"),
        "cyclic",
        "accepted: none, step, exponential, cosine, onecycle, plateau, linear",
        (("lr_gamma", 0.95),),
    ),
    Row("boston", "early_stopping_min_delta", (0.0, 0.01, 5), -0.1, "is not a number in [0, 1000000]"),
    Row("cifar10", "early_stopping_min_delta", (0.001,), "a lot", "is not a number in [0, 1000000]"),
]
IDS = [f"{r.objective}-{r.name}" for r in ROWS]


def _study(row: Row, value: Any) -> dict[str, Any]:
    return {"name": "vocabulary", "objective": row.objective, "fixed": {**dict(row.companions), row.name: value}}


def test_every_new_row_is_in_the_table_it_is_tested_for() -> None:
    # The cases above cover each row issue 17 added, in the objective that declares it.
    tables = {"boston": BOSTON, "cifar10": CIFAR10}
    for row in ROWS:
        assert row.name in tables[row.objective], (row.objective, row.name)
    new = {
        "pool_size",
        "pool_stride",
        "padding_mode",
        "augment_vflip",
        "augment_zoom",
        "augment_shear",
        "augment_noise",
        "loss",
        "pixel_scaling",
        "early_stopping_min_delta",
    }
    assert new <= {r.name for r in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_each_new_value_validates(row: Row) -> None:
    # Every value of the vocabulary passes the same checks `hpo validate` runs on the file (the data
    # preflight aside, which has nothing to do with the value).
    for value in row.good:
        config = parse_study(_study(row, value), source="s.yaml")
        assert config.fixed[row.name] == value


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_hpo_validate_refuses_a_bad_value_naming_the_field_and_what_it_accepts(
    row: Row, cli: Any, write_study: Any, tmp_path: Path
) -> None:
    # Exit 2, one line naming the file, the field and the accepted values, nothing written; as a fixed
    # value and as a categorical choice alike.
    for study, field in (
        (_study(row, row.bad), f"fixed.{row.name}"),
        (
            {
                **_study(row, row.good[0]),
                "params": {row.name: {"type": "categorical", "choices": [row.good[0], row.bad]}},
            },
            f"params.{row.name}.choices",
        ),
    ):
        if field.startswith("params"):
            del study["fixed"][row.name]
        path = write_study(study)
        result = cli("validate", path)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"{path}: {field}: " in lines[0] and row.accepted in lines[0], lines[0]
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data-cache") == ["study.yaml"]


@pytest.mark.parametrize(
    ("study", "expect"),
    [
        # The default lr_gamma (0.1, a step schedule's) would divide the rate by ten every epoch.
        (
            {"fixed": {"lr_schedule": "exponential"}},
            "fixed.lr_schedule: lr_schedule exponential multiplies the learning rate by lr_gamma",
        ),
        (
            {"params": {"lr_schedule": {"type": "categorical", "choices": ["none", "exponential"]}}},
            "params.lr_schedule: ",
        ),
        # The hinge loss has no probabilities to smooth.
        (
            {"fixed": {"loss": "hinge", "label_smoothing": 0.1}},
            "fixed.loss: label_smoothing applies to the cross_entropy loss only",
        ),
        # 3x3 windows moved by 3 leave 32 -> 10 -> 3 -> 1 -> nothing: the fourth block cannot pool.
        ({"fixed": {"conv_blocks": 4, "pool_size": 3, "pool_stride": 3}}, "fixed.conv_blocks: "),
        # The worst case of a searched window counts: 4x4 pooling fails at block 3, 2x2 would not.
        ({"params": {"pool_size": {"type": "int", "low": 2, "high": 4}}}, "params.pool_size: "),
        # Reflect padding needs a map wider than the padding: 5x5 kernels at block 5 (2x2) cannot.
        ({"fixed": {"conv_blocks": 5, "kernel_size": 5, "padding_mode": "reflect"}}, "fixed.padding_mode: "),
    ],
)
def test_combinations_that_cannot_train_are_refused_at_validate_time(
    study: dict[str, Any], expect: str, cli: Any, write_study: Any
) -> None:
    result = cli("validate", write_study({"name": "c", "objective": "cifar10", **study}))
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and expect in result.stderr, result.stderr


def test_label_smoothing_searched_for_cross_entropy_only_is_fine_beside_hinge() -> None:
    params = {
        "loss": {"type": "categorical", "choices": ["cross_entropy", "hinge"]},
        "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2, "when": {"loss": ["cross_entropy"]}},
    }
    assert parse_study({"name": "c", "objective": "cifar10", "params": params}).params["label_smoothing"].when == {
        "loss": ["cross_entropy"]
    }


def test_overlapping_pooling_that_fits_is_accepted_where_the_old_fixed_2x2_would_be_too() -> None:
    # 3x3 windows moved by 1 shrink each block by 2 pixels only: 12 blocks still fit 32x32.
    assert (
        parse_study(
            {"name": "c", "objective": "cifar10", "fixed": {"conv_blocks": 12, "pool_size": 3, "pool_stride": 1}}
        ).fixed["pool_stride"]
        == 1
    )


def test_a_search_over_every_shape_parameter_is_checked_in_well_under_a_second() -> None:
    # Pool windows and strides are tried at their ends (the side moves monotonically with them), so
    # wide ranges of the shape parameters do not multiply into millions of cases.
    import time

    params = {
        "convs_per_block": {"type": "int", "low": 1, "high": 2},
        "kernel_size": {"type": "int", "low": 1, "high": 16},
        "dilation": {"type": "int", "low": 1, "high": 2},
        "pool_size": {"type": "int", "low": 1, "high": 16},
        "pool_stride": {"type": "int", "low": 1, "high": 16, "when": {"pooling": ["max", "avg"]}},
        "pooling": {"type": "categorical", "choices": ["max", "avg", "sum", "min", "none"]},
        "padding_mode": {"type": "categorical", "choices": ["zeros", "replicate", "reflect", "circular"]},
    }
    started = time.perf_counter()
    parse_study({"name": "c", "objective": "cifar10", "params": params, "fixed": {"conv_blocks": 1}})
    assert time.perf_counter() - started < 1.0


COURSE = {
    "model": "cnn",
    "pooling": "sum",
    "pool_size": 3,
    "pool_stride": 1,
    "padding_mode": "reflect",
    "activation": "sigmoid",
    "loss": "hinge",
    "pixel_scaling": "unit",
    "augment_vflip": True,
    "augment_zoom": 0.2,
    "augment_shear": 10.0,
    "augment_noise": 0.05,
    "lr_schedule": "exponential",
    "lr_gamma": 0.5,
    "early_stopping_min_delta": 0.001,
}


def test_the_values_reach_the_model_loss_augmentation_and_pixel_scaling() -> None:
    hp = CIFAR10.resolve({**COURSE, "filters": 4, "conv_blocks": 2, "hidden_layers": 0})
    model = cifar10_model.build_model(hp, {})
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, nn.AvgPool2d)]
    assert convs and all(c.padding_mode == "reflect" for c in convs)
    assert len(pools) == 2 and all(p.divisor_override == 1 and p.kernel_size == 3 and p.stride == 1 for p in pools)
    assert any(isinstance(m, nn.Sigmoid) for m in model.modules())
    minimal = cifar10_model.build_model(
        CIFAR10.resolve({"model": "cnn", "pooling": "min", "pool_size": 4, "conv_blocks": 2}), {}
    )
    assert [(p.kernel_size, p.stride) for p in minimal.modules() if isinstance(p, MinPool2d)] == [(4, 4)] * 2

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (6,))
    split = cifar10_model.cifar10_data.Split(images, labels)
    meta = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "pixel_scaling": "unit"}
    task = cifar10_model.make_task(split, split, hp, meta, torch.device("cpu"))
    assert task.loss_fn is multiclass_hinge
    augment: Any = task.augment  # typed as the callable the loop needs; it is the CIFAR-10 augmentation
    assert augment is not None and (augment.vflip, augment.zoom, augment.shear, augment.noise) == (
        True,
        0.2,
        10.0,
        0.05,
    )
    assert task.prepare is not None
    torch.testing.assert_close(task.prepare(images), images.float() / 255)
    # A checkpoint from before pixel_scaling existed was standardized, and still is.
    old = cifar10_model.normalize(images, {"mean": meta["mean"], "std": meta["std"]})
    torch.testing.assert_close(old[:, 0], (images[:, 0].float() / 255 - 0.5) / 0.2, rtol=1e-5, atol=1e-5)


def test_a_trial_trains_with_the_course_vocabulary_and_keeps_its_pixel_scaling(tiny_cifar10: Any) -> None:
    # One CIFAR-10 trial with every new value: the learning rate halves each epoch (exponential, gamma
    # 0.5), and the meta that evaluation rebuilds inputs from says how pixels were scaled.
    tiny_cifar10(train_per_class=6, test_per_class=1)
    hp = CIFAR10.resolve(
        {
            **COURSE,
            "filters": 4,
            "conv_blocks": 2,
            "hidden_layers": 0,
            "epochs": 3,
            "batch_size": 16,
            "early_stopping_patience": 0,
        }
    )
    epochs: list[dict[str, float]] = []
    ctx = TrialContext(
        hp,
        metrics=["val_acc"],
        directions=["maximize"],
        seed=0,
        device="cpu",
        report=lambda epoch, metrics: epochs.append(metrics),
    )
    result = cifar10_model.train(ctx)
    assert [m["lr"] for m in epochs] == pytest.approx([hp["lr"], hp["lr"] / 2, hp["lr"] / 4])
    assert result.meta["pixel_scaling"] == "unit" and result.meta["task_hyperparameters"]["loss"] == "hinge"
    inputs, _ = cifar10_model.val_split(cifar10_model.DataConfig(), result.meta)
    assert 0.0 <= float(inputs.min()) and float(inputs.max()) <= 1.0


def test_boston_early_stopping_min_delta_and_exponential_decay_reach_the_loop() -> None:
    # A min_delta no gain can reach (1000 k$) stops after `patience` epochs; gamma 0.5 halves the rate.
    from hpo.objectives.boston import BostonDataOptions
    from hpo.objectives.boston import _model as boston_model

    hp = BOSTON.resolve(
        {
            "epochs": 20,
            "early_stopping_patience": 2,
            "early_stopping_min_delta": 1000.0,
            "lr_schedule": "exponential",
            "lr_gamma": 0.5,
            "activation": "sigmoid",
        }
    )
    epochs: list[dict[str, float]] = []
    ctx = TrialContext(
        hp,
        data=BostonDataOptions(cv_folds=1),
        metrics=["val_rmse"],
        directions=["minimize"],
        seed=0,
        device="cpu",
        report=lambda epoch, metrics: epochs.append(metrics),
    )
    boston_model.train(ctx)
    assert len(epochs) == 3
    assert [m["lr"] for m in epochs] == pytest.approx([hp["lr"], hp["lr"] / 2, hp["lr"] / 4])


def test_hpo_run_accepts_the_vocabulary_searched_end_to_end(cli: Any, write_study: Any, tiny_cifar10: Any) -> None:
    # Through the real CLI: a search over the new choices validates, passes preflight and completes.
    tiny_cifar10(train_per_class=6, test_per_class=1)
    study = {
        "name": "course-vocabulary",
        "objective": "cifar10",
        "seed": 0,
        "n_trials": 2,
        "sampler": {"type": "random"},
        "params": {
            "pooling": {"type": "categorical", "choices": ["sum", "min"]},
            "padding_mode": {"type": "categorical", "choices": ["replicate", "circular"]},
            "pixel_scaling": {"type": "categorical", "choices": ["unit", "center"]},
        },
        "fixed": {
            "epochs": 1,
            "batch_size": 32,
            "filters": 4,
            "conv_blocks": 2,
            "hidden_layers": 0,
            "pool_size": 3,
            "pool_stride": 2,
            "loss": "hinge",
            "activation": "sigmoid",
            "augment_vflip": True,
            "augment_zoom": 0.1,
            "augment_shear": 5,
            "augment_noise": 0.02,
        },
    }
    path = write_study(study)
    assert cli("validate", path).exit_code == 0
    result = cli("run", path, "--quiet")
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="course-vocabulary", storage="sqlite:///hpo.db").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]


# -- docs/course-coverage.md: every study-file term it marks "yes" is in hpo -------------------------------
COVERAGE = Path(__file__).resolve().parents[1] / "docs" / "course-coverage.md"
# Backticked words of the "where in hpo" column that are not hyperparameters: study-file keys, metrics, and
# values named on their own. Everything else of the form `name` or `name: values` must be a table row.
NOT_HYPERPARAMETERS = {
    *("enqueue", "fixed", "params", "sampler", "log", "when"),
    *("n_params", "train_acc", "train_loss", "val_acc", "val_loss", "val_mse", "val_rmse"),
    *("gp", "qmc", "linear", "none", "step", "read_inputs"),
}


def _coverage_terms() -> list[tuple[str, str]]:
    """(item, term) for each backticked term of a "yes" row's "where in hpo" column."""
    terms = []
    for line in COVERAGE.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[2] == "yes":
            terms += [(cells[0], term.replace("\\|", "|")) for term in re.findall(r"`([^`]+)`", cells[3])]
    return terms


def _hyperparameter_terms() -> list[tuple[str, list[Any]]]:
    """(name, values) for the terms that name a hyperparameter, with the values the term lists."""
    found = []
    for _, term in _coverage_terms():
        match = re.fullmatch(r"([a-z][a-z0-9_]*)(?:: (.+))?", term)
        if match is None or match.group(1) in NOT_HYPERPARAMETERS:
            continue
        values = [yaml.safe_load(v) for v in (match.group(2) or "").split("|") if v.strip() and "<" not in v]
        found.append((match.group(1), values))
    return found


def test_the_course_coverage_names_study_file_terms() -> None:
    # The parsing below finds the table: dozens of yes-rows and hyperparameter terms.
    assert len(_coverage_terms()) > 80 and len(_hyperparameter_terms()) > 60


def test_every_course_term_marked_yes_is_a_row_that_accepts_its_values() -> None:
    # The document's promise: every hyperparameter named in a "yes" row is a row of an objective's table,
    # and each value it names is one `hpo validate` accepts. Dropping a row or a choice fails here.
    tables = {"boston": BOSTON, "cifar10": CIFAR10}
    missing, refused = [], []
    for name, values in _hyperparameter_terms():
        rows = [table[name] for table in tables.values() if name in table]
        if not rows:
            missing.append(name)
        refused += [f"{name}: {value!r}" for value in values if not any(row.rule.accepts(value) for row in rows)]
    assert missing == [] and refused == []


def test_every_sampler_the_course_coverage_names_is_accepted() -> None:
    named = [
        kind.strip()
        for _, term in _coverage_terms()
        if (match := re.fullmatch(r"sampler: \{type: (.+)\}", term))
        for kind in match.group(1).split("|")
    ]
    assert len(named) >= 5
    params = {"optimizer": {"type": "categorical", "choices": ["adam", "sgd"]}}
    for kind in named:
        study = {"name": "s", "objective": "boston", "sampler": {"type": kind}, "params": params}
        assert parse_study(study).sampler.type == kind
