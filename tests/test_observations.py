import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ekibnn as ek


def test_scalar_vector_dense_noise_whiten_alike():
    y = jnp.arange(4.0)
    r = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    stds = jnp.array([1.0, 2.0, 4.0, 8.0])
    a = ek.Observation(y, stds)
    b = ek.Observation(y, jnp.diag(stds**2))
    assert a.is_diagonal and not b.is_diagonal
    np.testing.assert_allclose(a.whiten(r), b.whiten(r), rtol=1e-6)
    np.testing.assert_allclose(ek.Observation(y, 2.0).whiten(r), r / 2.0)
    np.testing.assert_allclose(b.covariance, a.covariance, rtol=1e-6)


def test_dense_whiten_and_colour_are_inverse():
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]])
    obs = ek.Observation(jnp.zeros(3), cov)
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(obs.whiten(obs.colour(z)), z, rtol=1e-5, atol=1e-5)
    # whitened residual norm is the Mahalanobis norm
    r = z[0]
    np.testing.assert_allclose(2 * obs.misfit(-r), r @ np.linalg.solve(cov, r), rtol=1e-5)


def test_subset_keeps_marginal_covariance():
    cov = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 0.5]])
    obs = ek.Observation(jnp.array([1.0, 2.0, 3.0]), cov)
    sub = obs.subset(jnp.array([2, 0]))
    np.testing.assert_allclose(sub.y, [3.0, 1.0])
    np.testing.assert_allclose(sub.covariance, cov[np.ix_([2, 0], [2, 0])], rtol=1e-6)
    diag = ek.Observation(jnp.array([1.0, 2.0, 3.0]), jnp.array([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(diag.subset(jnp.array([1])).std, [0.2])


@pytest.mark.parametrize(
    ("y", "noise", "match"),
    [
        (jnp.zeros((2, 2)), 1.0, "1-D array"),
        (jnp.array([1.0, jnp.nan]), 1.0, "finite values"),
        (jnp.array([1.0, jnp.inf]), 1.0, "finite values"),
        (jnp.zeros(3), 0.0, "positive"),
        (jnp.zeros(3), -1.0, "positive"),
        (jnp.zeros(3), jnp.array([1.0, 1.0]), r"\(3,\) array"),
        (jnp.zeros(2), jnp.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (jnp.zeros(2), jnp.array([[1.0, 2.0], [2.0, 1.0]]), "positive-definite"),
        (jnp.array([1.0, jnp.nan]), jnp.eye(2).at[0, 1].set(jnp.nan), "finite"),
        # float32 data whose squares overflow: refused, not a silent NaN in the loop
        (jnp.array([1e20, 1.0], jnp.float32), 1.0, "standardise the data"),
        (jnp.array([1e17, 1.0], jnp.float32), 1e-3, r"max \|y\| / noise std = 1e\+20"),
        (jnp.array([1e20, 1.0], jnp.float32), jnp.eye(2), "float64"),
    ],
)
def test_bad_observations_raise(y, noise, match):
    with pytest.raises(ek.InputError, match=match) as info:
        ek.Observation(y, noise)
    assert "expected" in str(info.value) and "fix:" in str(info.value)


def test_large_but_safe_float32_data_is_accepted():
    obs = ek.Observation(jnp.array([1e15, -3e14], jnp.float32), 1e14)
    assert bool(jnp.isfinite(obs.misfit(jnp.zeros(2))))
    with jax.enable_x64(True):  # float64 has room for 1e20
        ek.Observation(jnp.array([1e20, 1.0]), 1.0)
