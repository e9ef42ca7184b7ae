"""`hpo predict`: a trained model on the user's own files."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpo.cli._app import StorageOption, TrackingOption, app, command


@command(app, "predict")
def predict(
    model: str = typer.Argument(
        ...,
        help="models:/<name>/<version> (<study>-best or <study>-ensemble, as `hpo evaluate` registers them), "
        "or a study name or file: its best trial's checkpoint.",
    ),
    inputs: list[Path] = typer.Argument(
        ...,
        help="Files to predict for: images (PNG or JPEG, any size) for an image objective, CSV rows for a tabular one.",
    ),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes shown per input, most probable first (classifiers)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of lines."),
    storage: str | None = StorageOption,
    tracking_uri: str | None = TrackingOption,
) -> None:
    """Run a registered model, an ensemble or a study's best model on your own images or CSV rows."""
    from hpo.evaluation import load_predictor

    predictor = load_predictor(model, storage=storage, tracking_uri=tracking_uri)
    results = predictor.predict(inputs, top_k=top_k)
    if json_output:
        typer.echo(
            json.dumps({"model": predictor.description, "predictions": [r.as_dict() for r in results]}, indent=2)
        )
        return
    typer.echo(f"model: {predictor.description}")
    for result in results:
        typer.echo(result.text())
