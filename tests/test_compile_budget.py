"""Compilation budget of each command: a small run of ``ekibnn demo``, ``ekibnn fit --dataset
diabetes`` and ``ekibnn pinn poisson1d`` compiles at most a fixed number of XLA programs, and its
large programs (the compiled run loop ``_run_chunk``, the prior draw, the Laplace factor and the
predictive moments) once each.

On a CPU most of a small command's wall time is compilation (about 14-17 s of XLA compilation
out of 16-25 s for each run below, on a 2-core CPU), so a change that adds programs, or compiles
one of the large ones twice, shows here before it shows in the wall times of
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

# Measured 2026-12-02 (jax 0.10.2, CPU, float32) at the sizes below; a budget is the count plus
# about 10%. Most of each count is small eager operations (subtract, multiply, dynamic_slice,
# broadcast_in_dim, ...: one program per operation and shape, each < 0.1 s to compile); the
# compilation time is in a few large programs, listed per command.
BUDGETS = {
    # 134 programs, 47 distinct names: _run_chunk (the compiled run loop, 4.1 s of XLA
    # compilation), _draw (the prior draw, 2.2 s), _normal_leaves (the network's init, 1.4 s),
    # scan x4 (0.7 s together), then eager operations (subtract x11,
    # broadcast_in_dim x10, stage x9 = jnp.asarray, dynamic_slice x9, ...).
    "demo": 147,
    # 168 programs, 46 distinct names: _run_chunk x2 (the Levenberg-Marquardt loop and the
    # evidence rounds' loop, 5.3 s together), _draw (2.9 s), _laplace_factor (the low-rank
    # Laplace posterior, 1.4 s), _normal_leaves (1.3 s), _linearised_moments (the predictive
    # moments, 0.5 s), then eager operations (dynamic_slice x16, broadcast_in_dim x16,
    # multiply x14, add x11, reshape x10, stage x9, ...).
    "fit": 185,
    # 149 programs, 33 distinct names: _run_chunk (3.2 s), _draw (2.9 s), _normal_leaves
    # (1.8 s), then eager operations (add x16, multiply x15, convert_element_type x12,
    # broadcast_in_dim x11, reshape x11, squeeze x10, matmul x9, dynamic_slice x9, tanh x7,
    # mul x7, dot_general x5, ...; matmul and tanh: a network evaluated outside jit).
    "pinn": 164,
}

# programs that must compile exactly once (twice: the two loops of the Laplace fit) per command
ONCE = {
    "demo": {"_run_chunk": 1, "_draw": 1},
    "fit": {"_run_chunk": 2, "_draw": 1, "_laplace_factor": 1, "_linearised_moments": 1},
    "pinn": {"_run_chunk": 1, "_draw": 1},
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
