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
        pinn.build_algorithm(pinn.poisson1d(hidden=(4,)), method="hmc")
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


def test_tiny_poisson_run_reduces_misfit_moves_k_and_writes_outputs(tmp_path):
    """A tiny poisson1d run through run_pinn: the misfit drops, k's mean moves from its prior
    mean 0 towards 0.7, and the JSON and figures are written."""
    metrics = pinn.run_pinn(
        "poisson1d",
        scale=0.2,  # J = 40 members, at most 40 steps
        out_dir=tmp_path,
        progress=False,
        problem_kwargs={"hidden": (16,)},
    )
    assert metrics["method"] == "eki" and metrics["ensemble_size"] == 40
    assert metrics["final_misfit"] < 0.25 * metrics["initial_misfit"]
    k = metrics["parameters"]["k"]
    assert abs(k["mean"] - 0.7) < 0.3, k
    assert k["true"] == 0.7 and k["std"] > 0
    assert metrics["rel_l2_u"] < 0.7
    assert 0.0 <= metrics["coverage_u_95"] <= 1.0 and metrics["wall_time_s"] > 0
    for name in ("metrics.json", "solution.png", "parameters.png"):
        assert (tmp_path / name).exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["parameters"]["k"]["true"] == 0.7
