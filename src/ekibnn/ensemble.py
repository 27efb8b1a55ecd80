"""Ensembles as pytrees with a leading axis of size J, and their (masked) statistics.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from ekibnn import GaussianPrior
    >>> particles = GaussianPrior({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}).sample(
    ...     jax.random.key(0), 5)
    >>> x = flatten(particles)                       # (J, p) at the linear-algebra boundary
    >>> x.shape, ensemble_size(particles)
    ((5, 9), 5)
    >>> bool(jnp.all(unflatten(x, particles)["w"] == particles["w"]))
    True

Parameters may be any pytree (dicts, tuples, Equinox modules). Only inexact-array leaves are
parameters; other leaves (activation functions, ints) are static and shared by all members. The
algorithms ravel the parameters to a ``(J, p)`` matrix only at the linear-algebra boundary.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PyTree

from ekibnn.errors import input_error

__all__ = [
    "Layout",
    "ensemble_size",
    "flatten",
    "flatten_member",
    "masked_anomalies",
    "masked_mean",
    "redraw_failed",
    "unflatten",
    "unflatten_member",
]


def _dynamic(tree: PyTree) -> list[Array]:
    return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))


def ensemble_size(particles: PyTree) -> int:
    """Size J of the leading axis shared by every parameter leaf.

    Args:
        particles: an ensemble: a pytree whose floating-point leaves have shapes ``(J, ...)``.

    Returns:
        ``J`` as a Python int.

    Raises:
        InputError: if there are no floating-point leaves or their leading sizes differ.

    Example:
        >>> import jax.numpy as jnp
        >>> ensemble_size({"w": jnp.zeros((10, 3)), "b": jnp.zeros(10)})
        10
    """
    leaves = _dynamic(particles)
    if not leaves:
        raise input_error(
            "particles",
            "a pytree with at least one floating-point array leaf",
            "no floating-point leaves",
            "pass parameters as float arrays (e.g. prior.sample(key, J))",
        )
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise input_error(
            "particles",
            "every parameter leaf with the same leading ensemble axis (J, ...)",
            f"leading sizes {sorted(str(s) for s in sizes)}",
            "build the ensemble with prior.sample(key, J) or eqx.filter_vmap",
        )
    return sizes.pop()


def flatten(particles: PyTree) -> Float[Array, "J p"]:
    """Ravel every member's parameters into one row: ``(J, p)``, leaves in ``tree_leaves``
    order, each leaf row-major (the same order as :func:`flatten_member`).

    Args:
        particles: an ensemble (floating-point leaves ``(J, ...)``; other leaves are ignored).

    Returns:
        ``(J, p)`` matrix in the promoted floating dtype of the leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> flatten({"a": jnp.zeros((4, 2, 3)), "b": jnp.ones(4)}).shape
        (4, 7)
    """
    leaves = _dynamic(particles)
    j = leaves[0].shape[0]
    dtype = jnp.result_type(*leaves)
    return jnp.concatenate([leaf.reshape(j, -1).astype(dtype) for leaf in leaves], axis=1)


def flatten_member(tree: PyTree) -> Float[Array, " p"]:
    """Ravel one member's parameters into a ``(p,)`` vector (order as in :func:`flatten`).

    Args:
        tree: one member's parameters (no ensemble axis).

    Returns:
        ``(p,)`` vector.

    Example:
        >>> import jax.numpy as jnp
        >>> flatten_member({"a": jnp.zeros((2, 3)), "b": jnp.ones(1)}).tolist()
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    """
    leaves = _dynamic(tree)
    dtype = jnp.result_type(*leaves)
    return jnp.concatenate([leaf.reshape(-1).astype(dtype) for leaf in leaves])


def unflatten(x: Float[Array, "J p"], template: PyTree) -> PyTree:
    """Inverse of :func:`flatten`: rows of ``x`` back into a pytree shaped like ``template``
    (an ensemble), keeping the template's static leaves and leaf dtypes.

    Args:
        x: ``(J, p)`` matrix.
        template: an ensemble with the target structure and leaf shapes ``(J, ...)``.

    Returns:
        An ensemble like ``template`` holding the values of ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> template = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(2)}
        >>> back = unflatten(jnp.arange(8.0).reshape(2, 4), template)
        >>> back["a"].tolist(), back["b"].tolist()
        ([[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]], [3.0, 7.0])
    """
    dynamic, static = eqx.partition(template, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(dynamic)
    out, start = [], 0
    for leaf in leaves:
        size = math.prod(leaf.shape[1:])
        out.append(x[:, start : start + size].reshape(leaf.shape).astype(leaf.dtype))
        start += size
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, out), static)


def unflatten_member(x: Float[Array, " p"], template: PyTree) -> PyTree:
    """Inverse of :func:`flatten_member`: a ``(p,)`` vector back into one member shaped like
    ``template`` (a single member, no ensemble axis), keeping its static leaves and dtypes.

    Args:
        x: ``(p,)`` vector.
        template: one member with the target structure.

    Returns:
        A member like ``template`` holding the values of ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> unflatten_member(jnp.arange(3.0), {"a": jnp.zeros(2), "b": jnp.zeros(())})["a"]
        Array([0., 1.], dtype=float32)
    """
    dynamic, static = eqx.partition(template, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(dynamic)
    out, start = [], 0
    for leaf in leaves:
        out.append(x[start : start + leaf.size].reshape(leaf.shape).astype(leaf.dtype))
        start += leaf.size
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, out), static)


class Layout(eqx.Module):
    """How one member's parameter pytree maps to a ``(p,)`` vector: the structure, the shapes and
    dtypes of its floating-point leaves and its static (non-parameter) leaves. Every field is
    static, so a Layout is part of a state's tree structure, never a leaf: states stay flat
    ``(J, p)`` arrays inside the compiled loop and are turned back into pytrees only where a
    member is evaluated (:meth:`member`) or handed to the user (:meth:`unflatten`). Equal
    layouts compare and hash equal, so they never cause a recompilation.

    Example:
        >>> import jax.numpy as jnp
        >>> layout = Layout.of_ensemble({"w": jnp.zeros((4, 2, 3)), "b": jnp.zeros(4)})
        >>> layout.num_params, layout.member(jnp.arange(7.0))["w"].shape
        (7, (2, 3))
    """

    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dtypes: tuple[Any, ...] = eqx.field(static=True)
    static_leaves: tuple[Any, ...] = eqx.field(static=True)
    static_treedef: Any = eqx.field(static=True)

    @classmethod
    def of_member(cls, tree: PyTree) -> Layout:
        """The layout of one member's parameters (no ensemble axis)."""
        return cls._of(tree, 0)

    @classmethod
    def of_ensemble(cls, particles: PyTree) -> Layout:
        """The layout of one member of an ensemble (leading axis J on every parameter leaf;
        read from the shapes, no member is sliced out)."""
        return cls._of(particles, 1)

    @classmethod
    def _of(cls, tree: PyTree, leading: int) -> Layout:
        dynamic, static = eqx.partition(tree, eqx.is_inexact_array)
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        static_leaves, static_treedef = jax.tree_util.tree_flatten(static)
        return cls(
            treedef,
            tuple(tuple(leaf.shape[leading:]) for leaf in leaves),
            tuple(jnp.dtype(leaf.dtype) for leaf in leaves),
            tuple(_hashable(leaf) for leaf in static_leaves),
            static_treedef,
        )

    @property
    def num_params(self) -> int:
        """Number of scalar parameters ``p``."""
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def dtype(self) -> Any:
        """The promoted floating dtype of the flat vectors."""
        return jnp.result_type(*self.dtypes)

    def _combine(self, leaves: list[Array]) -> PyTree:
        static = jax.tree_util.tree_unflatten(
            self.static_treedef, [_unwrap(leaf) for leaf in self.static_leaves]
        )
        return eqx.combine(jax.tree_util.tree_unflatten(self.treedef, leaves), static)

    def member(self, x: Float[Array, " p"]) -> PyTree:
        """One member's pytree from its ``(p,)`` vector (leaf dtypes restored)."""
        out, start = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            size = math.prod(shape)
            out.append(x[start : start + size].reshape(shape).astype(dtype))
            start += size
        return self._combine(out)

    def unflatten(self, x: Float[Array, "J p"]) -> PyTree:
        """The ensemble pytree from its ``(J, p)`` matrix."""
        out, start = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            size = math.prod(shape)
            out.append(x[:, start : start + size].reshape(x.shape[0], *shape).astype(dtype))
            start += size
        return self._combine(out)


class _Unhashable:
    """A static leaf that cannot be hashed (e.g. a NumPy array), compared by identity."""

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable) and other.value is self.value


def _hashable(leaf: Any) -> Any:
    try:
        hash(leaf)
    except TypeError:
        return _Unhashable(leaf)
    return leaf


def _unwrap(leaf: Any) -> Any:
    return leaf.value if isinstance(leaf, _Unhashable) else leaf


def masked_mean(x: Float[Array, "J d"], mask: Bool[Array, " J"], count: Array) -> Array:
    """Mean over the members where ``mask`` is true.

    Args:
        x: ``(J, d)`` values, one row per member.
        mask: ``(J,)`` booleans, the members to include.
        count: the number of true entries of ``mask`` (passed in: it is usually needed again).

    Returns:
        ``(d,)`` mean of the masked-in rows.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0], [3.0], [100.0]])
        >>> masked_mean(x, jnp.array([True, True, False]), 2).tolist()
        [2.0]
    """
    return jnp.sum(jnp.where(mask[:, None], x, 0), axis=0) / count


def masked_anomalies(
    x: Float[Array, "J d"], mask: Bool[Array, " J"], count: Array
) -> tuple[Array, Array]:
    """Return ``(mean, A)`` with ``A_j = (x_j - mean) / sqrt(count - 1)`` for masked-in members
    and 0 elsewhere, so that ``A.T @ A`` is the unbiased sample covariance of the good members.

    Args:
        x: ``(J, d)`` values, one row per member.
        mask: ``(J,)`` booleans, the members to include.
        count: the number of true entries of ``mask``.

    Returns:
        ``(mean, A)``: the ``(d,)`` masked mean and the ``(J, d)`` scaled anomalies.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0], [3.0], [100.0]])
        >>> mean, a = masked_anomalies(x, jnp.array([True, True, False]), 2)
        >>> (a.T @ a).tolist()  # the sample variance of 1 and 3
        [[2.0]]
    """
    mean = masked_mean(x, mask, count)
    anomalies = jnp.where(mask[:, None], x - mean, 0) / jnp.sqrt(count - 1)
    return mean, anomalies


def redraw_failed(
    key: Array, x: Float[Array, "J d"], ok: Bool[Array, " J"], count: Array
) -> Float[Array, "J d"]:
    """Replace the rows where ``ok`` is false by draws from the Gaussian fitted to the good
    rows (``mean + z @ A`` with ``z ~ N(0, I_J)`` and ``A`` their anomalies, so no (d, d)
    covariance is formed). Skipped (``lax.cond``) when every member is good.

    This is how the ensemble Kalman algorithms handle members whose forward output is not
    finite: they are left out of the statistics and redrawn after the update.

    Args:
        key: PRNG key for the redraws.
        x: ``(J, d)`` members (rows).
        ok: ``(J,)`` booleans, the good members.
        count: the number of true entries of ``ok`` (at least 2).

    Returns:
        ``(J, d)``: ``x`` with its bad rows replaced.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0], [2.0], [jnp.nan]])
        >>> ok = jnp.array([True, True, False])
        >>> out = redraw_failed(jax.random.key(0), x, ok, 2)
        >>> bool(jnp.all(jnp.isfinite(out))), out[:2].tolist()
        (True, [[0.0], [2.0]])
    """

    def redraw(x):
        mean, anomalies = masked_anomalies(x, ok, count)
        z = jax.random.normal(key, (x.shape[0], x.shape[0]), x.dtype)
        return jnp.where(ok[:, None], x, mean + z @ anomalies)

    return jax.lax.cond(count < x.shape[0], redraw, lambda x: x, x)


def tree_shapes(tree: Any) -> list[tuple[int, ...]]:
    """Shapes of the parameter leaves (helper for error messages).

    Example:
        >>> import jax.numpy as jnp
        >>> tree_shapes({"a": jnp.zeros((2, 3)), "n": 3})
        [(2, 3)]
    """
    return [tuple(leaf.shape) for leaf in _dynamic(tree)]
