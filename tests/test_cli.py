"""The command line: demo end to end at a tiny size, fit on bundled data and CSV errors, every
argument and path checked before any computation, one line per error, strict JSON, lazy
imports and the compilation cache."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ekibnn import cli
from ekibnn.cli import app
from ekibnn.errors import ComputationError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path_factory, monkeypatch):
    """In-process commands never write to the real home, nor turn on JAX's persistent cache for
    the rest of the test process (the cache is tested in a subprocess). One folder per session:
    matplotlib keeps its font cache there too."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.setenv("EKIBNN_NO_COMPILE_CACHE", "1")


def _strict_json(path: Path) -> dict:
    """metrics.json read as strict JSON (NaN / Infinity refused)."""

    def refuse(name):
        raise AssertionError(f"{path}: not strict JSON ({name})")

    return json.loads(path.read_text(), parse_constant=refuse)


def _error_line(result, code: int = 2) -> str:
    """The one line an error prints (and the exit code it gives)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


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
    metrics = _strict_json(out / "metrics.json")
    assert metrics["compile_cache"] == {"enabled": False, "dir": None, "entries_before": None}
    for key in (
        "rmse",
        "nll",
        "nll_in_data",
        "coverage_95",
        "wall_time_s",
        "steps_per_s",
        "ensemble_size",
        "n_params",
        "config",
    ):
        assert key in metrics
    assert metrics["config"] == config and metrics["n_params"] == 481
    if config == "tutorial":  # the notebook's EKI loop, J = 1000 * 0.02
        assert metrics["method"] == "eki" and metrics["ensemble_size"] == 20
    else:  # the library default: 8 Levenberg-Marquardt steps cannot converge, and it says so
        assert metrics["method"] == "laplace" and metrics["ensemble_size"] is None
        assert metrics["converged"] is False and "did not converge" in metrics["warnings"][0]
        assert "inflation" not in metrics["settings"]
    assert 0 <= metrics["coverage_95"] <= 1
    for name in ("predictive.png", "misfit.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_unknown_config(tmp_path):
    result = runner.invoke(app, ["demo", "--config", "nope", "--out", str(tmp_path)])
    assert "expected one of" in _error_line(result)


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
    metrics = _strict_json(tmp_path / "metrics.json")
    assert 0 <= metrics[key] <= 1
    assert (tmp_path / "calibration.png").exists()
    # 20 Levenberg-Marquardt steps per round may not converge: reported, not fatal
    assert (metrics["converged"] is False) == bool(metrics["warnings"])
    for message in metrics["warnings"]:
        assert f"warning: {message}" in result.stderr


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
    assert "rmse" in _strict_json(out / "metrics.json")
    missing = runner.invoke(app, ["fit", "--dataset", str(tmp_path / "nope.csv"), "--target", "y"])
    assert "no such file" in _error_line(missing)
    column = runner.invoke(app, ["fit", "--dataset", str(csv), "--target", "zzz"])
    assert "zzz" in _error_line(column)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,target\n1.0,2.0\nhello,3.0\n")
    text = runner.invoke(app, ["fit", "--dataset", str(bad), "--target", "target"])
    assert "'hello'" in _error_line(text)
    no_target = runner.invoke(app, ["fit", "--dataset", str(csv)])
    assert "--target" in _error_line(no_target)


def test_pinn_command_writes_metrics_and_plots(tmp_path):
    result = runner.invoke(
        app, ["pinn", "poisson1d", "--out", str(tmp_path), "--scale", "0.1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = _strict_json(tmp_path / "metrics.json")
    assert set(report["parameters"]["k"]) >= {"mean", "std", "true"}
    for key in ("rel_l2_u", "rel_l2_f", "coverage_u_95", "wall_time_s"):
        assert key in report
    for name in ("solution.png", "parameters.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["pinn", "nope"])
    assert "expected one of" in _error_line(bad)


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
    params = _strict_json(tmp_path / "metrics.json")["params"]
    assert params["method"] == method and params["sampler_time"] == 0.05


def test_fit_unknown_method(tmp_path):
    result = runner.invoke(app, ["fit", "--dataset", "diabetes", "--method", "nope"])
    line = _error_line(result)
    assert f"expected one of {', '.join(cli.recipes.NAMES)}" in line and "'nope'" in line


def test_pinn_help_lists_every_recipe():
    from ekibnn import cli, pinn

    assert cli.recipes.NAMES == pinn.METHODS
    result = CliRunner().invoke(cli.app, ["pinn", "--help"])
    assert result.exit_code == 0
    for name in pinn.METHODS:
        assert name in result.output


def test_version_and_exit_codes_in_help():
    import ekibnn

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"ekibnn {ekibnn.__version__}"
    for args in (["--help"], ["demo", "--help"], ["fit", "--help"], ["pinn", "--help"]):
        assert "Exit codes: 0 success; 1" in " ".join(runner.invoke(app, args).output.split())


def test_names_spelled_out_match_their_source():
    from ekibnn import demo, pinn

    assert cli.DEMO_CONFIGS == tuple(sorted(demo.CONFIGS))
    assert cli.DEMO_FILES == demo.OUTPUT_FILES
    assert sorted(cli.PINN_PROBLEMS) == sorted(pinn.PROBLEMS)
    assert cli.PINN_FILES == pinn.problems.OUTPUT_FILES


def _csv(tmp_path: Path, rows: int = 40, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("a,y\n" + "".join(f"{i},{0.5 * i:g}\n" for i in range(rows)))
    return path


def _commands(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    """A valid call of each command (tiny sizes) writing to ``out``."""
    small = ["--out", str(out), "--no-progress"]
    return {
        "demo": ["demo", "--scale", "0.02", *small],
        "fit": ["fit", "--dataset", str(_csv(tmp_path)), "--target", "y", *small],
        "pinn": ["pinn", "poisson1d", "--scale", "0.1", *small],
    }


@pytest.mark.parametrize("command", ["demo", "fit", "pinn"])
@pytest.mark.parametrize("where", ["file", "under a file", "metrics.json a folder"])
def test_out_is_checked_before_any_computation(tmp_path, command, where):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    out = {"file": taken, "under a file": taken / "out", "metrics.json a folder": tmp_path / "o"}
    if where == "metrics.json a folder":
        (tmp_path / "o" / "metrics.json").mkdir(parents=True)
    result = runner.invoke(app, _commands(tmp_path, out[where])[command])
    line = _error_line(result)
    assert line.startswith("error: --out: expected") and ("taken" in line or "metrics.json" in line)


@pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs /proc (unwritable, even as root)"
)
def test_unwritable_out(tmp_path):
    result = runner.invoke(app, _commands(tmp_path, Path("/proc/ekibnn-out"))["fit"])
    assert _error_line(result).startswith("error: --out:")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["pinn", "poisson1d", "--noise", "nan"], "--noise"),
        (["pinn", "poisson1d", "--noise", "inf"], "--noise"),
        (["pinn", "poisson1d", "--noise", "0"], "--noise"),
        (["pinn", "poisson1d", "--noise", "-0.1"], "--noise"),
        (["pinn", "poisson1d", "--noise", "abc"], "--noise"),
        (["pinn", "poisson1d", "--method", "nope"], "--method"),
        (["pinn", "poisson1d", "--seed", "-1"], "--seed"),
        (["demo", "--scale", "nan"], "--scale"),
        (["demo", "--scale", "2"], "--scale"),
        (["demo", "--bogus"], "--bogus"),
        (["fit", "--dataset", "diabetes", "--test-size", "nan"], "--test-size"),
        (["fit", "--dataset", "diabetes", "--test-size", "1"], "--test-size"),
        (["fit", "--dataset", "diabetes", "--ensemble-size", "1"], "--ensemble-size"),
        (["fit", "--dataset", "diabetes", "--steps", "0"], "--steps"),
        (["fit", "--dataset", "diabetes", "--hidden", "8,0"], "--hidden"),
        (["fit", "--dataset", "diabetes", "--hidden", "a"], "--hidden"),
        (["fit", "--dataset", "diabetes", "--sampler-time", "1"], "--sampler-time"),
        (["fit", "--dataset", "diabetes", "--method", "eks", "--sampler-time", "inf"], "--sampler"),
        (["fit", "--dataset", "diabetes", "--target", "y"], "--target"),
        (["fit", "--dataset", "diabetes", "--task", "nope"], "--task"),
        (["fit", "--dataset", "iris"], "diabetes, breast_cancer, digits, wine"),
        (["nope"], "nope"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_option(args, named):
    assert named in _error_line(runner.invoke(app, args))


def test_csv_problems_are_usage_errors_naming_row_and_column(tmp_path):
    cases = {
        "a,a,y\n1,2,3\n4,5,6\n": "'a' twice",
        "a,y\n1,2\n2,3\n3,nan\n4,5\n": "line 4, target 'y' (data row 3)",
        "a,y\n1,2\n2,inf\n": "line 3, target 'y' (data row 2)",
        "a,b,y\n1,red,2\n2,blue,3\n": "non-numeric columns: 'b'",
        "a,y\n1,0.5\n2,1.5\n": "continuous",  # with --task classification
        "a,y\n1,2\n": "at least 2 data rows",
        "a,y\n1,0\n2,0\n3,1\n4,1\n5,2\n": "class 2 in 1 row",
        "a,y\n1,0\n2,0\n3,0\n": "at least 2 classes",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"case{i}.csv"
        path.write_text(text)
        task = ["--task", "classification"] if message == "continuous" else []
        result = runner.invoke(app, ["fit", "--dataset", str(path), "--target", "y", *task])
        assert message in _error_line(result), text
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\xe9,y\n1,2\n".encode("latin-1"))
    result = runner.invoke(app, ["fit", "--dataset", str(latin), "--target", "y"])
    assert "--encoding latin-1" in _error_line(result)
    result = runner.invoke(
        app, ["fit", "--dataset", str(latin), "--target", "y", "--encoding", "x"]
    )
    assert "encoding" in _error_line(result)


def test_split_sizes_refused_or_warned_before_computing(tmp_path):
    path = _csv(tmp_path, rows=5)
    taken = tmp_path / "taken"
    taken.write_text("")
    base = ["fit", "--dataset", str(path), "--target", "y", "--out", str(taken)]
    line = _error_line(runner.invoke(app, [*base, "--test-size", "0.99"]))
    assert "--test-size" in line and "at most 0.8 for 5 rows" in line
    two = _csv(tmp_path, rows=2, name="two.csv")
    result = runner.invoke(
        app, ["fit", "--dataset", str(two), "--target", "y", "--out", str(taken)]
    )
    warning, error = result.output.strip().splitlines()
    assert warning.startswith("warning: 1 rows to train on and 1 held out")
    assert result.exit_code == 2 and error.startswith("error: --out")  # the last check


def _fake_fit(exc: Exception):
    def fit(self, X, y):
        raise exc

    return fit


@pytest.mark.parametrize(
    ("exc", "shown"),
    [
        (ValueError("Input X contains NaN.\nEKIRegressor does not accept missing values"), "NaN."),
        (OSError(28, "No space left on device", "out/predictions.png"), "No space left"),
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"), "out of"),
        (KeyError("surprise"), "internal error: KeyError"),
        (ComputationError("eki: fewer than 2 members; fix: shrink the step"), "error: eki: fewer"),
    ],
)
def test_errors_inside_the_computation_are_one_line(tmp_path, monkeypatch, exc, shown):
    from ekibnn.estimators import EKIRegressor

    monkeypatch.setattr(EKIRegressor, "fit", _fake_fit(exc))
    result = runner.invoke(app, _commands(tmp_path, tmp_path / "out")["fit"])
    assert shown in _error_line(result, code=1)


def test_fit_csv_options_and_a_constant_target(tmp_path, monkeypatch):
    """A UTF-8 BOM, CRLF, ';' (detected), a non-ASCII name, a constant target: R^2 undefined;
    --no-compile-cache (the environment variable unset) is recorded."""
    from ekibnn import estimators

    class Mean(estimators.EKIRegressor):  # the CLI's logic, not a fit, is tested here
        def fit(self, X, y):
            self.mean_ = float(np.mean(y))
            self.converged_ = None
            return self

        def predict(self, X, return_std=False):
            return np.full(len(X), self.mean_), np.ones(len(X))

    monkeypatch.setattr(estimators, "EKIRegressor", Mean)
    monkeypatch.delenv("EKIBNN_NO_COMPILE_CACHE")
    text = "x;y;\xe9t\xe9\r\n" + "".join(f"{i};{i * i};3\r\n" for i in range(12))
    path = tmp_path / "odd.csv"
    path.write_bytes(text.encode("utf-8-sig"))
    out = tmp_path / "out"
    args = ["--no-compile-cache", "fit", "--dataset", str(path), "--target", "\xe9t\xe9", "--task"]
    args.append("regression")  # a constant integer would be guessed as one class
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning: the target is constant" in result.output
    metrics = _strict_json(out / "metrics.json")
    assert (
        metrics["r2"] is None and metrics["r2_undefined"] == "constant target on the held-out rows"
    )
    assert "r2: undefined (constant target" in result.output
    assert metrics["compile_cache"]["enabled"] is False
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "ekibnn").exists()


_PROBE = """
import sys
from ekibnn.cli import app
for args in {cases!r}:
    try:
        app(args)
    except SystemExit as exit:
        code = exit.code
    heavy = [m for m in ("jax", "sklearn", "matplotlib", "numpy") if m in sys.modules]
    print("PROBE", code, *heavy, file=sys.stderr)
"""


def _probe(cases: list[list[str]], tmp_path: Path, **env: str) -> list[list[str]]:
    code = textwrap.dedent(_PROBE.format(cases=cases))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("PROBE")]


def test_help_version_and_argument_errors_import_no_jax(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a,y\n1,2,3\n")
    taken = tmp_path / "taken"
    taken.write_text("")
    light = [["--help"], ["--version"], ["demo", "--help"], ["fit", "--help"], ["pinn", "--help"]]
    bad = [
        ["demo", "--scale", "nan"],
        ["demo", "--out", str(taken)],
        ["pinn", "poisson1d", "--noise", "nan"],
        ["pinn", "poisson1d", "--out", str(taken / "sub")],
        ["fit", "--dataset", "iris"],
        ["fit", "--dataset", str(dup), "--target", "y"],
        ["fit", "--dataset", str(_csv(tmp_path)), "--target", "y", "--test-size", "0.99"],
        ["fit", "--dataset", str(_csv(tmp_path)), "--target", "y", "--out", str(taken)],
        ["nope"],
    ]
    results = _probe(light + bad, tmp_path)
    assert len(results) == len(light + bad)
    for args, (code, *heavy) in zip(light + bad, results, strict=True):
        assert code == ("0" if args in light else "2"), args
        assert not set(heavy) & {"jax", "sklearn", "matplotlib"}, (args, heavy)
        if args in light or args[:2] in (["demo", "--scale"], ["pinn", "poisson1d"]):
            assert "numpy" not in heavy, args  # what keeps --help fast


_CACHED_FIT = """
import sys
import jax, jax.numpy as jnp
from ekibnn import cli

def fake_fit(X, y, kind, test_size, out, settings, self_check):  # a tiny program, not a fit
    jax.jit(lambda v: 2 * v + 1)(jnp.arange(3.0)).block_until_ready()
    return {"task": kind, "rmse": float("nan")}, ("rmse",)

cli._fit = fake_fit
for out in sys.argv[2:]:
    try:
        cli.app(["fit", "--dataset", sys.argv[1], "--target", "y", "--out", out])
    except SystemExit as exit:
        assert exit.code == 0, exit.code
"""


def test_compile_cache_in_xdg_cache_home_and_recorded(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EKIBNN_NO_COMPILE_CACHE"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    outs = [tmp_path / "cold", tmp_path / "warm"]
    args = [sys.executable, "-c", _CACHED_FIT, str(_csv(tmp_path)), *map(str, outs)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cold, warm = (_strict_json(out / "metrics.json") for out in outs)
    folder = str(tmp_path / "xdg" / "ekibnn" / "jax")
    assert cold["compile_cache"]["enabled"] and cold["compile_cache"]["dir"] == folder
    assert cold["compile_cache"]["entries_before"] == 0 < cold["compile_cache"]["entries_after"]
    assert warm["compile_cache"]["entries_before"] == cold["compile_cache"]["entries_after"]
    assert cold["rmse"] is None and cold["rmse_undefined"] == "not a number (NaN)"


def test_fit_self_check(tmp_path):
    """--self-check runs the Laplace-vs-RML check after the fit: the verdict is printed and
    the FidelityCheck's fields land in metrics.json under self_check."""
    args = ["fit", "--dataset", "diabetes", "--hidden", "2", "--steps", "30", "--no-progress"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "fit"), "--self-check"])
    assert result.exit_code == 0, result.output
    record = _strict_json(tmp_path / "fit" / "metrics.json")["self_check"]
    assert {"std_ratio", "map_converged", "num_members", "band", "trusted"} <= set(record)
    assert record["num_members"] == 32 and record["message"] in result.output


def test_pinn_self_check(tmp_path):
    """The same check after ``ekibnn pinn``, with the PINN's own ensemble size."""
    pinn_args = ["pinn", "poisson1d", "--scale", "0.1", "--no-progress", "--self-check"]
    result = runner.invoke(app, [*pinn_args, "--out", str(tmp_path / "pinn")])
    assert result.exit_code == 0, result.output
    record = _strict_json(tmp_path / "pinn" / "metrics.json")["self_check"]
    assert record["num_members"] == 8 and record["message"] in result.output


def test_self_check_option_is_refused_where_it_does_not_apply(tmp_path):
    teki = ["fit", "--dataset", "diabetes", "--method", "teki", "--self-check"]
    assert "--self-check" in _error_line(runner.invoke(app, [*teki, "--out", str(tmp_path)]))
    wine = ["fit", "--dataset", "wine", "--self-check", "--out", str(tmp_path)]
    assert "regression task" in _error_line(runner.invoke(app, wine))
    pinn = ["pinn", "poisson1d", "--method", "teki", "--self-check", "--out", str(tmp_path)]
    assert "--method laplace" in _error_line(runner.invoke(app, pinn))


def test_a_command_restores_the_callers_blas_threads(tmp_path):
    """The CLI runs BLAS on one thread while a command computes (ekibnn.run.blas_limits) and
    gives the caller's setting back when it ends, so an in-process call leaves it as it was."""
    import scipy.linalg  # noqa: F401  (SciPy's BLAS loaded, as after any LAPACK call)
    from threadpoolctl import threadpool_info, threadpool_limits

    def threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    with threadpool_limits(2, user_api="blas"):
        before = threads()
        result = runner.invoke(
            app, ["demo", "--out", str(tmp_path), "--scale", "0.05", "--no-progress"]
        )
        assert result.exit_code == 0, result.output
        assert threads() == before
