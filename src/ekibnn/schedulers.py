"""Schedulers: values that choose each step's ``dt`` (noise ``Gamma / dt``) and say when to stop.

A scheduler is an Equinox module with two pure methods (Optax style, but a value: its settings
are fields, so two equal schedulers compile to the same program):

* ``init() -> state``: its own state (a pytree, ``()`` when stateless);
* ``next(state, stats) -> (dt, done, state)``: the step size, whether the step being taken is
  the last one, and the new state. ``stats`` is a :class:`MisfitStats`: what the algorithm
  measured on this step's forecast (for UKI: after its analysis).

Adaptation and stopping live here, outside the algorithms: the data-misfit controller that
tempers EKI to ``T = 1``, the EKS-stable step of the samplers, the discrepancy principle,
UKI's tolerance stop, and :class:`Hold`, which keeps one ``dt`` for the whole epoch of a
posterior-preserving minibatch scheme.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ekibnn.errors import input_error

__all__ = [
    "Constant",
    "DataMisfit",
    "Discrepancy",
    "EKSStable",
    "Hold",
    "MisfitStats",
    "Scheduler",
    "Tolerance",
    "constant",
    "data_misfit",
    "eks_stable",
    "eks_stable_dt",
    "stop_on_discrepancy",
    "tolerance",
]


class MisfitStats(NamedTuple):
    """What a scheduler sees.

    Attributes:
        misfits: ``(J,)`` per-member data misfits ``Phi_j = 0.5 ||Gamma^{-1/2}(y - G_j)||^2``
            (0 for failed members; for UKI, per sigma point).
        ok: ``(J,)`` mask of members whose forward output is finite.
        mean_output_misfit: ``Phi`` of the ensemble-mean output ``mean_j G_j`` (UKI: of the
            central sigma point).
        num_obs: number of observations ``m`` in this step (the batch size when minibatching).
        time: algorithm time ``t`` reached so far (sum of earlier ``dt``).
        step: steps taken so far.
        d_norm: ``|D|_F`` of the samplers' J x J drift matrix (EKS/ALDI only, else None).
        change: UKI's change of mean and covariance in posterior-std units (UKI only).

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
    step: Int[Array, ""] | int = 0
    d_norm: Float[Array, ""] | None = None
    change: Float[Array, ""] | None = None


class Scheduler(eqx.Module):
    """Base class of step-size rules: subclass it and define ``init`` and ``next``.

    Example:
        A step that doubles every iteration:

        >>> import jax.numpy as jnp
        >>> class Doubling(Scheduler):
        ...     start: float = 0.1
        ...     def init(self):
        ...         return jnp.asarray(self.start)
        ...     def next(self, dt, stats):
        ...         return dt, jnp.asarray(False), 2 * dt
        >>> sched = Doubling()
        >>> stats = MisfitStats(jnp.ones(4), jnp.ones(4, bool), jnp.asarray(1.0), 10,
        ...                     jnp.asarray(0.0))
        >>> dt, done, state = sched.next(sched.init(), stats)
        >>> round(float(dt), 6), bool(done), round(float(state), 6)
        (0.1, False, 0.2)
    """

    def init(self) -> Any:
        """The scheduler's initial state (``()`` when stateless)."""
        return ()

    def next(self, state: Any, stats: MisfitStats) -> tuple[Array, Array, Any]:
        """``(dt, done, new_state)`` for the step about to be taken."""
        raise NotImplementedError

    @property
    def unit_steps(self) -> bool:
        """Whether every step is known to have ``dt = 1`` (UKI accepts only such schedulers)."""
        return False


def _check_positive(
    name: str, value: Any, bound: float | None = None, zero: bool = False, fix: str = ""
):
    """Raise a clear error unless ``value`` is a finite real number > 0 (``>= 0`` with
    ``zero``) and below ``bound``; ``fix`` says what to do (default: the expected range)."""
    try:
        number = float(value)
        ok = not isinstance(value, bool) and math.isfinite(number)
    except (TypeError, ValueError):
        ok, number = False, math.nan
    ok = ok and (number >= 0 if zero else number > 0) and (bound is None or number < bound)
    if not ok:
        expected = ("a finite number >= 0" if zero else "a finite number > 0") + (
            "" if bound is None else f" below {bound}"
        )
        raise input_error(name, expected, repr(value), fix or f"pass {expected}")


def _land_on(step: Array, time: Array, final_time: float) -> tuple[Array, Array]:
    """Clip ``step`` so the time lands exactly on ``final_time``; a step that would stop within
    a relative 1e-6 of it is stretched to reach it (no sliver of a final step)."""
    remaining = final_time - time
    done = time + step >= final_time * (1 - 1e-6)
    return jnp.where(done, remaining, step), done


class Constant(Scheduler):
    """Fixed step ``dt``; stop at ``final_time`` if given (see :func:`constant`)."""

    dt: float = eqx.field(static=True)
    final_time: float | None = eqx.field(default=None, static=True)

    @property
    def unit_steps(self) -> bool:
        return self.dt == 1.0 and (self.final_time is None or self.final_time.is_integer())

    def next(self, state, stats: MisfitStats):
        step = jnp.asarray(self.dt, stats.time.dtype)
        if self.final_time is None:
            return step, jnp.asarray(False), state
        return (*_land_on(step, stats.time, self.final_time), state)


def constant(dt: float = 1.0, final_time: float | None = None) -> Constant:
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
        A :class:`Constant` scheduler.

    Raises:
        InputError: if ``dt`` or ``final_time`` is not a positive finite number.

    Example:
        >>> import jax.numpy as jnp
        >>> sched = constant(0.4, final_time=1.0)
        >>> stats = MisfitStats(jnp.ones(3), jnp.ones(3, bool), jnp.asarray(1.0), 5,
        ...                     jnp.asarray(0.8))
        >>> dt, done, _ = sched.next(sched.init(), stats)  # at t = 0.8 only 0.2 is left
        >>> round(float(dt), 6), bool(done)
        (0.2, True)
    """
    _check_positive("constant(dt)", dt)
    if final_time is not None:
        _check_positive("constant(final_time)", final_time)
        final_time = float(final_time)
    return Constant(float(dt), final_time)


class DataMisfit(Scheduler):
    """The Iglesias–Yang data-misfit controller (see :func:`data_misfit`)."""

    final_time: float = eqx.field(default=1.0, static=True)

    def next(self, state, stats: MisfitStats):
        count = jnp.sum(stats.ok)
        phi = stats.misfits
        mean = jnp.sum(jnp.where(stats.ok, phi, 0)) / count
        var = jnp.sum(jnp.where(stats.ok, (phi - mean) ** 2, 0)) / (count - 1)
        tiny = jnp.finfo(phi.dtype).tiny
        m = stats.num_obs
        step = jnp.maximum(m / (2 * mean + tiny), jnp.sqrt(m / (2 * var + tiny)))
        return (*_land_on(step, stats.time, self.final_time), state)


def data_misfit(final_time: float = 1.0) -> DataMisfit:
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
        A :class:`DataMisfit` scheduler (the default of :func:`ekibnn.eki`, :func:`ekibnn.etki`).

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
    _check_positive("data_misfit(final_time)", final_time)
    return DataMisfit(float(final_time))


class Discrepancy(Scheduler):
    """Morozov's discrepancy principle around an inner scheduler (:func:`stop_on_discrepancy`)."""

    inner: Scheduler
    tau: float = eqx.field(static=True)

    def init(self):
        return self.inner.init()

    def next(self, state, stats: MisfitStats):
        dt, done, state = self.inner.next(state, stats)
        reached = 2 * stats.mean_output_misfit <= self.tau**2 * stats.num_obs
        return jnp.where(reached, jnp.zeros_like(dt), dt), done | reached, state


def stop_on_discrepancy(inner: Scheduler, tau: float = 1.0) -> Discrepancy:
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
        A :class:`Discrepancy` scheduler whose step is 0 and ``done`` true once the data are
        fitted.

    Example:
        >>> import jax.numpy as jnp
        >>> sched = stop_on_discrepancy(constant(1.0), tau=1.0)
        >>> fitted = MisfitStats(jnp.ones(2), jnp.ones(2, bool), jnp.asarray(4.0), 10,
        ...                      jnp.asarray(3.0))  # 2 * 4.0 <= 1.0^2 * 10: fitted
        >>> dt, done, _ = sched.next(sched.init(), fitted)
        >>> float(dt), bool(done)
        (0.0, True)
    """
    _check_positive("stop_on_discrepancy(tau)", tau)
    if not isinstance(inner, Scheduler):
        raise input_error(
            "stop_on_discrepancy(inner)",
            "an ekibnn scheduler",
            type(inner).__name__,
            "pass e.g. ek.schedulers.constant(1.0)",
        )
    return Discrepancy(inner, float(tau))


#: The samplers' ensemble covariance cannot settle for dt >= 1/2 (see ekibnn.inversion.eks).
UNSTABLE_DT = 0.5


def eks_stable_dt(
    d_norm: Float[Array, ""] | float,
    dt0: float = 1.0,
    eps: float = 1e-8,
    max_dt: float | None = 0.02,
) -> Float[Array, ""]:
    """The EKS-stable adaptive step ``dt = min(dt0 / (|D|_F + eps), max_dt)``.

    Garbuno-Inigo, Hoffmann, Li & Stuart (2020) (``Delta t_n = Delta t_0 / (|D(U_n)|_F +
    delta)``) and EnsembleKalmanProcesses.jl's ``EKSStableScheduler`` (numerator 1 as here, no
    cap), with ``D_jk = <G_k - mean G, Gamma^{-1}(G_j - y)> / J``. ``|D|_F`` is large while the
    ensemble is far from the data (the explicit likelihood drift is stiff) and about
    ``sqrt(p_eff (1 + p_eff / J))`` near a posterior with ``p_eff`` data-informed directions.
    ``max_dt`` (None: no cap) bounds the step when the data are weak, where the scheme is
    inaccurate and, for ``dt >= 1/2``, unstable (see :mod:`ekibnn.inversion.eks`).

    Args:
        d_norm: the Frobenius norm ``|D|_F`` (reported as ``EKSInfo.d_norm``).
        dt0: numerator.
        eps: the nugget ``delta`` (>= 0); with the cap, ``D = 0`` gives ``max_dt``.
        max_dt: upper bound on the step.

    Returns:
        The step ``dt`` (scalar, dtype of ``d_norm``).

    Example:
        >>> import jax.numpy as jnp
        >>> d = jnp.array([[3.0, 0.0], [0.0, 4.0]])
        >>> round(float(eks_stable_dt(jnp.linalg.norm(d), dt0=1.0, eps=0.0, max_dt=None)), 6)
        0.2
        >>> round(float(eks_stable_dt(jnp.linalg.norm(d), dt0=1.0, eps=0.0, max_dt=0.05)), 6)
        0.05
    """
    d_norm = jnp.asarray(d_norm)
    dt = jnp.asarray(dt0, d_norm.dtype) / (d_norm + eps)
    return dt if max_dt is None else jnp.minimum(dt, jnp.asarray(max_dt, d_norm.dtype))


class EKSStable(Scheduler):
    """The samplers' stable adaptive step to a final time (see :func:`eks_stable`)."""

    dt0: float = eqx.field(default=1.0, static=True)
    max_dt: float | None = eqx.field(default=0.02, static=True)
    eps: float = eqx.field(default=1e-8, static=True)
    final_time: float | None = eqx.field(default=10.0, static=True)

    def next(self, state, stats: MisfitStats):
        if stats.d_norm is None:
            raise input_error(
                "scheduler eks_stable()",
                "an algorithm that reports |D|_F (ek.eks or ek.aldi)",
                "an algorithm without it",
                "use ek.schedulers.constant or data_misfit with this algorithm",
            )
        dt = eks_stable_dt(stats.d_norm, self.dt0, self.eps, self.max_dt)
        if self.final_time is None:
            return dt, jnp.asarray(False), state
        return (*_land_on(dt, stats.time, self.final_time), state)


def eks_stable(
    dt0: float = 1.0,
    max_dt: float | None = 0.02,
    eps: float = 1e-8,
    final_time: float | None = 10.0,
) -> EKSStable:
    """The EKS-stable adaptive step :func:`eks_stable_dt` for :func:`ekibnn.eks` and
    :func:`ekibnn.aldi` (their default), stopping when the algorithm time reaches
    ``final_time`` (the last step shortened to land on it; None: run ``num_steps``).

    Args:
        dt0: numerator of ``dt = min(dt0 / (|D|_F + eps), max_dt)``.
        max_dt: cap on the step (< 0.5: the samplers' covariance cannot settle above; None: no
            cap, only sensible while far from the data).
        eps: the nugget (>= 0).
        final_time: the algorithm time at which to stop (default 10: the covariance-
            preconditioned dynamics relax at rate about 1 in time).

    Returns:
        An :class:`EKSStable` scheduler.

    Example:
        >>> import jax.numpy as jnp
        >>> sched = eks_stable(dt0=1.0, max_dt=0.05)
        >>> stats = MisfitStats(jnp.ones(2), jnp.ones(2, bool), jnp.asarray(1.0), 3,
        ...                     jnp.asarray(0.0), d_norm=jnp.asarray(5.0))
        >>> round(float(sched.next((), stats)[0]), 6)
        0.05
    """
    _check_positive("eks_stable(dt0)", dt0)
    if max_dt is not None:
        _check_positive(
            "eks_stable(max_dt)",
            max_dt,
            bound=UNSTABLE_DT,
            fix="pass a smaller cap: the noise sqrt(2 dt C) scales with the ensemble "
            "covariance, which cannot settle for dt >= 1/2 (the default cap is 0.02)",
        )
        max_dt = float(max_dt)
    _check_positive("eks_stable(eps)", eps, zero=True)
    if final_time is not None:
        _check_positive("eks_stable(final_time)", final_time)
        final_time = float(final_time)
    return EKSStable(float(dt0), max_dt, float(eps), final_time)


class Tolerance(Scheduler):
    """UKI's stop: unit steps until the change falls below ``tol`` (see :func:`tolerance`)."""

    tol: float | None = eqx.field(default=None, static=True)
    max_steps: int = eqx.field(default=100, static=True)

    @property
    def unit_steps(self) -> bool:
        return True

    def next(self, state, stats: MisfitStats):
        if stats.change is None:
            raise input_error(
                "scheduler tolerance()",
                "an algorithm that reports its change per iteration (ek.uki)",
                "an algorithm without it",
                "use ek.schedulers.constant or data_misfit with this algorithm",
            )
        dtype = stats.change.dtype
        tol = math.sqrt(float(jnp.finfo(dtype).eps)) if self.tol is None else self.tol
        done = (stats.change < tol) | (stats.step + 1 >= self.max_steps)
        return jnp.ones((), dtype), done, state


def tolerance(tol: float | None = None, max_steps: int = 100) -> Tolerance:
    """Unit steps until UKI's change of mean and covariance (``UKIInfo.change``, in
    posterior-std units) falls below ``tol``, or ``max_steps`` iterations (the default of
    :func:`ekibnn.uki`).

    Args:
        tol: threshold; None: ``sqrt(machine epsilon)`` of the parameters' dtype (3.5e-4 in
            float32, 1.5e-8 in float64).
        max_steps: stop after this many iterations in any case.

    Returns:
        A :class:`Tolerance` scheduler.

    Example:
        >>> import jax.numpy as jnp
        >>> sched = tolerance(1e-3)
        >>> stats = MisfitStats(jnp.ones(3), jnp.ones(3, bool), jnp.asarray(1.0), 2,
        ...                     jnp.asarray(4.0), step=4, change=jnp.asarray(1e-4))
        >>> dt, done, _ = sched.next((), stats)
        >>> float(dt), bool(done)
        (1.0, True)
    """
    if tol is not None:
        _check_positive("tolerance(tol)", tol)
        tol = float(tol)
    if not isinstance(max_steps, numbers.Integral) or isinstance(max_steps, bool) or max_steps < 1:
        raise input_error("tolerance(max_steps)", "a positive integer", repr(max_steps), "e.g. 100")
    return Tolerance(tol, int(max_steps))


class Hold(Scheduler):
    """Consult ``inner`` once every ``period`` steps and keep its ``dt`` (and its verdict on
    stopping) for the whole period: the posterior-preserving minibatch scheme assimilates every
    batch of an epoch with the same ``Gamma / dt`` and may stop only at the end of an epoch
    (:class:`ekibnn.minibatch.Epoch`; the algorithm advances its time by ``dt / period`` per
    step). State: ``(inner state, held dt, held done)``.

    Example:
        >>> import jax.numpy as jnp
        >>> sched = Hold(constant(0.5, final_time=1.0), period=2)
        >>> stats = MisfitStats(jnp.ones(2), jnp.ones(2, bool), jnp.asarray(1.0), 3,
        ...                     jnp.asarray(0.5), step=2)
        >>> dt, done, state = sched.next(sched.init(), stats)  # epoch start: inner says last
        >>> float(dt), bool(done)
        (0.5, False)
        >>> dt, done, _ = sched.next(state, stats._replace(step=3))  # its last batch
        >>> float(dt), bool(done)
        (0.5, True)
    """

    inner: Scheduler
    period: int = eqx.field(static=True)

    def init(self):
        return (self.inner.init(), jnp.zeros((), jnp.result_type(float)), jnp.asarray(False))

    def next(self, state, stats: MisfitStats):
        inner_state, held_dt, held_done = state
        position = stats.step % self.period
        start = position == 0
        dt, done, new_inner = self.inner.next(inner_state, stats)
        dt = jnp.where(start, dt, held_dt.astype(dt.dtype))
        done = jnp.where(start, done, held_done)
        merged = jax.tree_util.tree_map(
            lambda new, old: jnp.where(start, new, old), new_inner, inner_state
        )
        last = position == self.period - 1
        return dt, done & last, (merged, dt, done)
