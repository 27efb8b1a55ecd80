"""Ensemble Kalman inversion (Iglesias, Law & Stuart 2013), complete.

One step, for members ``j = 1..J`` with outputs ``G_j = G(theta_j)`` on this step's observations:

    theta_j <- theta_j + C^{theta G} (C^{GG} + Gamma / dt)^{-1} (y + eps_j - G_j),
    eps_j ~ N(0, Gamma / dt)   (stochastic; eps_j = 0 in the deterministic mean-field form)

(ILS 2013 eq. (9); the ``Gamma / dt`` time step of Kovachki & Stuart 2019 eq. (2.9)). Options:

* ``scheduler``: picks ``dt`` and when to stop (default: Iglesias–Yang data-misfit controller to
  algorithm time T = 1, i.e. a tempered Bayesian update);
* ``batch_size``: each step assimilates a subset of the observations (Kovachki & Stuart 2019,
  Sec. 3). ``minibatch="random"`` draws a fresh random subset every step (algorithm time then
  counts steps of ``dt``, as in the paper). ``minibatch="epoch"`` is the posterior-preserving
  form: the observations are split into ``B = m / b`` disjoint batches by a random permutation
  per epoch, every batch of an epoch is assimilated with the same ``Gamma / dt`` (``dt`` chosen
  by the scheduler at the start of the epoch), and the algorithm time advances ``dt`` per
  *epoch*. Each observation's likelihood is thus tempered by exactly the algorithm time, so a
  run to T = 1 counts every observation once in total (multiple data assimilation, Emerick &
  Reynolds 2013, over minibatches; exact in the linear-Gaussian mean-field limit, because
  sequential Kalman updates with independent batch noises compose to the full-batch update);
* ``inflation``: additive random-walk noise ``theta += inflation * N(0, I)`` before the update
  (the tutorial's ``sigma_xi``); ``multiplicative_inflation``: anomalies scaled by
  ``sqrt(1 + multiplicative_inflation)`` before the update;
* ``regularize``: Tikhonov / extended-state EKI (Chada, Stuart & Tong 2020): observe
  ``[G(theta); theta]`` against ``[y; prior mean]`` with noise ``blockdiag(Gamma, C_0)``
  (``C_0 m / b`` with minibatches of ``b`` of ``m`` observations);
  with ``multiplicative_inflation=1.0`` and ``scheduler=constant(0.5)`` this is the
  posterior-consistent iterated Kalman method of Huang, Schneider & Stuart (2022) with
  ``alpha = 1``: prediction covariance ``2 C_n``, analysis noise ``2 blockdiag(Gamma, C_0)``,
  whose fixed point for a linear problem is the posterior (mean and covariance; exactly so for
  :func:`ekibnn.etki`, in Monte-Carlo average for the perturbed-observation form — both tested);
* failure handling: members with a non-finite output are left out of all statistics and
  redrawn from the Gaussian fitted to the updated successful members;
* ``forward_batch_size``: evaluate the forward map on that many members at a time
  (``jax.lax.map`` over chunks of a ``vmap``) to bound the memory of wide networks.

The increment is computed by :func:`ekibnn.linalg.kalman_increment` in data or ensemble space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn import schedulers as _schedulers
from ekibnn.ensemble import (
    ensemble_size,
    flatten,
    masked_anomalies,
    masked_mean,
    redraw_failed,
    unflatten,
)
from ekibnn.errors import input_error
from ekibnn.linalg import Space, kalman_increment, matmul_precision
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = [
    "EKIInfo",
    "EKIState",
    "EnsembleSetup",
    "EpochState",
    "Forecast",
    "KalmanAlgorithm",
    "check_forward",
    "eki",
    "ensemble_setup",
]


class EpochState(NamedTuple):
    """Bookkeeping of ``minibatch="epoch"``: the current epoch's order of the observations
    ``(m,)``, the ``dt`` every batch of the epoch uses, and whether the scheduler asked to stop
    at the end of the epoch."""

    order: Int[Array, " m"]
    dt: Float[Array, ""]
    done: Bool[Array, ""]


class EKIState(NamedTuple):
    """State of an EKI run.

    Attributes:
        particles: the ensemble (pytree, leading axis J on every parameter leaf).
        time: algorithm time ``t`` (sum of the steps ``dt`` taken; per epoch with
            ``minibatch="epoch"``).
        step: number of steps taken.
        done: the scheduler has asked to stop.
        scheduler_state: the scheduler's own state.
        epoch: an :class:`EpochState` with ``minibatch="epoch"``, else ``()``.
    """

    particles: PyTree
    time: Float[Array, ""]
    step: Int[Array, ""]
    done: Bool[Array, ""]
    scheduler_state: PyTree
    epoch: PyTree = ()


class EKIInfo(NamedTuple):
    """Diagnostics of one step (all scalars; measured on the ensemble *before* the update).

    Attributes:
        misfit: mean over good members of ``||Gamma^{-1/2}(y - G_j)||^2 / m`` on this step's
            observations (about 1 when the members fit to the noise level).
        mean_misfit: the same for the ensemble-mean output ``mean_j G_j``.
        dt: the step size used.
        time: algorithm time after the step.
        n_failed: members whose output was non-finite (they were redrawn).
        spread: ``sqrt(mean_k Var_j theta_jk)``, the ensemble's parameter spread.
    """

    misfit: Float[Array, ""]
    mean_misfit: Float[Array, ""]
    dt: Float[Array, ""]
    time: Float[Array, ""]
    n_failed: Int[Array, ""]
    spread: Float[Array, ""]


class KalmanAlgorithm(NamedTuple):
    """A pair of pure functions (BlackJAX style): ``init(particles) -> state`` and
    ``step(key, state) -> (state, info)``. Neither is jitted for you; :func:`ekibnn.run` is."""

    init: Callable[[PyTree], NamedTuple]
    step: Callable[[PRNGKeyArray, NamedTuple], tuple[NamedTuple, NamedTuple]]


def check_forward(
    forward_fn: Callable, particles: PyTree, expected: int, indices: Array | None = None
) -> None:
    """Raise a clear error unless ``forward_fn`` maps one member to a ``(expected,)`` array."""
    member = jax.tree_util.tree_map(
        lambda x: x[0] if eqx.is_array(x) else x, particles, is_leaf=eqx.is_array
    )
    args = (member,) if indices is None else (member, indices)
    try:
        out = eqx.filter_eval_shape(forward_fn, *args)
    except Exception as err:
        raise input_error(
            "forward_fn",
            "a function of ONE member's parameters" + ("" if indices is None else " and indices"),
            f"an error when called on one member: {type(err).__name__}: {err}",
            "write forward_fn(params) for a single member; ekibnn vmaps it over the ensemble",
        ) from err
    shape = getattr(out, "shape", None)
    per = "observation" if indices is None else "observation in the batch"
    if shape != (expected,):
        raise input_error(
            "forward_fn output",
            f"shape ({expected},) (one value per {per})",
            f"{shape if shape is not None else type(out).__name__}",
            "return a 1-D array in the order of Observation.y (use .reshape(-1))",
        )


class Forecast(NamedTuple):
    """The common first half of an ensemble Kalman step (see :func:`ensemble_setup`)."""

    x: Float[Array, "J p"]  # raveled particles after inflation
    batch: Observation  # this step's observations
    outputs: Float[Array, "J m"]  # forward outputs, failed members zeroed
    ok: Bool[Array, " J"]  # members with a finite output
    count: Int[Array, ""]  # number of good members (>= 2, else a runtime error)
    residual: Float[Array, "J m"]  # whitened y - G_j
    misfits: Float[Array, " J"]  # Phi_j (0 for failed members)
    mean_output: Float[Array, " m"]  # mean output of the good members
    mean_misfit: Float[Array, ""]  # Phi of the good members' mean output
    dt: Float[Array, ""]  # the step used in this update's noise Gamma / dt
    time: Float[Array, ""]  # algorithm time after this step
    done: Bool[Array, ""]
    scheduler_state: PyTree
    epoch: PyTree  # EpochState after this step, or ()


class EnsembleSetup(NamedTuple):
    """What every ensemble Kalman factory needs after validating its arguments (shared by
    :func:`eki` and :func:`ekibnn.etki`)."""

    scheduler: _schedulers.Scheduler
    batch_size: int | None
    m_step: int
    init: Callable[[PyTree], EKIState]
    predict: Callable[[PRNGKeyArray, PRNGKeyArray, EKIState], Forecast]
    advance: Callable[[EKIState, Forecast, Array], EKIState]


def ensemble_setup(
    forward_fn: Callable,
    obs: Observation,
    prior: GaussianPrior | None,
    scheduler: _schedulers.Scheduler | None,
    inflation: float,
    multiplicative_inflation: float,
    batch_size: int | None,
    regularize: bool,
    indexed_forward: bool,
    minibatch: str = "random",
    forward_batch_size: int | None = None,
    name: str = "EKI",
) -> EnsembleSetup:
    """Validate the common arguments (clear :class:`ekibnn.InputError` on bad input) and build
    the vmapped forward evaluation, the ``init`` function of an :class:`EKIState`,
    ``predict(key_inflation, key_batch, state) -> Forecast`` (inflation, minibatch choice,
    forward evaluation, failed-member masking, misfits and the scheduler's step) and
    ``advance(state, forecast, new_x) -> EKIState``."""
    if not isinstance(obs, Observation):
        raise input_error(
            "obs", "an ekibnn.Observation", type(obs).__name__, "wrap data: Observation(y, noise)"
        )
    m = obs.size
    if batch_size is not None:
        if not isinstance(batch_size, int) or batch_size < 1 or batch_size > m:
            raise input_error(
                "batch_size",
                f"an integer between 1 and the number of observations m = {m}",
                repr(batch_size),
                "use batch_size=None for full-batch updates or a smaller batch",
            )
        if batch_size == m and not indexed_forward:
            batch_size = None
    if regularize and prior is None:
        raise input_error(
            "regularize=True", "a prior", "prior=None", "pass prior=ek.GaussianPrior(...)"
        )
    if prior is not None and not isinstance(prior, GaussianPrior):
        raise input_error(
            "prior", "an ekibnn.GaussianPrior or None", type(prior).__name__, "use ek.GaussianPrior"
        )
    if not (inflation >= 0 and multiplicative_inflation >= 0):
        raise input_error(
            "inflation", "values >= 0", f"{inflation}, {multiplicative_inflation}", "use >= 0"
        )
    if minibatch not in ("random", "epoch"):
        raise input_error(
            "minibatch", "'random' or 'epoch'", repr(minibatch), "pick one of the two schemes"
        )
    epochs = minibatch == "epoch" and batch_size is not None and batch_size < m
    if epochs and m % batch_size:
        divisors = [d for d in range(1, m + 1) if m % d == 0]
        raise input_error(
            "batch_size with minibatch='epoch'",
            f"a divisor of the number of observations m = {m} (every batch the same size, "
            "every observation in exactly one batch per epoch)",
            repr(batch_size),
            f"pick one of {divisors[:12]}{'...' if len(divisors) > 12 else ''} or drop rows",
        )
    if forward_batch_size is not None and not (
        isinstance(forward_batch_size, int) and forward_batch_size >= 1
    ):
        raise input_error(
            "forward_batch_size",
            "a positive integer (members evaluated at a time) or None (all at once)",
            repr(forward_batch_size),
            "pass e.g. forward_batch_size=128",
        )
    if indexed_forward and batch_size is None:
        batch_size = m
    scheduler = _schedulers.data_misfit() if scheduler is None else scheduler
    m_step = m if batch_size is None else batch_size
    num_batches = m // m_step

    def evaluate(particles: PyTree, indices: Array | None) -> Array:
        params, static = eqx.partition(particles, eqx.is_array)

        def member(p: PyTree) -> Array:
            args = (eqx.combine(p, static),) + ((indices,) if indexed_forward else ())
            return forward_fn(*args)

        if forward_batch_size is None:
            out = jax.vmap(member)(params)
        else:
            out = jax.lax.map(member, params, batch_size=forward_batch_size)
        return out if indexed_forward or indices is None else out[:, indices]

    def init(particles: PyTree) -> EKIState:
        j = prior.check_particles(particles) if prior is not None else ensemble_size(particles)
        if j < 2:
            raise input_error(
                "particles", "an ensemble of J >= 2 members", f"J = {j}", "sample more members"
            )
        indices = jnp.arange(m_step) if indexed_forward else None
        check_forward(forward_fn, particles, m_step if indexed_forward else m, indices)
        dtype = flatten(particles).dtype
        epoch = ()
        if epochs:
            epoch = EpochState(jnp.arange(m), jnp.zeros((), dtype), jnp.asarray(False))
        return EKIState(
            particles=particles,
            time=jnp.zeros((), dtype),
            step=jnp.zeros((), jnp.int32),
            done=jnp.asarray(False),
            scheduler_state=scheduler.init(),
            epoch=epoch,
        )

    def predict(key_rw: PRNGKeyArray, key_batch: PRNGKeyArray, state: EKIState) -> Forecast:
        x = flatten(state.particles)  # (J, p)
        dtype = x.dtype
        if multiplicative_inflation > 0:
            centre = jnp.mean(x, axis=0)
            x = centre + jnp.sqrt(1.0 + multiplicative_inflation) * (x - centre)
        if inflation > 0:
            x = x + inflation * jax.random.normal(key_rw, x.shape, dtype)
        particles = unflatten(x, state.particles)

        epoch = state.epoch
        if batch_size is None:
            indices, batch = None, obs
        elif batch_size == m:  # indexed forward on every observation: no shuffle needed
            indices, batch = jnp.arange(m), obs
        elif epochs:
            position = state.step % num_batches
            order = jax.lax.cond(
                position == 0,
                lambda: jax.random.permutation(key_batch, m),
                lambda: epoch.order,
            )
            indices = jax.lax.dynamic_slice(order, (position * batch_size,), (batch_size,))
            batch = obs.subset(indices)
            epoch = epoch._replace(order=order)
        else:
            indices = jax.random.permutation(key_batch, m)[:batch_size]
            batch = obs.subset(indices)
        outputs = evaluate(particles, indices).astype(dtype)  # (J, m_step)

        ok = jnp.all(jnp.isfinite(outputs), axis=1)
        count = jnp.sum(ok)
        count = eqx.error_if(
            count,
            count < 2,
            f"{name}: fewer than 2 ensemble members have a finite forward output; "
            "expected at least 2 finite members; fix: check forward_fn for overflow/NaN, "
            "shrink the prior or the step (scheduler), or enlarge the ensemble",
        )
        outputs = jnp.where(ok[:, None], outputs, 0)
        residual = batch.whiten(batch.y - outputs)  # (J, m_step) whitened y - G_j
        misfits = jnp.where(ok, 0.5 * jnp.sum(residual**2, axis=1), 0)
        mean_output = masked_mean(outputs, ok, count)
        mean_misfit = batch.misfit(mean_output)
        stats = _schedulers.MisfitStats(misfits, ok, mean_misfit, m_step, state.time)
        dt, done, scheduler_state = scheduler.next(state.scheduler_state, stats)
        dt = dt.astype(dtype)
        time = state.time + dt
        if epochs:  # the scheduler speaks at the start of an epoch; its dt holds for the epoch
            position = state.step % num_batches
            start, last = position == 0, position == num_batches - 1
            dt = jnp.where(start, dt, epoch.dt)
            epoch_done = jnp.where(start, done, epoch.done)
            scheduler_state = jax.tree_util.tree_map(
                lambda new, old: jnp.where(start, new, old), scheduler_state, state.scheduler_state
            )
            epoch = epoch._replace(dt=dt, done=epoch_done)
            time = state.time + dt / num_batches
            done = epoch_done & last
            # land exactly on the epoch boundary (no drift from summing dt / B B times)
            time = jnp.where(last, state.time - position * dt / num_batches + dt, time)
        return Forecast(
            x=x,
            batch=batch,
            outputs=outputs,
            ok=ok,
            count=count,
            residual=residual,
            misfits=misfits,
            mean_output=mean_output,
            mean_misfit=mean_misfit,
            dt=dt,
            time=time,
            done=done,
            scheduler_state=scheduler_state,
            epoch=epoch,
        )

    def advance(state: EKIState, f: Forecast, x_new: Array) -> EKIState:
        return EKIState(
            particles=unflatten(x_new, state.particles),
            time=f.time,
            step=state.step + 1,
            done=f.done,
            scheduler_state=f.scheduler_state,
            epoch=f.epoch,
        )

    return EnsembleSetup(scheduler, batch_size, m_step, init, predict, advance)


def eki(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior | None = None,
    scheduler: _schedulers.Scheduler | None = None,
    stochastic: bool = True,
    inflation: float = 0.0,
    multiplicative_inflation: float = 0.0,
    batch_size: int | None = None,
    regularize: bool = False,
    indexed_forward: bool = False,
    space: Space = "auto",
    minibatch: str = "random",
    forward_batch_size: int | None = None,
    update_precision: str | None = "highest",
) -> KalmanAlgorithm:
    """Build an EKI algorithm (see the module docstring for the equations).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (ekibnn vmaps it). With
            ``indexed_forward=True`` it is ``forward_fn(params, indices) -> (len(indices),)`` and
            is called with the minibatch's indices, so only the batch is evaluated.
        obs: the data and its noise.
        prior: needed for ``regularize``; when given, particles are checked against it.
        scheduler: step-size rule; default :func:`ekibnn.schedulers.data_misfit` (T = 1).
        stochastic: perturbed observations (True) or the deterministic mean-field update.
        inflation: std of the additive random walk applied before each update (sigma_xi).
        multiplicative_inflation: covariance factor ``1 + value`` applied before each update.
        batch_size: observations per step (without replacement); None = all.
        regularize: extended-state Tikhonov regularisation towards the prior.
        indexed_forward: see ``forward_fn``.
        space: linear algebra in ``"data"``/``"ensemble"`` space or ``"auto"`` (smaller).
        minibatch: ``"random"`` (a fresh random batch per step) or ``"epoch"`` (disjoint batches
            per epoch, time counted per epoch: every observation counted once by T = 1; needs
            ``batch_size`` dividing m).
        forward_batch_size: members evaluated at a time (memory bound); None = all at once.
        update_precision: matrix-product precision of the Kalman update (a
            ``jax.default_matmul_precision`` value). ``"highest"`` keeps full float32 products
            on GPUs/TPUs, whose default uses TF32/bf16 passes; ``None`` takes JAX's default
            (faster there; the forward map always uses JAX's default).

    Returns:
        A :class:`KalmanAlgorithm` whose state is :class:`EKIState`, info :class:`EKIInfo`.

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.eki(lambda th: H @ th, obs, prior=prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 200), num_steps=50, progress=False)
        >>> bool(jnp.allclose(result.particles.mean(0), jnp.array([1.0, 1.0]), atol=0.1))
        True
    """
    scheduler, batch_size, m_step, init, predict, advance = ensemble_setup(
        forward_fn,
        obs,
        prior,
        scheduler,
        inflation,
        multiplicative_inflation,
        batch_size,
        regularize,
        indexed_forward,
        minibatch,
        forward_batch_size,
    )
    m = obs.size

    def step(key: PRNGKeyArray, state: EKIState) -> tuple[EKIState, EKIInfo]:
        key_rw, key_batch, key_noise, key_redraw = jax.random.split(key, 4)
        f = predict(key_rw, key_batch, state)
        x, batch, outputs, ok, count = f.x, f.batch, f.outputs, f.ok, f.count
        residual, misfits, mean_misfit, dt = f.residual, f.misfits, f.mean_misfit, f.dt
        j, dtype = x.shape[0], x.dtype

        # Whitened outputs and innovations; the extended state appends theta / prior std.
        outputs_w = batch.whiten(outputs)
        innovation = residual
        if regularize:
            # With minibatches of b of m observations the prior block is down-weighted by
            # b / m (covariance times m / b), so data and prior are each counted once per epoch.
            prior_std = prior.flat_std() * jnp.sqrt(m / m_step)
            outputs_w = jnp.concatenate([outputs_w, x / prior_std], axis=1)
            prior_residual = (prior.flat_mean() - x) / prior_std
            innovation = jnp.concatenate([innovation, prior_residual], axis=1)
        _, param_anom = masked_anomalies(x, ok, count)
        _, output_anom = masked_anomalies(outputs_w, ok, count)
        # C^{tG}(C^{GG} + Gamma/dt)^{-1} d = A^T B' (B'^T B' + I)^{-1} d'  with B' = sqrt(dt) B,
        # d' = sqrt(dt) d, and the perturbation sqrt(dt) eps ~ N(0, I) in whitened units.
        root_dt = jnp.sqrt(dt)
        innovation = root_dt * innovation
        if stochastic:
            innovation = innovation + jax.random.normal(key_noise, innovation.shape, dtype)
        innovation = jnp.where(ok[:, None], innovation, 0)
        increment = kalman_increment(
            param_anom, root_dt * output_anom, innovation, space, update_precision
        )
        x_new = x + increment

        n_failed = j - count
        with matmul_precision(update_precision):
            x_new = redraw_failed(key_redraw, x_new, ok, count)

        new_state = advance(state, f, x_new)
        info = EKIInfo(
            misfit=2 * jnp.sum(jnp.where(ok, misfits, 0)) / count / m_step,
            mean_misfit=2 * mean_misfit / m_step,
            dt=dt,
            time=new_state.time,
            n_failed=n_failed.astype(jnp.int32),
            spread=jnp.sqrt(jnp.mean(jnp.sum(param_anom**2, axis=0))),
        )
        return new_state, info

    return KalmanAlgorithm(init, step)
