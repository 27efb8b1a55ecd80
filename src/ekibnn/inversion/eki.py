"""Ensemble Kalman inversion (Iglesias, Law & Stuart 2013): the perturbed-observation analysis.

For members ``j = 1..J`` with outputs ``G_j = G(theta_j)`` on this step's observations:

    theta_j <- theta_j + C^{theta G} (C^{GG} + Gamma / dt)^{-1} (y + eps_j - G_j),
    eps_j ~ N(0, Gamma / dt)   (stochastic; eps_j = 0 in the deterministic mean-field form)

(ILS 2013 eq. (9); the ``Gamma / dt`` time step of Kovachki & Stuart 2019 eq. (2.9)). With
``impose_prior`` the forward map is extended to ``[G(theta); theta]`` and observed as
``[y; m_0]`` with noise ``blockdiag(Gamma, C_0)`` (Tikhonov EKI, Chada, Stuart & Tong 2020);
with ``multiplicative_inflation=1.0`` and ``scheduler=constant(0.5)`` this is the
posterior-consistent iterated Kalman method of Huang, Schneider & Stuart (2022) with
``alpha = 1`` (prediction covariance ``2 C_n``, analysis noise ``2 blockdiag(Gamma, C_0)``),
whose fixed point for a linear problem is the posterior, in Monte-Carlo average.

The forecast (inflation, minibatches, forward map, failed members, scheduler) is the shared
kernel of :mod:`ekibnn.inversion.kernel`; the increment is computed by
:func:`ekibnn.linalg.kalman_increment` in data or ensemble space, never forming an ``m x m``
matrix when ``m > J``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ekibnn import minibatch as _minibatch
from ekibnn import schedulers as _schedulers
from ekibnn.ensemble import masked_anomalies
from ekibnn.inversion.kernel import (
    EnsembleKalman,
    Forecast,
    Space,
    augment_with_prior,
    check_choice,
    ensemble_options,
)
from ekibnn.linalg import kalman_increment
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = ["EKI", "eki"]


class EKI(EnsembleKalman):
    """Perturbed-observation (or deterministic) EKI; build it with :func:`eki`."""

    stochastic: bool = eqx.field(static=True)
    impose_prior: bool = eqx.field(static=True)
    space: Space = eqx.field(static=True)

    name: ClassVar[str] = "EKI"

    def analysis(self, key: PRNGKeyArray, f: Forecast, dt: Array) -> Float[Array, "J p"]:
        # C^{tG}(C^{GG} + Gamma/dt)^{-1} d = A^T B' (B'^T B' + I)^{-1} d'  with B' = sqrt(dt) B,
        # d' = sqrt(dt) d and the perturbation sqrt(dt) eps ~ N(0, I) in whitened units.
        outputs_w, innovation = f.batch.whiten(f.outputs), f.residual
        if self.impose_prior:
            weight = f.batch.size / self.obs.size
            outputs_w, innovation = augment_with_prior(
                outputs_w, innovation, f.x, self.prior, weight
            )
        _, output_anomalies = masked_anomalies(outputs_w, f.ok, f.count)
        root_dt = jnp.sqrt(dt)
        innovation = root_dt * innovation
        if self.stochastic:
            innovation = innovation + jax.random.normal(key, innovation.shape, innovation.dtype)
        innovation = jnp.where(f.ok[:, None], innovation, 0)
        increment = kalman_increment(
            f.anomalies, root_dt * output_anomalies, innovation, self.space, self.update_precision
        )
        return f.x + increment


def eki(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior | None = None,
    *,
    scheduler: _schedulers.Scheduler | None = None,
    stochastic: bool = True,
    impose_prior: bool = False,
    minibatch: _minibatch.Minibatch | None = None,
    inflation: float = 0.0,
    multiplicative_inflation: float = 0.0,
    indexed_forward: bool = False,
    forward_batch_size: int | None = None,
    space: Space = "auto",
    update_precision: str | None = "highest",
) -> EKI:
    """Build an EKI algorithm (module docstring for the equations).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (ekibnn vmaps it). With
            ``indexed_forward=True`` it is ``forward_fn(params, indices) -> (len(indices),)``
            and is called with the minibatch's indices, so only the batch is evaluated. A plain
            function or an Equinox module (its arrays are then data, like ``obs``).
        obs: the data and its noise.
        prior: needed for ``impose_prior``; when given, particles are checked against it.
        scheduler: step-size rule; default :func:`ekibnn.schedulers.data_misfit` (T = 1).
        stochastic: perturbed observations (True) or the deterministic mean-field update.
        impose_prior: observe ``[G(theta); theta]`` against ``[y; prior mean]`` (Tikhonov /
            extended-state EKI).
        minibatch: :func:`ekibnn.minibatch.random` or :func:`ekibnn.minibatch.epoch`; None:
            every step sees all observations.
        inflation: std of the additive random walk applied before each update (sigma_xi).
        multiplicative_inflation: covariance factor ``1 + value`` applied before each update.
        indexed_forward: see ``forward_fn``.
        forward_batch_size: members evaluated at a time (memory bound); None = all at once.
        space: linear algebra in ``"data"`` / ``"ensemble"`` space or ``"auto"`` (smaller).
        update_precision: matrix-product precision of the Kalman update (a
            ``jax.default_matmul_precision`` value). ``"highest"`` keeps full float32 products
            on GPUs/TPUs, whose default uses TF32/bf16 passes; ``None`` takes JAX's default
            (faster there; the forward map always uses JAX's default).

    Returns:
        An :class:`EKI` module: ``init(particles) ->`` :class:`EnsembleState`,
        ``step(key, state) -> (state,`` :class:`EnsembleInfo` ``)``.

    Raises:
        InputError: for bad arguments (before anything is compiled).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.eki(lambda th: H @ th, obs, prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 200), num_steps=50, progress=False)
        >>> bool(jnp.allclose(result.particles.mean(0), jnp.array([1.0, 1.0]), atol=0.1))
        True
    """
    options = ensemble_options(
        obs,
        prior,
        scheduler=scheduler,
        minibatch=minibatch,
        inflation=inflation,
        multiplicative_inflation=multiplicative_inflation,
        indexed_forward=indexed_forward,
        forward_batch_size=forward_batch_size,
        update_precision=update_precision,
        default_scheduler=_schedulers.data_misfit(),
        impose_prior=impose_prior,
    )
    check_choice("space", space, ("auto", "data", "ensemble"), "leave it at 'auto'")
    return EKI(
        forward_fn=forward_fn,
        stochastic=bool(stochastic),
        impose_prior=bool(impose_prior),
        space=space,
        **options,
    )
