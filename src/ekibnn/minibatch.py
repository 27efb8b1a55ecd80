"""Minibatching: which observations each step of an ensemble Kalman method assimilates.

A minibatcher is an Equinox module (a value; its batch size is a static field) with its own
state:

* :func:`full` (the default): every step sees all ``m`` observations;
* :func:`random`: a fresh random subset of ``b`` observations (without replacement) every
  step, as in Kovachki & Stuart (2019, Sec. 3); the algorithm time then counts steps of ``dt``;
* :func:`epoch`: the posterior-preserving scheme. The observations are split into
  ``B = m / b`` disjoint batches by a fresh random permutation per epoch; the algorithm holds
  one ``dt`` for the whole epoch (:class:`ekibnn.schedulers.Hold`) and advances its time by
  ``dt`` per *epoch*. Each observation's likelihood is thus tempered by exactly the algorithm
  time, so a run to ``T = 1`` counts every observation once in total (multiple data
  assimilation, Emerick & Reynolds 2013, over minibatches; exact in the linear-Gaussian
  mean-field limit, because sequential Kalman updates with independent batch noises compose to
  the full-batch update).

Example:
    >>> import jax
    >>> batcher = epoch(4)
    >>> batcher.period(12), batcher.size(12)
    (3, 4)
    >>> state = batcher.init(12)
    >>> indices, state = batcher.next(jax.random.key(0), state, 0, 12)
    >>> indices.shape
    (4,)
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from ekibnn.errors import input_error

__all__ = ["Epoch", "EpochState", "Full", "Minibatch", "Random", "epoch", "full", "random"]


class Minibatch(eqx.Module):
    """Base class: ``init(m) -> state``; ``next(key, state, step, m) -> (indices, state)`` with
    ``indices`` the ``(b,)`` observations of this step, or None for all of them."""

    def check(self, m: int) -> None:
        """Raise :class:`ekibnn.InputError` unless this minibatcher fits ``m`` observations."""

    def size(self, m: int) -> int:
        """Observations per step."""
        return m

    def period(self, m: int) -> int:
        """Steps that share one ``dt`` and one unit of algorithm time (1, or ``m / b`` for
        :class:`Epoch`)."""
        return 1

    def init(self, m: int) -> Any:
        """The minibatcher's own state."""
        return ()

    def next(
        self, key: PRNGKeyArray, state: Any, step: Array, m: int
    ) -> tuple[Int[Array, " b"] | None, Any]:
        """This step's observation indices (None: all) and the new state."""
        return None, state


class Full(Minibatch):
    """Every step sees every observation."""


def full() -> Full:
    """The full-batch minibatcher (the default of the ensemble methods).

    Example:
        >>> full().size(10)
        10
    """
    return Full()


def _check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool):
        raise input_error(
            "batch_size", "a positive integer", repr(batch_size), "pass e.g. batch_size=100"
        )
    if batch_size < 1:
        raise input_error(
            "batch_size", "a positive integer", repr(batch_size), "pass e.g. batch_size=100"
        )
    return int(batch_size)


def _check_fits(batch_size: int, m: int) -> None:
    if batch_size > m:
        raise input_error(
            "batch_size",
            f"an integer between 1 and the number of observations m = {m}",
            repr(batch_size),
            "use ek.minibatch.full() for full-batch updates or a smaller batch",
        )


class Random(Minibatch):
    """A fresh random subset of ``batch_size`` observations every step (see :func:`random`)."""

    batch_size: int = eqx.field(static=True)

    def check(self, m: int) -> None:
        _check_fits(self.batch_size, m)

    def size(self, m: int) -> int:
        return min(self.batch_size, m)

    def next(self, key, state, step, m):
        if self.batch_size >= m:
            return None, state
        return jax.random.permutation(key, m)[: self.batch_size], state


def random(batch_size: int) -> Random:
    """Random minibatches of ``batch_size`` observations, drawn without replacement afresh
    every step (Kovachki & Stuart 2019, Sec. 3).

    Args:
        batch_size: observations per step (``1 <= batch_size <= m``, checked when the algorithm
            is built).

    Returns:
        A :class:`Random` minibatcher.

    Example:
        >>> import jax
        >>> indices, _ = random(3).next(jax.random.key(0), (), 0, 10)
        >>> indices.shape
        (3,)
    """
    return Random(_check_batch_size(batch_size))


class EpochState(NamedTuple):
    """State of :class:`Epoch`: the current epoch's order of the ``m`` observations."""

    order: Int[Array, " m"]


class Epoch(Minibatch):
    """Disjoint batches per epoch, one ``dt`` per epoch (see :func:`epoch`)."""

    batch_size: int = eqx.field(static=True)

    def check(self, m: int) -> None:
        _check_fits(self.batch_size, m)
        if m % self.batch_size:
            divisors = [d for d in range(1, m + 1) if m % d == 0]
            raise input_error(
                "batch_size of ek.minibatch.epoch",
                f"a divisor of the number of observations m = {m} (every batch the same size, "
                "every observation in exactly one batch per epoch)",
                repr(self.batch_size),
                f"pick one of {divisors[:12]}{'...' if len(divisors) > 12 else ''} or drop rows",
            )

    def size(self, m: int) -> int:
        return self.batch_size

    def period(self, m: int) -> int:
        return m // self.batch_size

    def init(self, m: int) -> EpochState:
        return EpochState(jnp.arange(m))

    def next(self, key, state: EpochState, step, m):
        if self.batch_size >= m:
            return None, state
        position = step % self.period(m)
        order = jax.lax.cond(
            position == 0, lambda: jax.random.permutation(key, m), lambda: state.order
        )
        indices = jax.lax.dynamic_slice(order, (position * self.batch_size,), (self.batch_size,))
        return indices, EpochState(order)


def epoch(batch_size: int) -> Epoch:
    """The posterior-preserving minibatch scheme (module docstring): ``m / batch_size``
    disjoint batches per epoch, a fresh permutation each epoch, one ``dt`` per epoch and the
    algorithm time advanced by ``dt`` per epoch.

    Args:
        batch_size: observations per step; must divide ``m`` (checked when the algorithm is
            built).

    Returns:
        An :class:`Epoch` minibatcher.

    Example:
        >>> epoch(4).period(12)
        3
    """
    return Epoch(_check_batch_size(batch_size))
