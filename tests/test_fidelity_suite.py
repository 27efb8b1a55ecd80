"""benchmarks/fidelity_suite.py at tiny sizes (the tutorial problem): the table has every
column, its numbers are finite, the files are written, and ekibnn's default is not far off
NUTS even here."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "fidelity_suite.py"
pytest.importorskip("blackjax")  # a benchmark-only dependency (".[bench]")


def _load():
    spec = importlib.util.spec_from_file_location("fidelity_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts benchmarks/ on sys.path for its siblings
    return module


suite = _load()

# the suite's --quick sizes, smaller still: a test of the code, not a measurement
TINY = suite.sizes(quick=True) | dict(
    warmup=15, samples=15, lm_steps=30, pinn_budget=(2, 10, 10), keep=20
)


def test_checks_apply_the_targets():
    row = {
        "rmse_ratio": 1.1,
        "epi_ratio_in": 0.79,
        "epi_ratio_out": None,
        "grows_outside": True,
        "nuts_grows_outside": False,
        "nll_diff": 0.021,
        "phys_z": 0.5,
        "phys_std_ratio": 1.25,
        "time_ratio": 29.9,
        "nuts_rhat": 1.1,
    }
    assert suite.checks(row) == {
        "rmse_ratio": True,
        "epi_ratio_in": False,
        "epi_ratio_out": None,
        "grows_outside": False,
        "nll_diff": False,
        "phys_z": True,
        "phys_std_ratio": True,
        "time_ratio": False,
        "nuts_rhat": False,
    }


def test_tiny_suite_writes_a_complete_table(tmp_path):
    # the tutorial only: poisson1d doubles the time (compilation, on the 2-core CPU); the
    # B-PINN rows are exercised by `python benchmarks/fidelity_suite.py --quick`
    problems = ["tutorial"]
    rows = suite.run_suite(problems, TINY, seed=0, out=tmp_path)
    assert [r["problem"] for r in rows] == problems
    for row in rows:
        targets = {c for c, (_, target) in suite.COLUMNS.items() if target != "diagnostic"}
        assert set(suite.COLUMNS) <= set(row) and set(row["checks"]) == targets
        for col in ("rmse_ratio", "epi_ratio_in", "time_ratio"):
            assert math.isfinite(row[col]) and row[col] > 0, (col, row)
        assert math.isfinite(row["nll_diff"]), row
        assert row["nuts_rhat"] >= 1 - 1e-6  # may be inf: 10 draws per chain
        # ekibnn's default is near NUTS's accuracy even at this size (NUTS is under-run)
        assert row["rmse_ratio"] < 2.5, row
    (tut,) = rows
    assert math.isfinite(tut["epi_ratio_out"]) and tut["grows_outside"] is not None
    assert math.isfinite(tut["nll_in_diff"])  # the NLL over the test points inside the data
    assert tut["ekibnn_summary"]["rmse"] < 0.25  # laplace fits the sine on |x| <= 2
    assert tut["phys_z"] is None and tut["checks"]["phys_z"] is None  # no physical parameter
    for name in (
        "fidelity_suite.json",
        "fidelity_suite.md",
        *[f"fidelity_{p}.png" for p in problems],
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "fidelity_suite.json").read_text())
    assert [r["problem"] for r in saved["rows"]] == problems
    md = (tmp_path / "fidelity_suite.md").read_text()
    assert md.count("\n| ") == 1 + len(problems)  # the header and one row per problem
    assert all(f"| {p} |" in md for p in problems)


def test_unknown_prior_std_is_the_non_centred_hierarchical_density():
    # NUTS's reference for the regression rows: theta = [eps, log sigma, log s], the network's
    # weights s * eps. Its density must be the fixed-prior density at prior std s (weights
    # s * eps) plus the hyperprior of log s: the change of variables theta = s eps turns
    # N(theta | 0, s^2) into N(eps | 0, 1) times s^p, which is exactly what cancels.
    import jax
    import jax.numpy as jnp
    import nuts_reference as nr

    key = jax.random.key(0)
    X = jax.random.normal(key, (7, 2))
    y = jnp.sin(X[:, 0])
    w = jnp.array([0.3, -1.2])
    apply = lambda theta, X: jnp.tanh(X @ theta)  # noqa: E731
    eps, log_noise, log_s = jnp.array([0.5, -0.7]), -0.4, 0.6
    theta = jnp.concatenate([eps, jnp.array([log_noise, log_s])])
    hier = nr.gaussian_regression_logdensity(apply, X, y, None, None, (-1.0, 1.0), (0.2, 0.5))
    weights = nr.network_params(theta, None)
    assert jnp.allclose(weights, jnp.exp(log_s) * eps)
    fixed = nr.gaussian_regression_logdensity(apply, X, y, None, float(jnp.exp(log_s)))
    expected = fixed(jnp.concatenate([weights, jnp.array([log_noise])]))
    expected = expected - 0.5 * ((log_s - 0.2) / 0.5) ** 2
    assert jnp.allclose(hier(theta), expected, rtol=1e-6)
    # and the fixed-prior layout is unchanged: the network's weights are theta[:-1]
    assert jnp.array_equal(nr.network_params(jnp.concatenate([w, jnp.array([0.0])]), 1.0), w)
