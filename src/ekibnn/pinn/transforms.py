"""Bijections between a physical parameter's constrained value and the unconstrained real that
the ensemble carries.

Ensemble Kalman updates are additive and Gaussian, so a parameter that must stay positive or in
an interval is carried as an unconstrained real ``z`` and mapped back with ``to_constrained``:

* :class:`Identity`: ``k = z`` (no constraint);
* :class:`Positive`: ``k = lower + exp(z)`` (log transform; ``lower = 0`` by default);
* :class:`Bounded`: ``k = low + (high - low) * sigmoid(z)`` (logit transform).

A Gaussian prior ``N(m, s^2)`` on ``z`` is a log-normal prior on ``k - lower`` for
:class:`Positive` and a logit-normal prior on ``(k - low) / (high - low)`` for :class:`Bounded`.

Example:
    >>> import jax.numpy as jnp
    >>> t = Bounded(0.0, 2.0)
    >>> float(t.to_constrained(t.to_unconstrained(jnp.asarray(0.5))))
    0.5
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ekibnn.errors import input_error

__all__ = ["Bounded", "Identity", "Positive", "Transform"]


class Transform(eqx.Module):
    """Base class: an elementwise bijection ``R -> constrained set``."""

    def to_constrained(self, z: ArrayLike) -> Array:
        """Map the unconstrained value ``z`` to the constrained parameter."""
        raise NotImplementedError

    def to_unconstrained(self, k: ArrayLike) -> Array:
        """Inverse of :meth:`to_constrained`."""
        raise NotImplementedError


class Identity(Transform):
    """``k = z``: an unconstrained real parameter."""

    def to_constrained(self, z: ArrayLike) -> Array:
        return jnp.asarray(z)

    def to_unconstrained(self, k: ArrayLike) -> Array:
        return jnp.asarray(k)


class Positive(Transform):
    """``k = lower + exp(z)``: a parameter strictly greater than ``lower`` (log transform)."""

    lower: float = eqx.field(static=True, default=0.0)

    def to_constrained(self, z: ArrayLike) -> Array:
        return self.lower + jnp.exp(z)

    def to_unconstrained(self, k: ArrayLike) -> Array:
        return jnp.log(jnp.asarray(k) - self.lower)


class Bounded(Transform):
    """``k = low + (high - low) * sigmoid(z)``: a parameter in the open interval (low, high)."""

    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)

    def __init__(self, low: float, high: float):
        if not float(high) > float(low):
            raise input_error(
                "Bounded transform",
                "low < high",
                f"low={low!r}, high={high!r}",
                "pass the interval's ends in increasing order",
            )
        self.low = float(low)
        self.high = float(high)

    def to_constrained(self, z: ArrayLike) -> Array:
        return self.low + (self.high - self.low) * jax.nn.sigmoid(z)

    def to_unconstrained(self, k: ArrayLike) -> Array:
        u = (jnp.asarray(k) - self.low) / (self.high - self.low)
        return jnp.log(u) - jnp.log1p(-u)
