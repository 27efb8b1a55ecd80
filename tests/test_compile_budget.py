"""Compilation budget of each command: a small run of ``ekibnn demo``, ``ekibnn fit --dataset
diabetes`` and ``ekibnn pinn poisson1d`` compiles at most a fixed number of XLA programs, and its
large programs (the compiled run loop ``_run_chunk``, the prior draw, the Laplace factor, the
predictive moments or samples) once each.

On a CPU most of a small command's wall time is compilation, so a change that adds programs,
or compiles one of the large ones twice, shows here before it shows in the wall times of
``benchmarks/end_to_end.py``. The count is the number of ``Compiling ...`` records of
``jax.log_compiles()`` (the ``compile_log`` fixture, from empty in-memory caches) with the
persistent compilation cache off, so that every program is counted. Run with ``-s`` to see the
names, grouped, most frequent first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import jax
import pytest
from typer.testing import CliRunner

# imported here, so that whatever they compute at import is not counted in a test
import ekibnn.estimators  # (what `ekibnn fit` imports lazily)
import ekibnn.pinn  # noqa: F401  (what `ekibnn pinn` imports lazily)
from ekibnn.cli import app
from ekibnn.demo import run_demo

# Measured 2026-12-03 (jax 0.10.2, CPU, float32) at the sizes below; a budget is the count plus
# about 10%. The compilation time is in a few large programs, listed per command; the rest are
# small (set-up and eager operations, each < 0.1 s to compile). Each fit's glue (the starting
# state, the best start, the posterior's fields) is one program.
BUDGETS = {
    # 27 programs (63 before the fit's glue became single programs), 19 distinct names:
    # _run_chunk (the Levenberg-Marquardt loop), _draw (the 4 starts), _normal_leaves (the
    # network's init), _posterior_fields (the Laplace factor at the MAP), _linearised_moments
    # (every prediction of the report: grid and test points in one program), _gaussian_scores
    # (every metric and the plot's bands in one program), then the data and set-up.
    "demo": 30,
    # 27 programs (70 before), 16 distinct names: _run_chunk x2 (the Levenberg-Marquardt loop
    # and the evidence rounds' loop), _draw, _initial_state x3, best_start, _posterior_fields
    # (the Laplace factor at the MAP), _scaled (the fitted noise and prior),
    # _linearised_moments (the predictive moments), regression_report (every metric), then
    # set-up (the network is a shape template: no init is drawn).
    "fit": 30,
    # 43 programs (76 before), 20 distinct names: _run_chunk, _draw, _normal_leaves,
    # _posterior_fields, _linearised_samples (u, f and k at once, shared by the metrics and the
    # plots), then the problem's data and set-up (sin, cos, tanh, integer_pow, ...).
    "pinn": 48,
}

# programs that must compile exactly once (twice: the two loops of the tuned Laplace fit)
ONCE = {
    "demo": {
        "_run_chunk": 1,
        "_draw": 1,
        "(_posterior_fields)": 1,
        "_linearised_moments": 1,
        "_gaussian_scores": 1,
    },
    "fit": {
        "_run_chunk": 2,
        "_draw": 1,
        "(_posterior_fields)": 1,
        "_linearised_moments": 1,
        "regression_report": 1,
    },
    "pinn": {"_run_chunk": 1, "_draw": 1, "(_posterior_fields)": 1, "_linearised_samples": 1},
}


def _cli(*args: str) -> Callable:
    def invoke(out):
        result = CliRunner().invoke(app, ["--no-compile-cache", *args, "--out", str(out)])
        assert result.exit_code == 0, result.output

    return invoke


COMMANDS = {
    "demo": lambda out: run_demo(config="default", scale=0.05, progress=False, out_dir=out),
    # 5 Levenberg-Marquardt steps: the fit does not converge (recorded in metrics.json, not
    # raised), which is enough to compile every program of the command
    "fit": _cli("fit", "--dataset", "diabetes", "--hidden", "8", "--steps", "5", "--no-progress"),
    "pinn": _cli("pinn", "poisson1d", "--scale", "0.1", "--no-progress"),
}


@pytest.fixture
def no_persistent_cache(tmp_path_factory, monkeypatch):
    """Every program compiled, none read from JAX's persistent cache; nothing written to the
    real home (matplotlib keeps its font cache in XDG_CACHE_HOME too)."""
    monkeypatch.setenv("EKIBNN_NO_COMPILE_CACHE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    yield
    jax.config.update("jax_enable_compilation_cache", enabled)


def _grouped(names: list[str]) -> str:
    counts = Counter(names)
    rows = ", ".join(f"{name} x{n}" for name, n in counts.most_common())
    return f"{len(names)} compilations, {len(counts)} distinct names: {rows}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_compiles_within_budget(command, tmp_path, no_persistent_cache, compile_log):
    COMMANDS[command](tmp_path / command)
    report = _grouped(compile_log.names)
    print(f"\n{command}: {report}")
    assert len(compile_log.names) <= BUDGETS[command], (
        f"{command} compiled more programs than its budget {BUDGETS[command]}: {report}"
    )
    for fragment, times in ONCE[command].items():
        assert compile_log.count(fragment) == times, (fragment, report)
