"""UKI against closed forms (linear-Gaussian fixed points), nonlinear behaviour, run and errors."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek
from ekibnn.ensemble import flatten, flatten_member
from ekibnn.inversion.uki import UKIInfo, UKIState, uki
from ekibnn.schedulers import tolerance


def _setup(problem, dtype=jnp.float32, dense=False):
    noise = problem.noise_cov if dense else problem.noise_std
    obs = ek.Observation(jnp.asarray(problem.y, dtype), jnp.asarray(noise, dtype))
    prior = ek.GaussianPrior(
        jnp.asarray(problem.prior_mean, dtype), jnp.asarray(problem.prior_std, dtype)
    )
    return obs, prior


def _has_square(jaxpr, size):
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            if sum(d >= size for d in getattr(var.aval, "shape", ())) >= 2:
                return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None and _has_square(getattr(inner, "jaxpr", inner), size):
                    return True
    return False


def test_uki_default_converges_to_the_posterior(key):
    """Default (Bayesian) UKI: its fixed point for linear G is (m_post, C_post), reached
    geometrically (factor 1/2 per iteration); it stops by itself once converged."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=6, p=3, seed=1)
        obs, prior = _setup(problem, jnp.float64)
        algo = uki(problem.forward, obs, prior, scheduler=tolerance(1e-13))
        result = ek.run(key, algo, prior.sample(key, 1), num_steps=500, progress=False)
        assert 20 < result.num_steps < 100 and bool(result.state.done)
        sd = np.sqrt(np.diag(problem.post_cov))
        np.testing.assert_allclose(result.state.mean, problem.post_mean, rtol=0, atol=1e-11)
        np.testing.assert_allclose(
            result.state.cov, problem.post_cov, rtol=0, atol=1e-11 * sd.max() ** 2
        )
        # the change shrinks by 1/2 per iteration (the contraction factor of the derivation)
        change = result.history.change
        np.testing.assert_allclose(change[5:15] / change[4:14], 0.5, rtol=0.05)


def test_uki_other_configurations_have_their_derived_fixed_points(key):
    """Correlated noise, and the fixed points derived in the module docstring for the
    prior-free configuration and for alpha < 1."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=6, p=3, seed=2, correlated=True)
        obs, prior = _setup(problem, jnp.float64, dense=True)
        x0 = prior.sample(key, 1)
        h, gi = problem.H, np.linalg.inv(problem.noise_cov)
        # no prior (Sigma_nu = 2 Gamma, Lambda = C_n, alpha = 1): flat-prior posterior
        algo = uki(problem.forward, obs, prior, impose_prior=False, scheduler=tolerance(1e-12))
        res = ek.run(key, algo, x0, 500, False)
        cov_ls = np.linalg.inv(h.T @ gi @ h)
        np.testing.assert_allclose(res.state.cov, cov_ls, atol=1e-10)
        np.testing.assert_allclose(res.state.mean, cov_ls @ h.T @ gi @ problem.y, atol=1e-10)
        # alpha < 1 with the prior: C_post, and the mean shrunk towards m_0
        alpha = 0.5
        res = ek.run(
            key,
            uki(problem.forward, obs, prior, alpha=alpha, scheduler=tolerance(1e-12)),
            x0,
            500,
            False,
        )
        np.testing.assert_allclose(res.state.cov, problem.post_cov, atol=1e-10)
        shrunk = ((1 - alpha) * problem.prior_mean + problem.post_mean) / (2 - alpha)
        np.testing.assert_allclose(res.state.mean, shrunk, atol=1e-10)


def test_uki_runs_with_defaults_from_a_big_ensemble_and_stops_by_itself(key):
    problem = make_linear_problem(m=5, p=3, seed=3)
    obs, prior = _setup(problem)
    algo = uki(problem.forward, obs, prior)
    result = ek.run(key, algo, prior.sample(key, 1000), num_steps=1000, progress=False)
    assert isinstance(result.state, UKIState) and isinstance(result.history, UKIInfo)
    assert result.num_steps < 60 and bool(result.state.done)
    assert result.particles.shape == (7, 3)  # the 2p + 1 stencil
    np.testing.assert_allclose(result.state.mean, problem.post_mean, atol=1e-3)
    np.testing.assert_allclose(result.state.cov, problem.post_cov, atol=1e-3)
    # the stencil's sample mean and covariance are exactly the Gaussian's
    parts = np.asarray(result.particles, np.float64)
    np.testing.assert_allclose(parts.mean(0), result.state.mean, atol=1e-5)
    np.testing.assert_allclose(np.cov(parts.T), result.state.cov, atol=1e-5)
    # max_steps stops it too
    capped = ek.run(
        key,
        uki(problem.forward, obs, prior, scheduler=tolerance(max_steps=3)),
        prior.sample(key, 2),
        50,
        False,
    )
    assert capped.num_steps == 3 and bool(capped.state.done)


def test_uki_mildly_nonlinear_problem_reduces_the_misfit(key):
    problem = make_linear_problem(m=10, p=3, seed=4, noise=0.1)
    h = jnp.asarray(problem.H, jnp.float32)
    truth = jnp.array([0.5, -0.3, 0.8])

    def forward(theta):
        g = h @ theta
        return g + 0.2 * jnp.sin(g)

    obs = ek.Observation(forward(truth), 0.05)
    prior = ek.GaussianPrior(jnp.zeros(3), 1.0)
    result = ek.run(key, uki(forward, obs, prior), prior.sample(key, 1), 200, progress=False)
    assert result.num_steps < 200 and bool(result.state.done)
    assert result.history.mean_misfit[-1] < 0.01 * result.history.mean_misfit[0]
    assert result.history.mean_misfit[-1] < 3.0  # fits to the noise level (misfit / m ~ 1)
    np.testing.assert_allclose(result.state.mean, truth, atol=0.1)
    assert np.all(np.linalg.eigvalsh(np.asarray(result.state.cov)) > 0)


class _Params(eqx.Module):
    """An Equinox parameter pytree with a function leaf and a static field."""

    a: jax.Array
    b: jax.Array
    act: Callable
    scale: float = eqx.field(static=True)


def test_uki_pytree_and_equinox_parameters_match_flat_parameters(key):
    problem = make_linear_problem(m=8, p=4, seed=5)
    obs, _ = _setup(problem)
    mean, std = problem.prior_mean, problem.prior_std
    identity = lambda v: v  # noqa: E731
    tree_prior = ek.GaussianPrior(
        _Params(jnp.asarray(mean[:1]), jnp.asarray(mean[1:]).reshape(3, 1), identity, 1.0),
        _Params(jnp.asarray(std[:1]), jnp.asarray(std[1:]).reshape(3, 1), identity, 1.0),
    )

    def tree_forward(params):
        flat = jnp.concatenate([params.a, params.b[:, 0]])
        return params.scale * problem.forward(params.act(flat))

    tree = ek.run(key, uki(tree_forward, obs, tree_prior), tree_prior.sample(key, 2), 100, False)
    assert isinstance(tree.state.mean, _Params) and tree.state.mean.b.shape == (3, 1)
    assert isinstance(tree.particles, _Params) and tree.particles.b.shape == (9, 3, 1)
    # the flat order (a, then b) is the closed form's order: any mix-up would show here
    sd = np.sqrt(np.diag(problem.post_cov))
    np.testing.assert_allclose(
        flatten_member(tree.state.mean), problem.post_mean, atol=1e-3 * sd.max()
    )
    np.testing.assert_allclose(tree.state.cov, problem.post_cov, atol=1e-3 * sd.max() ** 2)
    np.testing.assert_allclose(
        flatten(tree.particles).mean(0), flatten_member(tree.state.mean), atol=1e-5
    )


def test_uki_never_forms_an_m_by_m_matrix():
    m, p = 2000, 4  # 2p + 1 = 9 sigma points << m
    h = jax.random.normal(jax.random.key(0), (m, p))
    obs = ek.Observation(jnp.zeros(m), jnp.linspace(0.5, 1.5, m))
    prior = ek.GaussianPrior(jnp.zeros(p), 1.0)
    algo = uki(lambda th: h @ th, obs, prior)
    jaxpr = jax.make_jaxpr(algo.step)(
        jax.random.key(1), algo.init(prior.sample(jax.random.key(2), 1))
    )
    assert not _has_square(jaxpr.jaxpr, m)


def test_uki_non_finite_sigma_point_is_a_clear_error(key):
    prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
    algo = uki(lambda th: jnp.log(th + 1.0), ek.Observation(jnp.zeros(2), 1.0), prior)
    with pytest.raises(Exception, match="sigma point has a non-finite forward output"):
        ek.run(key, algo, prior.sample(key, 1), num_steps=2, progress=False)


def test_uki_bad_inputs_raise_clear_errors(key):
    problem = make_linear_problem(m=5, p=3)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 4)
    cases = [
        (lambda: uki(problem.forward, obs, None), "GaussianPrior"),
        (lambda: uki(problem.forward, problem.y, prior), "Observation"),
        (lambda: uki(problem.forward, obs, prior, alpha=0.0), "alpha"),
        (lambda: uki(problem.forward, obs, prior, alpha=1.5), "alpha"),
        (lambda: uki(problem.forward, obs, prior, evolution_cov="C0"), "evolution_cov"),
        (lambda: uki(problem.forward, obs, prior, scheduler=tolerance(-1.0)), "tol"),
        (lambda: uki(problem.forward, obs, prior, scheduler=tolerance(max_steps=0)), "max_steps"),
        (lambda: uki(lambda th: jnp.zeros(4), obs, prior).init(x0), r"shape \(5,\)"),
        (lambda: uki(problem.forward, obs, prior).init({"t": x0}), "prior's structure"),
    ]
    for build, message in cases:
        with pytest.raises(ek.InputError, match=message) as err:
            build()
        assert all(word in str(err.value) for word in ("expected", "got", "fix"))
