"""EKS and ALDI against closed forms (linear-Gaussian problems), a dense reference step, a hand
case of the adaptive step, and their options and errors."""

import importlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek
from ekibnn.ensemble import flatten, unflatten
from ekibnn.inversion.eks import EKSInfo, aldi, eks
from ekibnn.schedulers import constant, eks_stable, eks_stable_dt

# The module itself (``ekibnn.inversion.eks`` may be shadowed by the function once exported).
eks_module = importlib.import_module("ekibnn.inversion.eks")
SAMPLERS = {"eks": eks, "aldi": aldi}


def _setup(problem, dtype=jnp.float32, dense=False):
    noise = problem.noise_cov if dense else problem.noise_std
    obs = ek.Observation(jnp.asarray(problem.y, dtype), jnp.asarray(noise, dtype))
    prior = ek.GaussianPrior(
        jnp.asarray(problem.prior_mean, dtype), jnp.asarray(problem.prior_std, dtype)
    )
    return obs, prior


@pytest.fixture
def no_noise(monkeypatch):
    """Switch the sampler noise off so that a step is deterministic (patches the module
    global that the step looks up when it is traced)."""
    monkeypatch.setattr(eks_module, "_covariance_noise", lambda key, a, space: jnp.zeros_like(a))


def _reference_step(problem, x, dt, corrected):
    """The GHLS 2020 / EKP split-step scheme without noise, densely in NumPy:
    (I + dt C C0^{-1}) theta* = theta - dt sum_k D_jk theta_k [+ dt (p+1)/J (theta - mean)]
    + dt C C0^{-1} m0, with population covariance C and D_jk = <G_k - Gbar, Gamma^-1(G_j - y)>/J.
    """
    x = np.asarray(x, np.float64)
    j, p = x.shape
    g = x @ problem.H.T
    d = (g - problem.y) @ np.linalg.solve(problem.noise_cov, (g - g.mean(0)).T) / j
    centred = x - x.mean(0)
    cov = centred.T @ centred / j
    k = np.diag(problem.prior_std**-2.0)
    v = x - dt * d @ x + (dt * (p + 1) / j * centred if corrected else 0)
    rhs = v + dt * (cov @ k @ problem.prior_mean)
    return np.linalg.solve(np.eye(p) + dt * cov @ k, rhs.T).T, d


@pytest.mark.usefixtures("no_noise")
@pytest.mark.parametrize(
    ("name", "dense", "space", "j"),
    # every option twice; J = 5 < m = 6 goes through the J x J matrix D, J = 12 through the
    # (m, p) cross-covariance and m x m Grams
    [
        ("eks", False, "parameter", 12),
        ("eks", True, "ensemble", 5),
        ("aldi", True, "parameter", 5),
        ("aldi", False, "ensemble", 12),
    ],
)
def test_one_step_matches_dense_reference(name, dense, space, j):
    with jax.enable_x64(True):
        problem = make_linear_problem(m=6, p=3, seed=2, correlated=dense)
        obs, prior = _setup(problem, jnp.float64, dense)
        x0 = prior.sample(jax.random.key(0), j)
        algo = SAMPLERS[name](
            problem.forward, obs, prior, scheduler=eks_stable(0.1, max_dt=0.4), space=space
        )
        state, info = jax.jit(algo.step)(jax.random.key(1), algo.init(x0))
        dt = float(info.dt)
        expected, d = _reference_step(problem, x0, dt, corrected=name == "aldi")
        np.testing.assert_allclose(state.particles, expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(info.d_norm, np.linalg.norm(d), rtol=1e-10)
        np.testing.assert_allclose(dt, min(0.1 / (np.linalg.norm(d) + 1e-8), 0.4), rtol=1e-12)
        assert int(state.step) == 1 and float(state.time) == dt and not bool(state.done)


@pytest.mark.usefixtures("no_noise")
def test_adaptive_step_hand_case():
    """G(theta) = theta, y = 0, Gamma = 1, prior N(0, 1), members theta = (1, 3):
    Gbar = 2, D_jk = (G_j - y)(G_k - Gbar)/J = [[-0.5, 0.5], [-1.5, 1.5]], |D|_F = sqrt(5);
    C = 1, so the step is theta* = theta (1 - dt) / (1 + dt)."""
    obs = ek.Observation(jnp.zeros(1), 1.0)
    prior = ek.GaussianPrior(jnp.zeros(1), 1.0)
    x0 = jnp.array([[1.0], [3.0]])

    def one(scheduler):
        algo = eks(lambda th: th, obs, prior, scheduler=scheduler)
        return algo.step(jax.random.key(0), algo.init(x0))

    state, info = one(eks_stable(dt0=0.1, max_dt=0.4, eps=0.0))
    dt = 0.1 / np.sqrt(5.0)
    np.testing.assert_allclose(info.d_norm, np.sqrt(5.0), rtol=1e-6)
    np.testing.assert_allclose(info.dt, dt, rtol=1e-6)
    np.testing.assert_allclose(
        state.particles[:, 0], [1 * (1 - dt) / (1 + dt), 3 * (1 - dt) / (1 + dt)], rtol=1e-6
    )
    np.testing.assert_allclose(info.misfit, 5.0, rtol=1e-6)  # mean of 1^2 and 3^2
    np.testing.assert_allclose(info.mean_misfit, 4.0, rtol=1e-6)  # Gbar^2
    np.testing.assert_allclose(info.spread, np.sqrt(2.0), rtol=1e-6)
    # the cap, the nugget and the public rule
    _, capped = one(eks_stable(dt0=1.0, max_dt=0.02))
    np.testing.assert_allclose(capped.dt, 0.02, rtol=1e-6)
    np.testing.assert_allclose(eks_stable_dt(np.sqrt(5.0), 1.0, 0.0, None), 1 / np.sqrt(5.0))
    np.testing.assert_allclose(eks_stable_dt(0.0, 1.0, 1.0, None), 1.0)
    np.testing.assert_allclose(eks_stable_dt(0.0, 1.0, 0.0, 0.02), 0.02)
    # the last step lands on final_time and says done; without final_time it never does
    last, last_info = one(eks_stable(final_time=0.01))
    np.testing.assert_allclose([last_info.dt, last.time], [0.01, 0.01], rtol=1e-6)
    assert bool(last.done)
    # a fixed step; without final_time the run never says done
    fixed, fixed_info = one(constant(0.3))
    np.testing.assert_allclose(fixed_info.dt, 0.3, rtol=1e-6)
    assert not bool(fixed.done)


@pytest.mark.parametrize("name", ["eks", "aldi"])
def test_defaults_stop_by_themselves(name):
    """The documented default call: J = 1000 from the prior, num_steps=1000. The run stops at
    algorithm time 10 well before 1000 steps and the ensemble is a posterior sample: mean within
    5 Monte-Carlo standard errors sd/sqrt(J); covariance entries (in posterior-sd units) within
    4 MC sd of a sample covariance, 4 sqrt(2/J) = 18%, plus the scheme's <= 3% over-dispersion
    at the default cap dt <= 0.02 (EKS's finite-J deficit is O(p/J), negligible here)."""
    problem = make_linear_problem()
    obs, prior = _setup(problem)
    algo = SAMPLERS[name](problem.forward, obs, prior=prior)
    key = jax.random.key(0)
    result = ek.run(key, algo, prior.sample(key, 1000), num_steps=1000)
    assert bool(result.state.done) and 50 < result.num_steps < 1000
    assert isinstance(result.state, ek.EnsembleState) and isinstance(result.history, EKSInfo)
    np.testing.assert_allclose(result.history.time[-1], 10.0, rtol=1e-5)
    assert result.history.dt.max() <= 0.02 * (1 + 1e-6)
    assert result.history.d_norm[0] > 10 * result.history.d_norm[-1]  # the transient
    assert np.all(result.history.n_failed == 0)
    _check_posterior(problem, result.particles, j=1000)


def _check_posterior(problem, particles, j):
    theta = np.asarray(particles, np.float64)
    sd = np.sqrt(np.diag(problem.post_cov))
    np.testing.assert_array_less(np.abs(theta.mean(0) - problem.post_mean), 5 * sd / np.sqrt(j))
    rel = np.abs(np.cov(theta.T) - problem.post_cov) / np.outer(sd, sd)
    assert rel.max() < 4 * np.sqrt(2 / j) + 0.03, rel


def test_long_run_matches_the_posterior_with_dense_noise():
    """As above with correlated (dense) noise and J = 4000: tolerance 4 sqrt(2/J) + 3% = 12%."""
    problem = make_linear_problem(m=6, p=3, seed=1, correlated=True)
    obs, prior = _setup(problem, dense=True)
    algo = aldi(problem.forward, obs, prior)
    result = ek.run(
        jax.random.key(2), algo, prior.sample(jax.random.key(3), 4000), 2000, progress=False
    )
    assert bool(result.state.done)
    _check_posterior(problem, result.particles, j=4000)


def _many_ensembles(algo, x0, dt, steps, key):
    """Run ``algo`` on M independent ensembles at once (vmap over the state) for ``steps``."""
    m = x0.shape[0]
    one = algo.init(x0[0])
    state = jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (m, *leaf.shape)), one)
    state = state._replace(x=jnp.asarray(x0))

    @jax.jit
    def go(state, key):
        def body(state, k):
            return jax.vmap(algo.step)(jax.random.split(k, m), state)[0], None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    return go(state, key)


def test_aldi_leaves_the_product_posterior_invariant_at_small_j():
    """GNR 2020: with the finite-ensemble correction the J-fold product posterior is invariant
    for ALDI at any J >= p + 2, so members drawn i.i.d. from the posterior stay so. Check with
    M = 1000 independent ensembles of J = 5 members in p = 2 (the correction (p+1)/J = 0.6 is
    large), fixed dt = 0.01 to time 1. Pooled over M J = 5000 members, the MC sd is 1.4% of a
    posterior sd for the mean and 2% for a covariance entry: allow 4 MC sd plus the 1.5%
    discretisation bias. Without the correction (EKS) the ensembles contract (~ -35% here)."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=3, p=2, seed=3)
        obs, prior = _setup(problem, jnp.float64)
        m, j, dt = 1000, 5, 0.01
        chol = np.linalg.cholesky(problem.post_cov)
        z = np.random.default_rng(0).normal(size=(m, j, 2))
        x0 = jnp.asarray(problem.post_mean + z @ chol.T)
        sd = np.sqrt(np.diag(problem.post_cov))
        errors = {}
        for name, factory in SAMPLERS.items():
            algo = factory(problem.forward, obs, prior, scheduler=constant(dt))
            final = _many_ensembles(algo, x0, dt, 100, jax.random.key(1))
            assert np.allclose(final.time, 1.0)
            theta = np.asarray(final.x).reshape(-1, 2)
            mean_err = np.abs(theta.mean(0) - problem.post_mean) / sd
            cov_err = (np.cov(theta.T) - problem.post_cov) / np.outer(sd, sd)
            errors[name] = (mean_err, cov_err)
        mean_err, cov_err = errors["aldi"]
        assert mean_err.max() < 4 / np.sqrt(m * j), mean_err
        assert np.abs(cov_err).max() < 4 * np.sqrt(2 / (m * j)) + 0.015, cov_err
        # EKS has no correction: clearly too narrow at J = 5
        assert np.diag(errors["eks"][1]).max() < -0.2, errors["eks"][1]


def test_noise_has_covariance_2_dt_c_in_both_spaces():
    """The noise rows are N(0, C) with C = A^T A, through the anomalies (J x J draws) or the
    symmetric root (J x p draws); 20000 draws: relative MC error ~ 1-2%."""
    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.key(0), (6, 3), jnp.float64)
        a = a - a.mean(0)
        cov = np.asarray(a.T @ a)
        keys = jax.random.split(jax.random.key(1), 20000 // 6)
        for space in ("parameter", "ensemble"):
            draws = jax.vmap(lambda k, s=space: eks_module._covariance_noise(k, a, s))(keys)
            emp = np.cov(np.asarray(draws).reshape(-1, 3).T)
            scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
            assert np.abs(emp - cov).max() / scale.max() < 0.06, (space, emp, cov)


def test_large_p_uses_the_ensemble_space_and_stays_in_the_span(key):
    """p > J: the Woodbury (ensemble-space) solve and anomaly noise are used, and members never
    leave the initial ensemble's affine span: the likelihood drift, the implicit prior step
    (I + dt A^T A K)^{-1} w = w - dt A^T (...) and the noise A^T xi all move along anomalies."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=4, p=12, seed=4)
        obs, prior = _setup(problem, jnp.float64)
        x0 = prior.sample(key, 6)
        algo = eks(problem.forward, obs, prior, scheduler=eks_stable(final_time=0.5))
        result = ek.run(jax.random.key(1), algo, x0, num_steps=500, progress=False)
        assert bool(result.state.done)
        x0 = np.asarray(x0)
        basis = (x0[1:] - x0[0]).T  # (p, 5)
        resid = np.asarray(result.particles) - x0[0]
        proj = basis @ np.linalg.lstsq(basis, resid.T, rcond=None)[0]
        np.testing.assert_allclose(proj.T, resid, atol=1e-8)
        assert np.abs(resid).max() > 1e-2  # it did move


def test_pytree_parameters_match_flat_parameters(key):
    problem = make_linear_problem(m=7, p=6, seed=5)
    obs, _ = _setup(problem)
    x0_flat = jax.random.normal(key, (16, 6))
    template = {"w": jnp.zeros((16, 2, 2)), "b": (jnp.zeros((16, 2)),)}
    tree0 = unflatten(x0_flat, template)
    tree_prior = ek.GaussianPrior(
        {"w": jnp.zeros((2, 2)), "b": (jnp.zeros(2),)},
        {"w": jnp.full((2, 2), 0.7), "b": (jnp.array([1.3, 0.9]),)},
    )
    flat_prior = ek.GaussianPrior(jnp.zeros(6), tree_prior.flat_std())

    def tree_forward(params):
        return problem.forward(jnp.concatenate([params["b"][0], params["w"].reshape(-1)]))

    flat_algo = aldi(problem.forward, obs, flat_prior)
    tree_algo = aldi(tree_forward, obs, tree_prior)
    s_flat, i_flat = jax.jit(flat_algo.step)(jax.random.key(9), flat_algo.init(x0_flat))
    s_tree, i_tree = jax.jit(tree_algo.step)(jax.random.key(9), tree_algo.init(tree0))
    np.testing.assert_allclose(flatten(s_tree.particles), s_flat.particles, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i_tree.d_norm, i_flat.d_norm, rtol=1e-5)
    assert s_tree.particles["w"].shape == (16, 2, 2)


def test_equinox_module_parameters(key):
    """An Equinox MLP as the parameter pytree: static leaves (activations) are kept, the update
    reduces the misfit of a far-off prior ensemble."""
    model = eqx.nn.MLP(1, 1, 8, 1, key=key)
    x = jnp.linspace(-1, 1, 10)[:, None]
    y = jnp.sin(3 * x[:, 0])
    prior = ek.GaussianPrior.like(model, std=1.0)
    algo = eks(lambda mlp: jax.vmap(mlp)(x)[:, 0], ek.Observation(y, 0.1), prior)

    step = eqx.filter_jit(algo.step)
    state = algo.init(prior.sample(key, 32))
    misfits = []
    for k in jax.random.split(key, 10):
        state, info = step(k, state)
        misfits.append(float(info.misfit))
    assert isinstance(state.particles, eqx.nn.MLP)
    assert state.particles.activation is model.activation
    assert state.particles.layers[0].weight.shape == (32, 8, 1)
    assert misfits[-1] < 0.5 * misfits[0]


@pytest.mark.usefixtures("no_noise")
def test_failed_members_are_excluded_and_redrawn(key):
    problem = make_linear_problem(m=5, p=3, seed=8)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 64)
    cut = jnp.quantile(x0[:, 0], 0.75)
    bad = np.asarray(x0[:, 0] > cut)

    def fragile(theta):
        return jnp.where(theta[0] > cut, jnp.nan, problem.forward(theta))

    algo = aldi(fragile, obs, prior)  # ALDI: the correction (p + 1)/J uses the good count too
    state, info = jax.jit(algo.step)(jax.random.key(1), algo.init(x0))
    assert int(info.n_failed) == int(bad.sum()) == 16
    assert np.all(np.isfinite(np.asarray(state.particles)))
    assert np.isfinite(float(info.misfit))
    # the good members get exactly the update computed from the good members alone
    good = aldi(problem.forward, obs, prior)
    ref, ref_info = jax.jit(good.step)(jax.random.key(1), good.init(x0[~bad]))
    np.testing.assert_allclose(state.particles[~bad], ref.particles, rtol=1e-5, atol=1e-6)
    for field in ("dt", "d_norm", "misfit", "mean_misfit", "spread"):
        np.testing.assert_allclose(getattr(info, field), getattr(ref_info, field), rtol=1e-5)
    # the failed ones are redrawn near the updated good ensemble
    centre = np.asarray(ref.particles).mean(0)
    spread = np.asarray(ref.particles).std(0)
    assert np.all(np.abs(np.asarray(state.particles[bad]) - centre) < 6 * spread)


def test_too_few_finite_members_is_a_clear_error(key):
    obs = ek.Observation(jnp.zeros(2), 1.0)
    prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
    algo = eks(lambda th: th * jnp.nan, obs, prior)
    with pytest.raises(Exception, match="fewer than 2 ensemble members"):
        algo.step(key, algo.init(prior.sample(key, 8)))


def test_bad_inputs_raise_clear_errors(key):
    problem = make_linear_problem(m=5, p=3)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 8)
    f = problem.forward
    cases = [
        (lambda: eks(f, obs, None), "GaussianPrior"),
        (lambda: aldi(f, obs, prior=np.zeros(3)), "GaussianPrior"),
        (lambda: eks(f, problem.y, prior), "Observation"),
        (lambda: eks(f, obs, prior, scheduler=eks_stable(dt0=0.0)), "dt0"),
        (lambda: eks(f, obs, prior, scheduler=constant(0.5)), "below 0.5"),
        (lambda: eks(f, obs, prior, scheduler=eks_stable(max_dt=0.5)), "cannot settle"),
        (lambda: eks(f, obs, prior, scheduler=eks_stable(final_time=-1.0)), "final_time"),
        (lambda: eks(f, obs, prior, scheduler=eks_stable(eps=-1.0)), "eps"),
        (lambda: eks(f, obs, prior, space="data"), "space"),
        (lambda: eks(f, obs, prior).init(x0[:1]), "J >= 2"),
        (lambda: aldi(f, obs, prior).init(x0[:4]), r"J >= p \+ 2 = 5"),
        (lambda: eks(lambda th: jnp.zeros(4), obs, prior).init(x0), r"shape \(5,\)"),
        (lambda: eks(lambda th: th @ jnp.zeros((7, 5)), obs, prior).init(x0), "ONE member"),
        (lambda: eks(f, obs, prior).init({"theta": x0}), "prior's structure"),
        (lambda: eks(f, obs, prior).init(jnp.zeros((8, 4))), "prior's structure"),
    ]
    for build, match in cases:
        with pytest.raises(ek.InputError, match=match) as err:
            build()
        assert "expected" in str(err.value) and "fix:" in str(err.value)
    aldi(f, obs, prior).init(x0[:5])  # J = p + 2 is enough
