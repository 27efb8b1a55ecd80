"""Randomized maximum likelihood: exact posterior samples for a linear-Gaussian problem, the
perturbations' life cycle, sharding, and the Laplace-vs-RML self-check."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek
from ekibnn.inversion import FidelityCheck, self_check


def _setup(problem, dtype=jnp.float64):
    obs = ek.Observation(jnp.asarray(problem.y, dtype), jnp.asarray(problem.noise_std, dtype))
    prior = ek.GaussianPrior(
        jnp.asarray(problem.prior_mean, dtype), jnp.asarray(problem.prior_std, dtype)
    )
    return obs, prior


@pytest.mark.parametrize("from_map", [False, True])
def test_rml_is_exact_for_a_linear_gaussian_problem(key, from_map):
    """Each member's minimiser is a posterior draw: the ensemble's mean and covariance match
    the closed form within Monte-Carlo error (J = 4000), from the prior draws or from the MAP."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=6, p=3, seed=7)
        obs, prior = _setup(problem)
        start = jnp.asarray(problem.post_mean) if from_map else None
        algo = ek.rml(problem.forward, obs, prior, start=start, atol=1e-8)
        result = ek.run(key, algo, prior.sample(jax.random.key(1), 4000), 50, progress=False)
        assert bool(result.state.done) and bool(result.state.converged.all())
        x = np.asarray(algo.posterior(result.state).particles)
        sd = np.sqrt(np.diag(problem.post_cov))
        np.testing.assert_allclose(x.mean(0), problem.post_mean, atol=0.06 * sd.max())
        np.testing.assert_allclose(np.cov(x.T), problem.post_cov, atol=0.08 * sd.max() ** 2)
        assert result.history.num_converged[-1] == 4000


def test_perturbations_are_drawn_once_from_the_run_key(key):
    problem = make_linear_problem(m=4, p=2, seed=8)
    obs, prior = _setup(problem, jnp.float32)
    algo = ek.rml(problem.forward, obs, prior)
    state = algo.init(prior.sample(key, 16))
    assert float(jnp.abs(state.perturbation).max()) == 0.0
    step = jax.jit(algo.step)
    first, _ = step(jax.random.key(3), state)
    second, _ = step(jax.random.key(4), first)
    assert float(jnp.abs(first.perturbation).max()) > 0
    np.testing.assert_array_equal(first.perturbation, second.perturbation)
    again, _ = step(jax.random.key(3), state)
    np.testing.assert_array_equal(again.perturbation, first.perturbation)
    with pytest.raises(ek.InputError, match="J >= 2"):
        algo.init(prior.sample(key, 1))


def test_sharded_rml_matches_single_device():
    script = Path(__file__).parent / "scripts" / "sharded_rml.py"
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SHARDED-RML-OK" in proc.stdout


def test_self_check_agrees_on_a_linear_problem(key):
    """For a linear model the Laplace and RML predictive spreads agree (ratio 1 within the
    Monte-Carlo error 1 / sqrt(2 J)) and the MAP is reported converged."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=6, p=3, seed=9)
        obs, prior = _setup(problem)
        gn = ek.gauss_newton(problem.forward, obs, prior)
        post = gn.posterior(ek.run(key, gn, prior.sample(key, 1), 50, progress=False).state)
        check = self_check(post, problem.forward, obs, prior, lambda th: th, key, num_members=400)
        assert isinstance(check, FidelityCheck) and check.map_converged is True
        assert abs(check.std_ratio - 1) < 0.1 and check.rml_converged == 1.0
        assert 0.85 < check.std_ratio_min <= check.std_ratio_max < 1.15
        with pytest.raises(ek.InputError, match="LinearisedPosterior"):
            self_check(object(), problem.forward, obs, prior, lambda th: th, key)


def _linear_posterior(key, max_steps=50):
    problem = make_linear_problem(m=6, p=3, seed=9)
    obs, prior = _setup(problem)
    gn = ek.gauss_newton(problem.forward, obs, prior, max_steps=max_steps)
    state = ek.run(key, gn, prior.sample(key, 1), max_steps, progress=False).state
    return problem, obs, prior, gn.posterior(state)


def test_self_check_verdict_passes_when_laplace_is_exact(key):
    """Linear-Gaussian: Laplace is exact, so J = 16 RML members give a ratio within the band
    3 / sqrt(2 (J - 1)) + 0.1 and no FidelityWarning (measured: 0.98)."""
    import warnings

    with jax.enable_x64(True):
        problem, obs, prior, post = _linear_posterior(key)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ek.FidelityWarning)
            check = self_check(
                post, problem.forward, obs, prior, lambda th: th, key, num_members=16
            )
    assert check.trusted and check.failures == ()
    assert abs(np.log(check.std_ratio)) < 0.3  # within 1.6 Monte-Carlo standard errors
    assert check.band == pytest.approx(3 / np.sqrt(30) + 0.1)
    assert "passed" in check.message
    record = check.as_dict()
    assert record["trusted"] is True and record["num_members"] == 16 and "band" in record


def test_self_check_warns_on_an_unconverged_map(key):
    with jax.enable_x64(True):
        problem, obs, prior, post = _linear_posterior(key, max_steps=1)
        assert post.converged is False
        with pytest.warns(ek.FidelityWarning, match="MAP did not converge"):
            check = self_check(post, problem.forward, obs, prior, lambda th: th, key, num_members=8)
    assert not check.trusted and check.map_converged is False


def test_self_check_warns_on_a_strongly_nonlinear_posterior(key):
    """G(theta) = theta^2 observed at 0: the Jacobian vanishes at the MAP, so Laplace returns
    the prior's spread while the posterior is narrow (measured ratio 9.1 with J = 8)."""
    obs = ek.Observation(jnp.zeros(1), 0.05)
    prior = ek.GaussianPrior(jnp.zeros(1), 1.0)
    gn = ek.gauss_newton(lambda th: th**2, obs, prior)
    post = gn.posterior(ek.run(key, gn, prior.sample(key, 1), 20, progress=False).state)
    with pytest.warns(ek.FidelityWarning, match="wider than the nonlinear"):
        check = self_check(post, lambda th: th**2, obs, prior, lambda th: th, key, num_members=8)
    assert check.std_ratio > 3 and not check.trusted
    quiet = self_check(
        post, lambda th: th**2, obs, prior, lambda th: th, key, num_members=8, warn=False
    )
    assert quiet == check
    with pytest.raises(ek.InputError, match="num_members"):
        self_check(post, lambda th: th**2, obs, prior, lambda th: th, key, num_members=1)
