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
``(p, p)`` covariance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn.ensemble import flatten_member, unflatten
from ekibnn.errors import input_error
from ekibnn.inversion.eki import KalmanAlgorithm, check_forward
from ekibnn.linalg import matmul_precision
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = ["UKIInfo", "UKIState", "uki"]


class UKIState(NamedTuple):
    """State of a UKI run: the Gaussian ``N(mean, cov)`` and a stencil representing it.

    Attributes:
        particles: ``2p + 1`` members ``mean, mean +- sqrt(p) [chol(cov)]_j`` (pytree, leading
            axis ``2p + 1``): their sample mean is exactly ``mean`` and their unbiased sample
            covariance exactly ``cov``, so ensemble-based predictions can use them like any
            ekibnn ensemble. (They are not the points evaluated by the next step, which are
            drawn around the *predicted* mean with scale ``c = a sqrt(p)``.)
        mean: the current mean ``m_n`` as ONE member's parameters (pytree like the prior mean).
        cov: the current covariance ``C_n`` (p, p), in the order of
            :func:`ekibnn.ensemble.flatten`.
        time: iterations taken, as a float (each UKI iteration is one unit step).
        step: iterations taken.
        done: converged (change below ``tol``) or ``max_steps`` reached.
    """

    particles: PyTree
    mean: PyTree
    cov: Float[Array, "p p"]
    time: Float[Array, ""]
    step: Int[Array, ""]
    done: Bool[Array, ""]


class UKIInfo(NamedTuple):
    """Diagnostics of one iteration (all scalars).

    Attributes:
        misfit: mean over the ``2p + 1`` sigma points of ``||Gamma^{-1/2}(y - G_j)||^2 / m``.
        mean_misfit: the same at the predicted mean ``G(m^)`` (the central sigma point).
        change: the convergence measure ``max(max_k |dm_k| / s_k, max_kl |dC_kl| / (s_k s_l))``
            with ``s = sqrt(diag C_{n+1})``: the change of mean and covariance in posterior-std
            units; the run stops when it falls below ``tol``.
        time: iterations after this one.
        spread: ``sqrt(mean_k C_{n+1, kk})``.
    """

    misfit: Float[Array, ""]
    mean_misfit: Float[Array, ""]
    change: Float[Array, ""]
    time: Float[Array, ""]
    spread: Float[Array, ""]


def uki(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    alpha: float = 1.0,
    impose_prior: bool = True,
    evolution_cov: Literal["current", "prior"] = "current",
    tol: float | None = None,
    max_steps: int = 100,
    update_precision: str | None = "highest",
) -> KalmanAlgorithm:
    """Build an unscented Kalman inversion (see the module docstring for the equations).

    The defaults are the Bayesian configuration whose converged mean and covariance equal the
    posterior for linear-Gaussian problems (derivation in the module docstring).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (ekibnn vmaps it over the
            ``2p + 1`` sigma points).
        obs: the data and its noise ``Gamma``.
        prior: the Gaussian prior ``N(m_0, C_0)``: the iteration starts from it, ``r = m_0``,
            and it enters the augmented observation when ``impose_prior``.
        alpha: regularisation ``alpha`` in (0, 1] of the evolution ``r + alpha (theta - r)``.
            Keep 1 for the posterior.
        impose_prior: augment ``G`` with the prior (``[G(theta); theta]`` observed as
            ``[y; m_0]``, ``Sigma_nu = 2 blockdiag(Gamma, C_0)``); False: ``Sigma_nu = 2 Gamma``.
        evolution_cov: ``Lambda`` in ``Sigma_omega = (2 - alpha^2) Lambda``: ``"current"``
            (``C_n``, needed for the posterior) or ``"prior"`` (``C_0``).
        tol: stop when the change of mean and covariance (``UKIInfo.change``, in posterior-std
            units) falls below it; default ``sqrt(machine epsilon)`` of the parameters' dtype
            (3.5e-4 in float32, 1.5e-8 in float64).
        max_steps: stop after this many iterations in any case (``done`` is set).
        update_precision: matrix-product precision of the analysis step (see
            :func:`ekibnn.linalg.matmul_precision`; the forward map keeps JAX's default).

    Returns:
        A :class:`KalmanAlgorithm` with state :class:`UKIState` and info :class:`UKIInfo`.
        ``init(particles)`` uses ``particles`` ONLY to check their structure against the prior
        (any ensemble size, e.g. ``prior.sample(key, 1)``); the iteration starts from the prior.
        The step ignores its key (UKI is deterministic).

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
    if not isinstance(obs, Observation):
        raise input_error(
            "obs", "an ekibnn.Observation", type(obs).__name__, "wrap data: Observation(y, noise)"
        )
    if not isinstance(prior, GaussianPrior):
        raise input_error(
            "prior",
            "an ekibnn.GaussianPrior (UKI starts from it and uses it for r and C_0)",
            type(prior).__name__,
            "pass prior=ek.GaussianPrior(mean_tree, std)",
        )
    try:
        alpha_ok = 0 < float(alpha) <= 1
    except (TypeError, ValueError):
        alpha_ok = False
    if not alpha_ok or isinstance(alpha, bool):
        raise input_error(
            "alpha", "a number in (0, 1]", repr(alpha), "use alpha=1.0 for the posterior"
        )
    alpha = float(alpha)
    if evolution_cov not in ("current", "prior"):
        raise input_error(
            "evolution_cov",
            "'current' (Lambda = C_n) or 'prior' (Lambda = C_0)",
            repr(evolution_cov),
            "use 'current' for the posterior",
        )
    if tol is not None and (
        isinstance(tol, bool) or not (isinstance(tol, int | float) and tol > 0)
    ):
        raise input_error("tol", "a positive number or None", repr(tol), "e.g. tol=1e-6")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise input_error("max_steps", "a positive integer", repr(max_steps), "e.g. 100")

    m = obs.size
    p = prior.num_params
    num_points = 2 * p + 1
    scale_a = min(math.sqrt(4.0 / p), 1.0)
    spread_c = scale_a * math.sqrt(p)  # c_j
    weight = 1.0 / (2.0 * scale_a**2 * p)  # W_j^c, j = 1..2p
    dynamic, static = eqx.partition(prior.mean, eqx.is_inexact_array)

    def template(num: int) -> PyTree:
        stacked = jax.tree_util.tree_map(lambda x: jnp.zeros((num, *x.shape), x.dtype), dynamic)
        return eqx.combine(stacked, static)

    stencil_template = template(num_points)
    member_template = template(1)

    def as_member(vec: Float[Array, " p"]) -> PyTree:
        tree = unflatten(vec[None], member_template)
        return jax.tree_util.tree_map(lambda x: x[0] if eqx.is_inexact_array(x) else x, tree)

    def stencil(mean: Array, chol: Array, c: float) -> Array:
        offsets = c * chol.T  # row j = c [chol]_j
        return jnp.concatenate([mean[None], mean + offsets, mean - offsets])

    def representative(mean: Array, cov: Array) -> PyTree:
        chol = jnp.linalg.cholesky(cov)
        return unflatten(stencil(mean, chol, math.sqrt(p)), stencil_template)

    def init(particles: PyTree) -> UKIState:
        prior.check_particles(particles)
        check_forward(forward_fn, stencil_template, m)
        mean0 = prior.flat_mean()
        cov0 = jnp.diag(prior.flat_std() ** 2).astype(mean0.dtype)
        return UKIState(
            particles=representative(mean0, cov0),
            mean=as_member(mean0),
            cov=cov0,
            time=jnp.zeros((), mean0.dtype),
            step=jnp.zeros((), jnp.int32),
            done=jnp.asarray(False),
        )

    def step(key: PRNGKeyArray, state: UKIState) -> tuple[UKIState, UKIInfo]:
        del key  # deterministic
        mean, cov = flatten_member(state.mean), state.cov
        dtype = mean.dtype
        mean0 = prior.flat_mean().astype(dtype)
        std0 = prior.flat_std().astype(dtype)
        threshold = math.sqrt(float(jnp.finfo(dtype).eps)) if tol is None else tol

        # Prediction.
        mean_hat = mean0 + alpha * (mean - mean0)
        lam = cov if evolution_cov == "current" else jnp.diag(std0**2)
        cov_hat = alpha**2 * cov + (2.0 - alpha**2) * lam
        chol = jnp.linalg.cholesky(0.5 * (cov_hat + cov_hat.T))
        sigma = stencil(mean_hat, chol, spread_c)  # (2p + 1, p)

        # Analysis.
        outputs = eqx.filter_vmap(forward_fn)(unflatten(sigma, stencil_template)).astype(dtype)
        outputs = eqx.error_if(
            outputs,
            ~jnp.all(jnp.isfinite(outputs)),
            "UKI: a sigma point has a non-finite forward output; expected finite outputs at "
            "all 2p + 1 sigma points (UKI cannot drop points without breaking its quadrature); "
            "fix: check forward_fn for overflow/NaN, reparametrise (e.g. log-transform) or use "
            "a smaller prior std",
        )
        with matmul_precision(update_precision):  # the update at full precision
            residual = obs.whiten(obs.y - outputs)  # (2p + 1, m)
            sq = jnp.sum(residual**2, axis=1)
            root_w = math.sqrt(weight)
            param_anom = root_w * (sigma[1:] - mean_hat)  # A (2p, p)
            inv_root2 = 1.0 / math.sqrt(2.0)  # Sigma_nu = 2 Gamma (and 2 C_0)
            output_anom = root_w * inv_root2 * (residual[0] - residual[1:])  # B = W^1/2 Sn^-1/2 dy
            innovation = inv_root2 * residual[0]
            if impose_prior:
                output_anom = jnp.concatenate([output_anom, inv_root2 * param_anom / std0], axis=1)
                innovation = jnp.concatenate([innovation, inv_root2 * (mean0 - mean_hat) / std0])
            gram = output_anom @ output_anom.T + jnp.eye(2 * p, dtype=dtype)  # (2p, 2p)
            factor = jnp.linalg.cholesky(gram)
            mean_new = mean_hat + param_anom.T @ cho_solve((factor, True), output_anom @ innovation)
            z = solve_triangular(factor, param_anom, lower=True)
            cov_new = z.T @ z
        cov_new = eqx.error_if(
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
        new_step = state.step + 1
        done = (change < threshold) | (new_step >= max_steps)
        new_state = UKIState(
            particles=representative(mean_new, cov_new),
            mean=as_member(mean_new),
            cov=cov_new,
            time=state.time + 1,
            step=new_step,
            done=done,
        )
        info = UKIInfo(
            misfit=jnp.mean(sq) / m,
            mean_misfit=sq[0] / m,
            change=change,
            time=new_state.time,
            spread=jnp.sqrt(jnp.mean(jnp.diag(cov_new))),
        )
        return new_state, info

    return KalmanAlgorithm(init, step)
