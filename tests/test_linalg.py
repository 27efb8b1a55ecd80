import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ekibnn.linalg import kalman_increment


def _reference(a, b, w):
    a, b, w = (np.asarray(x, np.float64) for x in (a, b, w))
    m = b.shape[1]
    return w @ np.linalg.solve(b.T @ b + np.eye(m), b.T @ a)


@pytest.mark.parametrize(("j", "m", "p"), [(20, 5, 7), (8, 40, 6), (10, 10, 3), (6, 30, 200)])
def test_data_and_ensemble_space_agree(j, m, p):
    ka, kb, kw = jax.random.split(jax.random.key(j * m + p), 3)
    a = jax.random.normal(ka, (j, p)) / np.sqrt(j - 1)
    b = jax.random.normal(kb, (j, m)) / np.sqrt(j - 1)
    w = jax.random.normal(kw, (j, m))
    ref = _reference(a, b, w)
    scale = np.max(np.abs(ref))
    for space in ("data", "ensemble", "auto"):
        out = np.asarray(kalman_increment(a, b, w, space))
        np.testing.assert_allclose(out / scale, ref / scale, atol=2e-5)


def test_single_row_innovation():
    a = jax.random.normal(jax.random.key(1), (12, 4))
    b = jax.random.normal(jax.random.key(2), (12, 30))
    w = jax.random.normal(jax.random.key(3), (1, 30))
    np.testing.assert_allclose(
        kalman_increment(a, b, w, "ensemble"), _reference(a, b, w), rtol=1e-4, atol=1e-5
    )


def _max_square(jaxpr, size):
    """Whether any intermediate in the (nested) jaxpr has two axes of length >= size."""
    found = False
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            if sum(d >= size for d in shape) >= 2:
                found = True
        for param in eqn.params.values():
            subs = param if isinstance(param, list | tuple) else [param]
            for sub in subs:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    found |= _max_square(getattr(inner, "jaxpr", inner), size)
    return found


def test_no_m_by_m_matrix_in_ensemble_space():
    j, m, p = 16, 3000, 50
    a = jnp.ones((j, p))
    b = jnp.ones((j, m))
    w = jnp.ones((j, m))
    jaxpr = jax.make_jaxpr(lambda a, b, w: kalman_increment(a, b, w))(a, b, w)
    assert not _max_square(jaxpr.jaxpr, m)
    # the detector does fire on the data-space path
    jaxpr = jax.make_jaxpr(lambda a, b, w: kalman_increment(a, b, w, "data"))(a, b, w)
    assert _max_square(jaxpr.jaxpr, m)


def test_update_precision_reaches_every_matrix_product_of_the_update():
    """On GPUs/TPUs JAX's default float32 products use TF32/bf16 passes (measured on an H200:
    data- and ensemble-space increments then differ by 4e-3 relative), so the Kalman update
    pins its products to 'highest' unless told otherwise; the forward map keeps the default."""
    import ekibnn as ek

    obs = ek.Observation(jnp.ones(3), 0.1)
    prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
    x0 = prior.sample(jax.random.key(0), 5)
    H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])

    def products(precision, factory=ek.eki):
        algo = factory(lambda th: H @ th, obs, prior=prior, update_precision=precision)
        jaxpr = jax.make_jaxpr(algo.step)(jax.random.key(1), algo.init(x0))
        return [
            eqn.params["precision"]
            for eqn in _equations(jaxpr.jaxpr)
            if eqn.primitive.name == "dot_general"
        ]

    for factory in (ek.eki, ek.etki, ek.uki, ek.eks, ek.aldi):
        pinned = products("highest", factory)
        # the forward's product (H @ theta) keeps the default; all the others are pinned
        assert sum(p is None for p in pinned) == 1, pinned
        assert len(pinned) > 3
        assert all(p is None for p in products(None, factory))


def _equations(jaxpr):
    """Every equation of ``jaxpr``, recursing into sub-jaxprs (cond branches, pjit, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for item in value if isinstance(value, tuple) else (value,):
                inner = getattr(item, "jaxpr", None)
                if inner is not None:
                    yield from _equations(getattr(inner, "jaxpr", inner))
