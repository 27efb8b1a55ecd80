"""Tests for ekibnn.bnn: models, likelihoods and the predictive distribution."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import ekibnn as ek
from ekibnn import bnn
from ekibnn.errors import InputError

# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", sorted(bnn.ACTIVATIONS))
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_mlp_shapes(activation, parameterization):
    model = bnn.MLP(jax.random.key(0), 3, 2, (5, 4), activation, parameterization)
    assert model(jnp.ones((7, 3))).shape == (7, 2)
    assert model(jnp.ones(3)).shape == (2,)
    assert [w.shape for w in model.weights] == [(3, 5), (5, 4), (4, 2)]
    assert [b.shape for b in model.biases] == [(5,), (4,), (2,)]
    assert model.sizes == (3, 5, 4, 2)
    assert bnn.num_params(model) == 3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2


def test_tutorial_network_has_481_parameters():
    assert bnn.num_params(bnn.MLP(jax.random.key(0), 1, 1, (20, 20))) == 481


def test_mlp_standard_is_x_w_plus_b():
    model = bnn.MLP(jax.random.key(1), 2, 1, hidden=(), parameterization="standard")
    x = jnp.array([[1.0, 2.0], [-1.0, 0.5]])
    expected = x @ model.weights[0] + model.biases[0]
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)


def test_mlp_ntk_scales_by_fan_in():
    std = bnn.MLP(jax.random.key(1), 4, 1, hidden=(), parameterization="standard")
    ntk = bnn.MLP(jax.random.key(1), 4, 1, hidden=(), parameterization="ntk")
    np.testing.assert_array_equal(ntk.weights[0], std.weights[0])  # same raw parameters
    x = jax.random.normal(jax.random.key(2), (5, 4))
    expected = x @ std.weights[0] / 2.0 + std.biases[0]
    np.testing.assert_allclose(ntk(x), expected, rtol=1e-5, atol=1e-6)


def test_independent_keys_per_leaf():
    model = bnn.MLP(jax.random.key(0), 3, 3, hidden=(3,))
    leaves = [np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(model)]
    # The tutorial's defect: a (3, 3) weight and (3,) bias drawn with one key share values.
    for i, a in enumerate(leaves):
        for b in leaves[i + 1 :]:
            k = min(a.size, b.size)
            assert not np.allclose(a[:k], b[:k])
    # and the draws look standard normal
    allv = np.concatenate(leaves)
    assert abs(allv.mean()) < 0.6 and 0.5 < allv.std() < 1.6


def test_mlp_rejects_bad_arguments():
    with pytest.raises(InputError, match="activation"):
        bnn.MLP(jax.random.key(0), 1, 1, activation="softsign")
    with pytest.raises(InputError, match="parameterization"):
        bnn.MLP(jax.random.key(0), 1, 1, parameterization="mup")
    with pytest.raises(InputError, match="sizes"):
        bnn.MLP(jax.random.key(0), 1, 1, hidden=(0,))


def _prior_predictive_var(width, parameterization):
    model = bnn.MLP(jax.random.key(0), 1, 1, (width,), "tanh", parameterization)
    parts = ek.GaussianPrior.like(model, 1.0).sample(jax.random.key(1), 200)
    out = bnn.ensemble_apply(parts, jnp.array([[0.5], [1.0]]))[..., 0]
    return float(jnp.mean(jnp.var(out, axis=0)))


def test_ntk_prior_predictive_variance_is_width_independent():
    ntk = [_prior_predictive_var(w, "ntk") for w in (8, 256)]
    standard = [_prior_predictive_var(w, "standard") for w in (8, 256)]
    # NTK: Var = E[tanh^2] + 1, O(1) at every width. Standard: grows ~ linearly with width.
    assert all(0.8 < v < 2.5 for v in ntk)
    assert 0.5 < ntk[1] / ntk[0] < 2.0
    assert standard[1] / standard[0] > 10


def test_ensemble_apply_equals_loop_over_members():
    model = bnn.MLP(jax.random.key(0), 2, 3, (6,), "gelu", "ntk")
    parts = ek.GaussianPrior.like(model).sample(jax.random.key(1), 5)
    x = jax.random.normal(jax.random.key(2), (4, 2))
    fused = bnn.ensemble_apply(parts, x)
    assert fused.shape == (5, 4, 3)
    for j in range(5):
        member = jax.tree_util.tree_map(lambda leaf, j=j: leaf[j], parts)
        np.testing.assert_allclose(fused[j], member(x), rtol=1e-5, atol=1e-6)


def test_ensemble_apply_is_one_fused_vmap():
    model = bnn.MLP(jax.random.key(0), 1, 1, (4,))
    parts = ek.GaussianPrior.like(model).sample(jax.random.key(1), 7)
    jaxpr = jax.make_jaxpr(lambda p, x: bnn.ensemble_apply(p, x))(parts, jnp.ones((3, 1)))
    # a loop over members would leave 7 separate matmuls per layer; vmap leaves one per layer
    assert str(jaxpr).count("dot_general") == 2


# --------------------------------------------------------------------------------------
# Mixed precision: bf16 forward passes, float32 updates
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_bf16_forward_is_close_to_float32_and_returns_float32(parameterization):
    kwargs = {"hidden": (64, 64), "parameterization": parameterization}
    f32 = bnn.MLP(jax.random.key(0), 3, 2, **kwargs)
    bf16 = bnn.MLP(jax.random.key(0), 3, 2, compute_dtype=jnp.bfloat16, **kwargs)
    for a, b in zip(jax.tree_util.tree_leaves(f32), jax.tree_util.tree_leaves(bf16), strict=True):
        assert b.dtype == jnp.float32  # the parameters stay float32
        np.testing.assert_array_equal(a, b)
    x = jax.random.normal(jax.random.key(1), (200, 3))
    ref, low = f32(x), bf16(x)
    assert low.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(ref)))
    err = float(jnp.max(jnp.abs(low - ref))) / scale
    assert 0 < err < 3e-2, err  # bf16 operands (2^-8 relative), float32 accumulation
    hlo = jax.jit(lambda m, x: m(x)).lower(bf16, x).as_text()
    assert "bf16" in hlo and "dot_general" in hlo


def test_bf16_forward_gives_float32_eki_updates_close_to_float32():
    X = jnp.linspace(-2, 2, 40)[:, None]
    lik = bnn.regression(X, jnp.sin(X[:, 0]), 0.1)
    results = {}
    for name, dtype in (("f32", None), ("bf16", jnp.bfloat16)):
        model = bnn.MLP(jax.random.key(0), 1, 1, (16,), parameterization="ntk", compute_dtype=dtype)
        prior = ek.GaussianPrior.like(model)
        algo = ek.eki(lik.forward_fn, lik.obs, prior=prior, scheduler=ek.schedulers.constant(0.1))
        state = algo.init(prior.sample(jax.random.key(1), 32))
        state, info = eqx.filter_jit(algo.step)(jax.random.key(2), state)
        results[name] = (state, info)
    state, info = results["bf16"]
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state.particles)} == {
        np.dtype(np.float32)
    }
    assert info.misfit.dtype == jnp.float32 and state.time.dtype == jnp.float32
    np.testing.assert_allclose(info.misfit, results["f32"][1].misfit, rtol=5e-2)
    for a, b in zip(
        jax.tree_util.tree_leaves(results["f32"][0].particles),
        jax.tree_util.tree_leaves(state.particles),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=0.05 * float(jnp.max(jnp.abs(a))))


def test_bad_compute_dtype_is_refused():
    with pytest.raises(InputError, match="compute_dtype"):
        bnn.MLP(jax.random.key(0), 1, 1, compute_dtype=jnp.int8)
    with pytest.raises(InputError, match="compute_dtype"):
        bnn.MLP(jax.random.key(0), 1, 1, compute_dtype="not-a-dtype")


# --------------------------------------------------------------------------------------
# Likelihoods
# --------------------------------------------------------------------------------------


def test_regression_likelihood_forward_maps():
    model = bnn.MLP(jax.random.key(0), 2, 1, (4,))
    X = jax.random.normal(jax.random.key(1), (6, 2))
    lik = bnn.regression(X, jnp.arange(6.0), 0.5)
    idx = jnp.array([4, 1])
    np.testing.assert_allclose(lik.forward_fn(model), model(X)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(lik.indexed_forward_fn(model, idx), model(X[idx])[:, 0], rtol=1e-6)
    np.testing.assert_allclose(lik.obs.std, 0.5)


def test_regression_multi_output_flat_indexing():
    model = bnn.MLP(jax.random.key(0), 2, 3, (4,))
    X = jax.random.normal(jax.random.key(1), (5, 2))
    lik = bnn.regression(X, jnp.zeros((5, 3)), 1.0)
    full = lik.forward_fn(model)
    idx = jnp.array([0, 7, 14, 5])
    np.testing.assert_allclose(lik.indexed_forward_fn(model, idx), full[idx], rtol=1e-6)
    assert lik.obs.size == 15


def test_classification_likelihood_is_one_hot_vs_softmax():
    model = bnn.MLP(jax.random.key(0), 2, 3, (4,))
    X = jax.random.normal(jax.random.key(1), (4, 2))
    lik = bnn.classification(X, jnp.array([0, 2, 1, 2]), 3)
    np.testing.assert_allclose(lik.obs.y[:6], [1, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(lik.obs.std, bnn.DEFAULT_PSEUDO_NOISE)
    full = lik.forward_fn(model)
    np.testing.assert_allclose(full.reshape(4, 3).sum(axis=1), 1.0, rtol=1e-5)
    idx = jnp.array([11, 3, 4])
    np.testing.assert_allclose(lik.indexed_forward_fn(model, idx), full[idx], rtol=1e-5)
    with pytest.raises(InputError, match="num_classes"):
        bnn.classification(X, jnp.zeros(4, int), 1)


def test_likelihood_shape_errors():
    with pytest.raises(InputError, match="2-D"):
        bnn.regression(jnp.ones(5), jnp.ones(5), 0.1)
    with pytest.raises(InputError, match="regression y"):
        bnn.regression(jnp.ones((5, 1)), jnp.ones(4), 0.1)


def test_noise_em_update_hand_value():
    model = bnn.MLP(jax.random.key(0), 1, 1, hidden=())
    parts = ek.GaussianPrior.like(model).sample(jax.random.key(1), 2)
    # members: f_0 = 0, f_1 = 2 everywhere; data y = 1 -> every squared residual is 1
    parts = eqx.tree_at(
        lambda m: (m.weights, m.biases),
        parts,
        ((jnp.zeros((2, 1, 1)),), (jnp.array([[0.0], [2.0]]),)),
    )
    sigma = bnn.noise_em_update(parts, jnp.ones((3, 1)), jnp.ones(3))
    assert float(sigma) == pytest.approx(1.0)


def test_bnn_eki_fits_sine_with_indexed_minibatches():
    """The tutorial recipe through the low-level API: dt = 1 minibatches, small inflation."""
    x = jnp.linspace(-1.5, 1.5, 64)[:, None]
    y = jnp.sin(math.pi * x[:, 0])
    model = bnn.MLP(jax.random.key(0), 1, 1, (16,), parameterization="ntk")
    prior = ek.GaussianPrior.like(model, 1.0)
    lik = bnn.regression(x, y, 0.05)
    algo = ek.eki(
        lik.indexed_forward_fn,
        lik.obs,
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
        inflation=0.01,
        minibatch=ek.minibatch.random(32),
        indexed_forward=True,
    )
    parts = prior.sample(jax.random.key(1), 32)
    before = bnn.ensemble_apply(parts, x)[..., 0].mean(0)
    res = ek.run(jax.random.key(2), algo, parts, 150, progress=False)
    after = bnn.ensemble_apply(res.particles, x)[..., 0].mean(0)
    rmse_before = float(jnp.sqrt(jnp.mean((before - y) ** 2)))
    rmse_after = float(jnp.sqrt(jnp.mean((after - y) ** 2)))
    assert rmse_after < 0.2 * rmse_before and rmse_after < 0.15


# --------------------------------------------------------------------------------------
# Predictive
# --------------------------------------------------------------------------------------


def test_predictive_decomposition_hand_values():
    preds = jnp.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # J = 3, n = 2
    p = bnn.predictive(preds, jnp.array([1.0, 0.5]))
    np.testing.assert_allclose(p.mean, [2.0, 1.0])
    np.testing.assert_allclose(p.epistemic_std, [math.sqrt(8 / 3), 0.0], rtol=1e-6)
    np.testing.assert_allclose(p.aleatoric_std, [1.0, 0.5])
    np.testing.assert_allclose(p.total_std, [math.sqrt(8 / 3 + 1), 0.5], rtol=1e-6)
    np.testing.assert_allclose(p.total_std**2, p.epistemic_std**2 + p.aleatoric_std**2, rtol=1e-6)


def test_predictive_per_member_noise():
    p = bnn.predictive(jnp.zeros((2, 1)), jnp.array([[1.0], [3.0]]))
    np.testing.assert_allclose(p.aleatoric_std, [math.sqrt(5.0)], rtol=1e-6)


def test_predictive_interval_mixture_matches_scipy():
    preds = jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.5, 3.0]])
    noise = 0.7
    lo, hi = bnn.predictive_interval(preds, noise, level=0.9)
    for i in range(2):
        cdf = lambda t, i=i: np.mean(stats.norm.cdf(t, np.asarray(preds[:, i]), noise))  # noqa: E731
        assert cdf(float(lo[i])) == pytest.approx(0.05, abs=1e-4)
        assert cdf(float(hi[i])) == pytest.approx(0.95, abs=1e-4)


def test_predictive_interval_gaussian_and_single_member():
    preds = jnp.array([[2.0, -1.0]])
    lo, hi = bnn.predictive_interval(preds, 0.5, level=0.95, method="gaussian")
    np.testing.assert_allclose(hi - lo, 2 * 1.959964 * 0.5, rtol=1e-5)
    lo2, hi2 = bnn.predictive_interval(preds, 0.5, level=0.95)
    np.testing.assert_allclose(lo2, lo, atol=1e-4)
    np.testing.assert_allclose(hi2, hi, atol=1e-4)
    with pytest.raises(InputError, match="level"):
        bnn.predictive_interval(preds, 0.5, level=1.5)
    with pytest.raises(InputError, match="method"):
        bnn.predictive_interval(preds, 0.5, method="bootstrap")


def test_predictive_samples_moments():
    preds = jnp.array([[0.0, 10.0], [2.0, 10.0]])
    samples = bnn.predictive_samples(jax.random.key(0), preds, 0.5, num_per_member=4000)
    assert samples.shape == (8000, 2)
    np.testing.assert_allclose(samples.mean(0), [1.0, 10.0], atol=0.05)
    np.testing.assert_allclose(samples.std(0), [math.sqrt(1.25), 0.5], rtol=0.05)


def test_predictive_shape_errors():
    with pytest.raises(InputError, match="member_preds"):
        bnn.predictive(jnp.zeros(3), 1.0)
    with pytest.raises(InputError, match="noise_std"):
        bnn.predictive(jnp.zeros((2, 3)), jnp.ones(4))
