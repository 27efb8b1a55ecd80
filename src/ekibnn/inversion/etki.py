"""Ensemble transform Kalman inversion (ETKI): the deterministic square-root EKI.

The ensemble ``theta_1..theta_J`` is split into its mean ``mbar`` and anomalies. With ``dt``
the step (noise ``Gamma / dt``), whitened output anomalies ``B`` (J, m) and parameter anomalies
``A`` (J, p) (rows ``(x_j - mean) / sqrt(J - 1)``, so ``A^T A = C^{theta theta}`` and
``A^T B = C^{theta G} Gamma^{-1/2}``), and ``B' = sqrt(dt) B``, ``d' = sqrt(dt) Gamma^{-1/2}
(y - mean_j G_j)``, one step is

    mbar <- mbar + A^T (I_J + B' B'^T)^{-1} B' d'                                   (1)
    A    <- T A,        T = (I_J + B' B'^T)^{-1/2}  (symmetric square root)          (2)
    theta_j <- mbar + sqrt(J - 1) A_j

(1) is the Kalman mean update ``C^{theta G}(C^{GG} + Gamma/dt)^{-1}(y - Gbar)`` written in
ensemble space with the push-through identity, and (2) makes ``A^T A`` equal to the Kalman
covariance ``C - C^{theta G}(C^{GG} + Gamma/dt)^{-1} C^{G theta} = A^T (I + B' B'^T)^{-1} A``
(Woodbury). This is the ensemble transform (square-root) filter of Bishop, Etherton & Majumdar
(2001), in the symmetric form of Wang, Bishop & Julier (2004), used as an inversion method with
the ``Gamma / dt`` time stepping of EKI: ETKI of Huang, Huang, Reich & Stuart (2022,
"Efficient derivative-free Bayesian inference for large-scale inverse problems", Inverse
Problems 38, 125006), as in EnsembleKalmanProcesses.jl ``TransformInversion``. The symmetric
root keeps the anomalies
centred (``T 1 = 1`` because ``1^T B' = 0``), so no random perturbation is needed: the update
is deterministic.

Cost: one ``eigh`` of the ``(J, J)`` matrix ``B' B'^T`` gives both (1) and (2); forming it is
``O(J^2 m)``. Nothing of size ``(m, m)`` is ever built (diagonal ``Gamma`` is applied as
``r / std``), so time and memory are LINEAR in the number of observations ``m``.

Bayesian use: with the default scheduler (:func:`ekibnn.schedulers.data_misfit`, stopping at
``T = sum dt = 1``) the tempered updates multiply to the full likelihood. For a linear forward
map each step is the exact Kalman update of the ensemble's mean and covariance, so after
``T = 1`` they equal the Gaussian posterior computed from the initial ensemble's mean and
covariance (exactly, up to round-off, when ``J > p``). Unlike stochastic EKI there is no
sampling error beyond that of the initial ensemble.

The forecast (inflation, minibatches, forward map, failed members, scheduler) is the shared
kernel of :mod:`ekibnn.inversion.kernel`, as for :func:`ekibnn.eki`; members whose output is
non-finite do not enter the transform and are redrawn after it.
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
from ekibnn.ensemble import masked_anomalies, masked_mean
from ekibnn.inversion.kernel import (
    EnsembleKalman,
    Forecast,
    augment_with_prior,
    ensemble_options,
)
from ekibnn.linalg import matmul_precision
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = ["ETKI", "etki", "transform_update"]


def transform_update(
    param_anomalies: Float[Array, "J p"],
    output_anomalies: Float[Array, "J m"],
    innovation: Float[Array, " m"],
    precision: str | None = "highest",
) -> tuple[Float[Array, " p"], Float[Array, "J p"]]:
    """The ETKI update in ensemble space: equations (1) and (2) of the module docstring.

    Args:
        param_anomalies: ``A`` (J, p), centred parameters / sqrt(J - 1) (zero rows are allowed
            and stay zero: they are members left out of the statistics).
        output_anomalies: ``B'`` (J, m), centred whitened outputs / sqrt(J - 1), already scaled
            by ``sqrt(dt)``.
        innovation: ``d'`` (m,), the whitened mean innovation, scaled by ``sqrt(dt)``.
        precision: matrix-product precision (see :func:`ekibnn.linalg.kalman_increment`).

    Returns:
        ``(mean increment (p,), new anomalies T A (J, p))``. Only ``(J, J)`` matrices are formed.
    """
    with matmul_precision(precision):
        b = output_anomalies
        gram = b @ b.T  # (J, J): the only matrix factorised
        evals, evecs = jnp.linalg.eigh(0.5 * (gram + gram.T))
        evals = jnp.maximum(evals, 0.0)  # B'B'^T is PSD; clip round-off
        projected = evecs.T @ (b @ innovation)  # (J,)
        weights = evecs @ (projected / (1.0 + evals))  # (I + B'B'^T)^{-1} B' d'
        transform = (evecs * jax.lax.rsqrt(1.0 + evals)) @ evecs.T  # (I + B'B'^T)^{-1/2}
        return weights @ param_anomalies, transform @ param_anomalies


class ETKI(EnsembleKalman):
    """Ensemble transform Kalman inversion; build it with :func:`etki`."""

    impose_prior: bool = eqx.field(static=True)

    name: ClassVar[str] = "ETKI"

    def analysis(self, key: PRNGKeyArray, f: Forecast, dt: Array) -> Float[Array, "J p"]:
        del key  # deterministic
        outputs_w, residual = f.batch.whiten(f.outputs), f.residual
        if self.impose_prior:
            weight = f.batch.size / self.obs.size
            outputs_w, residual = augment_with_prior(outputs_w, residual, f.x, self.prior, weight)
        _, output_anomalies = masked_anomalies(outputs_w, f.ok, f.count)
        innovation = masked_mean(residual, f.ok, f.count)  # whitened y - mean_j G_j
        root_dt = jnp.sqrt(dt)
        mean_step, new_anomalies = transform_update(
            f.anomalies, root_dt * output_anomalies, root_dt * innovation, self.update_precision
        )
        scale = jnp.sqrt(f.count - 1.0).astype(f.x.dtype)
        return f.x_mean + mean_step + scale * new_anomalies  # failed rows: the mean


def etki(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior | None = None,
    *,
    scheduler: _schedulers.Scheduler | None = None,
    impose_prior: bool = False,
    minibatch: _minibatch.Minibatch | None = None,
    inflation: float = 0.0,
    multiplicative_inflation: float = 0.0,
    indexed_forward: bool = False,
    forward_batch_size: int | None = None,
    update_precision: str | None = "highest",
) -> ETKI:
    """Build an ensemble transform Kalman inversion (module docstring for the equations).

    Arguments as in :func:`ekibnn.eki` (no ``stochastic``: the transform is deterministic; no
    ``space``: the transform is always computed in ensemble space, cost linear in ``m``).

    Returns:
        An :class:`ETKI` module with the state :class:`ekibnn.EnsembleState` and the info
        :class:`ekibnn.EnsembleInfo` of EKI. The step uses its key only for the inflation
        noise, the minibatch and redrawing failed members.

    Raises:
        InputError: for bad arguments (before anything is compiled).

    Example:
        The transform is deterministic: two keys give the same ensemble.

        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.etki(lambda th: jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]) @ th,
        ...                obs, prior)
        >>> x0 = prior.sample(jax.random.key(0), 20)
        >>> a, b = (ek.run(jax.random.key(k), algo, x0, 50, progress=False) for k in (1, 2))
        >>> bool(jnp.all(a.particles == b.particles)), a.particles.mean(0).round(1).tolist()
        (True, [1.0, 1.0])
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
    return ETKI(forward_fn=forward_fn, impose_prior=bool(impose_prior), **options)
