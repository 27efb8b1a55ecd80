"""The shared ensemble Kalman step: forecast, then an analysis, then the next state.

Every ensemble method of ekibnn (:func:`ekibnn.eki`, :func:`ekibnn.etki`, :func:`ekibnn.eks`,
:func:`ekibnn.aldi`) is an :class:`EnsembleKalman` module that differs only in its
:meth:`~EnsembleKalman.analysis`. One step is

1. **forecast** (here): multiplicative inflation ``x_j <- mean + sqrt(1 + a) (x_j - mean)`` and
   an additive random walk ``x_j += s xi_j``; the minibatcher picks this step's observations;
   the forward map of every member (``vmap``, or ``lax.map`` over chunks of
   ``forward_batch_size`` members); members with a non-finite output are masked out of every
   statistic; whitened residuals ``Gamma^{-1/2}(y - G_j)``, misfits
   ``Phi_j = 0.5 |Gamma^{-1/2}(y - G_j)|^2``, the mean output and the parameter anomalies;
2. the **scheduler** picks ``dt`` (noise ``Gamma / dt``) and says whether this is the last
   step, seeing the forecast's statistics (and the algorithm's own diagnostics, such as the
   samplers' ``|D|_F``);
3. the **analysis** (the subclass) maps the forecast to the new ensemble; failed members are
   then redrawn from the Gaussian fitted to the updated good ones (a ``lax.cond`` that costs
   nothing when every member is finite);
4. the next state: time advances by ``dt`` (by ``dt / B`` per batch of an epoch).

Algorithms are Equinox modules: the forward function, the observations, the noise and the
prior are fields, so :func:`ekibnn.run` traces their arrays and compiles once per shapes and
static settings; the same algorithm on new data of the same shapes reuses the compiled loop.
The state keeps the ensemble flat, ``(J, p)``, with its :class:`ekibnn.ensemble.Layout` in the
tree structure; members are rebuilt as pytrees only inside the forward evaluation.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn import minibatch as _minibatch
from ekibnn import schedulers as _schedulers
from ekibnn._checks import runtime_check
from ekibnn.ensemble import Layout, ensemble_size, flatten, masked_anomalies, redraw_failed
from ekibnn.errors import input_error
from ekibnn.linalg import Space, matmul_precision
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = [
    "PRECISIONS",
    "Algorithm",
    "EnsembleInfo",
    "EnsembleKalman",
    "EnsembleState",
    "Forecast",
    "KalmanAlgorithm",
    "Space",
    "augment_with_prior",
    "check_forward",
    "evaluate_members",
]

#: Accepted ``update_precision`` values (those of ``jax.default_matmul_precision``) and None.
PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16", "fastest")


@runtime_checkable
class KalmanAlgorithm(Protocol):
    """The contract every ekibnn algorithm meets (BlackJAX style): ``init(particles) -> state``
    and ``step(key, state) -> (state, info)``, both pure; the state is a NamedTuple with a
    boolean ``done`` and an integer ``step``, the info a NamedTuple of scalars.
    :func:`ekibnn.run` compiles the loop."""

    def init(self, particles: PyTree) -> Any: ...

    def step(self, key: PRNGKeyArray, state: Any) -> tuple[Any, Any]: ...


class EnsembleState(NamedTuple):
    """State of an ensemble Kalman run (primary data only).

    Attributes:
        x: the ensemble, flat ``(J, p)`` (rows are members; order of
            :func:`ekibnn.ensemble.flatten`).
        layout: how a row maps back to a member's pytree (static: part of the tree structure).
        time: algorithm time ``t`` (sum of the steps ``dt``; per epoch with
            :func:`ekibnn.minibatch.epoch`).
        step: number of steps taken.
        done: the scheduler has asked to stop.
        scheduler_state: the scheduler's own state.
        minibatch_state: the minibatcher's own state.
    """

    x: Float[Array, "J p"]
    layout: Layout
    time: Float[Array, ""]
    step: Int[Array, ""]
    done: Bool[Array, ""]
    scheduler_state: PyTree
    minibatch_state: PyTree

    @property
    def particles(self) -> PyTree:
        """The ensemble as a pytree (leading axis J on every parameter leaf)."""
        return self.layout.unflatten(self.x)


class EnsembleInfo(NamedTuple):
    """Diagnostics of one step (scalars; measured on the ensemble *before* the update).

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


class Forecast(NamedTuple):
    """The first half of a step (see the module docstring), handed to the analysis."""

    x: Float[Array, "J p"]  # the ensemble after inflation
    batch: Observation  # this step's observations
    outputs: Float[Array, "J b"]  # forward outputs, failed members zeroed
    ok: Bool[Array, " J"]  # members with a finite output
    count: Int[Array, ""]  # number of good members (>= 2, else a runtime error)
    residual: Float[Array, "J b"]  # whitened y - G_j
    misfits: Float[Array, " J"]  # Phi_j (0 for failed members)
    mean_output: Float[Array, " b"]  # mean output of the good members
    mean_misfit: Float[Array, ""]  # Phi of the mean output
    x_mean: Float[Array, " p"]  # mean of the good members
    anomalies: Float[Array, "J p"]  # (x_j - mean) / sqrt(count - 1), 0 for failed members
    minibatch_state: PyTree  # the minibatcher's state after this step


def check_forward(
    forward_fn: Callable, member: PyTree, expected: int, indices: Array | None = None
) -> None:
    """Raise a clear error unless ``forward_fn`` maps ONE member (``member``, no ensemble axis)
    to an ``(expected,)`` array."""
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


def evaluate_members(
    forward_fn: Callable,
    layout: Layout,
    x: Float[Array, "J p"],
    indices: Array | None = None,
    forward_batch_size: int | None = None,
) -> Float[Array, "J m"]:
    """Every row of ``x`` through ``forward_fn`` (called as ``forward_fn(member)``, or as
    ``forward_fn(member, indices)`` when ``indices`` is given): one ``vmap``, or ``lax.map``
    over chunks of ``forward_batch_size`` members to bound memory."""

    def member(row: Array) -> Array:
        params = layout.member(row)
        return forward_fn(params) if indices is None else forward_fn(params, indices)

    if forward_batch_size is None:
        return jax.vmap(member)(x)
    return jax.lax.map(member, x, batch_size=forward_batch_size)


def augment_with_prior(
    outputs_w: Float[Array, "K b"],
    residual_w: Float[Array, "K b"],
    x: Float[Array, "K p"],
    prior: GaussianPrior,
    weight: float = 1.0,
) -> tuple[Float[Array, "K b+p"], Float[Array, "K b+p"]]:
    """Impose the prior by observing the parameters: the extended forward map
    ``F(theta) = [G(theta); theta]`` observed as ``[y; m_0]`` with noise
    ``blockdiag(Gamma, C_0 / weight)`` (Chada, Stuart & Tong 2020; the augmented system of
    Huang, Schneider & Stuart 2022).

    Args:
        outputs_w: whitened outputs ``Gamma^{-1/2} G(theta_k)``.
        residual_w: whitened residuals ``Gamma^{-1/2} (y - G(theta_k))``.
        x: the parameters ``theta_k`` (rows).
        prior: the prior ``N(m_0, C_0)`` (diagonal).
        weight: the prior block's weight (``b / m`` with minibatches of ``b`` of ``m``
            observations, so that data and prior are each counted once per epoch).

    Returns:
        ``([outputs_w, theta / s], [residual_w, (m_0 - theta) / s])`` with
        ``s = std_0 / sqrt(weight)``.
    """
    std = (prior.flat_std() / jnp.sqrt(weight)).astype(x.dtype)
    mean = prior.flat_mean().astype(x.dtype)
    return (
        jnp.concatenate([outputs_w, x / std], axis=1),
        jnp.concatenate([residual_w, (mean - x) / std], axis=1),
    )


def check_observation(obs: Any) -> None:
    """Raise :class:`ekibnn.InputError` unless ``obs`` is an :class:`ekibnn.Observation`."""
    if not isinstance(obs, Observation):
        raise input_error(
            "obs", "an ekibnn.Observation", type(obs).__name__, "wrap data: Observation(y, noise)"
        )


def check_prior(prior: Any, required: str | None = None) -> None:
    """Raise unless ``prior`` is a :class:`ekibnn.GaussianPrior` (or None when not
    ``required``; ``required`` says why it is needed)."""
    if prior is None and required is None:
        return
    if not isinstance(prior, GaussianPrior):
        why = "" if required is None else f" ({required})"
        raise input_error(
            "prior",
            f"a prior, an ekibnn.GaussianPrior{why}" + ("" if required else ", or None"),
            type(prior).__name__,
            "pass prior=ek.GaussianPrior(mean, std) or ek.GaussianPrior.like(params, std=...)",
        )


def check_choice(name: str, value: Any, choices: tuple, fix: str) -> None:
    """Raise :class:`ekibnn.InputError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise input_error(name, f"one of {list(choices)}", repr(value), fix)


def check_number(name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite real ``>= minimum`` (``>``
    with ``strict``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and bool(np.isfinite(value)) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise input_error(name, f"a finite number {bound}", repr(value), f"pass a value {bound}")
    return float(value)


def check_positive_int(name: str, value: Any, fix: str) -> int:
    """Return ``value`` as an int after checking it is a positive integer (NumPy integers
    welcome)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise input_error(name, "a positive integer", repr(value), fix)
    return int(value)


def check_precision(value: Any) -> None:
    """Raise unless ``value`` is None or a ``jax.default_matmul_precision`` name."""
    if value is not None and value not in PRECISIONS:
        raise input_error(
            "update_precision",
            f"None or one of {list(PRECISIONS)}",
            repr(value),
            "keep 'highest' (full float32 products on GPUs/TPUs) or pass None for JAX's default",
        )


@jax.jit
def _collapsed(x: Array) -> Array:
    """Whether every row of ``x`` equals the first (one compiled program)."""
    return jnp.all(x == x[:1])


def check_particles(particles: PyTree, prior: GaussianPrior | None, minimum: int = 2) -> int:
    """The ensemble size J after checking the structure (against the prior when given), that
    there are at least ``minimum`` members, and that they are not all identical."""
    j = prior.check_particles(particles) if prior is not None else ensemble_size(particles)
    if j < minimum:
        raise input_error(
            "particles", f"an ensemble of J >= {minimum} members", f"J = {j}", "sample more members"
        )
    x = flatten(particles)
    if not isinstance(x, jax.core.Tracer) and bool(_collapsed(x)):
        raise input_error(
            "particles",
            "an ensemble with spread (ensemble methods move members within the span of their "
            "differences)",
            f"{j} identical members",
            "draw them from the prior (prior.sample(key, J)) or perturb them",
        )
    return j


class Algorithm(eqx.Module):
    """Base of the algorithm modules. Its only addition to ``eqx.Module``: a module holding
    arrays (the data) hashes by identity, so that ``jax.jit(algo.step)`` works as it does for
    BlackJAX kernels; without arrays (the static part :func:`ekibnn.run` compiles against)
    it hashes by value, so equal settings share one compiled program."""

    def __hash__(self) -> int:
        try:
            return super().__hash__()
        except TypeError:
            return id(self)


class EnsembleKalman(Algorithm):
    """The shared ensemble Kalman step (module docstring). Subclasses define
    :meth:`analysis` and may add :meth:`diagnostics`; build them with the factories
    (:func:`ekibnn.eki`, ...), which validate the arguments.

    Attributes:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member, or with
            ``indexed_forward`` ``forward_fn(params, indices) -> (len(indices),)``. A plain
            function or an Equinox module (whose arrays are traced like the data).
        obs: the observations and their noise.
        prior: the Gaussian prior, or None where the algorithm does not need one.
        scheduler: picks ``dt`` and when to stop.
        minibatch: picks each step's observations.
        inflation: std of the additive random walk applied before each update.
        multiplicative_inflation: covariance factor ``1 + value`` applied before each update.
        indexed_forward: ``forward_fn`` takes the step's observation indices.
        forward_batch_size: members evaluated at a time (None: all at once).
        update_precision: matrix-product precision of the analysis (see
            :func:`ekibnn.linalg.matmul_precision`); the forward map keeps JAX's default.
    """

    forward_fn: Callable
    obs: Observation
    prior: GaussianPrior | None
    scheduler: _schedulers.Scheduler
    minibatch: _minibatch.Minibatch
    inflation: float = eqx.field(static=True)
    multiplicative_inflation: float = eqx.field(static=True)
    indexed_forward: bool = eqx.field(static=True)
    forward_batch_size: int | None = eqx.field(static=True)
    update_precision: str | None = eqx.field(static=True)

    name: ClassVar[str] = "ensemble Kalman"
    min_members: ClassVar[int] = 2

    # ------------------------------------------------------------------------------ hooks
    def analysis(self, key: PRNGKeyArray, f: Forecast, dt: Array) -> Float[Array, "J p"]:
        """The new ensemble ``(J, p)`` from the forecast and the step ``dt``."""
        raise NotImplementedError

    def diagnostics(self, f: Forecast) -> dict[str, Array]:
        """Extra scalars the scheduler sees and the info reports (default: none)."""
        return {}

    def make_info(self, common: dict[str, Array], extras: dict[str, Array]) -> NamedTuple:
        """The step's info NamedTuple (default :class:`EnsembleInfo`)."""
        return EnsembleInfo(**common)

    # ------------------------------------------------------------------------------ the step
    @property
    def num_obs_per_step(self) -> int:
        """Observations assimilated per step."""
        return self.minibatch.size(self.obs.size)

    def init(self, particles: PyTree) -> EnsembleState:
        """The state at the start of a run from an ensemble (leading axis J on every parameter
        leaf), after checking it and the forward map (clear :class:`ekibnn.InputError`)."""
        check_particles(particles, self.prior, self.min_members)
        layout = Layout.of_ensemble(particles)
        x = flatten(particles)
        m = self.obs.size
        indices = np.arange(self.num_obs_per_step) if self.indexed_forward else None
        expected = self.num_obs_per_step if self.indexed_forward else m
        member = jax.ShapeDtypeStruct((x.shape[1],), x.dtype)
        check_forward(
            self.forward_fn, eqx.filter_eval_shape(layout.member, member), expected, indices
        )
        return EnsembleState(  # host scalars: no device program is compiled for them
            x=x,
            layout=layout,
            time=np.zeros((), x.dtype),
            step=np.zeros((), np.int32),
            done=np.asarray(False),
            scheduler_state=self.scheduler.init(),
            minibatch_state=self.minibatch.init(m),
        )

    def forecast(self, key: PRNGKeyArray, state: EnsembleState) -> Forecast:
        """Inflation, minibatch, forward evaluation, failure mask and misfit statistics."""
        key_walk, key_batch = jax.random.split(key)
        x = state.x
        if self.multiplicative_inflation > 0:
            centre = jnp.mean(x, axis=0)
            x = centre + jnp.sqrt(1.0 + self.multiplicative_inflation) * (x - centre)
        if self.inflation > 0:
            x = x + self.inflation * jax.random.normal(key_walk, x.shape, x.dtype)
        m = self.obs.size
        indices, minibatch_state = self.minibatch.next(
            key_batch, state.minibatch_state, state.step, m
        )
        batch = self.obs if indices is None else self.obs.subset(indices)
        if self.indexed_forward:
            evaluated = jnp.arange(m) if indices is None else indices
            outputs = evaluate_members(
                self.forward_fn, state.layout, x, evaluated, self.forward_batch_size
            )
        else:
            outputs = evaluate_members(
                self.forward_fn, state.layout, x, None, self.forward_batch_size
            )
            outputs = outputs if indices is None else outputs[:, indices]
        outputs = outputs.astype(x.dtype)
        ok = jnp.all(jnp.isfinite(outputs), axis=1)
        count = jnp.sum(ok)
        count = runtime_check(
            count,
            count < 2,
            f"{self.name}: fewer than 2 ensemble members have a finite forward output; "
            "expected at least 2 finite members; fix: check forward_fn for overflow/NaN, "
            "shrink the prior or the step (scheduler), or enlarge the ensemble",
        )
        outputs = jnp.where(ok[:, None], outputs, 0)
        residual = batch.whiten(batch.y - outputs)
        misfits = jnp.where(ok, 0.5 * jnp.sum(residual**2, axis=1), 0)
        mean_output = jnp.sum(outputs, axis=0) / count
        x_mean, anomalies = masked_anomalies(x, ok, count)
        return Forecast(
            x=x,
            batch=batch,
            outputs=outputs,
            ok=ok,
            count=count,
            residual=residual,
            misfits=misfits,
            mean_output=mean_output,
            mean_misfit=batch.misfit(mean_output),
            x_mean=x_mean,
            anomalies=anomalies,
            minibatch_state=minibatch_state,
        )

    def step(self, key: PRNGKeyArray, state: EnsembleState) -> tuple[EnsembleState, NamedTuple]:
        """One step (module docstring): ``(new state, info)``. Pure; jit it or use
        :func:`ekibnn.run`."""
        key_forecast, key_analysis, key_redraw = jax.random.split(key, 3)
        f = self.forecast(key_forecast, state)
        dtype = f.x.dtype
        with matmul_precision(self.update_precision):
            extras = self.diagnostics(f)
        b = f.batch.size
        stats = _schedulers.MisfitStats(
            f.misfits, f.ok, f.mean_misfit, b, state.time, state.step, **extras
        )
        dt, done, scheduler_state = self.scheduler.next(state.scheduler_state, stats)
        dt = jnp.asarray(dt).astype(dtype)
        with matmul_precision(self.update_precision):
            x_new = self.analysis(key_analysis, f, dt)
            x_new = redraw_failed(key_redraw, x_new, f.ok, f.count)
        period = self.minibatch.period(self.obs.size)
        if period == 1:
            time = state.time + dt
        else:  # dt holds for the epoch; land exactly on the epoch boundary (no drift)
            position = state.step % period
            start = state.time - position * dt / period
            time = jnp.where(position == period - 1, start + dt, state.time + dt / period)
        new_state = EnsembleState(
            x=x_new,
            layout=state.layout,
            time=time,
            step=state.step + 1,
            done=jnp.asarray(done),
            scheduler_state=scheduler_state,
            minibatch_state=f.minibatch_state,
        )
        common = {
            "misfit": 2 * jnp.sum(f.misfits) / f.count / b,
            "mean_misfit": 2 * f.mean_misfit / b,
            "dt": dt,
            "time": time,
            "n_failed": (f.x.shape[0] - f.count).astype(jnp.int32),
            "spread": jnp.sqrt(jnp.mean(jnp.sum(f.anomalies**2, axis=0))),
        }
        return new_state, self.make_info(common, extras)


def ensemble_options(
    obs: Any,
    prior: Any,
    *,
    scheduler: Any,
    minibatch: Any,
    inflation: Any,
    multiplicative_inflation: Any,
    indexed_forward: Any,
    forward_batch_size: Any,
    update_precision: Any,
    default_scheduler: _schedulers.Scheduler,
    impose_prior: bool = False,
) -> dict[str, Any]:
    """Validate the options every :class:`EnsembleKalman` takes (clear
    :class:`ekibnn.InputError` on bad input) and return them as constructor keywords; a
    minibatcher with epochs gets its scheduler wrapped in :class:`ekibnn.schedulers.Hold`;
    ``impose_prior`` needs a prior."""
    check_observation(obs)
    check_prior(prior)
    if impose_prior:
        check_prior(prior, required="impose_prior=True observes the parameters against it")
    scheduler = default_scheduler if scheduler is None else scheduler
    if not isinstance(scheduler, _schedulers.Scheduler):
        raise input_error(
            "scheduler",
            "an ekibnn scheduler (ek.schedulers.constant(...), data_misfit(), ...)",
            type(scheduler).__name__,
            "build one with ek.schedulers",
        )
    minibatch = _minibatch.full() if minibatch is None else minibatch
    if not isinstance(minibatch, _minibatch.Minibatch):
        raise input_error(
            "minibatch",
            "None, ek.minibatch.random(b) or ek.minibatch.epoch(b)",
            repr(minibatch),
            "pass e.g. minibatch=ek.minibatch.random(100)",
        )
    minibatch.check(obs.size)
    period = minibatch.period(obs.size)
    if period > 1:
        scheduler = _schedulers.Hold(scheduler, period)
    if forward_batch_size is not None:
        forward_batch_size = check_positive_int(
            "forward_batch_size",
            forward_batch_size,
            "pass e.g. forward_batch_size=128 (members evaluated at a time) or None",
        )
    check_precision(update_precision)
    return {
        "obs": obs,
        "prior": prior,
        "scheduler": scheduler,
        "minibatch": minibatch,
        "inflation": check_number("inflation", inflation),
        "multiplicative_inflation": check_number(
            "multiplicative_inflation", multiplicative_inflation
        ),
        "indexed_forward": bool(indexed_forward),
        "forward_batch_size": forward_batch_size,
        "update_precision": update_precision,
    }
