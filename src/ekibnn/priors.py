"""Gaussian priors over parameter pytrees."""

from __future__ import annotations

import functools
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ekibnn._checks import check_key, positive_int
from ekibnn.ensemble import ensemble_size, flatten_member
from ekibnn.errors import input_error

__all__ = ["GaussianPrior"]


@functools.partial(jax.jit, static_argnums=3)
def _draw(key: PRNGKeyArray, means: list, stds: list, num: int) -> list:
    """``means[i] + stds[i] * N(0, I)`` with a leading axis ``num``: ONE draw of all
    ``num x p`` values split into the leaves in order (independent entries; one
    random-number kernel compiles several times faster than one per leaf; one compiled
    program per prior layout, not one per operation)."""
    sizes = [math.prod(m.shape) for m in means]
    dtype = jnp.result_type(*means) if means else jnp.float32
    z = jax.random.normal(key, (num, sum(sizes)), dtype)
    bounds = np.cumsum([0, *sizes])
    return [
        m + s * z[:, a:b].reshape(num, *m.shape).astype(m.dtype)
        for m, s, a, b in zip(means, stds, bounds[:-1], bounds[1:], strict=True)
    ]


def _is_parameter(leaf: Any) -> bool:
    """A floating-point array, or the shape of one (``jax.ShapeDtypeStruct``, e.g. from
    ``eqx.filter_eval_shape(MLP, ...)``: a template that needs no random initialisation)."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return bool(jnp.issubdtype(leaf.dtype, jnp.inexact))
    return eqx.is_inexact_array(leaf)


@eqx.filter_jit
def _filled(params: PyTree, value: Any) -> PyTree:
    """Every leaf of ``params`` (arrays or their shapes) filled with ``value``: one program
    per layout."""
    return jax.tree_util.tree_map(lambda x: jnp.full(x.shape, value, x.dtype), params)


class GaussianPrior(eqx.Module):
    """Independent Gaussian prior ``N(mean, diag(std^2))`` over a parameter pytree.

    Args:
        mean: one member's parameters (any pytree; Equinox modules welcome). Its inexact-array
            leaves are the parameters (finite values); other leaves are static and copied into
            every sample.
        std: a positive finite scalar, or a pytree shaped like ``mean``'s parameters whose leaves
            broadcast against them (e.g. one scalar per layer).

    Raises:
        InputError: for a mean without float leaves or with NaN/inf entries, or a std that is
            not positive and finite or does not match the mean's structure.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> prior = GaussianPrior({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}, std=1.0)
        >>> prior.sample(jax.random.key(0), 5)["w"].shape
        (5, 2, 3)
    """

    mean: PyTree
    std: PyTree

    def __init__(self, mean: PyTree, std: float | PyTree = 1.0):
        dynamic, _ = eqx.partition(mean, eqx.is_inexact_array)
        if not jax.tree_util.tree_leaves(dynamic):
            raise input_error(
                "GaussianPrior mean",
                "a pytree with floating-point array leaves",
                f"{type(mean).__name__} without float leaves",
                "pass float arrays (e.g. jnp.zeros(p)) or an Equinox module",
            )
        for path, leaf in jax.tree_util.tree_flatten_with_path(dynamic)[0]:
            if isinstance(leaf, jax.core.Tracer):
                continue
            bad = np.flatnonzero(~np.isfinite(np.asarray(leaf)))
            if bad.size:
                raise input_error(
                    "GaussianPrior mean",
                    "finite values",
                    f"{bad.size} non-finite value(s) (NaN or inf) in leaf "
                    f"{jax.tree_util.keystr(path) or '<root>'}, first at flat index {int(bad[0])}",
                    "pass a finite prior mean (e.g. jnp.zeros_like(params)); check the model "
                    "initialisation it was built from",
                )
        if isinstance(std, int | float | np.floating) or (hasattr(std, "ndim") and std.ndim == 0):
            std_tree = _filled(dynamic, std)
        else:
            std_dynamic = eqx.filter(std, eqx.is_array_like)
            try:
                std_tree = jax.tree_util.tree_map(
                    lambda m, s: jnp.broadcast_to(jnp.asarray(s, m.dtype), m.shape),
                    dynamic,
                    std_dynamic,
                )
            except (ValueError, TypeError) as err:
                raise input_error(
                    "GaussianPrior std",
                    "a scalar or a pytree with the structure of mean's parameters",
                    f"{type(std).__name__} that does not match ({err})",
                    "use GaussianPrior.like(params, std=...) or one scalar",
                ) from None
        for leaf in jax.tree_util.tree_leaves(std_tree):
            if isinstance(leaf, jax.core.Tracer):
                continue
            values = np.asarray(leaf)
            if not np.all(np.isfinite(values)):
                raise input_error(
                    "GaussianPrior std",
                    "positive finite values",
                    "a non-finite value (inf or NaN)",
                    "pass finite stds > 0; for a weakly informative prior use a large finite "
                    "std on the scale of the parameter (e.g. 10 or 100), not inf",
                )
            if not np.all(values > 0):
                raise input_error(
                    "GaussianPrior std", "positive values", "a value <= 0", "pass stds > 0"
                )
        self.mean = mean
        self.std = std_tree

    @classmethod
    def like(cls, params: PyTree, std: float | PyTree = 1.0, mean: float = 0.0) -> GaussianPrior:
        """A prior with ``params``' structure, every parameter ``N(mean, std^2)``.

        Args:
            params: a template pytree (e.g. an Equinox model); only its structure and shapes
                are used, so its parameter leaves may be ``jax.ShapeDtypeStruct`` (e.g.
                ``eqx.filter_eval_shape(MLP, key, 1, 1)``: no initialisation is computed).
            std: prior std: a scalar or a pytree broadcasting against the parameters.
            mean: the prior mean of every parameter.

        Returns:
            A :class:`GaussianPrior` centred at ``mean`` (non-parameter leaves are kept as
            they are).

        Example:
            >>> import jax
            >>> from ekibnn.bnn import MLP
            >>> prior = GaussianPrior.like(MLP(jax.random.key(0), 1, 1, hidden=(20, 20)), std=1.0)
            >>> prior.num_params
            481
        """
        dynamic, static = eqx.partition(params, _is_parameter)
        return cls(eqx.combine(_filled(dynamic, mean), static), std)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters ``p``.

        Example:
            >>> import jax.numpy as jnp
            >>> GaussianPrior({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}).num_params
            9
        """
        return sum(leaf.size for leaf in jax.tree_util.tree_leaves(self.std))

    def sample(self, key: PRNGKeyArray, num: int) -> PyTree:
        """Draw ``num`` members: a pytree like ``mean`` whose parameter leaves have a leading
        axis of size ``num`` (independent draws).

        Args:
            key: PRNG key (``jax.random.key(seed)``, or a legacy ``jax.random.PRNGKey``).
            num: ensemble size J, a positive integer (NumPy integers are fine).

        Returns:
            The ensemble: the prior mean's pytree with every parameter leaf of shape
            ``(J, *shape)``.

        Raises:
            InputError: if ``key`` is not a PRNG key (e.g. an integer seed) or ``num`` is not a
                positive integer.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> prior = GaussianPrior(jnp.array([0.0, 10.0]), std=jnp.array([1.0, 0.1]))
            >>> ens = prior.sample(jax.random.key(0), 10_000)
            >>> ens.shape
            (10000, 2)
            >>> bool(jnp.allclose(ens.mean(0), jnp.array([0.0, 10.0]), atol=0.05))
            True
            >>> bool(jnp.allclose(ens.std(0), jnp.array([1.0, 0.1]), rtol=0.05))
            True
        """
        check_key(key, "GaussianPrior.sample key")
        num = positive_int(
            num, "GaussianPrior.sample num", "pass the ensemble size J, e.g. prior.sample(key, 100)"
        )
        dynamic, static = eqx.partition(self.mean, eqx.is_inexact_array)
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        drawn = _draw(key, leaves, jax.tree_util.tree_leaves(self.std), num)
        return eqx.combine(jax.tree_util.tree_unflatten(treedef, drawn), static)

    def flat_mean(self) -> Float[Array, " p"]:
        """Prior mean raveled to ``(p,)`` (order of :func:`ekibnn.ensemble.flatten`).

        Example:
            >>> import jax.numpy as jnp
            >>> GaussianPrior({"a": jnp.ones(2), "b": jnp.zeros(1)}).flat_mean().tolist()
            [1.0, 1.0, 0.0]
        """
        return flatten_member(self.mean)

    def flat_std(self) -> Float[Array, " p"]:
        """Prior stds raveled to ``(p,)``.

        Example:
            >>> import jax.numpy as jnp
            >>> GaussianPrior({"a": jnp.ones(2), "b": jnp.zeros(1)}, std=0.5).flat_std().tolist()
            [0.5, 0.5, 0.5]
        """
        return jnp.concatenate([s.reshape(-1) for s in jax.tree_util.tree_leaves(self.std)])

    def log_prob(self, params: PyTree) -> Float[Array, ""]:
        """Log density of one member's parameters.

        Args:
            params: one member's parameters (no ensemble axis), structured like the mean.

        Returns:
            The scalar log density ``log N(params; mean, diag(std^2))``.

        Example:
            >>> import jax.numpy as jnp
            >>> prior = GaussianPrior(jnp.zeros(1), std=1.0)
            >>> round(float(prior.log_prob(jnp.zeros(1))), 4)  # -0.5 log(2 pi)
            -0.9189
        """
        z = (flatten_member(params) - self.flat_mean()) / self.flat_std()
        return (
            -0.5 * jnp.sum(z**2)
            - jnp.sum(jnp.log(self.flat_std()))
            - 0.5 * z.size * jnp.log(2 * jnp.pi)
        )

    def check_particles(self, particles: PyTree) -> int:
        """Raise a clear error unless ``particles`` is an ensemble of this prior's structure;
        return the ensemble size J.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> prior = GaussianPrior(jnp.zeros(3))
            >>> prior.check_particles(prior.sample(jax.random.key(0), 7))
            7
        """
        j = ensemble_size(particles)
        mine = jax.tree_util.tree_structure(eqx.filter(self.mean, eqx.is_inexact_array))
        theirs = jax.tree_util.tree_structure(eqx.filter(particles, eqx.is_inexact_array))
        mine_shapes = [tuple(x.shape) for x in jax.tree_util.tree_leaves(self.std)]
        their_shapes = [
            tuple(x.shape[1:])
            for x in jax.tree_util.tree_leaves(eqx.filter(particles, eqx.is_inexact_array))
        ]
        if mine != theirs or mine_shapes != their_shapes:
            raise input_error(
                "particles",
                f"an ensemble with the prior's structure, leaf shapes (J, *s) for s in "
                f"{mine_shapes}",
                f"structure {theirs} with member shapes {their_shapes}",
                "sample the particles from this prior (prior.sample(key, J))",
            )
        return j
