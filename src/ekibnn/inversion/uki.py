"""Unscented Kalman inversion (UKI; Huang, Schneider & Stuart 2022, J. Comput. Phys. 463,
111262, "Iterated Kalman methodology for inverse problems").

UKI applies the unscented Kalman filter to the stochastic dynamical system in which the
forward map is embedded (the "novel stochastic dynamical system" of HSS 2022):

    evolution:    theta_{n+1} = r + alpha (theta_n - r) + omega_{n+1},  omega ~ N(0, Sigma_omega)
    observation:  y = F(theta_{n+1}) + nu_{n+1},                         nu ~ N(0, Sigma_nu)

and keeps a Gaussian ``N(m_n, C_n)``. One iteration (the UKI algorithm of HSS 2022, as also
documented for EnsembleKalmanProcesses.jl ``Unscented``):

    prediction   m^ = r + alpha (m_n - r),     C^ = alpha^2 C_n + Sigma_omega
    sigma points theta^0 = m^,  theta^{j, j+p} = m^ +- c [sqrt(C^)]_j   (j = 1..p; 2p + 1 points)
    analysis     y^j = F(theta^j),  y^ = y^0
                 C^{theta y} = sum_j W (theta^j - m^)(y^j - y^)^T
                 C^{yy}      = sum_j W (y^j - y^)(y^j - y^)^T + Sigma_nu
                 m_{n+1} = m^ + C^{theta y} (C^{yy})^{-1} (y - y^)
                 C_{n+1} = C^ - C^{theta y} (C^{yy})^{-1} C^{y theta}

with ``[sqrt(C^)]_j`` the j-th column of the Cholesky factor, ``c = a sqrt(p)``,
``W = 1 / (2 a^2 p)``, ``a = min(sqrt(4 / p), 1)``, so the 2p points reproduce ``C^`` exactly.

Linear algebra. Writing ``A`` (2p, p) for the rows ``sqrt(W) (theta^j - m^)`` (``A^T A = C^``)
and ``B`` (2p, m) for ``sqrt(W) Sigma_nu^{-1/2} (y^j - y^)``, the analysis is

    m_{n+1} = m^ + A^T (I + B B^T)^{-1} B Sigma_nu^{-1/2} (y - y^)
    C_{n+1} = A^T (I + B B^T)^{-1} A = Z^T Z,   Z = L^{-1} A,  L L^T = I + B B^T   (Woodbury)

so only ``(2p, 2p)`` matrices are factorised (cost linear in ``m``, never ``(m, m)``), and the
covariance stays symmetric positive semi-definite by construction.

Default configuration = Bayesian (posterior-matching) UKI. ``impose_prior=True`` augments the
forward map with the prior, ``F(theta) = [G(theta); theta]`` observed as ``[y; m_0]``, and the
free parameters are ``r = m_0``, ``Sigma_nu = 2 blockdiag(Gamma, C_0)``,
``Sigma_omega = (2 - alpha^2) C_n`` ("Lambda = C_n", EKP ``update_freq = 1``) and
``alpha = 1``. Derivation for linear ``G = H``: the prediction gives ``C^ = 2 C_n``, and the
Kalman analysis in information form reads

    C_{n+1}^{-1}         = (1/2) C_n^{-1}       + (1/2) (H^T Gamma^{-1} H + C_0^{-1})
    C_{n+1}^{-1} m_{n+1} = (1/2) C_n^{-1} m_n   + (1/2) (H^T Gamma^{-1} y + C_0^{-1} m_0),

a contraction with factor 1/2 whose fixed point is exactly the posterior ``(m_post, C_post)``;
starting from the prior, ``C_n^{-1} = C_post^{-1} - 2^{-n} H^T Gamma^{-1} H`` (and likewise for
the mean), so about 50 iterations reach double-precision round-off. With ``alpha < 1`` the
covariance still converges to ``C_post`` but the mean to ``((1 - alpha) m_0 + m_post) /
(2 - alpha)`` (shrunk towards the prior). Without the prior (``impose_prior=False``,
``Sigma_nu = 2 Gamma``, ``Lambda = C_n``, ``alpha = 1``) the fixed point is the least-squares
estimate with covariance ``(H^T Gamma^{-1} H)^{-1}`` (posterior under a flat prior, HSS 2022's
"uninformative prior" result); ``evolution_cov="prior"`` (``Lambda = C_0``, EKP
``update_freq = 0``) gives the paper's regularised estimate, not the posterior. Note that
``Sigma_omega = C_0`` with ``alpha = 1`` does NOT reproduce the posterior covariance.

UKI is meant for small parameter counts ``p`` (physical parameters): each iteration costs
``2p + 1`` forward evaluations and ``O(p^2 m + p^3)`` linear algebra, and the state holds a
``(p, p)`` covariance. It shares the prior augmentation and the vmapped forward evaluation with
the ensemble methods (:mod:`ekibnn.inversion.kernel`); a sigma point with a non-finite output
is an error (the quadrature cannot drop points). Stopping is a scheduler:
:func:`ekibnn.schedulers.tolerance` (the default) sees each iteration's change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn import schedulers as _schedulers
from ekibnn._checks import runtime_check
from ekibnn.ensemble import Layout, flatten, flatten_member
from ekibnn.errors import input_error
from ekibnn.inversion.kernel import (
    Algorithm,
    augment_with_prior,
    check_choice,
    check_forward,
    check_number,
    check_observation,
    check_positive_int,
    check_precision,
    check_prior,
    evaluate_members,
)
from ekibnn.linalg import matmul_precision
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = ["UKI", "UKIInfo", "UKIState", "uki"]


class UKIState(NamedTuple):
    """State of a UKI run: the Gaussian ``N(mean, cov)`` (primary data only).

    Attributes:
        mean: the current mean ``m_n`` as ONE member's parameters (a pytree like the prior
            mean; :func:`ekibnn.ensemble.flatten_member` gives the ``(p,)`` vector).
        cov: the current covariance ``C_n`` ``(p, p)``, in the order of
            :func:`ekibnn.ensemble.flatten_member`.
        step: iterations taken.
        done: the scheduler has asked to stop (converged, or its iteration cap).
        scheduler_state: the scheduler's own state.
    """

    mean: PyTree
    cov: Float[Array, "p p"]
    step: Int[Array, ""]
    done: Bool[Array, ""]
    scheduler_state: PyTree

    @property
    def time(self) -> Float[Array, ""]:
        """Iterations taken as a float (each UKI iteration is one unit step)."""
        return self.step.astype(self.cov.dtype)

    @property
    def particles(self) -> PyTree:
        """The ``2p + 1`` points ``mean, mean +- sqrt(p) [chol(cov)]_j`` (pytree, leading axis
        ``2p + 1``): their sample mean is exactly ``mean`` and their unbiased sample covariance
        exactly ``cov``, so ensemble-based code can use them. (Not the points the next
        iteration evaluates, which surround the *predicted* mean with scale ``a sqrt(p)``.)"""
        chol = jnp.linalg.cholesky(0.5 * (self.cov + self.cov.T))
        mean = flatten_member(self.mean)
        layout = Layout.of_member(self.mean)
        return layout.unflatten(_stencil(mean, chol, math.sqrt(mean.shape[0])))


class UKIInfo(NamedTuple):
    """Diagnostics of one iteration (all scalars).

    Attributes:
        misfit: mean over the ``2p + 1`` sigma points of ``||Gamma^{-1/2}(y - G_j)||^2 / m``.
        mean_misfit: the same at the predicted mean ``G(m^)`` (the central sigma point).
        change: ``max(max_k |dm_k| / s_k, max_kl |dC_kl| / (s_k s_l))`` with
            ``s = sqrt(diag C_{n+1})``: the change of mean and covariance in posterior-std
            units, which the default scheduler compares with its tolerance.
        time: iterations after this one.
        spread: ``sqrt(mean_k C_{n+1, kk})``.
    """

    misfit: Float[Array, ""]
    mean_misfit: Float[Array, ""]
    change: Float[Array, ""]
    time: Float[Array, ""]
    spread: Float[Array, ""]


def _stencil(mean: Array, chol: Array, c: float) -> Array:
    offsets = c * chol.T  # row j = c [chol]_j
    return jnp.concatenate([mean[None], mean + offsets, mean - offsets])


class UKI(Algorithm):
    """Unscented Kalman inversion; build it with :func:`uki` (fields as its arguments)."""

    forward_fn: Callable
    obs: Observation
    prior: GaussianPrior
    scheduler: _schedulers.Scheduler
    alpha: float = eqx.field(static=True)
    impose_prior: bool = eqx.field(static=True)
    evolution_cov: str = eqx.field(static=True)
    start: str = eqx.field(static=True)
    jitter: float = eqx.field(static=True)
    forward_batch_size: int | None = eqx.field(static=True)
    update_precision: str | None = eqx.field(static=True)

    def init(self, particles: PyTree) -> UKIState:
        """The first Gaussian: the prior (``start="prior"``; ``particles`` only checked against
        its structure, any ensemble size), or the particles' mean and covariance plus
        ``jitter`` times the prior covariance (``start="ensemble"``, J >= 2)."""
        j = self.prior.check_particles(particles)
        check_forward(self.forward_fn, self.prior.mean, self.obs.size)
        mean0 = self.prior.flat_mean()
        var0 = self.prior.flat_std() ** 2
        if self.start == "prior":
            mean, cov = mean0, jnp.diag(var0)
        else:
            if j < 2:
                raise input_error(
                    "particles",
                    "J >= 2 members to start UKI from their mean and covariance",
                    f"J = {j}",
                    "pass an ensemble, or build UKI with start='prior'",
                )
            x = flatten(particles).astype(mean0.dtype)
            mean = jnp.mean(x, axis=0)
            anom = (x - mean) / jnp.sqrt(j - 1.0)
            cov = anom.T @ anom + self.jitter * jnp.diag(var0)
        return UKIState(
            mean=Layout.of_member(self.prior.mean).member(mean.astype(mean0.dtype)),
            cov=cov.astype(mean0.dtype),
            step=jnp.zeros((), jnp.int32),
            done=jnp.asarray(False),
            scheduler_state=self.scheduler.init(),
        )

    def step(self, key: PRNGKeyArray, state: UKIState) -> tuple[UKIState, UKIInfo]:
        """One UKI iteration (module docstring); deterministic (the key is unused)."""
        del key
        layout = Layout.of_member(state.mean)
        mean, cov = flatten_member(state.mean), state.cov
        dtype = mean.dtype
        p = mean.shape[0]
        scale_a = min(math.sqrt(4.0 / p), 1.0)
        spread_c = scale_a * math.sqrt(p)  # c_j
        weight = 1.0 / (2.0 * scale_a**2 * p)  # W_j^c, j = 1..2p
        mean0 = self.prior.flat_mean().astype(dtype)
        std0 = self.prior.flat_std().astype(dtype)

        # Prediction.
        mean_hat = mean0 + self.alpha * (mean - mean0)
        lam = cov if self.evolution_cov == "current" else jnp.diag(std0**2)
        cov_hat = self.alpha**2 * cov + (2.0 - self.alpha**2) * lam
        chol = jnp.linalg.cholesky(0.5 * (cov_hat + cov_hat.T))
        sigma = _stencil(mean_hat, chol, spread_c)  # (2p + 1, p)

        # Analysis.
        outputs = evaluate_members(
            self.forward_fn, layout, sigma, None, self.forward_batch_size
        ).astype(dtype)
        outputs = runtime_check(
            outputs,
            ~jnp.all(jnp.isfinite(outputs)),
            "UKI: a sigma point has a non-finite forward output; expected finite outputs at "
            "all 2p + 1 sigma points (UKI cannot drop points without breaking its quadrature); "
            "fix: check forward_fn for overflow/NaN, reparametrise (e.g. log-transform) or use "
            "a smaller prior std",
        )
        with matmul_precision(self.update_precision):  # the update at full precision
            outputs_w = self.obs.whiten(outputs)
            residual = self.obs.whiten(self.obs.y - outputs)  # (2p + 1, m)
            sq = jnp.sum(residual**2, axis=1)
            if self.impose_prior:
                outputs_w, residual = augment_with_prior(outputs_w, residual, sigma, self.prior)
            root_w = math.sqrt(weight)
            inv_root2 = 1.0 / math.sqrt(2.0)  # Sigma_nu = 2 Gamma (and 2 C_0)
            param_anom = root_w * (sigma[1:] - mean_hat)  # A (2p, p)
            output_anom = root_w * inv_root2 * (outputs_w[1:] - outputs_w[0])  # B
            innovation = inv_root2 * residual[0]
            gram = output_anom @ output_anom.T + jnp.eye(2 * p, dtype=dtype)  # (2p, 2p)
            factor = jnp.linalg.cholesky(gram)
            mean_new = mean_hat + param_anom.T @ cho_solve((factor, True), output_anom @ innovation)
            z = solve_triangular(factor, param_anom, lower=True)
            cov_new = z.T @ z
        cov_new = runtime_check(
            cov_new,
            ~jnp.all(jnp.isfinite(cov_new)),
            "UKI: the covariance became non-finite; expected a finite positive-definite "
            "covariance; fix: use float64 (jax.config.update('jax_enable_x64', True)) or "
            "rescale the parameters",
        )

        scale = jnp.sqrt(jnp.diag(cov_new))
        change = jnp.maximum(
            jnp.max(jnp.abs(mean_new - mean) / scale),
            jnp.max(jnp.abs(cov_new - cov) / jnp.outer(scale, scale)),
        )
        m = self.obs.size
        stats = _schedulers.MisfitStats(
            misfits=0.5 * sq,
            ok=jnp.ones(sq.shape, bool),
            mean_output_misfit=0.5 * sq[0],
            num_obs=m,
            time=state.time,
            step=state.step,
            change=change,
        )
        dt, done, scheduler_state = self.scheduler.next(state.scheduler_state, stats)
        dt = runtime_check(
            dt,
            dt != 1,
            "UKI: the scheduler chose a step dt != 1; expected unit steps (each UKI iteration "
            "is one step of its dynamical system); fix: use ek.schedulers.tolerance(...)",
        )
        new_state = UKIState(
            mean=layout.member(mean_new),
            cov=cov_new,
            step=state.step + 1,
            done=jnp.asarray(done),
            scheduler_state=scheduler_state,
        )
        info = UKIInfo(
            misfit=jnp.mean(sq) / m,
            mean_misfit=sq[0] / m,
            change=change,
            time=new_state.time,
            spread=jnp.sqrt(jnp.mean(jnp.diag(cov_new))),
        )
        return new_state, info


def uki(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    *,
    scheduler: _schedulers.Scheduler | None = None,
    alpha: float = 1.0,
    impose_prior: bool = True,
    evolution_cov: Literal["current", "prior"] = "current",
    start: Literal["prior", "ensemble"] = "prior",
    jitter: float = 1e-6,
    forward_batch_size: int | None = None,
    update_precision: str | None = "highest",
) -> UKI:
    """Build an unscented Kalman inversion (see the module docstring for the equations).

    The defaults are the Bayesian configuration whose converged mean and covariance equal the
    posterior for linear-Gaussian problems (derivation in the module docstring).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (ekibnn vmaps it over the
            ``2p + 1`` sigma points).
        obs: the data and its noise ``Gamma``.
        prior: the Gaussian prior ``N(m_0, C_0)``: ``r = m_0``, the start (by default) and, when
            ``impose_prior``, the augmented observation.
        scheduler: when to stop; default :func:`ekibnn.schedulers.tolerance` (change below
            ``sqrt(machine epsilon)``, at most 100 iterations). Its steps must be ``dt = 1``.
        alpha: regularisation ``alpha`` in (0, 1] of the evolution ``r + alpha (theta - r)``.
            Keep 1 for the posterior.
        impose_prior: augment ``G`` with the prior (``[G(theta); theta]`` observed as
            ``[y; m_0]``, ``Sigma_nu = 2 blockdiag(Gamma, C_0)``); False: ``Sigma_nu = 2 Gamma``.
        evolution_cov: ``Lambda`` in ``Sigma_omega = (2 - alpha^2) Lambda``: ``"current"``
            (``C_n``, needed for the posterior) or ``"prior"`` (``C_0``).
        start: ``"prior"`` (the iteration starts from ``N(m_0, C_0)``) or ``"ensemble"`` (from
            the mean and covariance of the particles given to ``init``, plus ``jitter`` times
            ``C_0``, e.g. after an ensemble warm start).
        jitter: see ``start``.
        forward_batch_size: sigma points evaluated at a time (None: all at once).
        update_precision: matrix-product precision of the analysis step (see
            :func:`ekibnn.linalg.matmul_precision`; the forward map keeps JAX's default).

    Returns:
        A :class:`UKI` module with state :class:`UKIState` and info :class:`UKIInfo`. The step
        ignores its key (UKI is deterministic).

    Raises:
        InputError: for bad arguments (before anything is compiled).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.uki(lambda th: H @ th, obs, prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 1), num_steps=200, progress=False)
        >>> bool(jnp.allclose(result.state.mean, jnp.array([1.0, 1.0]), atol=0.05))
        True
    """
    check_observation(obs)
    check_prior(prior, required="UKI starts from it and uses it for r and C_0")
    alpha = check_number("alpha", alpha, 0.0, strict=True)
    if alpha > 1:
        raise input_error(
            "alpha", "a number in (0, 1]", repr(alpha), "use alpha=1.0 for the posterior"
        )
    check_choice(
        "evolution_cov", evolution_cov, ("current", "prior"), "use 'current' for the posterior"
    )
    check_choice("start", start, ("prior", "ensemble"), "use 'prior' or 'ensemble'")
    jitter = check_number("jitter", jitter)
    scheduler = _schedulers.tolerance() if scheduler is None else scheduler
    if not isinstance(scheduler, _schedulers.Scheduler) or not scheduler.unit_steps:
        raise input_error(
            "scheduler",
            "a scheduler with unit steps (ek.schedulers.tolerance(...), or constant(1.0))",
            repr(scheduler),
            "pass scheduler=ek.schedulers.tolerance(tol, max_steps)",
        )
    if forward_batch_size is not None:
        forward_batch_size = check_positive_int(
            "forward_batch_size", forward_batch_size, "pass e.g. 128 or None"
        )
    check_precision(update_precision)
    return UKI(
        forward_fn=forward_fn,
        obs=obs,
        prior=prior,
        scheduler=scheduler,
        alpha=alpha,
        impose_prior=bool(impose_prior),
        evolution_cov=evolution_cov,
        start=start,
        jitter=jitter,
        forward_batch_size=forward_batch_size,
        update_precision=update_precision,
    )
