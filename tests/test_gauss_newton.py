"""Gauss–Newton / Levenberg–Marquardt in Kalman form and the linearised-Laplace posterior,
against closed forms (linear-Gaussian and linear-categorical problems) and a direct optimiser."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

import ekibnn as ek
from ekibnn.inversion.gauss_newton import (
    DENSE_ENTRIES,
    Categorical,
    GaussNewtonInfo,
    GaussNewtonState,
    choose_space,
)

SPACES = ("data", "parameter", "cg")


def _setup(problem, dtype=jnp.float64, dense=False):
    noise = problem.noise_cov if dense else problem.noise_std
    obs = ek.Observation(jnp.asarray(problem.y, dtype), jnp.asarray(noise, dtype))
    prior = ek.GaussianPrior(
        jnp.asarray(problem.prior_mean, dtype), jnp.asarray(problem.prior_std, dtype)
    )
    return obs, prior


def _nonlinear(theta):
    """A small nonlinear forward map of 2 parameters to 4 outputs."""
    a, b = theta[0], theta[1]
    return jnp.stack([jnp.exp(0.5 * a) + b, jnp.sin(b) * a, a - b**2, jnp.tanh(a + b)])


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("dense", [False, True])
def test_one_gauss_newton_step_reaches_the_posterior_mean(key, space, dense):
    """At lambda = 0 and linear G the Gauss-Newton (iterated extended Kalman) step lands on
    the posterior mean from any start, in every solve space, diagonal or dense noise."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=6, p=4, seed=3, correlated=dense)
        obs, prior = _setup(problem, dense=dense)
        algo = ek.gauss_newton(
            problem.forward, obs, prior, space=space, initial_damping=0.0, cg_rtol=1e-14
        )
        state, info = jax.jit(algo.step)(key, algo.init(prior.sample(key, 3)))
        assert isinstance(state, GaussNewtonState) and isinstance(info, GaussNewtonInfo)
        np.testing.assert_allclose(state.x, np.tile(problem.post_mean, (3, 1)), atol=1e-11)
        assert int(info.num_accepted) == 3 and (info.cg_steps > 0) == (space == "cg")


@pytest.mark.parametrize(("space", "dense"), [("data", True), ("parameter", False), ("cg", True)])
def test_laplace_predictive_is_the_closed_form(key, space, dense):
    """LM converges by itself to m_post (to its tolerance, 1e-9 posterior sds here), and the
    linearised posterior predicts A theta with A m_post and exactly sqrt(diag(A C_post A^T));
    its covariance is C_post and its log evidence the exact log N(y; H m_0, H C_0 H^T + Gamma)."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=5, p=4, seed=1, correlated=dense)
        obs, prior = _setup(problem, dense=dense)
        algo = ek.gauss_newton(problem.forward, obs, prior, space=space, atol=1e-9, cg_rtol=1e-13)
        result = ek.run(key, algo, prior.sample(key, 2), 100, progress=False)
        assert bool(result.state.done) and bool(result.state.converged.all())
        assert result.num_steps < 30
        post = algo.posterior(result.state)
        assert isinstance(post, ek.LinearisedPosterior) and post.converged is True
        a = np.random.default_rng(0).normal(size=(3, 4))
        mean, std = post.predict(lambda th: jnp.asarray(a) @ th)
        np.testing.assert_allclose(mean, a @ problem.post_mean, rtol=1e-8)
        expected = np.sqrt(np.diag(a @ problem.post_cov @ a.T))
        np.testing.assert_allclose(std, expected, rtol=1e-10)
        np.testing.assert_allclose(post.covariance(), problem.post_cov, atol=1e-12)
        marginal = problem.H @ np.diag(problem.prior_std**2) @ problem.H.T + problem.noise_cov
        exact = multivariate_normal(problem.H @ problem.prior_mean, marginal).logpdf(problem.y)
        np.testing.assert_allclose(float(post.log_evidence), exact, rtol=1e-12)
        assert float(post.grad_norm) < 1e-8
        # a scalar output and the randomised factor of full rank give the same
        one = ek.laplace(problem.forward, obs, prior, result.state.map, rank=4)
        np.testing.assert_allclose(
            one.predict(lambda th: th[1]).std, np.sqrt(problem.post_cov[1, 1])
        )


def test_thin_factor_when_parameters_outnumber_data(key):
    """p > m: the factor has r = m columns (no p x p matrix) and still predicts exactly,
    chunked over the outputs."""
    with jax.enable_x64(True):
        problem = make_linear_problem(m=3, p=7, seed=2)
        obs, prior = _setup(problem)
        algo = ek.gauss_newton(problem.forward, obs, prior, atol=1e-9)
        assert algo.solve_space == "data"
        state = ek.run(key, algo, prior.sample(key, 1), 50, progress=False).state
        post = algo.posterior(state)
        assert post.basis.shape == (7, 3)
        a = np.random.default_rng(1).normal(size=(5, 7))
        mean, std = post.predict(lambda th: jnp.asarray(a) @ th, chunk_size=2)
        np.testing.assert_allclose(mean, a @ problem.post_mean, atol=1e-6)  # LM's tolerance
        np.testing.assert_allclose(std, np.sqrt(np.diag(a @ problem.post_cov @ a.T)), rtol=1e-10)
        # at the exact posterior mean the predictive mean is exact too
        exact = ek.laplace(problem.forward, obs, prior, jnp.asarray(problem.post_mean))
        np.testing.assert_allclose(
            exact.predict(lambda th: jnp.asarray(a) @ th).mean, a @ problem.post_mean, rtol=1e-12
        )


def test_linearised_samples_have_the_posterior_moments(key):
    """sample_outputs draws the linearised output: mean and covariance of A theta within
    Monte-Carlo tolerance (float32, the default)."""
    problem = make_linear_problem(m=6, p=3, seed=4)
    obs, prior = _setup(problem, jnp.float32)
    algo = ek.gauss_newton(problem.forward, obs, prior)
    post = algo.posterior(ek.run(key, algo, prior.sample(key, 1), 50, progress=False).state)
    a = np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32)
    samples = np.asarray(post.sample_outputs(lambda th: jnp.asarray(a) @ th, key, 20000))
    assert samples.shape == (20000, 2) and samples.dtype == np.float32
    cov = a @ problem.post_cov @ a.T
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(samples.mean(0), a @ problem.post_mean, atol=0.03 * sd.max())
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.04 * sd.max() ** 2)
    idata = post.to_inference_data({"a": lambda th: jnp.asarray(a) @ th}, key, 50)
    assert idata.posterior["a"].shape == (1, 50, 2)
    mean, std = post.predict(lambda th: (jnp.asarray(a) @ th)[:, None])  # any output shape
    assert mean.shape == std.shape == (2, 1)
    np.testing.assert_allclose(std[:, 0], sd, rtol=1e-4)


def test_weight_draws_are_refused_with_a_pointer(key):
    problem = make_linear_problem()
    obs, prior = _setup(problem, jnp.float32)
    post = ek.laplace(problem.forward, obs, prior, prior.mean)
    with pytest.raises(ek.InputError, match="sample_outputs") as err:
        post.sample(key, 10)
    assert "nonlinear network" in str(err.value) and "predict" in str(err.value)
    with pytest.raises(ek.InputError, match="key"):
        post.sample_outputs(lambda th: th, None, 10)


def test_nonlinear_map_matches_a_direct_optimiser(key):
    """Restarts from prior draws: the best converged start is the minimiser scipy finds from
    the same point; float32 and float64 agree."""
    with jax.enable_x64(True):
        y = jnp.array([1.5, 0.3, -0.2, 0.8])
        obs = ek.Observation(y, jnp.array([0.1, 0.2, 0.1, 0.3]))
        prior = ek.GaussianPrior(jnp.array([0.0, 0.5]), jnp.array([1.0, 2.0]))
        algo = ek.gauss_newton(_nonlinear, obs, prior)
        result = ek.run(key, algo, prior.sample(key, 4), 200, progress=False)
        assert bool(result.state.converged.all()) and int(result.history.num_converged[-1]) == 4
        best = np.asarray(result.state.map)

        objective = jax.jit(
            lambda th: (
                obs.misfit(_nonlinear(th)) + 0.5 * jnp.sum(((th - prior.mean) / prior.std) ** 2)
            )
        )
        gradient = jax.jit(jax.grad(objective))

        direct = minimize(
            lambda th: float(objective(th)),
            best + 0.05,
            jac=lambda th: np.asarray(gradient(th)),
            method="BFGS",
            options={"gtol": 1e-10},
        ).x
        np.testing.assert_allclose(best, direct, atol=1e-6)
        np.testing.assert_allclose(float(result.state.objective.min()), float(objective(direct)))
    obs32 = ek.Observation(np.asarray(y, np.float32), np.asarray(obs.std, np.float32))
    prior32 = ek.GaussianPrior(jnp.array([0.0, 0.5]), jnp.array([1.0, 2.0]))
    algo32 = ek.gauss_newton(_nonlinear, obs32, prior32)
    state32 = ek.run(key, algo32, prior32.sample(key, 4), 200, progress=False).state
    assert state32.x.dtype == jnp.float32
    np.testing.assert_allclose(state32.map, best, atol=2e-4)


def test_stopping_at_max_steps_is_visible(key):
    y = jnp.array([1.5, 0.3, -0.2, 0.8])
    obs = ek.Observation(y, 0.05)
    prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
    algo = ek.gauss_newton(_nonlinear, obs, prior, max_steps=2)
    result = ek.run(key, algo, prior.sample(key, 3), 50, progress=False)
    assert result.num_steps == 2 and bool(result.state.done)
    assert not bool(result.state.converged.any()) and result.history.num_converged[-1] == 0
    assert algo.posterior(result.state).converged is False


def test_restarts_stop_once_the_others_are_outranked():
    """The run stops when no start still moving can reach the lowest converged objective
        under its own Gauss-Newton model (module docstring); run alone to convergence, none of
        those starts ends below that objective, and the converged ones end at the objective they
    reached (their points agree to float32 round-off in the posterior's flat directions)."""
    from ekibnn.bnn.likelihoods import regression
    from ekibnn.bnn.models import MLP

    x = np.linspace(-2, 2, 40, dtype=np.float32)[:, None]
    noise = 0.1 * np.random.default_rng(0).standard_normal(40)
    y = (np.sin(2 * x[:, 0]) + noise).astype(np.float32)
    model = MLP(jax.random.key(0), 1, 1, (8,))
    prior = ek.GaussianPrior.like(model, std=1.0)
    likelihood = regression(x, y, 0.1)
    algo = ek.gauss_newton(likelihood.forward_fn, likelihood.obs, prior, max_steps=400)
    starts = prior.sample(jax.random.fold_in(jax.random.key(0), 1), 4)
    joint = ek.run(jax.random.key(1), algo, starts, 400, progress=False)
    converged = np.asarray(joint.state.converged)
    lowest = float(joint.state.objective.min())
    assert joint.num_steps < 400 and bool(joint.state.done)
    assert converged[int(joint.state.best)] and not converged.all()
    solo_steps = []
    for j in range(4):
        one = jax.tree_util.tree_map(lambda a, j=j: a[j : j + 1], starts)
        solo = ek.run(jax.random.key(1), algo, one, 400, progress=False)
        assert bool(solo.state.converged[0])
        assert float(solo.state.objective[0]) >= lowest - 1e-4 * abs(lowest)
        if converged[j]:
            # each run stops within its convergence tolerance (0.5 atol^2 + 100 eps |Phi|) of
            # the same minimum: the two objectives agree to twice that
            tol = 2 * (0.5 * 1e-2**2 + 100 * np.finfo(np.float32).eps * abs(lowest))
            np.testing.assert_allclose(
                solo.state.objective[0], joint.state.objective[j], rtol=0, atol=tol
            )
        solo_steps.append(solo.num_steps)
    assert max(solo_steps) > joint.num_steps


def test_indexed_forward_builds_the_same_jacobian(key):
    """A forward map with one output per input point: the point-by-point Jacobian
    (indexed_forward) gives the same iterates as the whole-map products."""
    with jax.enable_x64(True):
        x = jnp.linspace(-1.0, 1.0, 7)
        y = jnp.tanh(0.8 * x + 0.3) + 0.05 * jnp.cos(5 * x)

        def whole(theta):
            return jnp.tanh(theta[0] * x + theta[1]) * theta[2]

        def indexed(theta, idx):
            return jnp.tanh(theta[0] * x[idx] + theta[1]) * theta[2]

        obs = ek.Observation(y, 0.1)
        prior = ek.GaussianPrior(jnp.ones(3), 1.0)
        runs = [
            ek.run(key, ek.gauss_newton(f, obs, prior, indexed_forward=i), prior.sample(key, 2), 5)
            for f, i in ((whole, False), (indexed, True))
        ]
        np.testing.assert_allclose(runs[0].state.x, runs[1].state.x, rtol=1e-12)
        post = ek.laplace(indexed, obs, prior, runs[1].state.map, indexed_forward=True)
        ref = ek.laplace(whole, obs, prior, runs[1].state.map)
        np.testing.assert_allclose(post.covariance(), ref.covariance(), rtol=1e-10, atol=1e-14)


def _two_branch_problem():
    """Outputs 0..2 are tanh(a x + b) c, outputs 3..6 are sin(a x) + b c: two branches."""
    x = jnp.linspace(-1.0, 1.0, 7)
    first = jnp.arange(7) < 3

    def branch(theta, xi, k):
        return (
            jnp.tanh(theta[0] * xi + theta[1]) * theta[2],
            jnp.sin(theta[0] * xi) + theta[1] * theta[2],
        )[k]

    def forward(theta, idx, segment=None):
        if segment is not None:
            return branch(theta, x[idx], segment)
        return jnp.where(first[idx], branch(theta, x[idx], 0), branch(theta, x[idx], 1))

    y = forward(jnp.array([0.8, 0.3, 1.1]), jnp.arange(7)) + 0.05 * jnp.cos(5 * x)
    return forward, ek.Observation(y, 0.1), ek.GaussianPrior(jnp.ones(3), 1.0)


def test_segments_build_the_same_jacobian_branch_by_branch(key):
    """With segments, each segment's Jacobian rows come from its own branch
    (forward(theta, idx, segment=k)); the iterates and the Laplace posterior are those of the
    point-by-point Jacobian of the full map."""
    with jax.enable_x64(True):
        forward, obs, prior = _two_branch_problem()
        runs = [
            ek.run(
                key,
                ek.gauss_newton(forward, obs, prior, indexed_forward=True, segments=seg),
                prior.sample(key, 2),
                5,
                progress=False,
            )
            for seg in (None, (3, 7))
        ]
        np.testing.assert_allclose(runs[0].state.x, runs[1].state.x, rtol=1e-12)
        posts = [
            ek.laplace(forward, obs, prior, runs[0].state.map, indexed_forward=True, segments=seg)
            for seg in (None, (3, 7))
        ]
        np.testing.assert_allclose(posts[0].covariance(), posts[1].covariance(), rtol=1e-10)
        # a wrong split takes the other branch's rows: a different posterior
        wrong = ek.laplace(
            forward, obs, prior, runs[0].state.map, indexed_forward=True, segments=(4, 7)
        )
        assert not np.allclose(wrong.covariance(), posts[0].covariance(), rtol=1e-3)


@pytest.mark.parametrize(
    ("segments", "indexed", "match"),
    [
        ((3, 7), False, "indexed_forward=True"),
        ((3, 6), True, "the last equal to the 7"),
        ((5, 3, 7), True, "non-decreasing"),
        ((2.5, 7), True, "integer segment ends"),
        ("37", True, "integer segment ends"),
    ],
)
def test_bad_segments_are_refused(segments, indexed, match):
    forward, obs, prior = _two_branch_problem()
    with pytest.raises(ek.InputError, match=match):
        ek.gauss_newton(forward, obs, prior, indexed_forward=indexed, segments=segments)


def test_a_forward_map_without_a_segment_keyword_is_refused(key):
    _, obs, prior = _two_branch_problem()
    algo = ek.gauss_newton(
        lambda theta, idx: theta[0] * idx, obs, prior, indexed_forward=True, segments=(3, 7)
    )
    with pytest.raises(ek.InputError, match="segment=k"):
        algo.init(prior.sample(key, 2))


def test_new_data_do_not_recompile(key, compile_log):
    problem = make_linear_problem(m=6, p=3, seed=5)
    obs, prior = _setup(problem, jnp.float32)
    start = prior.sample(key, 2)
    for shift in (0.0, 1.0):
        new = ek.Observation(obs.y + shift, obs.std * (1 + shift))
        ek.run(key, ek.gauss_newton(problem.forward, new, prior), start, 40, progress=False)
    assert compile_log.count("_run_chunk") == 1


def test_categorical_map_and_covariance_are_exact(key):
    """Softmax regression with a linear model: the MAP is scipy's, the GGN covariance is the
    inverse of the exact Hessian (the model is linear), and the probabilities are consistent."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        n, d, k = 60, 2, 3
        features = rng.normal(size=(n, d))
        truth = np.array([[2.0, -1.0, 0.0], [0.0, 1.5, -2.0]])
        labels = np.argmax(features @ truth + rng.gumbel(size=(n, k)), axis=1)
        fx = jnp.asarray(features)

        def logits(w):
            return (fx @ w).reshape(-1)

        obs = ek.Observation(labels.astype(float), 1.0)
        prior = ek.GaussianPrior(jnp.zeros((d, k)), 2.0)
        algo = ek.gauss_newton(logits, obs, prior, likelihood=Categorical(k), atol=1e-9)
        assert algo.solve_space == "parameter" and algo.num_outputs == n * k
        result = ek.run(key, algo, prior.sample(key, 2), 100, progress=False)
        assert bool(result.state.converged.all())

        @jax.jit
        def objective(w):
            logp = jax.nn.log_softmax(fx @ w.reshape(d, k), axis=1)
            return -jnp.sum(logp[jnp.arange(n), labels]) + 0.5 * jnp.sum(w**2) / 4.0

        gradient = jax.jit(jax.grad(objective))
        direct = minimize(
            lambda w: float(objective(w)),
            np.zeros(d * k),
            jac=lambda w: np.asarray(gradient(w)),
            method="BFGS",
            options={"gtol": 1e-10},
        ).x
        np.testing.assert_allclose(np.ravel(result.state.map), direct, atol=1e-6)
        post = algo.posterior(result.state)
        hessian = np.asarray(jax.jit(jax.hessian(objective))(direct))
        np.testing.assert_allclose(post.covariance(), np.linalg.inv(hessian), atol=1e-8)
        probs = post.predict_proba(lambda w: fx @ w)
        sampled = post.predict_proba(lambda w: fx @ w, key, 10000)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(probs, sampled, atol=0.015)
        assert float(np.mean(np.argmax(probs, 1) == labels)) > 0.6  # Gumbel-noisy labels


def test_space_choice_and_bad_input():
    assert choose_space("auto", 500, 481) == "parameter"
    assert choose_space("auto", 42, 2702) == "data"
    assert choose_space("auto", 10**4, DENSE_ENTRIES) == "cg"
    assert choose_space("auto", 5000, 5000) == "cg"
    problem = make_linear_problem()
    obs, prior = _setup(problem, jnp.float32)
    with pytest.raises(ek.InputError, match="space"):
        ek.gauss_newton(problem.forward, obs, prior, space="ensemble")
    with pytest.raises(ek.InputError, match="likelihood"):
        ek.gauss_newton(problem.forward, obs, prior, likelihood="softmax")
    with pytest.raises(ek.InputError, match="max_steps"):
        ek.gauss_newton(problem.forward, obs, prior, max_steps=0)
    with pytest.raises(ek.InputError, match="prior"):
        ek.gauss_newton(problem.forward, obs, None)
    with pytest.raises(ek.InputError, match="labels"):
        ek.gauss_newton(problem.forward, obs, prior, likelihood=Categorical(3))
    with pytest.raises(ek.InputError, match="num_classes"):
        Categorical(1)
    algo = ek.gauss_newton(lambda th: th, obs, prior)
    with pytest.raises(ek.InputError, match="forward_fn output"):
        algo.init(prior.sample(jax.random.key(0), 2))
    post = ek.laplace(problem.forward, obs, prior, prior.mean)
    with pytest.raises(ek.InputError, match="chunk_size"):
        post.predict(lambda th: th, chunk_size=0)
    assert eqx.is_array(post.basis)
