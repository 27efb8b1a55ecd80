"""The command line: demo end to end at a tiny size, fit on bundled data and CSV errors."""

import json

import pytest
from typer.testing import CliRunner

from ekibnn.cli import app

runner = CliRunner()


def test_help_everywhere():
    for args in ([], ["--help"], ["demo", "--help"], ["fit", "--help"]):
        result = runner.invoke(app, args)
        assert "Usage" in result.output
    assert runner.invoke(app, ["--help"]).exit_code == 0


@pytest.mark.parametrize("config", ["tutorial", "default"])
def test_demo_writes_plots_and_metrics(tmp_path, config):
    out = tmp_path / config
    result = runner.invoke(
        app, ["demo", "--config", config, "--out", str(out), "--scale", "0.02", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "rmse",
        "nll",
        "coverage_95",
        "wall_time_s",
        "steps_per_s",
        "ensemble_size",
        "n_params",
        "config",
    ):
        assert key in metrics
    assert metrics["config"] == config and metrics["n_params"] == 481
    assert metrics["ensemble_size"] == 20
    assert 0 <= metrics["coverage_95"] <= 1
    for name in ("predictive.png", "misfit.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_unknown_config(tmp_path):
    result = runner.invoke(app, ["demo", "--config", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "expected one of" in result.output
