"""Gaussian priors over parameter pytrees."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ekibnn.ensemble import ensemble_size, flatten_member
from ekibnn.errors import input_error

__all__ = ["GaussianPrior"]


class GaussianPrior(eqx.Module):
    """Independent Gaussian prior ``N(mean, diag(std^2))`` over a parameter pytree.

    Args:
        mean: one member's parameters (any pytree; Equinox modules welcome). Its inexact-array
            leaves are the parameters; other leaves are static and copied into every sample.
        std: a positive scalar, or a pytree shaped like ``mean``'s parameters whose leaves
            broadcast against them (e.g. one scalar per layer).

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
        if isinstance(std, int | float | np.floating) or (hasattr(std, "ndim") and std.ndim == 0):
            std_tree = jax.tree_util.tree_map(lambda m: jnp.full_like(m, std), dynamic)
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
            if not isinstance(leaf, jax.core.Tracer) and not bool(jnp.all(leaf > 0)):
                raise input_error(
                    "GaussianPrior std", "positive values", "a value <= 0", "pass stds > 0"
                )
        self.mean = mean
        self.std = std_tree

    @classmethod
    def like(cls, params: PyTree, std: float | PyTree = 1.0, mean: float = 0.0) -> GaussianPrior:
        """A prior with ``params``' structure, every parameter ``N(mean, std^2)``."""
        centre = jax.tree_util.tree_map(
            lambda x: jnp.full_like(x, mean) if eqx.is_inexact_array(x) else x, params
        )
        return cls(centre, std)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters ``p``."""
        return sum(leaf.size for leaf in jax.tree_util.tree_leaves(self.std))

    def sample(self, key: PRNGKeyArray, num: int) -> PyTree:
        """Draw ``num`` members: a pytree like ``mean`` whose parameter leaves have a leading
        axis of size ``num`` (every leaf gets its own key)."""
        dynamic, static = eqx.partition(self.mean, eqx.is_inexact_array)
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        stds = jax.tree_util.tree_leaves(self.std)
        keys = jax.random.split(key, len(leaves))
        drawn = [
            m + s * jax.random.normal(k, (num, *m.shape), m.dtype)
            for m, s, k in zip(leaves, stds, keys, strict=True)
        ]
        return eqx.combine(jax.tree_util.tree_unflatten(treedef, drawn), static)

    def flat_mean(self) -> Float[Array, " p"]:
        """Prior mean raveled to ``(p,)`` (order of :func:`ekibnn.ensemble.flatten`)."""
        return flatten_member(self.mean)

    def flat_std(self) -> Float[Array, " p"]:
        """Prior stds raveled to ``(p,)``."""
        return jnp.concatenate([s.reshape(-1) for s in jax.tree_util.tree_leaves(self.std)])

    def log_prob(self, params: PyTree) -> Float[Array, ""]:
        """Log density of one member's parameters."""
        z = (flatten_member(params) - self.flat_mean()) / self.flat_std()
        return (
            -0.5 * jnp.sum(z**2)
            - jnp.sum(jnp.log(self.flat_std()))
            - 0.5 * z.size * jnp.log(2 * jnp.pi)
        )

    def check_particles(self, particles: PyTree) -> int:
        """Raise a clear error unless ``particles`` is an ensemble of this prior's structure;
        return the ensemble size J."""
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
