"""Learning-curve figures: axes labelled with their units, whole-number epochs, training accuracy beside
validation accuracy, and the MSE beside an RMSE."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpo.report._curves import Curves, curve_keys, learning_curves_figure, side_by_side_figure


def _curves(number: int, keys: tuple[str, ...], epochs: int = 3) -> Curves:
    steps = np.arange(epochs)
    return Curves(
        number, "COMPLETE", f"run{number}", {k: (steps, np.linspace(2.0, 1.0, epochs) + i) for i, k in enumerate(keys)}
    )


def _labels(figure: object) -> list[str]:
    return [ax.get_ylabel() for ax in figure.axes]  # type: ignore[attr-defined]


def test_companions_of_a_metric_are_read_with_it() -> None:
    assert curve_keys("val_acc") == ("train_loss", "val_loss", "val_acc", "train_acc")
    assert curve_keys("val_rmse") == ("train_loss", "val_loss", "val_rmse", "train_rmse", "val_mse")
    assert curve_keys("n_params") == ("train_loss", "val_loss")


def test_regression_curves_say_their_units_and_show_the_mse_beside_the_rmse() -> None:
    # Losses in standardized units, validation MSE in k$² on the left of its panel, RMSE in k$ on the right.
    units = {"train_loss": "standardized MSE", "val_loss": "standardized MSE", "val_mse": "k$²", "val_rmse": "k$"}
    best = _curves(4, ("train_loss", "val_loss", "val_rmse", "val_mse"))
    figure = learning_curves_figure(
        [best, _curves(5, ("train_loss", "val_loss", "val_rmse"))], "val_rmse", best=4, title="t", units=units
    )
    assert _labels(figure) == ["val_rmse (k$)", "loss (standardized MSE)", "val_mse (k$²)", "val_rmse (k$)"]
    for ax in figure.axes:
        ticks = [t for t in ax.get_xticks() if 0 <= t <= 2]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_classification_curves_show_training_accuracy_beside_validation_accuracy() -> None:
    best = _curves(0, ("train_loss", "val_loss", "val_acc", "train_acc"))
    figure = learning_curves_figure([best], "val_acc", best=0, title="t")
    assert len(figure.axes) == 3 and figure.axes[2].get_title() == "trial 0: training vs validation acc"
    assert [line.get_label() for line in figure.axes[2].get_lines()] == ["train_acc", "val_acc"]
    without = learning_curves_figure([_curves(0, ("train_loss", "val_loss", "val_acc"))], "val_acc", best=0, title="t")
    assert len(without.axes) == 2


def test_side_by_side_adds_an_accuracy_row_when_training_accuracy_is_logged() -> None:
    keys = ("train_loss", "val_loss", "val_acc", "train_acc")
    figure = side_by_side_figure(_curves(1, keys), _curves(2, keys), "val_acc", names=("a", "b"))
    assert len(figure.axes) == 6
    assert [ax.get_title() for ax in figure.axes[4:]] == [
        "a: training vs validation acc",
        "b: training vs validation acc",
    ]
    assert len(side_by_side_figure(_curves(1, keys[:3]), _curves(2, keys[:3]), "val_acc", names=("a", "b")).axes) == 4


def test_boston_declares_the_units_its_training_loop_logs() -> None:
    # Losses are MSEs of the standardized target; validation scores are back in k$ (and k$² for the MSE).
    from hpo.config import parse_study
    from hpo.report._curves import metric_units

    units = metric_units(parse_study({"name": "b", "objective": "boston"}))
    assert units["train_loss"] == units["val_loss"] == "standardized MSE"
    assert (units["val_mse"], units["val_rmse"], units["val_mae"]) == ("k$²", "k$", "k$")


def test_a_boston_studys_own_curves_show_units_whole_epochs_and_the_mse(evaluated_boston: Any) -> None:
    # From the MLflow runs of a real (tiny) Boston study: val_mse is logged every epoch, and the figures
    # `hpo report` and `hpo compare` draw label every axis with the objective's units, epochs as integers.
    import optuna

    from hpo.config import load_study
    from hpo.report._curves import metric_units
    from hpo.report._report import trial_curves
    from hpo.running.tracking import Tracker

    config = load_study(evaluated_boston.folder / "study.yaml")
    study = optuna.load_study(study_name=evaluated_boston.name, storage=evaluated_boston.storage)
    best = study.best_trial
    curves = trial_curves(
        Tracker(evaluated_boston.tracking_uri, evaluated_boston.name), [best], "val_rmse", companions=True
    )
    steps, _ = curves[0].get("val_mse")
    assert list(steps) == list(curves[0].get("val_rmse")[0]) and len(steps) >= 2
    units = metric_units(config)
    figure = learning_curves_figure(curves, "val_rmse", best=best.number, title="t", units=units)
    assert _labels(figure) == ["val_rmse (k$)", "loss (standardized MSE)", "val_mse (k$²)", "val_rmse (k$)"]
    pair = side_by_side_figure(curves[0], curves[0], "val_rmse", names=("a", "b"), units=units)
    assert _labels(pair) == ["val_rmse (k$)", "val_rmse (k$)", "loss (standardized MSE)", "loss (standardized MSE)"]
    for ax in [*figure.axes, *pair.axes]:
        if ax.get_xlabel() != "epoch":
            continue  # the RMSE's twin axis shares the MSE panel's epochs
        figure.canvas.draw() if ax.figure is figure else pair.canvas.draw()
        ticks = [t for t in ax.get_xticks() if steps.min() <= t <= steps.max()]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
