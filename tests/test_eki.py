"""EKI against closed forms (linear-Gaussian problems) and its options and errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek
from ekibnn.ensemble import flatten, unflatten


def _setup(problem, dtype=jnp.float32, dense=False):
    noise = problem.noise_cov if dense else problem.noise_std
    obs = ek.Observation(jnp.asarray(problem.y, dtype), jnp.asarray(noise, dtype))
    prior = ek.GaussianPrior(
        jnp.asarray(problem.prior_mean, dtype), jnp.asarray(problem.prior_std, dtype)
    )
    return obs, prior


@pytest.mark.parametrize("dense", [False, True])
def test_stochastic_eki_to_time_one_samples_the_posterior(dense):
    """Perturbed-observation EKI tempered to T = 1 is exact for linear-Gaussian problems as
    J -> infinity; check mean and covariance within Monte-Carlo tolerance at J = 4000."""
    problem = make_linear_problem(m=6, p=3, seed=1, correlated=dense)
    obs, prior = _setup(problem, dense=dense)
    algo = ek.eki(problem.forward, obs, prior=prior)
    j = 4000
    key = jax.random.key(2)
    result = ek.run(key, algo, prior.sample(jax.random.key(3), j), num_steps=200, progress=False)
    assert 1 < result.num_steps < 200  # the data-misfit controller stopped at T = 1
    np.testing.assert_allclose(result.history.time[-1], 1.0, rtol=1e-5)
    theta = np.asarray(result.particles, np.float64)
    sd = np.sqrt(np.diag(problem.post_cov))
    # mean: 5 Monte-Carlo standard errors (plus the EnKF's O(1/J) bias)
    np.testing.assert_array_less(np.abs(theta.mean(0) - problem.post_mean), 5 * sd / np.sqrt(j))
    # covariance: relative error of the sample covariance ~ sqrt(2/J) = 2.2%; allow 12%
    cov = np.cov(theta.T)
    rel = np.abs(cov - problem.post_cov) / np.outer(sd, sd)
    assert rel.max() < 0.12, rel


def test_deterministic_eki_converges_to_least_squares_in_ensemble_span():
    """Deterministic EKI stays in the initial ensemble's affine span and its mean approaches
    the least-squares solution restricted to that span (Iglesias et al. 2013; Schillings &
    Stuart 2017)."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=8, p=6, seed=4)
        obs, prior = _setup(problem, jnp.float64)
        x0 = prior.sample(jax.random.key(0), 4)  # span of dimension 3 < p
        algo = ek.eki(
            problem.forward,
            obs,
            prior=prior,
            stochastic=False,
            scheduler=ek.schedulers.constant(1.0),
        )
        # the error and the spread decay like t^(-1/2) (Schillings & Stuart 2017): measured
        # 2.2% after 1000 steps, 1.3% after 3000, 0.69% after 10000 for this draw
        result = ek.run(jax.random.key(1), algo, x0, num_steps=10_000, progress=False)
        x0 = np.asarray(x0)
        basis = (x0[1:] - x0[0]).T  # (p, 3)
        whiten = 1 / problem.noise_std[:, None]
        coef = np.linalg.lstsq(
            whiten * (problem.H @ basis), whiten[:, 0] * (problem.y - problem.H @ x0[0]), rcond=None
        )[0]
        best = x0[0] + basis @ coef
        final = np.asarray(result.particles)
        # every member is still in the affine span
        resid = final - x0[0]
        proj = basis @ np.linalg.lstsq(basis, resid.T, rcond=None)[0]
        np.testing.assert_allclose(proj.T, resid, atol=1e-8)
        # the mean has converged to the restricted least-squares solution
        assert np.linalg.norm(final.mean(0) - best) < 1e-2 * np.linalg.norm(best)
        # and the ensemble collapses
        assert result.history.spread[-1] < 1e-2 * result.history.spread[0]


def test_regularized_eki_converges_to_tikhonov_map():
    """Extended-state (Tikhonov) EKI iterated deterministically converges to the minimiser of
    ||Gamma^{-1/2}(y - H theta)||^2 + ||C0^{-1/2}(theta - m0)||^2, the posterior mean here."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=4, p=5, seed=7)  # under-determined without the prior
        obs, prior = _setup(problem, jnp.float64)
        algo = ek.eki(
            problem.forward,
            obs,
            prior=prior,
            stochastic=False,
            impose_prior=True,
            scheduler=ek.schedulers.constant(1.0),
        )
        x0 = prior.sample(jax.random.key(0), 30)
        result = ek.run(jax.random.key(1), algo, x0, num_steps=2000, progress=False)
        mean = np.asarray(result.particles).mean(0)
        np.testing.assert_allclose(mean, problem.post_mean, atol=5e-3)
        # without the regularisation it goes elsewhere (the problem is under-determined)
        plain = ek.eki(
            problem.forward,
            obs,
            prior=prior,
            stochastic=False,
            scheduler=ek.schedulers.constant(1.0),
        )
        other = ek.run(jax.random.key(1), plain, x0, num_steps=2000, progress=False)
        assert np.abs(np.asarray(other.particles).mean(0) - problem.post_mean).max() > 5e-2


def test_space_choice_gives_the_same_step(key):
    problem = make_linear_problem(m=12, p=4, seed=3)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 8)  # m > J
    outs = []
    for space in ("data", "ensemble"):
        algo = ek.eki(problem.forward, obs, prior=prior, space=space)
        state, _ = algo.step(jax.random.key(5), algo.init(x0))
        outs.append(np.asarray(state.particles))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_pytree_parameters_match_flat_parameters(key):
    problem = make_linear_problem(m=7, p=6, seed=5)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 16)
    template = {"w": jnp.zeros((16, 2, 2)), "b": (jnp.zeros((16, 2)),)}
    tree0 = unflatten(x0, template)

    def tree_forward(params):
        return problem.forward(jnp.concatenate([params["b"][0], params["w"].reshape(-1)]))

    for kwargs in (
        {},
        {"inflation": 0.1, "multiplicative_inflation": 0.2, "minibatch": ek.minibatch.random(4)},
    ):
        flat_algo = ek.eki(problem.forward, obs, **kwargs)
        tree_algo = ek.eki(tree_forward, obs, **kwargs)
        s_flat, i_flat = flat_algo.step(jax.random.key(9), flat_algo.init(x0))
        s_tree, i_tree = tree_algo.step(jax.random.key(9), tree_algo.init(tree0))
        np.testing.assert_allclose(
            flatten(s_tree.particles), s_flat.particles, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(i_tree.misfit, i_flat.misfit, rtol=1e-6)


def test_equinox_module_parameters(key):
    model = eqx.nn.MLP(1, 1, 8, 1, key=key)
    x = jnp.linspace(-1, 1, 10)[:, None]
    y = jnp.sin(3 * x[:, 0])
    prior = ek.GaussianPrior.like(model, std=1.0)
    algo = ek.eki(
        lambda mlp: jax.vmap(mlp)(x)[:, 0],
        ek.Observation(y, 0.1),
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
    )
    result = ek.run(key, algo, prior.sample(key, 32), num_steps=20, progress=False)
    assert isinstance(result.particles, eqx.nn.MLP)
    assert result.history.misfit[-1] < 0.2 * result.history.misfit[0]


def test_minibatch_indexed_forward_matches_full_forward(key):
    problem = make_linear_problem(m=20, p=3, seed=6)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 10)
    H = jnp.asarray(problem.H, jnp.float32)
    batch = ek.minibatch.random(5)
    full = ek.eki(problem.forward, obs, minibatch=batch)
    indexed = ek.eki(lambda th, idx: H[idx] @ th, obs, minibatch=batch, indexed_forward=True)
    a, ia = full.step(jax.random.key(1), full.init(x0))
    b, ib = indexed.step(jax.random.key(1), indexed.init(x0))
    np.testing.assert_allclose(a.particles, b.particles, rtol=1e-6)
    np.testing.assert_allclose(ia.misfit, ib.misfit, rtol=1e-6)
    # a minibatch step differs from a full step
    c, _ = ek.eki(problem.forward, obs).step(jax.random.key(1), full.init(x0))
    assert not np.allclose(a.particles, c.particles)


def _posterior_error(problem, particles) -> tuple[float, float]:
    """(max |mean error| in Monte-Carlo standard errors, max |cov error| / (sd_i sd_j))."""
    theta = np.asarray(particles, np.float64)
    j = theta.shape[0]
    sd = np.sqrt(np.diag(problem.post_cov))
    mean_err = np.max(np.abs(theta.mean(0) - problem.post_mean) / (sd / np.sqrt(j)))
    cov_err = np.max(np.abs(np.cov(theta.T) - problem.post_cov) / np.outer(sd, sd))
    return float(mean_err), float(cov_err)


@pytest.mark.parametrize("scheduler", ["constant", "data_misfit"])
def test_epoch_minibatches_preserve_the_posterior(scheduler):
    """minibatch='epoch': 12 observations in 3 disjoint batches of 4 per epoch, dt per epoch,
    to T = 1: every observation is counted once, so stochastic EKI matches the full-batch
    closed-form posterior (within Monte-Carlo tolerance at J = 4000). Random minibatches with
    the same number of steps and the same dt do not (the control)."""
    problem = make_linear_problem(m=12, p=3, seed=7)
    obs, prior = _setup(problem)
    j = 4000
    x0 = prior.sample(jax.random.key(3), j)
    sched = (
        ek.schedulers.constant(1 / 3, final_time=1.0)
        if scheduler == "constant"
        else ek.schedulers.data_misfit()
    )
    algo = ek.eki(
        problem.forward, obs, prior=prior, scheduler=sched, minibatch=ek.minibatch.epoch(4)
    )
    result = ek.run(jax.random.key(2), algo, x0, num_steps=300, progress=False)
    steps = result.num_steps
    assert steps % 3 == 0  # stops at the end of an epoch
    if scheduler == "constant":
        assert steps == 9
        np.testing.assert_allclose(result.history.time, np.arange(1, 10) / 9, rtol=1e-5)
    np.testing.assert_allclose(result.history.time[-1], 1.0, rtol=1e-5)
    dts = np.asarray(result.history.dt).reshape(-1, 3)
    np.testing.assert_array_equal(dts, dts[:, :1].repeat(3, axis=1))  # one dt per epoch
    mean_err, cov_err = _posterior_error(problem, result.particles)
    assert mean_err < 5 and cov_err < 0.12, (mean_err, cov_err)

    control = ek.eki(
        problem.forward,
        obs,
        prior=prior,
        minibatch=ek.minibatch.random(4),
        scheduler=ek.schedulers.constant(1 / 9, final_time=1.0),
    )
    result = ek.run(jax.random.key(2), control, x0, num_steps=300, progress=False)
    assert result.num_steps == 9
    mean_err, cov_err = _posterior_error(problem, result.particles)
    assert mean_err > 5 or cov_err > 0.12, (mean_err, cov_err)


def test_epoch_minibatches_visit_every_observation_once_per_epoch(key):
    problem = make_linear_problem(m=12, p=3, seed=7)
    obs, prior = _setup(problem)
    H = jnp.asarray(problem.H, jnp.float32)
    algo = ek.eki(
        lambda th, idx: H[idx] @ th,
        obs,
        minibatch=ek.minibatch.epoch(4),
        indexed_forward=True,
        scheduler=ek.schedulers.constant(0.5),
    )
    state = algo.init(prior.sample(key, 8))
    seen = []
    for n in range(6):
        state, _ = algo.step(jax.random.fold_in(key, n), state)
        position = n % 3
        seen.append(np.asarray(state.minibatch_state.order[4 * position : 4 * position + 4]))
    for epoch in (seen[:3], seen[3:]):
        np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), np.arange(12))
    assert not np.array_equal(np.concatenate(seen[:3]), np.concatenate(seen[3:]))
    np.testing.assert_allclose(state.time, 1.0, rtol=1e-6)  # 2 epochs of dt = 0.5


@pytest.mark.parametrize("algorithm", [ek.eki, ek.etki])
def test_forward_batch_size_gives_the_same_step(key, algorithm):
    problem = make_linear_problem(m=5, p=3, seed=8)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 10)
    whole = algorithm(problem.forward, obs, prior=prior)
    chunked = algorithm(problem.forward, obs, prior=prior, forward_batch_size=3)  # 3+3+3+1
    a, ia = whole.step(jax.random.key(1), whole.init(x0))
    b, ib = chunked.step(jax.random.key(1), chunked.init(x0))
    np.testing.assert_allclose(a.particles, b.particles, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ia.misfit, ib.misfit, rtol=1e-6)


def test_inflation_without_information_scales_spread(key):
    obs = ek.Observation(jnp.zeros(3), 1.0)
    x0 = jax.random.normal(key, (5000, 4))
    spread0 = float(jnp.sqrt(jnp.mean(jnp.var(x0, axis=0, ddof=1))))
    constant_fn = lambda th: jnp.zeros(3) + 0.0 * th[0]  # noqa: E731 - no information
    algo = ek.eki(constant_fn, obs, multiplicative_inflation=0.44, stochastic=False)
    state, _ = algo.step(jax.random.key(1), algo.init(x0))
    spread1 = float(jnp.sqrt(jnp.mean(jnp.var(state.particles, axis=0, ddof=1))))
    np.testing.assert_allclose(spread1, 1.2 * spread0, rtol=1e-4)
    algo = ek.eki(constant_fn, obs, inflation=0.5, stochastic=False)
    state, _ = algo.step(jax.random.key(1), algo.init(x0))
    var1 = float(jnp.mean(jnp.var(state.particles, axis=0, ddof=1)))
    np.testing.assert_allclose(var1, spread0**2 + 0.25, rtol=0.05)


def test_failed_members_are_excluded_and_redrawn(key):
    problem = make_linear_problem(m=5, p=3, seed=8)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 64)
    bad = x0[:, 0] > jnp.quantile(x0[:, 0], 0.75)

    def fragile(theta):
        out = problem.forward(theta)
        return jnp.where(theta[0] > jnp.quantile(x0[:, 0], 0.75), jnp.nan, out)

    algo = ek.eki(fragile, obs, scheduler=ek.schedulers.constant(0.5), stochastic=False)
    state, info = algo.step(jax.random.key(1), algo.init(x0))
    assert int(info.n_failed) == int(bad.sum()) == 16
    assert np.all(np.isfinite(np.asarray(state.particles)))
    assert np.isfinite(float(info.misfit))
    # the good members get exactly the update computed from the good members alone
    good = ek.eki(problem.forward, obs, scheduler=ek.schedulers.constant(0.5), stochastic=False)
    ref, ref_info = good.step(jax.random.key(1), good.init(x0[~bad]))
    np.testing.assert_allclose(state.particles[~bad], ref.particles, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info.misfit, ref_info.misfit, rtol=1e-6)
    # the failed ones are redrawn near the updated good ensemble (not copies of old values)
    redrawn = np.asarray(state.particles[bad])
    centre, sd = np.asarray(ref.particles).mean(0), np.asarray(ref.particles).std(0)
    assert np.all(np.abs(redrawn - centre) < 6 * sd)
    # over a run the failures are reported per step in the history
    result = ek.run(key, algo, x0, num_steps=3, progress=False)
    assert result.history.n_failed[0] == 16


def test_too_few_finite_members_is_a_clear_error(key):
    obs = ek.Observation(jnp.zeros(2), 1.0)
    algo = ek.eki(lambda th: th * jnp.nan, obs)
    with pytest.raises(ek.ComputationError, match="fewer than 2 ensemble members"):
        ek.run(key, algo, jax.random.normal(key, (8, 2)), num_steps=2, progress=False)
    # a step traced by the user (outside ek.run) raises at run time through Equinox
    with pytest.raises(Exception, match="fewer than 2 ensemble members"):
        jax.block_until_ready(jax.jit(algo.step)(key, algo.init(jax.random.normal(key, (8, 2)))))


def test_bad_inputs_raise_clear_errors(key):
    problem = make_linear_problem(m=5, p=3)
    obs, prior = _setup(problem)
    x0 = prior.sample(key, 8)
    with pytest.raises(ek.InputError, match=r"shape \(5,\)"):
        ek.eki(lambda th: jnp.zeros(4), obs).init(x0)
    with pytest.raises(ek.InputError, match="J >= 2"):
        ek.eki(problem.forward, obs).init(x0[:1])
    with pytest.raises(ek.InputError, match="batch_size"):
        ek.eki(problem.forward, obs, minibatch=ek.minibatch.random(6))
    with pytest.raises(ek.InputError, match="batch_size"):
        ek.minibatch.random(0)
    with pytest.raises(ek.InputError, match="divisor"):
        ek.eki(problem.forward, obs, minibatch=ek.minibatch.epoch(2))
    with pytest.raises(ek.InputError, match=r"ek.minibatch.random\(b\)"):
        ek.eki(problem.forward, obs, minibatch="epochs")
    with pytest.raises(ek.InputError, match="forward_batch_size"):
        ek.eki(problem.forward, obs, forward_batch_size=0)
    with pytest.raises(ek.InputError, match="prior's structure"):
        ek.eki(problem.forward, obs, prior=prior).init({"theta": x0})
    with pytest.raises(ek.InputError, match="prior's structure"):
        ek.eki(problem.forward, obs, prior=prior).init(jnp.zeros((8, 4)))
    with pytest.raises(ek.InputError, match="a prior"):
        ek.eki(problem.forward, obs, impose_prior=True)
    with pytest.raises(ek.InputError, match="Observation"):
        ek.eki(problem.forward, problem.y)
    with pytest.raises(ek.InputError, match="ONE member"):
        ek.eki(lambda th: th @ jnp.zeros((7, 5)), obs).init(x0)
    with pytest.raises(ek.InputError, match="same leading"):
        ek.eki(problem.forward, obs).init({"a": jnp.zeros((8, 2)), "b": jnp.zeros((7, 1))})


def test_hss_regularised_stochastic_eki_samples_the_posterior():
    """The stochastic counterpart of the HSS fixed point (see test_etki): perturbed observations
    with noise 2 blockdiag(Gamma, C_0), covariance doubled before each analysis. Its ensemble
    fluctuates around the posterior; average the statistics over the last iterations."""
    problem = make_linear_problem(m=6, p=3, seed=5)
    obs, prior = _setup(problem)
    algo = ek.eki(
        problem.forward,
        obs,
        prior=prior,
        impose_prior=True,
        multiplicative_inflation=1.0,
        scheduler=ek.schedulers.constant(0.5),
    )
    state = algo.init(prior.sample(jax.random.key(1), 2000))
    step = jax.jit(algo.step)
    means, covs = [], []
    for n in range(60):
        state, _ = step(jax.random.fold_in(jax.random.key(0), n), state)
        if n >= 20:
            theta = np.asarray(state.particles, np.float64)
            means.append(theta.mean(0))
            covs.append(np.cov(theta.T))
    sd = np.sqrt(np.diag(problem.post_cov))
    mean_err = np.abs(np.mean(means, 0) - problem.post_mean) / sd
    cov_err = np.abs(np.mean(covs, 0) - problem.post_cov) / np.outer(sd, sd)
    assert mean_err.max() < 0.05 and cov_err.max() < 0.1, (mean_err, cov_err)
