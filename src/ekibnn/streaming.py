"""Minibatches streamed from host memory or a memory-mapped file, inside the compiled loop.

The in-memory likelihoods of :mod:`ekibnn.bnn` put the whole input matrix ``X`` (n, d) on the
device. When ``X`` does not fit there (or not even in host RAM), keep it on the host -- a NumPy
array, a ``np.memmap`` or ``np.load(path, mmap_mode="r")`` -- and let each EKI step fetch only the
rows of its minibatch:

    lik = ek.streaming.streamed_regression("X.npy", y, noise_std=0.1)   # X stays on disk
    algo = ek.eki(lik.indexed_forward_fn, lik.obs, minibatch=ek.minibatch.random(256),
                  indexed_forward=True)
    result = ek.run(key, algo, particles, num_steps=1000)              # one compiled loop

Inside the compiled ``while_loop`` the step draws its minibatch indices on the device; the
forward map calls back to the host with :func:`jax.pure_callback`, which reads ``X[indices]``
(sorted, so a memory map is read in file order) and returns a ``(b, d)`` array; the network then
runs on it. A read of immutable data is a pure function of the indices, so ``pure_callback`` is
the right primitive: under ``jax.vmap`` over the ensemble (the indices are shared by all members)
the rows are fetched once per step, and XLA may hoist the fetch out of a ``jax.lax.map`` over
member chunks (``forward_batch_size``). Do not modify the source while a run uses it.

Only ``X`` is streamed: the targets ``y`` (n values, or n x K one-hot entries for
classification) live in the :class:`ekibnn.Observation` on the device, which is O(n) and small
next to an O(n d) input matrix.

When to use it: when ``n * d * itemsize`` is more than a small fraction of the device memory, or
when ``X`` is a file larger than host RAM. Costs: one device-to-host-to-device round trip per
step (``b * d`` values), which on CPU is a memory copy and on an accelerator a PCIe transfer plus
a synchronisation point; with ``b * d`` small against the step's compute (``J * b * width`` MACs
per layer) it is negligible. If ``X`` fits on the device, use :func:`ekibnn.bnn.regression` /
:func:`ekibnn.bnn.classification` (same numbers, no callback). With a ``mesh`` the callback runs
on one device per step and its rows are broadcast; in a multi-process run every process must be
able to read the same source (e.g. a shared file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ekibnn.bnn.likelihoods import DEFAULT_PSEUDO_NOISE, Likelihood
from ekibnn.errors import input_error
from ekibnn.observations import Observation

__all__ = ["HostRows", "host_rows", "streamed_classification", "streamed_regression"]

Source = np.ndarray | str | os.PathLike


class HostRows:
    """A read-only 2-D host array (NumPy array, ``np.memmap`` or a ``.npy`` file opened with
    ``mmap_mode="r"``) whose rows can be fetched from inside compiled JAX code.

    Calling ``rows(indices)`` (``indices`` an integer JAX array of any shape, traced or not)
    returns ``source[indices]`` as a JAX array of shape ``(*indices.shape, d)`` and dtype
    :attr:`dtype`. Out-of-range indices raise an error from the callback.

    Attributes:
        source: the host array (not copied).
        shape: ``(n, d)``.
        dtype: the JAX dtype of the fetched rows (the source's floating dtype as JAX would
            canonicalise it, e.g. float64 -> float32 without x64; integer sources give the
            default float).
    """

    def __init__(self, source: Source, dtype: jnp.dtype | None = None):
        self.source = _open(source)
        self.shape = tuple(self.source.shape)
        if dtype is None:
            floating = np.issubdtype(self.source.dtype, np.floating)
            dtype = self.source.dtype if floating else jnp.result_type(float)
        self.dtype = jax.dtypes.canonicalize_dtype(dtype)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        flat = idx.reshape(-1)
        n = self.shape[0]
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(
                f"HostRows: expected row indices in [0, {n}); got min {flat.min()}, "
                f"max {flat.max()}; fix: index only rows of the source"
            )
        order = np.argsort(flat, kind="stable")  # read a memory map in file order
        out = np.empty((flat.size, self.shape[1]), dtype=self.dtype)
        out[order] = self.source[flat[order]]
        return out.reshape(*idx.shape, self.shape[1])

    def __call__(self, indices: Int[Array, " ..."]) -> Float[Array, "... d"]:
        indices = jnp.asarray(indices)
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise input_error(
                "HostRows indices",
                "an integer array of row indices",
                f"dtype {indices.dtype}",
                "pass e.g. jnp.arange(b) or the minibatch indices",
            )
        rows = (*indices.shape, self.shape[1])
        if np.dtype(self.dtype).itemsize == 8:
            # float64 rows travel as pairs of uint32 words: JAX canonicalises a callback's
            # results under the callback thread's own x64 setting, which a ``jax.enable_x64``
            # context in the calling thread does not reach (float64 would arrive as float32)
            words = jax.ShapeDtypeStruct((*rows, 2), jnp.uint32)
            raw = jax.pure_callback(self._read_words, words, indices, vmap_method="expand_dims")
            return jax.lax.bitcast_convert_type(raw, self.dtype)
        shape = jax.ShapeDtypeStruct(rows, self.dtype)
        return jax.pure_callback(self._read, shape, indices, vmap_method="expand_dims")

    def _read_words(self, indices: np.ndarray) -> np.ndarray:
        """:meth:`_read`'s 8-byte rows as ``(..., d, 2)`` uint32 words (same bytes)."""
        rows = np.ascontiguousarray(self._read(indices))
        return rows.view(np.uint32).reshape(*rows.shape, 2)

    def __repr__(self) -> str:
        kind = type(self.source).__name__
        return f"HostRows({kind}, shape={self.shape}, dtype={np.dtype(self.dtype).name})"


def _open(source: Source) -> np.ndarray:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.suffix != ".npy" or not path.is_file():
            raise input_error(
                "streaming source",
                "an existing .npy file (opened with np.load(path, mmap_mode='r'))",
                f"path {str(path)!r}",
                "save the inputs with np.save('X.npy', X), or pass a np.memmap / NumPy array",
            )
        source = np.load(path, mmap_mode="r")
    if isinstance(source, jax.Array):
        raise input_error(
            "streaming source",
            "a host array (NumPy array, np.memmap or a .npy path)",
            "a JAX array, already on the device",
            "use ekibnn.bnn.regression / classification for data that fits on the device",
        )
    if not isinstance(source, np.ndarray):
        raise input_error(
            "streaming source",
            "a NumPy array, np.memmap or a .npy path",
            type(source).__name__,
            "convert with np.asarray(...) or save with np.save and pass the path",
        )
    if source.ndim != 2:
        raise input_error(
            "streaming source",
            "a 2-D array of shape (n, num_features)",
            f"shape {tuple(source.shape)}",
            "reshape a single feature with x.reshape(-1, 1) before saving",
        )
    if not (np.issubdtype(source.dtype, np.floating) or np.issubdtype(source.dtype, np.integer)):
        raise input_error(
            "streaming source", "a floating or integer array", f"dtype {source.dtype}", ""
        )
    return source


def host_rows(source: Source, dtype: jnp.dtype | None = None) -> HostRows:
    """Wrap a host array, ``np.memmap`` or ``.npy`` path (opened memory-mapped) as a
    :class:`HostRows` row fetcher usable inside ``jit``.

    Example:
        >>> import numpy as np, jax, jax.numpy as jnp
        >>> rows = host_rows(np.arange(12.0).reshape(6, 2))
        >>> jax.jit(lambda i: rows(i).sum())(jnp.array([0, 5]))
        Array(22., dtype=float32)
    """
    return HostRows(source, dtype)


def _check_rows(name: str, rows: HostRows, count: int) -> None:
    if count != rows.shape[0]:
        raise input_error(
            name,
            f"one target per row of X: {rows.shape[0]}",
            f"{count}",
            "pass targets in the same row order as the streamed inputs",
        )


def _full_forward(rows: HostRows, fn: Callable[[Array], Array]) -> Callable:
    def forward_fn(model):
        # Fetches every row: only for small sources (checks, predictions on the training set).
        return fn(model(rows(jnp.arange(rows.shape[0]))))

    return forward_fn


def streamed_regression(X: Source | HostRows, y: ArrayLike, noise_std: ArrayLike) -> Likelihood:
    """:func:`ekibnn.bnn.regression` with ``X`` streamed from the host (see the module
    docstring). Same flat index convention (``i k + c`` is point ``i``, output ``c``) and, on the
    same data, the same numbers as the in-memory version.

    Args:
        X: ``(n, d)`` host array, ``np.memmap``, ``.npy`` path or :class:`HostRows`.
        y: ``(n,)`` or ``(n, k)`` targets (on the device).
        noise_std: scalar or broadcastable to ``y``.

    Returns:
        A :class:`ekibnn.bnn.Likelihood`; use ``indexed_forward_fn`` with
        ``ek.eki(..., minibatch=ek.minibatch.random(b), indexed_forward=True)``. Its
        ``forward_fn`` fetches all rows.
    """
    rows = X if isinstance(X, HostRows) else host_rows(X)
    y = jnp.asarray(y)
    if y.ndim not in (1, 2):
        raise input_error(
            "streamed_regression y", "shape (n,) or (n, k)", f"shape {tuple(y.shape)}", ""
        )
    _check_rows("streamed_regression y", rows, y.shape[0])
    k = 1 if y.ndim == 1 else y.shape[1]
    noise = jnp.asarray(noise_std, dtype=rows.dtype)
    if noise.ndim > 0:
        noise = jnp.broadcast_to(noise, y.shape).reshape(-1)

    def indexed_forward_fn(model, indices):
        if k == 1:
            return model(rows(indices))[:, 0]
        out = model(rows(indices // k))  # (b, k)
        return jnp.take_along_axis(out, (indices % k)[:, None], axis=1)[:, 0]

    obs = Observation(y.reshape(-1).astype(rows.dtype), noise)
    forward_fn = _full_forward(rows, lambda out: out.reshape(-1))
    return Likelihood(forward_fn, indexed_forward_fn, obs)


def streamed_classification(
    X: Source | HostRows,
    labels: ArrayLike,
    num_classes: int,
    pseudo_noise: float = DEFAULT_PSEUDO_NOISE,
) -> Likelihood:
    """:func:`ekibnn.bnn.classification` with ``X`` streamed from the host (see the module
    docstring): one-hot labels observed against softmax probabilities; flat index ``i K + c``.

    Args:
        X: ``(n, d)`` host array, ``np.memmap``, ``.npy`` path or :class:`HostRows`.
        labels: ``(n,)`` integer classes in ``[0, num_classes)``.
        num_classes: K.
        pseudo_noise: pseudo-noise std (scalar or ``(n,)``).

    Returns:
        A :class:`ekibnn.bnn.Likelihood`.
    """
    rows = X if isinstance(X, HostRows) else host_rows(X)
    labels = jnp.asarray(labels)
    if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise input_error(
            "streamed_classification labels",
            "integer class indices of shape (n,)",
            f"shape {tuple(labels.shape)}, dtype {labels.dtype}",
            "encode labels as 0..K-1",
        )
    _check_rows("streamed_classification labels", rows, labels.shape[0])
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise input_error(
            "streamed_classification num_classes", "an integer >= 2", repr(num_classes), ""
        )
    onehot = jax.nn.one_hot(labels, num_classes, dtype=rows.dtype).reshape(-1)

    def indexed_forward_fn(model, indices):
        probs = jax.nn.softmax(model(rows(indices // num_classes)), axis=-1)  # (b, K)
        return jnp.take_along_axis(probs, (indices % num_classes)[:, None], axis=1)[:, 0]

    noise = jnp.asarray(pseudo_noise, rows.dtype)
    if noise.ndim == 1:
        noise = jnp.repeat(noise, num_classes)
    forward_fn = _full_forward(rows, lambda out: jax.nn.softmax(out, axis=-1).reshape(-1))
    return Likelihood(forward_fn, indexed_forward_fn, Observation(onehot, noise))
