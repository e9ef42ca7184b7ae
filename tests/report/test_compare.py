"""`hpo compare`: the verdict names the better study, judges the gap against noise, and says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from hpo.report import StudyFacts, verdict
from tests.conftest import EvaluatedStudy, tiny_boston


def _facts(name: str, value: float, **overrides: Any) -> StudyFacts:
    base: dict[str, Any] = dict(name=name, metric="val_acc", maximize=True, best_value=value, best_trial=0, spread=0.01, spread_of=5,
                                n_params=1000, best_epoch=5, epochs_run=10, converged_epoch=3, train_loss=0.5, val_loss=0.6)  # fmt: skip
    base.update(overrides)
    return StudyFacts(**base)


def test_verdict_names_the_better_study_and_the_gap_beyond_noise() -> None:
    # Higher accuracy wins; a gap of 0.10 against spreads of 0.01 is more than noise.
    text = verdict(_facts("cnn", 0.80, n_params=50_000, regularization={"dropout": 0.3}, train_loss=0.6, val_loss=0.6), _facts("mlp", 0.70, train_loss=0.2, val_loss=0.9))
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


def test_compare_cli_on_a_constructed_case(evaluated_boston: EvaluatedStudy, write_study: Any, cli: Any, tmp_path: Path) -> None:
    # A study given a wide net and enough epochs beats the tiny 4-epoch study; compare says so, saves and logs it.
    strong = tiny_boston(name="strong-boston", n_trials=1, params={"lr": {"type": "float", "low": 5e-3, "high": 1e-2, "log": True}},
                         fixed={"epochs": 25, "hidden_layers": 2, "width": 64, "batch_size": 32, "optimizer": "adam"})  # fmt: skip
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
        logged = {a.path for a in client.list_artifacts(parent.info.run_id, f"compare/{evaluated_boston.name}-vs-strong-boston")}
        assert f"compare/{evaluated_boston.name}-vs-strong-boston/verdict.md" in logged


def test_compare_refuses_studies_of_different_metrics(evaluated_boston: EvaluatedStudy, write_study: Any, cli: Any) -> None:
    path = write_study(tiny_boston(name="mae-boston", metric="val_mae", n_trials=1))
    assert cli("run", path, "-q", *evaluated_boston.flags).exit_code == 0
    result = cli("compare", evaluated_boston.name, "mae-boston", *evaluated_boston.flags)
    assert result.exit_code == 2 and "val_mae" in result.output and len(result.output.strip().splitlines()) == 1
