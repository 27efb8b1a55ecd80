"""The command line: demo end to end at a tiny size, fit on bundled data and CSV errors."""

import json

import numpy as np
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


@pytest.mark.parametrize(("dataset", "key"), [("diabetes", "coverage_95"), ("wine", "accuracy")])
def test_fit_bundled_dataset(tmp_path, dataset, key):
    args = [
        "fit",
        "--dataset",
        dataset,
        "--out",
        str(tmp_path),
        "--ensemble-size",
        "16",
        "--steps",
        "20",
        "--hidden",
        "8",
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics[key] <= 1
    assert (tmp_path / "calibration.png").exists()


def test_fit_csv_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,target\n" + "".join(f"{xi:.4f},{xi**2:.4f},{np.sin(xi):.4f}\n" for xi in x))
    out = tmp_path / "out"
    ok = runner.invoke(
        app,
        [
            "fit",
            "--dataset",
            str(csv),
            "--target",
            "target",
            "--out",
            str(out),
            "--ensemble-size",
            "8",
            "--steps",
            "5",
            "--method",
            "etki",
            "--no-progress",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "rmse" in json.loads((out / "metrics.json").read_text())
    missing = runner.invoke(app, ["fit", "--dataset", str(tmp_path / "nope.csv"), "--target", "y"])
    assert missing.exit_code == 1 and "error:" in missing.output
    column = runner.invoke(app, ["fit", "--dataset", str(csv), "--target", "zzz"])
    assert column.exit_code == 1 and "zzz" in column.output
    bad = tmp_path / "bad.csv"
    bad.write_text("a,target\n1.0,2.0\nhello,3.0\n")
    text = runner.invoke(app, ["fit", "--dataset", str(bad), "--target", "target"])
    assert text.exit_code == 1 and "error:" in text.output
    no_target = runner.invoke(app, ["fit", "--dataset", str(csv)])
    assert no_target.exit_code == 1 and "--target" in no_target.output


def test_pinn_command_writes_metrics_and_plots(tmp_path):
    result = runner.invoke(
        app, ["pinn", "poisson1d", "--out", str(tmp_path), "--scale", "0.1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report["parameters"]["k"]) >= {"mean", "std", "true"}
    for key in ("rel_l2_u", "rel_l2_f", "coverage_u_95", "wall_time_s"):
        assert key in report
    for name in ("solution.png", "parameters.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["pinn", "nope"])
    assert bad.exit_code == 1 and "expected one of" in bad.output


@pytest.mark.parametrize("method", ["uki", "eks", "aldi"])
def test_fit_every_method(tmp_path, method):
    args = [
        "fit",
        "--dataset",
        "diabetes",
        "--out",
        str(tmp_path),
        "--hidden",
        "2",
        "--ensemble-size",
        "32",
        "--steps",
        "5",
        "--method",
        method,
        "--sampler-time",
        "0.05",
        "--no-progress",
    ]
    result = runner.invoke(app, args)  # hidden 2 on 10 features: p = 25, ALDI needs J >= 27
    assert result.exit_code == 0, result.output
    params = json.loads((tmp_path / "metrics.json").read_text())["params"]
    assert params["method"] == method and params["sampler_time"] == 0.05


def test_fit_unknown_method(tmp_path):
    result = runner.invoke(app, ["fit", "--dataset", "diabetes", "--method", "nope"])
    assert result.exit_code == 1
    assert "expected one of eki, teki" in result.output and "'nope'" in result.output


def test_pinn_help_lists_every_recipe():
    from ekibnn import cli, pinn

    assert cli.recipes.NAMES == pinn.METHODS
    result = CliRunner().invoke(cli.app, ["pinn", "--help"])
    assert result.exit_code == 0
    for name in pinn.METHODS:
        assert name in result.output
