"""`hpo compare`: the verdict names the better study, judges the gap against noise, and says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from hpo.config import parse_study
from hpo.report import StudyFacts, setting_differences, verdict
from tests.conftest import EvaluatedStudy, tiny_boston

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _facts(name: str, value: float, **overrides: Any) -> StudyFacts:
    base: dict[str, Any] = dict(
        name=name,
        metric="val_acc",
        maximize=True,
        best_value=value,
        best_trial=0,
        spread=0.01,
        spread_of=5,
        n_params=1000,
        best_epoch=5,
        epochs_run=10,
        converged_epoch=3,
        train_loss=0.5,
        val_loss=0.6,
    )
    base.update(overrides)
    return StudyFacts(**base)


def test_verdict_names_the_better_study_and_the_gap_beyond_noise() -> None:
    # Higher accuracy wins; a gap of 0.10 against spreads of 0.01 is more than noise.
    text = verdict(
        _facts("cnn", 0.80, n_params=50_000, regularization={"dropout": 0.3}, train_loss=0.6, val_loss=0.6),
        _facts("mlp", 0.70, train_loss=0.2, val_loss=0.9),
    )
    assert text.startswith("**Verdict: cnn did better on validation**")
    assert "exceeds seed noise" in text
    assert "mlp overfits" in text
    assert "50,000 parameters" in text and "dropout 0.3" in text


def test_verdict_calls_a_small_gap_noise_and_prefers_retrain_seed_spread() -> None:
    # Lower RMSE wins, but a gap under twice the seed spread is called noise; seed std beats the top-k spread.
    a = _facts("a", 3.00, metric="val_rmse", maximize=False, seed_std=0.2, test_metric="test_rmse", test_value=3.1)
    b = _facts("b", 3.10, metric="val_rmse", maximize=False, test_metric="test_rmse", test_value=3.3)
    text = verdict(b, a)
    assert text.startswith("**Verdict: a did better on validation**")
    assert "within seed noise" in text and "std over retrain seeds" in text
    assert "a's best model scores test_rmse 3.1 vs 3.3, confirming the validation result" in text


def test_compare_cli_on_a_constructed_case(
    evaluated_boston: EvaluatedStudy, write_study: Any, cli: Any, tmp_path: Path
) -> None:
    # A study given a wide net and enough epochs beats the tiny 4-epoch study; compare says so, saves and logs it.
    strong = tiny_boston(
        name="strong-boston",
        n_trials=1,
        params={"lr": {"type": "float", "low": 5e-3, "high": 1e-2, "log": True}},
        fixed={"epochs": 25, "hidden_layers": 2, "width": 64, "batch_size": 32, "optimizer": "adam"},
    )
    path = write_study(strong)
    assert cli("run", path, "-q", *evaluated_boston.flags).exit_code == 0
    out = tmp_path / "cmp"
    result = cli("compare", evaluated_boston.name, "strong-boston", "--out", out, *evaluated_boston.flags)
    assert result.exit_code == 0, result.output
    assert "**Verdict: strong-boston did better on validation**" in result.output
    assert "Why:" in result.output and "Size: strong-boston has" in result.output
    assert "Test: not compared (strong-boston not evaluated" in result.output
    assert {p.name for p in out.iterdir()} == {"index.html", "learning_curves.png", "verdict.md"}
    assert "strong-boston did better" in (out / "verdict.md").read_text()
    client = MlflowClient(evaluated_boston.tracking_uri)
    for name in (evaluated_boston.name, "strong-boston"):
        experiment = client.get_experiment_by_name(name)
        parent = client.search_runs([experiment.experiment_id], "tags.`hpo.role` = 'study'")[0]
        logged = {
            a.path
            for a in client.list_artifacts(parent.info.run_id, f"compare/{evaluated_boston.name}-vs-strong-boston")
        }
        assert f"compare/{evaluated_boston.name}-vs-strong-boston/verdict.md" in logged


def test_compare_refuses_studies_of_different_metrics(
    evaluated_boston: EvaluatedStudy, write_study: Any, cli: Any
) -> None:
    path = write_study(tiny_boston(name="mae-boston", metric="val_mae", n_trials=1))
    assert cli("run", path, "-q", *evaluated_boston.flags).exit_code == 0
    result = cli("compare", evaluated_boston.name, "mae-boston", *evaluated_boston.flags)
    assert result.exit_code == 2 and "val_mae" in result.output and len(result.output.strip().splitlines()) == 1


def test_converging_at_the_same_epoch_is_not_called_faster() -> None:
    # Both within 5% of their best by epoch 1: neither "gets there in fewer epochs".
    text = verdict(_facts("a", 0.80, converged_epoch=1), _facts("b", 0.70, converged_epoch=1))
    assert "both get there by the same epoch" in text and "fewer epochs" not in text
    text = verdict(_facts("a", 0.80, converged_epoch=1), _facts("b", 0.70, converged_epoch=4))
    assert "a gets there in fewer epochs" in text


def _pair(path: str) -> Any:
    return parse_study(yaml.safe_load((STUDIES / path).read_text()), source=path)


@pytest.mark.parametrize(
    ("dropout", "l2"),
    [("cifar10-dropout-cpu.yaml", "cifar10-l2-cpu.yaml"), ("cifar10-dropout.yaml", "cifar10-l2.yaml")],
)
def test_the_shipped_regularizer_pairs_differ_only_in_the_regularizer(dropout: str, l2: str) -> None:
    # Challenge task 1 as a controlled experiment: the stored study files differ in dropout and
    # weight_decay only, each searched on a range bounded away from zero and off in the other study, and
    # neither uses batch norm, augmentation, label smoothing, L1, learning-rate decay or early stopping.
    a, b = _pair(dropout), _pair(l2)
    differences = setting_differences(a, b)
    assert set(differences) == {"dropout", "weight_decay"}
    assert differences["dropout"][0].startswith("searched 0.1 to 0.5") and differences["dropout"][1] == "0.0"
    assert (
        differences["weight_decay"][1].startswith("searched 0.0001 to 0.01 (log)")
        and differences["weight_decay"][0] == "0.0"
    )
    for config in (a, b):
        hp = config.trial_hyperparameters({})
        assert hp["batch_norm"] is False and hp["l1"] == 0 and hp["label_smoothing"] == 0
        assert hp["lr_schedule"] == "none" and hp["early_stopping_patience"] == 0
        assert not any(hp[k] for k in hp if k.startswith("augment_")) and not any(
            k.startswith("augment_") for k in config.params
        )


def _controlled(**overrides: Any) -> tuple[StudyFacts, StudyFacts]:
    a = _facts("drop", 0.62, **{"spread": 0.01, **overrides})
    b = _facts("l2", 0.55, spread=0.01)
    return a, b


DIFFERENCES = {"dropout": ("searched 0.1 to 0.5", "0.0"), "weight_decay": ("0.0", "searched 0.0001 to 0.01 (log)")}


def test_a_controlled_pair_beyond_noise_is_put_down_to_the_regularizer() -> None:
    text = verdict(*_controlled(), differences=DIFFERENCES)
    assert (
        "Setup: a controlled comparison — the study files differ only in regularization: drop uses dropout searched "
        "0.1 to 0.5; l2 uses weight_decay searched 0.0001 to 0.01 (log)" in text
    )
    assert (
        "The regularizer is the only difference, so it decides the result: dropout searched 0.1 to 0.5 (drop) beats "
        "weight_decay" in text
    )


def test_a_controlled_pair_within_noise_is_not_separated() -> None:
    # A gap of 0.07 against spreads of 0.05: the regularizer is still the only difference, but the
    # evidence does not separate the two.
    a, b = _facts("drop", 0.62, spread=0.05), _facts("l2", 0.55, spread=0.05)
    text = verdict(a, b, differences=DIFFERENCES)
    assert "Setup: a controlled comparison" in text
    assert (
        "The evidence does not separate dropout searched 0.1 to 0.5 (drop) from weight_decay searched 0.0001 to "
        "0.01 (log) (l2): the validation gap is 1.4× the noise" in text
    )


def test_test_results_within_seed_noise_do_not_confirm_a_validation_win() -> None:
    # Validation separates them, but on test the gap (0.004) is under twice the seed std (0.01).
    a, b = _controlled(seed_std=0.01, test_metric="test_acc", test_value=0.600)
    b.test_metric, b.test_value, b.seed_std = "test_acc", 0.596, 0.008
    text = verdict(a, b, differences=DIFFERENCES)
    assert "On test the gap is 0.004, 0.4× the larger seed std (0.01): within seed noise" in text
    assert "The evidence does not separate" in text and "the test split does not confirm it beyond seed noise" in text


def test_studies_differing_in_more_than_regularization_are_not_a_controlled_comparison() -> None:
    differences = {**DIFFERENCES, "model": ("cnn", "mlp")}
    text = verdict(*_controlled(), differences=differences)
    assert (
        "Setup: not a controlled comparison — the study files differ in 3 setting(s) (dropout: searched 0.1 to 0.5 "
        "vs 0.0;" in text
    )
    assert "model: cnn vs mlp), so the result cannot be put down to any single one of them" in text
    assert "decides the result" not in text


def test_the_generalization_gap_at_the_best_epoch_is_stated() -> None:
    a = _facts("a", 0.80, train_loss=0.4, val_loss=0.7, train_score=0.93, val_score=0.80)
    text = verdict(a, _facts("b", 0.70))
    assert (
        "Generalization gap at the best epoch: a: validation minus training loss 0.3, train_acc 0.93 vs val_acc 0.8 "
        "(0.13 better on training data)" in text
    )


def test_compare_cli_on_a_controlled_pair(
    evaluated_boston: EvaluatedStudy, write_study: Any, cli: Any, tmp_path: Path
) -> None:
    # Two tiny Boston studies that differ only in dropout vs L2: compare reads the stored study files,
    # says the comparison is controlled, and lists the two differing settings on its page.
    base = tiny_boston(n_trials=2, fixed={"epochs": 4, "hidden_layers": 1, "batch_size": 64})
    drop = {
        **base,
        "name": "reg-dropout",
        "params": {**base["params"], "dropout": {"type": "float", "low": 0.1, "high": 0.3}},
    }
    l2 = {
        **base,
        "name": "reg-l2",
        "params": {**base["params"], "weight_decay": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    }
    for study in (drop, l2):
        assert cli("run", write_study(study, f"{study['name']}.yaml"), "-q", *evaluated_boston.flags).exit_code == 0
    out = tmp_path / "cmp"
    result = cli("compare", "reg-dropout", "reg-l2", "--out", out, *evaluated_boston.flags)
    assert result.exit_code == 0, result.output
    assert (
        "Setup: a controlled comparison — the study files differ only in regularization: reg-dropout uses dropout "
        "searched 0.1 to 0.3; reg-l2 uses weight_decay searched 0.0001 to 0.01 (log)." in result.output
    )
    page = (out / "index.html").read_text()
    assert (
        "What the study files set differently" in page
        and "<td>dropout</td>" in page
        and "<td>weight_decay</td>" in page
    )
    assert "Generalization gap at the best epoch" in result.output


def test_overlapping_test_intervals_do_not_confirm_a_validation_win() -> None:
    # Validation separates the two, but their 95% bootstrap intervals on test overlap: not evidence.
    a, b = _controlled(test_metric="test_acc", test_value=0.600, test_interval=(0.59, 0.61))
    b.test_metric, b.test_value, b.test_interval = "test_acc", 0.596, (0.586, 0.606)
    text = verdict(a, b, differences=DIFFERENCES)
    assert (
        "95% bootstrap intervals of test_acc over the test rows: drop [0.59, 0.61], l2 [0.586, 0.606]; they overlap"
        in text
    )
    assert "The evidence does not separate" in text and "the test intervals overlap" in text


def test_disjoint_test_intervals_confirm_it() -> None:
    a, b = _controlled(test_metric="test_acc", test_value=0.650, test_interval=(0.64, 0.66))
    b.test_metric, b.test_value, b.test_interval = "test_acc", 0.596, (0.586, 0.606)
    text = verdict(a, b, differences=DIFFERENCES)
    assert "they do not overlap: the test difference is real" in text
    assert "The regularizer is the only difference, so it decides the result" in text
