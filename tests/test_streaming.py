"""Streaming minibatches from host arrays and memory-mapped files (ekibnn.streaming)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ekibnn as ek
from ekibnn import bnn
from ekibnn.errors import InputError
from ekibnn.streaming import (
    HostRows,
    host_rows,
    streamed_classification,
    streamed_regression,
)


def _data(n=64, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.sin(X @ np.array([1.0, -0.5, 0.25], np.float32)[:d]).astype(np.float32)
    return X, y


def _run(lik, model, steps=4, batch=16, J=16, **kwargs):
    prior = ek.GaussianPrior.like(model)
    algo = ek.eki(
        lik.indexed_forward_fn,
        lik.obs,
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
        minibatch=ek.minibatch.random(batch),
        indexed_forward=True,
        inflation=0.01,
        **kwargs,
    )
    particles = prior.sample(jax.random.key(1), J)
    return ek.run(jax.random.key(2), algo, particles, steps, progress=False)


def _assert_same(a, b, tol=1e-6):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


def test_streamed_regression_from_memmap_file_equals_in_memory(tmp_path):
    # in float64: the two runs are different programs, and their float32 round-off (which
    # depends on how XLA fuses each) grows by about 1e4 in 4 Kalman updates of 16 members
    X, y = (a.astype(np.float64) for a in _data())
    np.save(tmp_path / "X.npy", X)
    with jax.enable_x64(True):
        model = bnn.MLP(jax.random.key(0), 3, 1, (8,), parameterization="ntk")  # float64
        ref = _run(bnn.regression(X, y, 0.1), model)
        res = _run(streamed_regression(tmp_path / "X.npy", y, 0.1), model)  # np.load(mmap)
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(res.particles)} == {
            jnp.dtype("float64")
        }
        _assert_same(ref.particles, res.particles, tol=1e-10)
        np.testing.assert_allclose(ref.history.misfit, res.history.misfit, rtol=1e-10)
    assert isinstance(host_rows(tmp_path / "X.npy").source, np.memmap)


def _batched(fn, particles, indices):
    return eqx.filter_jit(eqx.filter_vmap(fn, in_axes=(eqx.if_array(0), None)))(particles, indices)


def test_raw_memmap_and_every_likelihood_match_in_memory(tmp_path):
    X, y = _data()
    raw = np.memmap(tmp_path / "X.f32", dtype=np.float32, mode="w+", shape=X.shape)
    raw[:] = X
    raw.flush()
    source = np.memmap(tmp_path / "X.f32", dtype=np.float32, mode="r", shape=X.shape)
    idx = jnp.array([5, 63, 0, 5, 17])
    Y = np.stack([y, -y], axis=1)
    labels = (y > 0).astype(np.int32) + (y > 0.5)
    cases = [
        (1, bnn.regression(X, y, 0.1), streamed_regression(source, y, 0.1), idx),
        (2, bnn.regression(X, Y, 0.1), streamed_regression(source, Y, 0.1), 2 * idx + 1),
        (3, bnn.classification(X, labels, 3), streamed_classification(source, labels, 3), idx),
    ]
    for k, mem, host, indices in cases:
        model = bnn.MLP(jax.random.key(0), 3, k, (8,))
        particles = ek.GaussianPrior.like(model).sample(jax.random.key(1), 4)
        np.testing.assert_allclose(
            _batched(mem.indexed_forward_fn, particles, indices),
            _batched(host.indexed_forward_fn, particles, indices),
            rtol=1e-6,
        )
        # the full forward map (fetches every row) agrees too
        np.testing.assert_allclose(mem.forward_fn(model), host.forward_fn(model), rtol=1e-6)
        np.testing.assert_array_equal(mem.obs.y, host.obs.y)


@pytest.mark.parametrize("forward_batch_size", [None, 4])
def test_rows_are_fetched_once_per_step_only_for_the_batch(forward_batch_size):
    X, y = _data()
    reads = []

    class Counting(HostRows):
        def _read(self, indices):
            reads.append(np.asarray(indices).shape)
            return super()._read(indices)

    model = bnn.MLP(jax.random.key(0), 3, 1, (8,))
    kwargs = {"forward_batch_size": forward_batch_size}
    host = _run(streamed_regression(Counting(X), y, 0.1), model, steps=3, **kwargs)
    # one fetch of b rows per step, shared by all J members (also when they are evaluated
    # forward_batch_size at a time in a lax.map: the pure callback is not repeated per chunk)
    assert reads == [(16,)] * 3
    if forward_batch_size is not None:  # (None is compared with in-memory data above)
        mem = _run(bnn.regression(X, y, 0.1), model, steps=3, **kwargs)
        _assert_same(mem.particles, host.particles)


def test_host_rows_jit_vmap_and_dtypes():
    X = np.arange(20.0).reshape(10, 2)  # float64 on the host
    rows = host_rows(X)
    assert rows.dtype == jnp.float32 and rows.shape == (10, 2)  # canonicalised without x64
    out = jax.jit(rows)(jnp.array([3, 1, 3]))
    np.testing.assert_array_equal(out, X[[3, 1, 3]])
    batched = jax.jit(jax.vmap(rows))(jnp.array([[0, 9], [2, 2]]))  # per-member indices
    np.testing.assert_array_equal(batched, X[[[0, 9], [2, 2]]])
    assert host_rows(np.arange(6).reshape(3, 2)).dtype == jnp.float32  # integers -> float
    assert "HostRows(ndarray, shape=(10, 2)" in repr(rows)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (np.zeros(5), "2-D array"),
        (jnp.zeros((5, 2)), "JAX array"),
        ([[1.0, 2.0]], "NumPy array"),
        ("missing.npy", ".npy file"),
        (np.array([["a"]]), "floating or integer"),
    ],
)
def test_bad_sources_are_refused(source, match):
    with pytest.raises(InputError, match=match):
        host_rows(source)


def test_bad_targets_and_indices_are_refused(tmp_path):
    X, y = _data()
    with pytest.raises(InputError, match="one target per row"):
        streamed_regression(X, y[:10], 0.1)
    with pytest.raises(InputError, match="integer class indices"):
        streamed_classification(X, y, 3)
    with pytest.raises(InputError, match="integer >= 2"):
        streamed_classification(X, np.zeros(64, np.int32), 1)
    with pytest.raises(InputError, match="integer array"):
        host_rows(X)(jnp.array([0.5]))
    (tmp_path / "X.csv").write_text("1,2\n")
    with pytest.raises(InputError, match=r"\.npy file"):
        host_rows(tmp_path / "X.csv")
    with pytest.raises(Exception, match=r"row indices in \[0, 64\)"):
        jax.block_until_ready(jax.jit(host_rows(X))(jnp.array([64])))
