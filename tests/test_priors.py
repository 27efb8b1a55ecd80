import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ekibnn as ek


def test_sample_shapes_moments_and_independent_leaves():
    mean = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    prior = ek.GaussianPrior(mean, std={"w": 2.0, "b": jnp.array([1.0, 2.0, 3.0])})
    s = prior.sample(jax.random.key(0), 20000)
    assert s["w"].shape == (20000, 2, 3) and s["b"].shape == (20000, 3)
    np.testing.assert_allclose(s["w"].mean(0), 1.0, atol=0.05)
    np.testing.assert_allclose(s["w"].std(0), 2.0, rtol=0.03)
    np.testing.assert_allclose(s["b"].std(0), [1.0, 2.0, 3.0], rtol=0.03)
    # leaves use different keys: no correlation between w[0,0] and b[0]
    assert abs(np.corrcoef(s["w"][:, 0, 0], s["b"][:, 0])[0, 1]) < 0.05
    assert prior.num_params == 9
    np.testing.assert_allclose(prior.flat_std()[:3], [1.0, 2.0, 3.0])  # 'b' sorts first


def test_like_equinox_module_keeps_static_parts():
    model = eqx.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
    prior = ek.GaussianPrior.like(model, std=0.5)
    ens = prior.sample(jax.random.key(1), 7)
    assert isinstance(ens, eqx.nn.MLP)
    out = eqx.filter_vmap(lambda m: m(jnp.ones(2)))(ens)
    assert out.shape == (7, 1)
    assert prior.check_particles(ens) == 7


def test_log_prob_matches_closed_form():
    prior = ek.GaussianPrior(jnp.array([1.0, -1.0]), jnp.array([2.0, 0.5]))
    x = jnp.array([0.0, 0.0])
    expected = -0.5 * ((1 / 2) ** 2 + (1 / 0.5) ** 2) - np.log(2 * 0.5) - np.log(2 * np.pi)
    np.testing.assert_allclose(prior.log_prob(x), expected, rtol=1e-6)


def test_bad_prior_inputs():
    with pytest.raises(ek.InputError, match="positive"):
        ek.GaussianPrior(jnp.zeros(2), 0.0)
    with pytest.raises(ek.InputError, match="float"):
        ek.GaussianPrior({"n": 3}, 1.0)
    with pytest.raises(ek.InputError, match="structure"):
        ek.GaussianPrior({"a": jnp.zeros(2)}, {"b": 1.0})


@pytest.mark.parametrize("std", [jnp.inf, jnp.nan, jnp.array([1.0, jnp.inf])])
def test_non_finite_std_is_refused(std):
    with pytest.raises(ek.InputError, match="positive finite values") as info:
        ek.GaussianPrior(jnp.zeros(2), std)
    assert "fix: pass finite stds" in str(info.value)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_non_finite_mean_is_refused(bad):
    with pytest.raises(
        ek.InputError, match=r"non-finite value\(s\).*\['w'\], first at flat index 1"
    ):
        ek.GaussianPrior({"w": jnp.zeros(3).at[1].set(bad), "b": jnp.zeros(1)}, 1.0)


@pytest.mark.parametrize("num", [-1, 0, 2.5, True, "5", None])
def test_sample_size_must_be_a_positive_integer(num):
    with pytest.raises(ek.InputError, match=r"GaussianPrior\.sample num: expected a positive"):
        ek.GaussianPrior(jnp.zeros(2)).sample(jax.random.key(0), num)


def test_sample_accepts_numpy_integers_and_legacy_keys():
    prior = ek.GaussianPrior(jnp.zeros(2))
    typed = prior.sample(jax.random.key(0), np.int64(5))
    legacy = prior.sample(jax.random.PRNGKey(0), np.int32(5))
    assert typed.shape == (5, 2)
    np.testing.assert_array_equal(typed, legacy)  # the same key data, the same draws


@pytest.mark.parametrize(
    ("key", "match"),
    [
        (0, "got the int 0"),
        (np.int64(3), "got the int64 3"),
        (jax.random.split(jax.random.key(0), 3), "a batch of keys of shape"),
        (jnp.zeros(2), "dtype float32"),
    ],
)
def test_sample_refuses_what_is_not_one_key(key, match):
    with pytest.raises(ek.InputError, match=match) as info:
        ek.GaussianPrior(jnp.zeros(2)).sample(key, 5)
    assert "jax.random.key" in str(info.value)


def test_flatten_member_round_trip():
    from ekibnn.ensemble import flatten_member, unflatten_member

    model = eqx.nn.MLP(2, 1, 3, 1, key=jax.random.key(0))
    flat = flatten_member(model)
    back = unflatten_member(flat + 1.0, model)
    assert isinstance(back, eqx.nn.MLP)
    np.testing.assert_allclose(flatten_member(back), flat + 1.0)
