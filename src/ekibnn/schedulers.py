"""Step-size schedulers: values that choose each step's ``dt`` (noise ``Gamma / dt``) and say
when to stop.

A scheduler is a :class:`Scheduler` (a NamedTuple of pure functions, like an Optax transform):
``init() -> state`` and ``next(state, stats) -> (dt, done, state)``. ``done`` means "the step
being taken is the last one". Adaptation lives here, outside the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ekibnn.errors import input_error

__all__ = [
    "MisfitStats",
    "Scheduler",
    "constant",
    "data_misfit",
    "stop_on_discrepancy",
]


class MisfitStats(NamedTuple):
    """What a scheduler sees at the start of a step.

    Attributes:
        misfits: ``(J,)`` per-member data misfits ``Phi_j = 0.5 ||Gamma^{-1/2}(y - G_j)||^2``
            (0 for failed members).
        ok: ``(J,)`` mask of members whose forward output is finite.
        mean_output_misfit: ``Phi`` of the ensemble-mean output ``mean_j G_j``.
        num_obs: number of observations ``m`` in this step (the batch size when minibatching).
        time: algorithm time ``t`` reached so far (sum of earlier ``dt``).

    Example:
        >>> import jax.numpy as jnp
        >>> stats = MisfitStats(misfits=jnp.array([4.0, 6.0]), ok=jnp.array([True, True]),
        ...                     mean_output_misfit=jnp.asarray(4.5), num_obs=10,
        ...                     time=jnp.asarray(0.0))
        >>> stats.num_obs
        10
    """

    misfits: Float[Array, " J"]
    ok: Bool[Array, " J"]
    mean_output_misfit: Float[Array, ""]
    num_obs: int
    time: Float[Array, ""]


class Scheduler(NamedTuple):
    """A step-size rule as a pair of pure functions (Optax style).

    Attributes:
        init: ``init() -> state``, the scheduler's own state (a pytree; ``()`` when stateless).
        next: ``next(state, stats) -> (dt, done, state)`` with ``stats`` a :class:`MisfitStats`:
            the step size ``dt`` (a scalar array), whether this step is the last one (a
            boolean scalar) and the new state. Called once per step inside the compiled loop.

    Example:
        A custom rule is any pair of functions; here a step that doubles every iteration:

        >>> import jax.numpy as jnp
        >>> doubling = Scheduler(
        ...     init=lambda: jnp.asarray(0.1),
        ...     next=lambda dt, stats: (dt, jnp.asarray(False), 2 * dt),
        ... )
        >>> stats = MisfitStats(jnp.ones(4), jnp.ones(4, bool), jnp.asarray(1.0), 10,
        ...                     jnp.asarray(0.0))
        >>> dt, done, state = doubling.next(doubling.init(), stats)
        >>> round(float(dt), 6), bool(done), round(float(state), 6)
        (0.1, False, 0.2)
    """

    init: Callable[[], Any]
    next: Callable[[Any, MisfitStats], tuple[Array, Array, Any]]


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise input_error(name, "a positive number", repr(value), "pass a value > 0")


def _land_on(step: Array, time: Array, final_time: float) -> tuple[Array, Array]:
    """Clip ``step`` so the time lands exactly on ``final_time``; a step that would stop within
    a relative 1e-6 of it is stretched to reach it (no sliver of a final step)."""
    remaining = final_time - time
    done = time + step >= final_time * (1 - 1e-6)
    return jnp.where(done, remaining, step), done


def constant(dt: float = 1.0, final_time: float | None = None) -> Scheduler:
    """Fixed step ``dt`` every iteration.

    With ``final_time`` the run stops once the algorithm time reaches it (the last step is
    shortened to land on it exactly); without, the run lasts ``num_steps`` (the tutorial's fixed
    iteration count is ``constant(1.0)``). A step ``dt`` assimilates the data with noise
    ``Gamma / dt`` (Kovachki & Stuart 2019, eq. (2.9)), so ``n`` steps of ``dt = 1`` use the
    likelihood ``n`` times.

    Args:
        dt: the step size (> 0).
        final_time: optional algorithm time at which to stop (> 0).

    Returns:
        A :class:`Scheduler`.

    Raises:
        InputError: if ``dt`` or ``final_time`` is not positive.

    Example:
        >>> import jax.numpy as jnp
        >>> sched = constant(0.4, final_time=1.0)
        >>> stats = MisfitStats(jnp.ones(3), jnp.ones(3, bool), jnp.asarray(1.0), 5,
        ...                     jnp.asarray(0.8))
        >>> dt, done, _ = sched.next(sched.init(), stats)  # at t = 0.8 only 0.2 is left
        >>> round(float(dt), 6), bool(done)
        (0.2, True)
    """
    _positive("constant(dt)", dt)
    if final_time is not None:
        _positive("constant(final_time)", final_time)

    def next_(state, stats: MisfitStats):
        step = jnp.asarray(dt, stats.time.dtype)
        if final_time is None:
            return step, jnp.asarray(False), state
        return (*_land_on(step, stats.time, final_time), state)

    return Scheduler(lambda: (), next_)


def data_misfit(final_time: float = 1.0) -> Scheduler:
    """The data-misfit controller of Iglesias & Yang (2021), as in EnsembleKalmanProcesses.jl:

        dt_n = min( max( m / (2 mean_j Phi_j), sqrt(m / (2 var_j Phi_j)) ), T - t_n )

    and stop when ``t`` reaches ``T = final_time``. With ``T = 1`` the product of the tempered
    likelihoods ``exp(-dt_n Phi)`` is the full likelihood, so a stochastic EKI run is a
    (Gaussian-approximate) sample of the posterior. ``Phi_j`` are the members' misfits
    ``0.5 ||Gamma^{-1/2}(y - G_j)||^2`` over the ``m`` observations of the step (failed members
    excluded). Reference: M. A. Iglesias & Y. Yang (2021), *Adaptive regularisation for
    ensemble Kalman inversion*, Inverse Problems 37, 025008.

    Args:
        final_time: the algorithm time ``T`` at which to stop (1 for the Bayesian update).

    Returns:
        A :class:`Scheduler` (the default of :func:`ekibnn.eki` and :func:`ekibnn.etki`).

    Example:
        Far from the data (large misfits) the step is small; the last one lands exactly on
        ``T``:

        >>> import jax.numpy as jnp
        >>> sched = data_misfit()
        >>> far = MisfitStats(jnp.array([500.0, 520.0]), jnp.ones(2, bool), jnp.asarray(400.0),
        ...                   10, jnp.asarray(0.0))
        >>> dt, done, _ = sched.next(sched.init(), far)
        >>> round(float(dt), 4), bool(done)
        (0.1581, False)
        >>> near = far._replace(misfits=jnp.array([5.0, 6.0]), time=jnp.asarray(0.7))
        >>> dt, done, _ = sched.next(sched.init(), near)
        >>> round(float(dt), 4), bool(done)
        (0.3, True)
    """
    _positive("data_misfit(final_time)", final_time)

    def next_(state, stats: MisfitStats):
        count = jnp.sum(stats.ok)
        phi = stats.misfits
        mean = jnp.sum(jnp.where(stats.ok, phi, 0)) / count
        var = jnp.sum(jnp.where(stats.ok, (phi - mean) ** 2, 0)) / (count - 1)
        tiny = jnp.finfo(phi.dtype).tiny
        m = stats.num_obs
        step = jnp.maximum(m / (2 * mean + tiny), jnp.sqrt(m / (2 * var + tiny)))
        return (*_land_on(step, stats.time, final_time), state)

    return Scheduler(lambda: (), next_)


def stop_on_discrepancy(inner: Scheduler, tau: float = 1.0) -> Scheduler:
    """Wrap ``inner`` with Morozov's discrepancy principle: stop (taking no further step) once
    the ensemble-mean output fits the data to the noise level,
    ``||Gamma^{-1/2}(y - mean_j G_j)||^2 <= tau^2 m``. Uses the mean of the outputs (no extra
    forward evaluation), which equals ``G(mean theta)`` for linear ``G``. (The discrepancy
    principle as a stopping rule for EKI: Iglesias 2016, *A regularizing iterative ensemble
    Kalman method for PDE-constrained inverse problems*, Inverse Problems 32, 025002.)

    Args:
        inner: the scheduler that picks the steps until the rule fires.
        tau: the tolerance factor (>= 1 is usual; > 0 required).

    Returns:
        A :class:`Scheduler` whose step is 0 and ``done`` true once the data are fitted.

    Example:
        >>> import jax.numpy as jnp
        >>> sched = stop_on_discrepancy(constant(1.0), tau=1.0)
        >>> fitted = MisfitStats(jnp.ones(2), jnp.ones(2, bool), jnp.asarray(4.0), 10,
        ...                      jnp.asarray(3.0))  # 2 * 4.0 <= 1.0^2 * 10: fitted
        >>> dt, done, _ = sched.next(sched.init(), fitted)
        >>> float(dt), bool(done)
        (0.0, True)
    """
    _positive("stop_on_discrepancy(tau)", tau)

    def next_(state, stats: MisfitStats):
        dt, done, state = inner.next(state, stats)
        reached = 2 * stats.mean_output_misfit <= tau**2 * stats.num_obs
        return jnp.where(reached, jnp.zeros_like(dt), dt), done | reached, state

    return Scheduler(inner.init, next_)
