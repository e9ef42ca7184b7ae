"""`hpo report`: files exist, the page references exactly the images it wrote, it is logged to the study's
parent run, it never reads the test split, and a real browser decodes every image without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from hpo.data import TEST_SPLIT_READS
from tests.conftest import EvaluatedStudy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Injected into a copy of the page: records load errors and console.error, then each image's decoded width.
PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  window.__problems.push('error: ' + ((e.target && e.target.src) || e.message));
}, true);
var originalError = console.error;
console.error = function () {
  window.__problems.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
  originalError.apply(console, arguments);
};
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute('src'), width: img.naturalWidth};
  });
  var out = document.createElement('pre'); out.id = 'hpo-probe';
  out.textContent = JSON.stringify({images: images, problems: window.__problems});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report(evaluated_boston: EvaluatedStudy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from typer.testing import CliRunner

    from hpo.cli import app

    out = tmp_path_factory.mktemp("report") / "out"
    reads = TEST_SPLIT_READS["boston"]
    result = CliRunner().invoke(
        app, ["report", evaluated_boston.name, "--out", str(out), *evaluated_boston.flags], catch_exceptions=False
    )
    return {"result": result, "out": out, "reads_before": reads, "reads_after": TEST_SPLIT_READS["boston"]}


def test_report_writes_every_image_it_references(report: dict[str, Any]) -> None:
    # index.html names each PNG once, each exists and is a PNG, and no PNG is left unreferenced.
    assert report["result"].exit_code == 0, report["result"].output
    out: Path = report["out"]
    page = (out / "index.html").read_text()
    referenced = re.findall(r'<img src="([^"]+)"', page)
    assert len(referenced) == len(set(referenced))
    for name in referenced:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    assert set(referenced) == {p.name for p in out.glob("*.png")}
    expected = {
        "learning_curves.png",
        "optimization_history.png",
        "param_importances.png",
        "parallel_coordinate.png",
        "slice.png",
        "test_trial_predicted_vs_actual.png",
        "test_trial_residuals.png",
        "test_ensemble_predicted_vs_actual.png",
    }
    assert expected <= set(referenced)
    # The evaluation section shows the test results, the ensemble's members and the baselines.
    for text in (
        "Top trials",
        "Test evaluation",
        "ensemble (greedy)",
        "linear regression",
        "gradient boosting",
        "random forest",
    ):
        assert text in page


def test_report_says_the_units_of_the_boston_losses_and_mse(report: dict[str, Any]) -> None:
    # The learning-curve caption names the loss unit; the best epoch's MSE is given in k$² beside its RMSE.
    page = (report["out"] / "index.html").read_text()
    assert "Losses are in standardized MSE." in page
    assert re.search(r"has val_mse [0-9.]+ k\$² \(val_rmse [0-9.]+\)", page), page


def test_report_never_reads_the_test_split(report: dict[str, Any]) -> None:
    assert report["reads_after"] == report["reads_before"]


def test_report_is_logged_to_the_parent_run(report: dict[str, Any], evaluated_boston: EvaluatedStudy) -> None:
    client = MlflowClient(evaluated_boston.tracking_uri)
    experiment = client.get_experiment_by_name(evaluated_boston.name)
    parent = client.search_runs([experiment.experiment_id], "tags.`hpo.role` = 'study'")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {f"report/{p.name}" for p in report["out"].iterdir()} == logged


def test_unwritable_out_is_a_one_line_error_and_writes_nothing(
    evaluated_boston: EvaluatedStudy, cli: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("report", evaluated_boston.name, "--out", blocker / "report", *evaluated_boston.flags)
    assert result.exit_code == 2
    assert "--out" in result.output and len(result.output.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_report_in_headless_chromium(report: dict[str, Any], tmp_path: Path) -> None:
    # Every image decodes (naturalWidth > 0) in a real browser and nothing is logged to the console.
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    site = tmp_path / "site"
    shutil.copytree(report["out"], site)
    page = (site / "index.html").read_text()
    (site / "probe.html").write_text(page.replace("<head>", "<head>" + PROBE, 1))
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            (site / "probe.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="hpo-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run; chromium said: {done.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["problems"] == []
    assert [i["src"] for i in probe["images"]] == re.findall(r'<img src="([^"]+)"', page)
    assert all(i["width"] > 0 for i in probe["images"]), probe["images"]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
