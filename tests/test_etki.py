"""ETKI against closed forms (linear-Gaussian problems), its cost structure, options and errors."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek
from ekibnn.ensemble import flatten, unflatten
from ekibnn.inversion.eki import eki
from ekibnn.inversion.etki import etki


def _step(algo):
    """The step, compiled (eager op-by-op execution of a step is slow)."""
    return eqx.filter_jit(algo.step)


def _setup(problem, dtype=jnp.float32, dense=False):
    noise = problem.noise_cov if dense else problem.noise_std
    obs = ek.Observation(jnp.asarray(problem.y, dtype), jnp.asarray(noise, dtype))
    prior = ek.GaussianPrior(
        jnp.asarray(problem.prior_mean, dtype), jnp.asarray(problem.prior_std, dtype)
    )
    return obs, prior


def _exact_ensemble(problem, j, seed=0):
    """J members whose sample mean and (unbiased) sample covariance are EXACTLY the prior's."""
    z = np.random.default_rng(seed).normal(size=(j, problem.prior_mean.size))
    z -= z.mean(0)
    u, _, _ = np.linalg.svd(z, full_matrices=False)  # orthonormal, centred columns
    return problem.prior_mean + np.sqrt(j - 1) * u * problem.prior_std


def _has_square(jaxpr, size):
    """Whether any intermediate in the (nested) jaxpr has two axes of length >= size."""
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


@pytest.mark.parametrize(
    ("dtype", "dense", "tol"),
    [(jnp.float64, False, 1e-10), (jnp.float32, True, 2e-4)],
)
def test_etki_to_time_one_is_exactly_the_posterior(dtype, dense, tol):
    """For linear G every ETKI step is the exact Kalman update of the ensemble's mean and
    covariance, and the tempered steps sum to T = 1: starting from an ensemble with the prior's
    exact moments (J > p), the final mean and covariance are the posterior's up to round-off."""
    with jax.enable_x64(dtype == jnp.float64):
        problem = make_linear_problem(m=6, p=3, seed=1, correlated=dense)
        obs, prior = _setup(problem, dtype, dense)
        x0 = jnp.asarray(_exact_ensemble(problem, 7), dtype)
        algo = etki(problem.forward, obs, prior=prior)
        result = ek.run(jax.random.key(0), algo, x0, 100, False)
        assert 1 < result.num_steps < 100  # the data-misfit scheduler stopped it at T = 1
        np.testing.assert_allclose(result.history.time[-1], 1.0, rtol=tol)
        theta = np.asarray(result.particles, np.float64)
        sd = np.sqrt(np.diag(problem.post_cov))
        np.testing.assert_allclose(theta.mean(0), problem.post_mean, rtol=0, atol=tol * sd.max())
        np.testing.assert_allclose(
            np.cov(theta.T), problem.post_cov, rtol=0, atol=tol * sd.max() ** 2
        )
        # deterministic: another key gives the same result bit for bit
        again = ek.run(jax.random.key(7), algo, x0, 100, False)
        np.testing.assert_array_equal(np.asarray(again.particles), np.asarray(result.particles))


def test_etki_one_step_matches_the_kalman_update_of_the_ensemble():
    """One step (nonlinear G, multiplicative inflation) against the dense reference: inflate,
    then mean m + K (y - Gbar) and covariance C - K C^{G theta} with
    K = C^{theta G}(C^{GG} + Gamma / dt)^{-1} (sample statistics)."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=12, p=4, seed=3)
        obs, prior = _setup(problem, jnp.float64)
        x0 = prior.sample(jax.random.key(1), 6)  # J < m and J < p + 2: low rank
        algo = etki(
            lambda th: problem.forward(th) + 0.1 * problem.forward(th) ** 2,
            obs,
            scheduler=ek.schedulers.constant(0.3),
            multiplicative_inflation=0.44,
        )
        state, info = _step(algo)(jax.random.key(2), algo.init(x0))
        x = np.asarray(x0)
        x = x.mean(0) + 1.2 * (x - x.mean(0))  # sqrt(1 + 0.44) = 1.2
        g = x @ problem.H.T
        g = g + 0.1 * g**2
        c_tg = np.cov(x.T, g.T)[:4, 4:]
        c_gg = np.cov(g.T)
        gain = c_tg @ np.linalg.inv(c_gg + problem.noise_cov / 0.3)
        mean = x.mean(0) + gain @ (problem.y - g.mean(0))
        cov = np.cov(x.T) - gain @ c_tg.T
        new = np.asarray(state.particles)
        np.testing.assert_allclose(new.mean(0), mean, atol=1e-10)
        np.testing.assert_allclose(np.cov(new.T), cov, atol=1e-10)
        assert float(info.dt) == pytest.approx(0.3)


def test_etki_never_forms_an_m_by_m_matrix():
    """Cost linear in m: with m > J no intermediate of the step has two axes of length m."""
    j, m, p = 8, 2000, 5
    h = jax.random.normal(jax.random.key(0), (m, p))
    obs = ek.Observation(jnp.zeros(m), jnp.linspace(0.5, 1.5, m))
    prior = ek.GaussianPrior(jnp.zeros(p), 1.0)
    x0 = prior.sample(jax.random.key(1), j)
    for kwargs in ({}, {"impose_prior": True, "prior": prior, "multiplicative_inflation": 0.1}):
        algo = etki(lambda th: h @ th, obs, **kwargs)
        jaxpr = jax.make_jaxpr(algo.step)(jax.random.key(2), algo.init(x0))
        assert not _has_square(jaxpr.jaxpr, m), kwargs
    # the detector fires on an algorithm that does build (m, m): EKI in data space
    algo = eki(lambda th: h @ th, obs, space="data")
    assert _has_square(jax.make_jaxpr(algo.step)(jax.random.key(2), algo.init(x0)).jaxpr, m)


class _Params(eqx.Module):
    """An Equinox parameter pytree with a nested tuple, a function leaf and a static field."""

    w: jax.Array
    b: tuple
    act: Callable
    scale: float = eqx.field(static=True)


def test_etki_pytree_and_equinox_parameters(key):
    """An Equinox-module ensemble run to T = 1 from the prior's exact moments lands on the
    closed-form posterior in the flat order of :func:`ekibnn.ensemble.flatten` (w, then b)."""
    problem = make_linear_problem(m=7, p=6, seed=5)
    obs, _ = _setup(problem)
    x0 = jnp.asarray(_exact_ensemble(problem, 9), jnp.float32)
    template = _Params(jnp.zeros((9, 2, 2)), (jnp.zeros((9, 2)),), lambda v: v, 1.0)

    def tree_forward(params):
        flat = jnp.concatenate([params.w.reshape(-1), params.b[0]])  # field order
        return params.scale * problem.forward(params.act(flat))

    algo = etki(tree_forward, obs)
    result = ek.run(key, algo, unflatten(x0, template), 100, False)
    assert isinstance(result.particles, _Params) and result.particles.w.shape == (9, 2, 2)
    theta = np.asarray(flatten(result.particles), np.float64)
    sd = np.sqrt(np.diag(problem.post_cov))
    np.testing.assert_allclose(theta.mean(0), problem.post_mean, atol=2e-4 * sd.max())
    np.testing.assert_allclose(np.cov(theta.T), problem.post_cov, atol=2e-4 * sd.max() ** 2)


def test_etki_regularized_converges_to_tikhonov_map():
    """Iterated extended-state ETKI (dt = 1 each step) collapses onto the minimiser of
    ||Gamma^{-1/2}(y - H theta)||^2 + ||C0^{-1/2}(theta - m0)||^2 (the posterior mean here),
    also for an under-determined problem."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=4, p=5, seed=7)
        obs, prior = _setup(problem, jnp.float64)
        algo = etki(
            problem.forward,
            obs,
            prior=prior,
            impose_prior=True,
            scheduler=ek.schedulers.constant(1.0),
        )
        result = ek.run(jax.random.key(1), algo, prior.sample(jax.random.key(0), 30), 2000, False)
        np.testing.assert_allclose(
            np.asarray(result.particles).mean(0), problem.post_mean, atol=5e-3
        )


def test_etki_minibatch_indexed_forward_matches_full_forward(key):
    problem = make_linear_problem(m=20, p=3, seed=6)
    obs, _ = _setup(problem)
    x0 = jax.random.normal(key, (10, 3))
    h = jnp.asarray(problem.H, jnp.float32)
    batch = ek.minibatch.random(5)
    full = etki(problem.forward, obs, minibatch=batch)
    indexed = etki(lambda th, idx: h[idx] @ th, obs, minibatch=batch, indexed_forward=True)
    a, ia = _step(full)(jax.random.key(1), full.init(x0))
    b, ib = _step(indexed)(jax.random.key(1), indexed.init(x0))
    np.testing.assert_allclose(a.particles, b.particles, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ia.misfit, ib.misfit, rtol=1e-6)


def test_etki_failed_members_are_excluded_and_redrawn(key):
    problem = make_linear_problem(m=5, p=3, seed=8)
    obs, _ = _setup(problem)
    x0 = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    cut = float(np.quantile(x0[:, 0], 0.75))
    bad = x0[:, 0] > cut
    x0 = jnp.asarray(x0)

    def fragile(theta):
        return jnp.where(theta[0] > cut, jnp.nan, problem.forward(theta))

    algo = etki(fragile, obs, scheduler=ek.schedulers.constant(0.5))
    step = _step(algo)
    state, info = step(jax.random.key(1), algo.init(x0))
    assert int(info.n_failed) == int(bad.sum()) == 16
    assert np.all(np.isfinite(np.asarray(state.particles)))
    # the good members get exactly the update computed from the good members alone
    good = etki(problem.forward, obs, scheduler=ek.schedulers.constant(0.5))
    ref, ref_info = _step(good)(jax.random.key(1), good.init(x0[~bad]))
    np.testing.assert_allclose(state.particles[~bad], ref.particles, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info.misfit, ref_info.misfit, rtol=1e-5)
    redrawn = np.asarray(state.particles[bad])
    centre, sd = np.asarray(ref.particles).mean(0), np.asarray(ref.particles).std(0)
    assert np.all(np.abs(redrawn - centre) < 6 * sd)
    assert not np.allclose(redrawn, centre)  # spread out, not collapsed onto the mean
    # with fewer than two finite members the step stops with a clear message
    with pytest.raises(Exception, match="fewer than 2 ensemble members"):
        jax.block_until_ready(step(jax.random.key(1), algo.init(x0.at[1:, 0].add(99.0))))


def test_etki_bad_inputs_raise_clear_errors(key):
    problem = make_linear_problem(m=5, p=3)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 8)
    cases = [
        (lambda: etki(lambda th: jnp.zeros(4), obs).init(x0), r"shape \(5,\)"),
        (lambda: etki(problem.forward, obs).init(x0[:1]), "J >= 2"),
        (lambda: etki(problem.forward, obs, minibatch=ek.minibatch.random(6)), "batch_size"),
        (lambda: etki(problem.forward, obs, prior=prior).init({"t": x0}), "prior's structure"),
        (lambda: etki(problem.forward, obs, impose_prior=True), "a prior"),
        (lambda: etki(problem.forward, problem.y), "Observation"),
        (lambda: etki(problem.forward, obs, prior="N(0, 1)"), "GaussianPrior"),
        (lambda: etki(problem.forward, obs, inflation=-1.0), "inflation"),
        (lambda: etki(lambda th: th @ jnp.zeros((7, 5)), obs).init(x0), "ONE member"),
    ]
    for build, message in cases:
        with pytest.raises(ek.InputError, match=message) as err:
            build()
        assert all(word in str(err.value) for word in ("expected", "got", "fix"))


def test_hss_regularised_transform_converges_to_the_posterior():
    """Huang, Schneider & Stuart (2022), alpha = 1: prediction covariance 2 C_n (multiplicative
    inflation 1), analysis against [y; prior mean] with noise 2 blockdiag(Gamma, C_0) (extended
    state, dt = 1/2). For a linear problem the fixed point of C^{-1} = (C^{-1} + H^T Gamma^{-1} H
    + C_0^{-1}) / 2 is the posterior covariance and the mean tends to the posterior mean; the
    square-root update follows these recursions exactly for J > p."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=6, p=3, seed=5)
        obs = ek.Observation(jnp.asarray(problem.y), jnp.asarray(problem.noise_std))
        prior = ek.GaussianPrior(jnp.asarray(problem.prior_mean), jnp.asarray(problem.prior_std))
        algo = ek.etki(
            problem.forward,
            obs,
            prior=prior,
            impose_prior=True,
            multiplicative_inflation=1.0,
            scheduler=ek.schedulers.constant(0.5),
        )
        result = ek.run(
            jax.random.key(0), algo, prior.sample(jax.random.key(1), 8), 80, progress=False
        )
        theta = np.asarray(result.particles)
        np.testing.assert_allclose(theta.mean(0), problem.post_mean, atol=1e-8)
        np.testing.assert_allclose(np.cov(theta.T), problem.post_cov, rtol=1e-7, atol=1e-10)
