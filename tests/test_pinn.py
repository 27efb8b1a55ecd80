"""B-PINN problems: exact residuals, transforms, observation layout, a tiny fit, run_pinn."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ekibnn as ek
from ekibnn import pinn
from ekibnn.bnn import MLP
from ekibnn.errors import InputError


def _true_phys(problem):
    return {k: jnp.asarray(p.true) for k, p in problem.phys.items()}


@pytest.mark.parametrize("name", sorted(pinn.PROBLEMS))
def test_exact_solution_has_zero_residual(name):
    """N[u_exact; k_true] - f_exact vanishes to round-off at the residual points (the operator is
    differentiated by autodiff, f by hand or in closed form)."""
    problem = pinn.PROBLEMS[name](noise=0.1, hidden=(4,))
    x = jnp.asarray(problem.x_f, jnp.float32)
    lhs = jax.jit(lambda x: problem.operator_values(problem.exact_u, _true_phys(problem), x))(x)
    rhs = jax.jit(jax.vmap(problem.exact_f))(x)
    scale = 1.0 + float(jnp.max(jnp.abs(rhs)))
    np.testing.assert_allclose(lhs, rhs, atol=5e-5 * scale)
    # the boundary data are the exact solution there
    b = jax.vmap(problem.exact_u)(jnp.asarray(problem.x_b, jnp.float32))
    np.testing.assert_allclose(b, problem.y_b, atol=1e-5)


def test_poisson_residual_group_is_exact_with_noise_free_f():
    problem = pinn.poisson1d(hidden=(4,))
    r = problem.residual(problem.exact_u, _true_phys(problem))
    assert r.shape == (32,)
    assert float(jnp.max(jnp.abs(r))) < 1e-4


@pytest.mark.parametrize(
    "transform, values",
    [
        (pinn.Identity(), [-3.0, 0.0, 2.5]),
        (pinn.Positive(), [1e-3, 0.4, 7.0]),
        (pinn.Positive(lower=1.0), [1.01, 2.0, 9.0]),
        (pinn.Bounded(0.5, 10.0), [0.6, 4.0, 9.9]),
    ],
)
def test_transforms_round_trip(transform, values):
    k = jnp.asarray(values)
    z = transform.to_unconstrained(k)
    assert bool(jnp.all(jnp.isfinite(z)))
    np.testing.assert_allclose(transform.to_constrained(z), k, rtol=1e-5)
    # and the other way round, from arbitrary reals into the constrained set
    zz = jnp.linspace(-4.0, 4.0, 9)
    kk = transform.to_constrained(zz)
    np.testing.assert_allclose(transform.to_unconstrained(kk), zz, rtol=1e-4, atol=1e-4)
    if isinstance(transform, pinn.Bounded):
        assert bool(jnp.all((kk > 0.5) & (kk < 10.0)))
    if isinstance(transform, pinn.Positive):
        assert bool(jnp.all(kk > transform.lower))


def test_constrained_parameters_of_an_ensemble():
    problem = pinn.damped_oscillator(hidden=(4,))
    particles = problem.prior().sample(jax.random.key(0), 500)
    phys = problem.constrained(particles["phys"])
    assert phys["c"].shape == (500,) and bool(jnp.all(phys["c"] > 0))
    assert bool(jnp.all((phys["w2"] > 0.5) & (phys["w2"] < 10.0)))
    # loc is the prior median in constrained space
    np.testing.assert_allclose(np.median(np.asarray(phys["c"])), 1.0, rtol=0.2)
    np.testing.assert_allclose(np.median(np.asarray(phys["w2"])), 2.0, rtol=0.3)


def test_invalid_inputs_raise():
    with pytest.raises(InputError):
        pinn.Bounded(1.0, 1.0)
    with pytest.raises(InputError):
        pinn.PhysicalParam(0.0, scale=0.0)
    with pytest.raises(InputError):
        pinn.fit(pinn.poisson1d(hidden=(4,)), jax.random.key(0), method="hmc")
    with pytest.raises(InputError):
        pinn.run_pinn("nope")
    with pytest.raises(InputError):
        pinn.PINNProblem(
            net=MLP(jax.random.key(0), 1, 1, hidden=(4,)),
            operator=lambda u, x, p: u(x),
            x_u=np.zeros((3, 1)),
            y_u=np.zeros(2),
            x_b=np.zeros((1, 1)),
            y_b=np.zeros(1),
            x_f=np.zeros((1, 1)),
            y_f=np.zeros(1),
        )


def test_observation_and_forward_layout():
    """y = [y_u; y_b; y_f], stds per group, and forward_fn in the same order."""
    net = MLP(jax.random.key(0), 1, 1, hidden=(6,), parameterization="ntk")

    def operator(u, x, phys):
        return phys["a"] * jax.grad(u)(x)[0] + u(x)

    problem = pinn.PINNProblem(
        net=net,
        operator=operator,
        x_u=np.array([0.1, 0.2, 0.3]),
        y_u=np.array([1.0, 2.0, 3.0]),
        x_b=np.array([[0.0]]),
        y_b=np.array([4.0]),
        x_f=np.array([[0.5], [0.6]]),
        y_f=np.array([5.0, 6.0]),
        phys={"a": pinn.PhysicalParam(2.0, 0.5, pinn.Positive(), true=2.0)},
        noise_u=0.1,
        noise_b=np.array([0.01]),
        noise_f=0.3,
    )
    assert problem.layout == {"u": slice(0, 3), "b": slice(3, 4), "f": slice(4, 6)}
    obs = problem.observation()
    np.testing.assert_allclose(obs.y, [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(obs.std, [0.1, 0.1, 0.1, 0.01, 0.3, 0.3], rtol=1e-6)

    params = problem.template()
    np.testing.assert_allclose(params["phys"]["a"], np.log(2.0), rtol=1e-6)
    out = problem.forward_fn(params)
    assert out.shape == (6,)
    u = lambda x: net(jnp.atleast_1d(x))[0]  # noqa: E731
    xs = jnp.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(out[:3], jax.vmap(u)(xs), rtol=1e-5)
    np.testing.assert_allclose(out[3], u(0.0), rtol=1e-5)
    expect_f = jax.vmap(lambda x: 2.0 * jax.grad(u)(x) + u(x))(jnp.array([0.5, 0.6]))
    np.testing.assert_allclose(out[4:], expect_f, rtol=1e-4)
    # the prior: N(0, 1) on the network, N(log 2, 0.5^2) on the unconstrained parameter
    prior = problem.prior()
    assert prior.num_params == ek.bnn.num_params(net) + 1
    np.testing.assert_allclose(prior.std["phys"]["a"], 0.5)


def test_indexed_forward_matches_the_forward_map_point_by_point(monkeypatch):
    """indexed_forward_fn(params, i) == forward_fn(params)[i] for every group (a Neumann
    boundary, so that u and B differ), in any order; pinn.fit hands it to the recipes (the
    Jacobian recipes build the Jacobian point by point with it)."""
    net = MLP(jax.random.key(3), 1, 1, hidden=(6,))
    problem = pinn.PINNProblem(
        net=net,
        operator=lambda u, x, phys: phys["a"] * pinn.laplacian(u)(x) + jnp.sin(u(x)),
        x_u=np.array([0.1, 0.2, 0.3]),
        y_u=np.zeros(3),
        x_b=np.array([[0.0], [1.0]]),
        y_b=np.zeros(2),
        x_f=np.array([[0.5], [0.6], [0.7]]),
        y_f=np.zeros(3),
        phys={"a": pinn.PhysicalParam(0.0, 1.0)},
        boundary=lambda u, x, phys: jax.grad(u)(x)[0],
    )
    member = jax.tree_util.tree_map(lambda a: a[0], problem.prior().sample(jax.random.key(4), 1))
    full = problem.forward_fn(member)
    order = jnp.array([7, 0, 3, 5, 2, 4, 1, 6])
    np.testing.assert_allclose(problem.indexed_forward_fn(member, order), full[order], rtol=1e-5)
    assert len(set(np.round(np.asarray(full), 5))) == 8  # the groups really differ here
    assert problem.segments == (3, 5, 8)
    for k, group in enumerate([jnp.array([2, 0]), jnp.array([4, 3]), jnp.array([7, 5, 6])]):
        np.testing.assert_allclose(
            problem.indexed_forward_fn(member, group, segment=k), full[group], rtol=1e-5
        )

    # the Laplace posterior built segment by segment is the one built point by point
    obs, prior = problem.observation(), problem.prior()
    by_point, by_segment = (
        ek.laplace(problem.indexed_forward_fn, obs, prior, member, indexed_forward=True, **kw)
        for kw in ({}, {"segments": problem.segments})
    )
    np.testing.assert_allclose(by_segment.singular_values, by_point.singular_values, rtol=1e-4)
    np.testing.assert_allclose(by_segment.log_evidence, by_point.log_evidence, rtol=1e-5)

    seen = {}

    def capture(method, inverse, key, **kwargs):
        seen["indexed"] = inverse.indexed_forward_fn
        seen["segments"] = inverse.segments
        raise RuntimeError("captured")

    monkeypatch.setattr(pinn.problem.recipes, "fit", capture)
    with pytest.raises(RuntimeError, match="captured"):
        pinn.fit(problem, jax.random.key(0))
    assert seen["indexed"] == problem.indexed_forward_fn
    assert seen["segments"] == problem.segments


def test_tiny_poisson_run_reduces_misfit_moves_k_and_writes_outputs(tmp_path):
    """A tiny poisson1d run through run_pinn at the default recipe (Laplace): the misfit drops,
    k's mean moves from its prior mean 0 towards 0.7, and the JSON and figures are written."""
    metrics = pinn.run_pinn(
        "poisson1d",
        scale=0.5,  # at most 200 Levenberg-Marquardt steps per start (153 needed)
        out_dir=tmp_path,
        progress=False,
        problem_kwargs={"hidden": (16,)},
    )
    assert metrics["method"] == pinn.DEFAULT_METHOD == "laplace"
    assert metrics["ensemble_size"] is None and metrics["num_steps"] <= 200
    assert metrics["converged"] is True and metrics["warnings"] == []
    # (history starts after the first LM step, from the best of 4 prior draws)
    assert metrics["final_misfit"] < 0.7 * metrics["initial_misfit"]
    k = metrics["parameters"]["k"]
    assert abs(k["mean"] - 0.7) < 0.3, k
    assert k["true"] == 0.7 and k["std"] > 0
    assert metrics["rel_l2_u"] < 0.7
    assert 0.0 <= metrics["coverage_u_95"] <= 1.0 and metrics["wall_time_s"] > 0
    for name in ("metrics.json", "solution.png", "parameters.png"):
        assert (tmp_path / name).exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["parameters"]["k"]["true"] == 0.7


# ----------------------------------------------------------------------------- new recipes
def _linear_pinn():
    """A B-PINN whose forward map is linear in all parameters: a network without hidden layers
    (u(x) = w x + b) and the operator N[u; a](x) = u'(x) + a, so the posterior is Gaussian in
    closed form."""
    x_u = np.array([[-0.5], [0.0], [0.5], [1.0]])
    return pinn.PINNProblem(
        net=MLP(jax.random.key(0), 1, 1, hidden=(), parameterization="ntk"),
        operator=lambda u, x, p: jax.grad(u)(x)[0] + p["a"],
        x_u=x_u,
        y_u=np.array([-0.4, 0.6, 1.4, 2.6]),
        x_b=np.array([[-1.0]]),
        y_b=np.array([-1.1]),
        x_f=np.array([[0.25], [0.75]]),
        y_f=np.array([2.4, 2.6]),
        phys={"a": pinn.PhysicalParam(0.0, 2.0, true=0.5)},
        noise_u=0.2,
        noise_b=0.3,
        noise_f=0.5,
        net_prior_std=1.5,
    )


def _closed_form(problem):
    """Posterior mean and covariance of the flat parameters of a linear problem."""
    prior = problem.prior()
    template = jax.tree_util.tree_map(lambda x: x[None], problem.template())
    flat0 = ek.ensemble.flatten(template)[0]

    def forward(theta):
        member = ek.ensemble.unflatten(theta[None], template)
        return problem.forward_fn(jax.tree_util.tree_map(lambda x: x[0], member))

    H = np.asarray(jax.jacfwd(forward)(flat0), float)
    offset = np.asarray(forward(jnp.zeros_like(flat0)), float)
    noise = np.asarray(problem.noise_std(), float)
    y = np.asarray(problem.observation().y, float) - offset
    prior_prec = np.diag(np.asarray(prior.flat_std(), float) ** -2)
    cov = np.linalg.inv(H.T @ (H / noise[:, None] ** 2) + prior_prec)
    mean = cov @ (H.T @ (y / noise**2) + prior_prec @ np.asarray(prior.flat_mean(), float))
    return mean, cov


def test_methods_are_listed():
    assert {"laplace", "uki", "eks", "aldi"} <= set(pinn.METHODS)


@pytest.mark.parametrize("method", pinn.METHODS)  # one test each: xdist spreads them
def test_every_method_runs(method):
    problem = pinn.poisson1d(hidden=(4,))  # p = 14
    size = 16 if method == "aldi" else 8
    if ek.recipes.get(method).jacobian:  # 2 Levenberg-Marquardt steps do not converge
        with pytest.warns(ek.ConvergenceWarning, match="num_steps=2"):
            result = pinn.fit(problem, jax.random.key(0), method, ensemble_size=8, max_steps=2)
    else:
        result = pinn.fit(
            problem, jax.random.key(0), method, ensemble_size=size, max_steps=2, sampler_time=1
        )
    assert result.num_steps >= 1 and np.all(np.isfinite(result.history.misfit))


def test_uki_recipe_matches_closed_form_on_a_linear_pinn():
    """UKI (prior imposed) through pinn.fit reaches the exact Gaussian posterior of a linear
    B-PINN; result.particles are draws of that Gaussian."""
    problem = _linear_pinn()
    mean, cov = _closed_form(problem)
    result = pinn.fit(
        problem, jax.random.key(0), method="uki", ensemble_size=4000, max_steps=3, sampler_time=60
    )
    np.testing.assert_allclose(ek.ensemble.flatten_member(result.state.mean), mean, atol=2e-3)
    np.testing.assert_allclose(result.state.cov, cov, atol=2e-3)
    draws = np.asarray(ek.ensemble.flatten(result.samples(jax.random.key(1), 4000)))
    assert draws.shape == (4000, 3)
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * np.sqrt(np.max(np.diag(cov)) / 4000))
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.1 * np.max(np.diag(cov)))


def test_uki_recipe_refuses_large_networks_with_a_fix():
    problem = pinn.poisson1d()  # [1, 50, 50, 1]: p = 2702
    with pytest.raises(InputError, match="smaller network"):
        pinn.fit(problem, jax.random.key(0), method="uki")
    with pytest.raises(InputError, match="uki"):
        pinn.fit(problem, jax.random.key(0), method="uki")


def test_aldi_recipe_samples_the_linear_posterior_after_a_warm_start():
    """ALDI (J >= p + 2) started from the EKI warm start samples the exact posterior of a
    linear B-PINN; the history joins both stages."""
    problem = _linear_pinn()
    mean, cov = _closed_form(problem)
    result = pinn.fit(
        problem,
        jax.random.key(1),
        method="aldi",
        ensemble_size=400,
        max_steps=5,
        sampler_time=3.0,
    )
    draws = np.asarray(ek.ensemble.flatten(result.particles))
    std = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.25 * std.max())
    np.testing.assert_allclose(draws.std(0), std, rtol=0.25)
    history = result.history
    assert len(history.misfit) == result.num_steps
    assert np.all(np.isnan(history.d_norm[:5])) and np.all(np.isfinite(history.d_norm[5:]))
    assert float(history.time[-1]) == pytest.approx(3.0, rel=1e-4)


def test_eks_recipe_runs_from_a_warm_start_and_aldi_checks_the_ensemble_size():
    problem = pinn.poisson1d(hidden=(4,))  # p = 14
    result = pinn.fit(
        problem,
        jax.random.key(0),
        method="eks",
        ensemble_size=10,  # J < p: EKS is fine, ALDI is not
        max_steps=4,
        sampler_time=0.1,
        warm_start="eki-disc",
    )
    k = np.asarray(problem.constrained(result.particles["phys"])["k"])
    assert k.shape == (10,) and np.all(np.isfinite(k))
    assert result.state.time == pytest.approx(0.1, rel=1e-4)
    with pytest.raises(InputError, match="p \\+ 2 = 16"):
        pinn.fit(problem, jax.random.key(0), method="aldi", ensemble_size=10)
    with pytest.raises(InputError, match="warm_start"):
        pinn.fit(problem, jax.random.key(0), method="eks", warm_start="uki")


# ----------------------------------------------------------------------------- ArviZ export
def test_to_inference_data_from_an_ensemble_and_from_chains():
    az = pytest.importorskip("arviz")
    problem = pinn.damped_oscillator(hidden=(4,))
    particles = problem.prior().sample(jax.random.key(0), 12)
    idata = pinn.to_inference_data(particles, problem, x=problem.grid(5))
    assert isinstance(idata, az.InferenceData)
    post = idata.posterior
    assert post["c"].shape == (1, 12) and post["w2"].shape == (1, 12)
    phys = problem.constrained(particles["phys"])
    np.testing.assert_allclose(post["c"].values[0], phys["c"], rtol=1e-6)
    np.testing.assert_allclose(post["w2"].values[0], phys["w2"], rtol=1e-6)
    np.testing.assert_allclose(
        post["u"].values[0], problem.predict_u(particles, problem.grid(5)), rtol=1e-5
    )
    np.testing.assert_allclose(idata.observed_data["y"].values, problem.observation().y)
    assert idata.posterior.attrs["problem"] == "damped_oscillator"
    # chains x draws (e.g. NUTS): the leading two axes become chain and draw
    chains = jax.tree_util.tree_map(lambda a: a.reshape(3, 4, *a.shape[1:]), particles)
    idata = pinn.to_inference_data(chains, problem)
    assert idata.posterior["c"].shape == (3, 4)
    np.testing.assert_allclose(idata.posterior["c"].values.reshape(-1), phys["c"], rtol=1e-6)
    assert np.isfinite(float(az.rhat(idata, var_names=["c"])["c"]))


def test_to_inference_data_accepts_a_fit_result_and_rejects_bad_input(monkeypatch):
    pytest.importorskip("arviz")
    problem = pinn.poisson1d(hidden=(4,))
    result = pinn.fit(problem, jax.random.key(0), "eki", ensemble_size=8, max_steps=2)
    idata = pinn.to_inference_data(result, problem)
    assert idata.posterior["k"].shape == (1, 8)
    with pytest.raises(InputError):
        pinn.to_inference_data({"k": np.zeros(8)}, problem)
    with pytest.raises(InputError):
        pinn.to_inference_data(result, pinn.damped_oscillator(hidden=(4,)))
    monkeypatch.setitem(__import__("sys").modules, "arviz", None)
    with pytest.raises(ImportError, match="ekibnn\\[arviz\\]"):
        pinn.to_inference_data(result, problem)


def test_to_inference_data_of_the_linearised_default():
    az = pytest.importorskip("arviz")
    problem = pinn.poisson1d(hidden=(4,))
    with pytest.warns(ek.ConvergenceWarning):
        result = pinn.fit(problem, jax.random.key(0), max_steps=3)
    x = problem.grid(7)
    idata = pinn.to_inference_data(result, problem, x=x, key=jax.random.key(1), num=50)
    assert isinstance(idata, az.InferenceData)
    assert idata.posterior["k"].shape == (1, 50) and idata.posterior["u"].shape == (1, 50, 7)
    drawn = pinn.draws(problem, result.posterior, x, jax.random.key(1), 50)
    np.testing.assert_allclose(idata.posterior["k"].values[0], drawn.phys["k"], rtol=1e-6)
    np.testing.assert_allclose(idata.posterior["u"].values[0], drawn.u, rtol=1e-6)
    # the linearised posterior itself, without points: the physical parameters only
    idata = pinn.to_inference_data(result.posterior, problem, num=20)
    assert set(idata.posterior.data_vars) == {"k"} and idata.posterior["k"].shape == (1, 20)
    with pytest.raises(InputError, match="linearised posterior of this problem"):
        pinn.to_inference_data(result, pinn.poisson1d(hidden=(5,)))
