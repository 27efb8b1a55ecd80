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

Options (as in :func:`ekibnn.eki`): additive / multiplicative inflation before each update,
minibatches, extended-state (Tikhonov) regularisation, and failure handling: members whose
output is non-finite are left out of every statistic (they do not enter the transform) and are
redrawn from the Gaussian fitted to the updated good members.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ekibnn import schedulers as _schedulers
from ekibnn.ensemble import masked_anomalies, redraw_failed
from ekibnn.inversion.eki import EKIInfo, EKIState, KalmanAlgorithm, ensemble_setup
from ekibnn.linalg import matmul_precision
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = ["etki", "transform_update"]


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
        return _transform(param_anomalies, output_anomalies, innovation)


def _transform(param_anomalies, output_anomalies, innovation):
    b = output_anomalies
    gram = b @ b.T  # (J, J): the only matrix factorised
    evals, evecs = jnp.linalg.eigh(0.5 * (gram + gram.T))
    evals = jnp.maximum(evals, 0.0)  # B'B'^T is PSD; clip round-off
    projected = evecs.T @ (b @ innovation)  # (J,)
    weights = evecs @ (projected / (1.0 + evals))  # (I + B'B'^T)^{-1} B' d'
    transform = (evecs * jax.lax.rsqrt(1.0 + evals)) @ evecs.T  # symmetric (I + B'B'^T)^{-1/2}
    return weights @ param_anomalies, transform @ param_anomalies


def etki(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior | None = None,
    scheduler: _schedulers.Scheduler | None = None,
    inflation: float = 0.0,
    multiplicative_inflation: float = 0.0,
    regularize: bool = False,
    batch_size: int | None = None,
    indexed_forward: bool = False,
    minibatch: str = "random",
    forward_batch_size: int | None = None,
    update_precision: str | None = "highest",
) -> KalmanAlgorithm:
    """Build an ensemble transform Kalman inversion (see the module docstring for the equations).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (ekibnn vmaps it). With
            ``indexed_forward=True`` it is ``forward_fn(params, indices) -> (len(indices),)``.
        obs: the data and its noise.
        prior: needed for ``regularize``; when given, particles are checked against it.
        scheduler: step-size rule; default :func:`ekibnn.schedulers.data_misfit` (T = 1).
        inflation: std of the additive random walk applied before each update.
        multiplicative_inflation: covariance factor ``1 + value`` applied before each update.
        regularize: extended-state Tikhonov regularisation: observe ``[G(theta); theta]`` against
            ``[y; prior mean]`` with noise ``blockdiag(Gamma, C_0)`` (the prior then enters twice
            in a tempered-to-T=1 run: a regulariser, not the Bayesian posterior).
        batch_size: observations per step (without replacement); None = all.
        indexed_forward: see ``forward_fn``.
        minibatch: ``"random"`` or ``"epoch"`` (posterior-preserving; see :func:`ekibnn.eki`).
        forward_batch_size: members evaluated at a time (memory bound); None = all at once.
        update_precision: matrix-product precision of the update (see :func:`ekibnn.eki`).

    Returns:
        A :class:`KalmanAlgorithm` whose state is :class:`ekibnn.EKIState` and whose info is
        :class:`ekibnn.EKIInfo` (same layouts as EKI). The step uses its key only for the
        inflation noise, the minibatch and redrawing failed members; otherwise it is
        deterministic.

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.etki(lambda th: H @ th, obs, prior=prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 20), num_steps=50, progress=False)
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
        name="ETKI",
    )

    def step(key: PRNGKeyArray, state: EKIState) -> tuple[EKIState, EKIInfo]:
        key_rw, key_batch, key_redraw = jax.random.split(key, 3)
        f = predict(key_rw, key_batch, state)
        x, batch, outputs, ok, count = f.x, f.batch, f.outputs, f.ok, f.count
        mean_output, misfits, mean_misfit, dt = f.mean_output, f.misfits, f.mean_misfit, f.dt
        j, dtype = x.shape[0], x.dtype

        # Whitened anomalies and the mean innovation; the extended state appends theta / std.
        x_mean, param_anom = masked_anomalies(x, ok, count)
        _, output_anom = masked_anomalies(batch.whiten(outputs), ok, count)
        innovation = batch.whiten(batch.y - mean_output)  # (m_step,)
        if regularize:
            # prior block weighted b / m under minibatching, as in eki
            std0 = (prior.flat_std() * jnp.sqrt(obs.size / m_step)).astype(dtype)
            output_anom = jnp.concatenate([output_anom, param_anom / std0], axis=1)
            innovation = jnp.concatenate([innovation, (prior.flat_mean() - x_mean) / std0])
        root_dt = jnp.sqrt(dt)
        mean_step, new_anom = transform_update(
            param_anom, root_dt * output_anom, root_dt * innovation, update_precision
        )
        new_mean = x_mean + mean_step
        x_new = new_mean + jnp.sqrt(count - 1.0).astype(dtype) * new_anom  # failed rows: mean

        n_failed = j - count
        with matmul_precision(update_precision):
            x_new = redraw_failed(key_redraw, x_new, ok, count)

        new_state = advance(state, f, x_new)
        info = EKIInfo(
            misfit=2 * jnp.sum(misfits) / count / m_step,
            mean_misfit=2 * mean_misfit / m_step,
            dt=dt,
            time=new_state.time,
            n_failed=n_failed.astype(jnp.int32),
            spread=jnp.sqrt(jnp.mean(jnp.sum(param_anom**2, axis=0))),
        )
        return new_state, info

    return KalmanAlgorithm(init, step)
