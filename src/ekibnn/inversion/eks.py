"""Ensemble Kalman samplers: EKS (Garbuno-Inigo, Hoffmann, Li & Stuart 2020, "GHLS") and ALDI
(Garbuno-Inigo, Nüsken & Reich 2020, "GNR").

Both discretise an interacting Langevin diffusion preconditioned by the ensemble covariance

    d theta_j = - C(Theta) grad Phi_R(theta_j) dt  [+ (p + 1)/J (theta_j - mean) dt]
                + sqrt(2) C(Theta)^{1/2} dW_j,

with ``Phi_R(theta) = 0.5 |Gamma^{-1/2}(y - G(theta))|^2 + 0.5 |C0^{-1/2}(theta - m0)|^2``, the
population covariance ``C = A^T A``, ``A_j = (theta_j - mean) / sqrt(J)`` (J x p anomalies), and
the likelihood gradient replaced by the derivative-free Kalman-type cross-covariance

    C grad_theta 0.5 |Gamma^{-1/2}(y - G(theta_j))|^2  ~  sum_k D_jk theta_k,
    D_jk = < G_k - mean G, Gamma^{-1} (G_j - y) > / J     (a J x J matrix).

* **EKS** (GHLS 2020: the EKS SDE, and the discrete scheme and adaptive step of their numerical
  section): no finite-ensemble correction; at finite J its stationary ensemble is too narrow
  (markedly so for J close to p).
* **ALDI** (GNR 2020, gradient-free form): adds the finite-ensemble correction
  ``(p + 1)/J (theta_j - mean)`` (the divergence of ``C`` with respect to ``theta_j``) and uses
  the generalised square root ``C^{1/2} = A^T`` (p x J) for the noise; the J-fold product of the
  posterior is then exactly invariant for the continuous-time dynamics. For linear ``G`` the
  cross-covariance is the exact gradient, so the derivative-free dynamics are exact too. Needs
  ``J >= p + 2`` (GNR: the ensemble covariance stays non-degenerate for J > p + 1).

One step (the linearly implicit split-step scheme of GHLS 2020, as in
EnsembleKalmanProcesses.jl's ``Sampler``; ``K = C0^{-1}`` is diagonal):

    v_j      = theta_j - dt sum_k D_jk (theta_k - mean)  [+ dt (p + 1)/J (theta_j - mean)]
    theta*_j = m0 + (I + dt C K)^{-1} (v_j - m0)        (prior drift, linearly implicit)
    theta_j <- theta*_j + sqrt(2 dt) C^{1/2} xi_j       (noise with covariance 2 dt C)

(``sum_k D_jk theta_k = sum_k D_jk (theta_k - mean)`` since the rows of ``D`` sum to zero.)

Linear algebra, never an explicit inverse, never a p x p matrix when ``p > J`` nor an m x m one
when ``m > J``, Gamma only through :meth:`Observation.whiten`:

* the likelihood drift ``D X_c = R (B^T X_c) / J`` (``R``, ``B``: whitened residuals and output
  anomalies, ``X_c``: centred particles) and ``|D|_F``: through the (m, p) cross-covariance
  ``B^T X_c / J`` and m x m Grams (``|D|_F^2 = tr(R^T R B^T B) / J^2``) when that is cheaper,
  else through the J x J matrix ``D`` (always when ``m > J``);
* the implicit prior step by a p x p Cholesky solve when ``p <= J``, else through the Woodbury
  identity ``(I + dt A^T A K)^{-1} = I - dt A^T (I_J + dt A K A^T)^{-1} A K`` (J x J Cholesky);
* the noise as ``xi_j A`` with ``xi_j ~ N(0, I_J)`` (ALDI's generalised square root ``A^T``)
  when ``p > J``, else ``z_j C^{1/2}`` with ``z_j ~ N(0, I_p)`` — the same law, cheaper.

Per step that is ``O(J (m + p) min(J, m + p))`` plus the J forward evaluations.

**Step size** (the EKS-stable rule of GHLS 2020 / EKP's ``EKSStableScheduler``, here capped; the
default scheduler :func:`ekibnn.schedulers.eks_stable`): ``dt = min(dt0 / (|D|_F + eps),
max_dt)``; see :func:`ekibnn.schedulers.eks_stable_dt`. The first term keeps the
explicit likelihood drift stable while the ensemble is far from the data: for linear ``G``,
``|D|_F`` bounds the largest eigenvalue of ``C H^T Gamma^{-1} H``, so ``dt0 = 1`` (EKP's
numerator, the default) gives an explicit step of at most one relaxation. The cap sets the
accuracy near the posterior, where it is the binding term unless ``p_eff`` is large (below).
It matters for stability too: because
the noise covariance ``2 dt C`` scales with the ensemble's own covariance, the ensemble variance
along a direction with likelihood / prior precisions ``l`` / ``q`` follows (mean field)
``c' = c (1 - dt c l)^2 / (1 + dt c q)^2 + 2 dt c``. For ``dt >= 1/2`` it cannot settle
(``c' >= 2 dt c``; weak data make ``|D|_F`` small and the uncapped rule would choose such a step),
and its fixed point is ``1 + dt (l + 3q) / (2 (l + q)) + O(dt^2)`` times the posterior variance:
a relative over-dispersion between ``dt / 2`` (data-dominated) and ``3 dt / 2`` (prior-dominated)
— measured 1-3% at the default cap ``max_dt = 0.02``. The posterior *mean* of a linear-Gaussian
problem is a fixed point for every ``dt``.

**When it is done.** A sampler has no natural end; the run stops when the algorithm time ``t``
(sum of ``dt``) reaches ``final_time`` (default 10), the last step shortened to land on it. The
ensemble first collapses from the prior like EKI (``|D|_F`` is large, the steps tiny but ``t``
grows geometrically), then the covariance-preconditioned dynamics relax at rate about 1 in ``t``
whatever the problem's scaling (affine invariance), so ``t = 10`` leaves about ``e^{-10}`` of the
transient. The final ensemble is the approximate posterior sample. ``final_time=None`` runs for
``num_steps``. Near the posterior ``dt ~ min(dt0 / sqrt(p_eff (1 + p_eff/J)), max_dt)`` with
``p_eff`` data-informed directions, so small problems finish in ~550 steps; large ones need
more (see ``history.time``) or a smaller ``final_time``.

**Failures** are handled by the shared kernel (:mod:`ekibnn.inversion.kernel`): members with a
non-finite forward output are left out of every statistic (mean, covariance, ``D``) and redrawn
from the Gaussian fitted to the updated successful members; ``n_failed`` reports them.

ALDI is EKS with the correction switched on (:class:`ALDI` subclasses :class:`EKS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ekibnn import schedulers as _schedulers
from ekibnn.errors import input_error
from ekibnn.inversion.kernel import (
    EnsembleKalman,
    EnsembleState,
    Forecast,
    Space,
    check_choice,
    check_prior,
    ensemble_options,
)
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = ["ALDI", "EKS", "EKSInfo", "aldi", "eks"]


class EKSInfo(NamedTuple):
    """Diagnostics of one step: the fields of :class:`ekibnn.EnsembleInfo` plus ``d_norm``.

    Attributes:
        misfit: mean over good members of ``|Gamma^{-1/2}(y - G_j)|^2 / m`` (about 1 when the
            members fit to the noise level, as posterior samples of a well-specified model do).
        mean_misfit: the same for the ensemble-mean output ``mean_j G_j``.
        dt: the step size used.
        time: algorithm time after the step.
        n_failed: members whose output was non-finite (they were redrawn).
        spread: ``sqrt(mean_k Var_j theta_jk)``, the ensemble's parameter spread.
        d_norm: ``|D|_F``, the Frobenius norm of the J x J matrix ``D`` behind the step size.
    """

    misfit: Float[Array, ""]
    mean_misfit: Float[Array, ""]
    dt: Float[Array, ""]
    time: Float[Array, ""]
    n_failed: Int[Array, ""]
    spread: Float[Array, ""]
    d_norm: Float[Array, ""]


def _resolve(space: Space, j: int, p: int) -> str:
    if space == "auto":
        return "parameter" if p <= j else "ensemble"
    return space


def _covariance_noise(key: PRNGKeyArray, anom: Float[Array, "J p"], space: Space) -> Array:
    """J independent draws of ``N(0, C)``, ``C = A^T A``, as rows: ``xi_j A`` with
    ``xi_j ~ N(0, I_J)`` (ALDI's generalised square root ``C^{1/2} = A^T``; ensemble space) or
    ``z_j C^{1/2}`` with ``z_j ~ N(0, I_p)`` and the symmetric root (parameter space, p <= J).
    Both have the same law; the second costs ``O(J p^2 + p^3)`` instead of ``O(J^2 p)``."""
    j, p = anom.shape
    if _resolve(space, j, p) == "ensemble":
        return jax.random.normal(key, (j, j), anom.dtype) @ anom
    values, vectors = jnp.linalg.eigh(anom.T @ anom)
    root = (vectors * jnp.sqrt(jnp.maximum(values, 0))) @ vectors.T
    return jax.random.normal(key, (j, p), anom.dtype) @ root


def _implicit_prior_solve(
    anom: Float[Array, "J p"],
    std: Float[Array, " p"],
    w: Float[Array, "K p"],
    dt: Float[Array, ""],
    space: Space,
) -> Float[Array, "K p"]:
    """Rows of ``w`` mapped by ``(I + dt A^T A K)^{-1}`` with ``K = diag(std^-2)``.

    With ``S = A K^{1/2}`` (anomalies in prior-whitened units) and Cholesky solves only:

    * parameter space (p <= J): ``K^{-1/2} (I_p + dt S^T S)^{-1} K^{1/2}``;
    * ensemble space (Woodbury, p > J): ``I - dt A^T (I_J + dt S S^T)^{-1} S K^{1/2}``,
      so no p x p matrix is formed.
    """
    j, p = anom.shape
    scaled = anom / std  # S
    if _resolve(space, j, p) == "parameter":
        system = jnp.eye(p, dtype=w.dtype) + dt * scaled.T @ scaled
        return cho_solve(cho_factor(system, lower=True), (w / std).T).T * std
    gram = jnp.eye(j, dtype=w.dtype) + dt * scaled @ scaled.T
    coef = cho_solve(cho_factor(gram, lower=True), scaled @ (w / std).T).T  # (K, J)
    return w - dt * coef @ anom


class EKS(EnsembleKalman):
    """The ensemble Kalman sampler; build it with :func:`eks`."""

    space: Space = eqx.field(static=True)

    name: ClassVar[str] = "EKS"
    corrected: ClassVar[bool] = False  # ALDI's finite-ensemble correction

    def _drift_terms(self, f: Forecast) -> tuple[Array, Array, Array]:
        """Whitened residuals ``R = Gamma^{-1/2}(G_j - y)``, output anomalies ``B`` (population
        normalisation ``1/J``, failed rows 0) and the centred particles ``X_c``."""
        residual = jnp.where(f.ok[:, None], -f.residual, 0)
        out_anom = jnp.where(f.ok[:, None], f.batch.whiten(f.outputs - f.mean_output), 0)
        centred = f.anomalies * jnp.sqrt(f.count - 1.0).astype(f.x.dtype)
        return residual, out_anom, centred

    def _through_d(self, j: int, m: int, p: int) -> bool:
        """Whether the J x J matrix ``D`` is the cheaper association for these shapes."""
        return m > j or j * (m + p) < 2 * m * p

    def diagnostics(self, f: Forecast) -> dict[str, Array]:
        residual, out_anom, _ = self._drift_terms(f)
        (j, p), m = f.x.shape, residual.shape[1]
        n = f.count.astype(f.x.dtype)
        if self._through_d(j, m, p):
            d = residual @ out_anom.T / n
            return {"d_norm": jnp.sqrt(jnp.sum(d**2))}
        square = jnp.sum((residual.T @ residual) * (out_anom.T @ out_anom))
        return {"d_norm": jnp.sqrt(jnp.maximum(square, 0)) / n}

    def make_info(self, common, extras):
        return EKSInfo(**common, **extras)

    def analysis(self, key: PRNGKeyArray, f: Forecast, dt: Array) -> Float[Array, "J p"]:
        residual, out_anom, centred = self._drift_terms(f)
        (j, p), m = f.x.shape, residual.shape[1]
        n = f.count.astype(f.x.dtype)
        # The derivative-free likelihood drift sum_k D_jk (theta_k - mean) = R (B^T X_c) / J, by
        # the cheaper association for these static shapes.
        if self._through_d(j, m, p):
            drift = (residual @ out_anom.T / n) @ centred
        else:
            drift = residual @ (out_anom.T @ centred / n)
        v = f.x - dt * drift
        if self.corrected:
            v = v + dt * (p + 1) / n * centred
        # Implicit prior drift: theta* = m0 + (I + dt C K)^{-1} (v - m0).
        anom = centred / jnp.sqrt(n)  # A: C = A^T A
        prior_mean = self.prior.flat_mean().astype(f.x.dtype)
        x_star = prior_mean + _implicit_prior_solve(
            anom, self.prior.flat_std().astype(f.x.dtype), v - prior_mean, dt, self.space
        )
        # Noise sqrt(2 dt) C^{1/2} xi_j, covariance 2 dt C for every member.
        return x_star + jnp.sqrt(2 * dt) * _covariance_noise(key, anom, self.space)


class ALDI(EKS):
    """Gradient-free ALDI: EKS with the finite-ensemble correction; build it with
    :func:`aldi`."""

    name: ClassVar[str] = "ALDI"
    corrected: ClassVar[bool] = True

    def init(self, particles: PyTree) -> EnsembleState:
        state = super().init(particles)
        j, p = state.x.shape
        if j < p + 2:
            raise input_error(
                "particles",
                f"ALDI's finite-ensemble correction needs J >= p + 2 = {p + 2} members for "
                f"p = {p} parameters",
                f"J = {j}",
                "sample more members, or use ek.eks (no correction; works with J <= p, in the "
                "ensemble's span)",
            )
        return state


def _sampler(
    cls: type[EKS],
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    scheduler: _schedulers.Scheduler | None,
    indexed_forward: bool,
    forward_batch_size: int | None,
    space: Space,
    update_precision: str | None,
) -> EKS:
    check_prior(
        prior,
        required=f"{cls.name} samples the posterior and needs the prior's mean and covariance "
        "in its update",
    )
    if isinstance(scheduler, _schedulers.DataMisfit):
        raise input_error(
            "scheduler",
            f"a step rule that keeps dt below {_schedulers.UNSTABLE_DT} (eks_stable(), or "
            "constant(dt) with a small dt)",
            "data_misfit() (its steps reach 1: the sampler's covariance cannot settle)",
            "leave the default scheduler eks_stable()",
        )
    if isinstance(scheduler, _schedulers.Constant) and scheduler.dt >= _schedulers.UNSTABLE_DT:
        raise input_error(
            "scheduler",
            f"a constant step below {_schedulers.UNSTABLE_DT}",
            f"constant({scheduler.dt})",
            "pass a smaller step: the noise sqrt(2 dt C) scales with the ensemble covariance, "
            "which cannot settle for dt >= 1/2 (or use the default eks_stable())",
        )
    options = ensemble_options(
        obs,
        prior,
        scheduler=scheduler,
        minibatch=None,
        inflation=0.0,
        multiplicative_inflation=0.0,
        indexed_forward=indexed_forward,
        forward_batch_size=forward_batch_size,
        update_precision=update_precision,
        default_scheduler=_schedulers.eks_stable(),
    )
    check_choice("space", space, ("auto", "parameter", "ensemble"), "leave it at 'auto'")
    return cls(forward_fn=forward_fn, space=space, **options)


def eks(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    *,
    scheduler: _schedulers.Scheduler | None = None,
    indexed_forward: bool = False,
    forward_batch_size: int | None = None,
    space: Space = "auto",
    update_precision: str | None = "highest",
) -> EKS:
    """Build the ensemble Kalman sampler (EKS) of Garbuno-Inigo, Hoffmann, Li & Stuart (2020).

    Linearly implicit split-step scheme with the EKS-stable adaptive step (module docstring).
    Use :func:`aldi` when ``J >= p + 2``: same cost, and exact for linear-Gaussian problems at
    finite J; EKS also works with ``J <= p`` (the ensemble then stays in its initial span).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (ekibnn vmaps it).
        obs: the data and its noise.
        prior: the Gaussian prior (required: it enters every step, not only the start).
        scheduler: default :func:`ekibnn.schedulers.eks_stable` (the stable adaptive step
            ``min(1 / (|D|_F + 1e-8), 0.02)`` to algorithm time 10). The stationary covariance
            is inflated by a factor between ``1 + dt/2`` and ``1 + 3 dt/2`` (module docstring):
            at most 3% at the default cap. A ``constant(dt)`` step must be below 0.5, and is
            only stable once the ensemble is near the posterior.
        indexed_forward: ``forward_fn(params, indices)`` (called with all indices).
        forward_batch_size: members evaluated at a time (memory bound); None = all at once.
        space: ``"parameter"`` (p x p Cholesky solve and covariance root), ``"ensemble"``
            (J x J Woodbury solve, noise through the anomalies) or ``"auto"`` (parameter space
            when ``p <= J``). The drift and the noise's law are the same in both.
        update_precision: matrix-product precision of the update (see
            :func:`ekibnn.linalg.matmul_precision`; the forward map keeps JAX's default).

    Returns:
        An :class:`EKS` module with the state :class:`ekibnn.EnsembleState` and the info
        :class:`EKSInfo`.

    Raises:
        InputError: for bad arguments (before anything is compiled).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.eks(lambda th: H @ th, obs, prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 200), num_steps=1000, progress=False)
        >>> bool(result.state.done), result.num_steps < 1000
        (True, True)
        >>> bool(jnp.allclose(result.particles.mean(0), jnp.array([1.0, 1.0]), atol=0.05))
        True
    """
    settings = (scheduler, indexed_forward, forward_batch_size, space, update_precision)
    return _sampler(EKS, forward_fn, obs, prior, *settings)


def aldi(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    *,
    scheduler: _schedulers.Scheduler | None = None,
    indexed_forward: bool = False,
    forward_batch_size: int | None = None,
    space: Space = "auto",
    update_precision: str | None = "highest",
) -> ALDI:
    """Build gradient-free ALDI (affine-invariant Langevin dynamics; Garbuno-Inigo, Nüsken &
    Reich 2020): EKS plus the finite-ensemble correction ``(p + 1)/J (theta_j - mean)`` and the
    generalised square root ``C^{1/2} = A^T`` in the noise, so that for a linear-Gaussian
    problem the J-member product posterior is exactly invariant in continuous time (only the
    ``O(dt)`` discretisation error of the scheme remains). Needs ``J >= p + 2`` members.

    Arguments, defaults and returned algorithm are those of :func:`eks`.

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> obs = ek.Observation(jnp.array([1.0, 2.0]), 0.5)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.aldi(lambda th: th, obs, prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 500), num_steps=1000, progress=False)
        >>> bool(jnp.allclose(result.particles.mean(0), jnp.array([0.8, 1.6]), atol=0.1))
        True
    """
    settings = (scheduler, indexed_forward, forward_batch_size, space, update_precision)
    return _sampler(ALDI, forward_fn, obs, prior, *settings)
