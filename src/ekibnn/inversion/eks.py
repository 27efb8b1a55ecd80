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

**Step size** (the EKS-stable rule of GHLS 2020 / EKP's ``EKSStableScheduler``, here capped):
``dt = min(dt0 / (|D|_F + eps), max_dt)``; see :func:`eks_stable_dt`. The first term keeps the
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

**Failures.** Members with a non-finite forward output are left out of every statistic (mean,
covariance, ``D``) and redrawn from the Gaussian fitted to the updated successful members, as in
:func:`ekibnn.eki`; ``n_failed`` reports them. Fewer than 2 finite members raise an error at run
time (``eqx.error_if``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn.ensemble import flatten, redraw_failed, unflatten
from ekibnn.errors import input_error
from ekibnn.inversion.eki import KalmanAlgorithm, check_forward
from ekibnn.linalg import matmul_precision
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = ["EKSInfo", "EKSState", "aldi", "eks", "eks_stable_dt"]

Space = Literal["auto", "parameter", "ensemble"]

#: The scheme's ensemble covariance cannot settle for dt >= 1/2 (module docstring).
_UNSTABLE_DT = 0.5


class EKSState(NamedTuple):
    """State of an EKS / ALDI run.

    Attributes:
        particles: the ensemble (pytree, leading axis J on every parameter leaf).
        time: algorithm time ``t`` (sum of the steps ``dt`` taken).
        step: number of steps taken.
        done: ``t`` has reached ``final_time`` (the run stops).
    """

    particles: PyTree
    time: Float[Array, ""]
    step: Int[Array, ""]
    done: Bool[Array, ""]


class EKSInfo(NamedTuple):
    """Diagnostics of one step (all scalars; measured on the ensemble *before* the update).
    The first six fields mean the same as in :class:`ekibnn.EKIInfo`.

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


def eks_stable_dt(
    d_norm: Float[ArrayLike, ""],
    dt0: float | ArrayLike = 1.0,
    eps: float = 1e-8,
    max_dt: float | ArrayLike | None = 0.02,
) -> Float[Array, ""]:
    """The EKS-stable adaptive step ``dt = min(dt0 / (|D|_F + eps), max_dt)``.

    GHLS 2020 (``Delta t_n = Delta t_0 / (|D(U_n)|_F + delta)``) and EnsembleKalmanProcesses.jl's
    ``EKSStableScheduler`` (numerator 1 as here, but no cap), with
    ``D_jk = <G_k - mean G, Gamma^{-1}(G_j - y)> / J``. ``|D|_F`` is large while the ensemble
    is far from the data (the explicit likelihood drift is stiff) and about
    ``sqrt(p_eff (1 + p_eff / J))`` near a posterior with ``p_eff`` data-informed directions.
    ``max_dt`` (None: no cap) bounds the step when the data are weak, where the scheme is
    inaccurate and, for ``dt >= 1/2``, unstable (see the module docstring).

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


def _resolve(space: Space, j: int, p: int) -> str:
    if space == "auto":
        return "parameter" if p <= j else "ensemble"
    return space


def _check_positive(name: str, value, bound: float | None = None, allow_zero: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0) and (bound is None or value < bound)
    if not ok:
        expected = ("a number >= 0" if allow_zero else "a positive number") + (
            "" if bound is None else f" below {bound}"
        )
        fix = "pass a value >= 0" if allow_zero else "pass a value > 0"
        if bound == _UNSTABLE_DT:
            fix = (
                "pass a smaller step: the noise sqrt(2 dt C) scales with the ensemble "
                "covariance, which cannot settle for dt >= 1/2 (the default cap is 0.02)"
            )
        raise input_error(name, expected, repr(value), fix)


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
    space = _resolve(space, j, p)
    scaled = anom / std  # S
    if space == "parameter":
        system = jnp.eye(p, dtype=w.dtype) + dt * scaled.T @ scaled
        return cho_solve(cho_factor(system, lower=True), (w / std).T).T * std
    if space == "ensemble":
        gram = jnp.eye(j, dtype=w.dtype) + dt * scaled @ scaled.T
        coef = cho_solve(cho_factor(gram, lower=True), scaled @ (w / std).T).T  # (K, J)
        return w - dt * coef @ anom
    raise ValueError(f"space: expected 'auto', 'parameter' or 'ensemble'; got {space!r}")


def _sampler(
    name: str,
    corrected: bool,
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    dt0: float,
    max_dt: float,
    final_time: float | None,
    adaptive: bool,
    eps: float,
    space: Space,
    update_precision: str | None,
) -> KalmanAlgorithm:
    if space not in ("auto", "parameter", "ensemble"):
        raise input_error(
            "space", "'auto', 'parameter' or 'ensemble'", repr(space), "leave it at 'auto'"
        )
    if not isinstance(obs, Observation):
        raise input_error(
            "obs", "an ekibnn.Observation", type(obs).__name__, "wrap data: Observation(y, noise)"
        )
    if not isinstance(prior, GaussianPrior):
        raise input_error(
            "prior",
            f"an ekibnn.GaussianPrior ({name} samples the posterior and needs the prior's "
            "mean and covariance in its update)",
            type(prior).__name__,
            "pass prior=ek.GaussianPrior(mean, std) or ek.GaussianPrior.like(params, std=...)",
        )
    _check_positive("dt0", dt0, None if adaptive else _UNSTABLE_DT)
    _check_positive("max_dt", max_dt, _UNSTABLE_DT)
    _check_positive("eps", eps, allow_zero=True)
    if final_time is not None:
        _check_positive("final_time", final_time)
    m = obs.size
    p = prior.num_params

    def init(particles: PyTree) -> EKSState:
        j = prior.check_particles(particles)
        need = p + 2 if corrected else 2
        if j < need:
            why = (
                f"ALDI's finite-ensemble correction needs J >= p + 2 = {need} members for p = "
                f"{p} parameters"
                if corrected
                else "an ensemble of J >= 2 members"
            )
            fix = (
                "sample more members, or use ek.eks (no correction; works with J <= p, in the "
                "ensemble's span)"
                if corrected
                else "sample more members"
            )
            raise input_error("particles", why, f"J = {j}", fix)
        check_forward(forward_fn, particles, m)
        dtype = flatten(particles).dtype
        return EKSState(
            particles=particles,
            time=jnp.zeros((), dtype),
            step=jnp.zeros((), jnp.int32),
            done=jnp.asarray(False),
        )

    def step(key: PRNGKeyArray, state: EKSState) -> tuple[EKSState, EKSInfo]:
        key_noise, key_redraw = jax.random.split(key)
        x = flatten(state.particles)  # (J, p)
        j, dtype = x.shape[0], x.dtype
        outputs = eqx.filter_vmap(forward_fn)(state.particles).astype(dtype)  # (J, m)

        ok = jnp.all(jnp.isfinite(outputs), axis=1)
        count = jnp.sum(ok)
        count = eqx.error_if(
            count,
            count < 2,
            f"{name}: fewer than 2 ensemble members have a finite forward output; "
            "expected at least 2 finite members; fix: check forward_fn for overflow/NaN, "
            "shrink the prior or the step (dt0, max_dt), or enlarge the ensemble",
        )
        outputs = jnp.where(ok[:, None], outputs, 0)
        n = count.astype(dtype)

        with matmul_precision(update_precision):  # the update at full precision
            # Whitened residuals G_j - y and output anomalies; population normalisation 1/J.
            residual = jnp.where(ok[:, None], obs.whiten(outputs - obs.y), 0)  # (J, m)
            mean_output = jnp.sum(outputs, axis=0) / n
            out_anom = jnp.where(ok[:, None], obs.whiten(outputs - mean_output), 0)  # (J, m)
            mean = jnp.sum(jnp.where(ok[:, None], x, 0), axis=0) / n
            centred = jnp.where(ok[:, None], x - mean, 0)  # (J, p)
            anom = centred / jnp.sqrt(n)  # A: C = A^T A

            # The derivative-free likelihood drift sum_k D_jk (theta_k - mean) = R (B^T X_c) / J and
            # |D|_F, by the cheaper association for these static shapes.
            if m > j or j * (m + p) < 2 * m * p:  # through the J x J matrix D
                d = residual @ out_anom.T / n
                drift = d @ centred
                d_norm = jnp.sqrt(jnp.sum(d**2))
            else:  # through the (m, p) whitened cross-covariance and m x m Grams
                drift = residual @ (out_anom.T @ centred / n)
                square = jnp.sum((residual.T @ residual) * (out_anom.T @ out_anom))
                d_norm = jnp.sqrt(jnp.maximum(square, 0)) / n
            if adaptive:
                dt = eks_stable_dt(d_norm, dt0, eps, max_dt)
            else:
                dt = jnp.asarray(dt0, dtype)
            if final_time is not None:
                dt = jnp.clip(final_time - state.time, 0, dt)  # land on final_time
                done = state.time + dt >= final_time * (1 - 1e-6)
            else:
                done = jnp.asarray(False)
            dt = dt.astype(dtype)

            # Explicit part: likelihood drift, plus ALDI's correction.
            v = x - dt * drift
            if corrected:
                v = v + dt * (p + 1) / n * centred
            # Implicit prior drift: theta* = m0 + (I + dt C K)^{-1} (v - m0).
            prior_mean = prior.flat_mean().astype(dtype)
            x_star = prior_mean + _implicit_prior_solve(
                anom, prior.flat_std().astype(dtype), v - prior_mean, dt, space
            )
            # Noise sqrt(2 dt) C^{1/2} xi_j, covariance 2 dt C for every member.
            x_new = x_star + jnp.sqrt(2 * dt) * _covariance_noise(key_noise, anom, space)

        n_failed = j - count
        with matmul_precision(update_precision):
            x_new = redraw_failed(key_redraw, x_new, ok, count)

        new_state = EKSState(
            particles=unflatten(x_new, state.particles),
            time=state.time + dt,
            step=state.step + 1,
            done=done,
        )
        info = EKSInfo(
            misfit=jnp.sum(residual**2) / n / m,
            mean_misfit=2 * obs.misfit(mean_output) / m,
            dt=dt,
            time=new_state.time,
            n_failed=n_failed.astype(jnp.int32),
            spread=jnp.sqrt(jnp.sum(centred**2) / (n - 1) / p),
            d_norm=d_norm,
        )
        return new_state, info

    return KalmanAlgorithm(init, step)


def eks(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    dt0: float = 1.0,
    max_dt: float = 0.02,
    final_time: float | None = 10.0,
    adaptive: bool = True,
    eps: float = 1e-8,
    space: Space = "auto",
    update_precision: str | None = "highest",
) -> KalmanAlgorithm:
    """Build the ensemble Kalman sampler (EKS) of Garbuno-Inigo, Hoffmann, Li & Stuart (2020).

    Linearly implicit split-step scheme with the EKS-stable adaptive step (module docstring).
    Use :func:`aldi` when ``J >= p + 2``: same cost, and exact for linear-Gaussian problems at
    finite J; EKS also works with ``J <= p`` (the ensemble then stays in its initial span).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (ekibnn vmaps it).
        obs: the data and its noise.
        prior: the Gaussian prior (required: it enters every step, not only the start).
        dt0: numerator of the stable step ``dt = min(dt0 / (|D|_F + eps), max_dt)``; with
            ``adaptive=False`` the fixed step itself (must then be < 0.5).
        max_dt: cap on the adaptive step (< 0.5). The stationary covariance is inflated by a
            factor between ``1 + dt/2`` and ``1 + 3 dt/2`` (module docstring): at most 3% at
            the default cap, less where ``dt0 / |D|_F`` sets a smaller step.
        final_time: stop once the algorithm time reaches it (None: run ``num_steps``).
        adaptive: EKS-stable adaptive step (True) or the fixed step ``dt0`` (a fixed step is
            only stable once the ensemble is near the posterior: from the prior ``|D|_F`` is
            large and the explicit likelihood drift needs the adaptive step).
        eps: the nugget in the step size.
        space: ``"parameter"`` (p x p Cholesky solve and covariance root), ``"ensemble"``
            (J x J Woodbury solve, noise through the anomalies) or ``"auto"`` (parameter space
            when ``p <= J``). The drift and the noise's law are the same in both.
        update_precision: matrix-product precision of the update (see
            :func:`ekibnn.linalg.matmul_precision`; the forward map keeps JAX's default).

    Returns:
        A :class:`KalmanAlgorithm` whose state is :class:`EKSState`, info :class:`EKSInfo`.

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> from ekibnn.inversion.eks import eks
        >>> H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = eks(lambda th: H @ th, obs, prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 200), num_steps=1000, progress=False)
        >>> bool(result.state.done), result.num_steps < 1000
        (True, True)
        >>> bool(jnp.allclose(result.particles.mean(0), jnp.array([1.0, 1.0]), atol=0.05))
        True
    """
    settings = (dt0, max_dt, final_time, adaptive, eps, space, update_precision)
    return _sampler("EKS", False, forward_fn, obs, prior, *settings)


def aldi(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    dt0: float = 1.0,
    max_dt: float = 0.02,
    final_time: float | None = 10.0,
    adaptive: bool = True,
    eps: float = 1e-8,
    space: Space = "auto",
    update_precision: str | None = "highest",
) -> KalmanAlgorithm:
    """Build gradient-free ALDI (affine-invariant Langevin dynamics; Garbuno-Inigo, Nüsken &
    Reich 2020): EKS plus the finite-ensemble correction ``(p + 1)/J (theta_j - mean)`` and the
    generalised square root ``C^{1/2} = A^T`` in the noise, so that for a linear-Gaussian
    problem the J-member product posterior is exactly invariant in continuous time (only the
    ``O(dt)`` discretisation error of the scheme remains). Needs ``J >= p + 2`` members.

    Arguments, defaults and returned algorithm are those of :func:`eks`.

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> from ekibnn.inversion.eks import aldi
        >>> obs = ek.Observation(jnp.array([1.0, 2.0]), 0.5)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = aldi(lambda th: th, obs, prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 500), num_steps=1000, progress=False)
        >>> bool(jnp.allclose(result.particles.mean(0), jnp.array([0.8, 1.6]), atol=0.1))
        True
    """
    settings = (dt0, max_dt, final_time, adaptive, eps, space, update_precision)
    return _sampler("ALDI", True, forward_fn, obs, prior, *settings)
