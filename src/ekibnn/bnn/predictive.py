"""The predictive distribution of an ensemble BNN for regression.

Member ``j`` predicts ``f_j(x)``; with Gaussian observation noise ``N(0, s^2)`` the predictive
density is the equally weighted mixture ``p(y | x) = (1/J) sum_j N(y; f_j(x), s_j(x)^2)``, whose

* mean is ``mu = (1/J) sum_j f_j``;
* variance is ``Var = (1/J) sum_j (f_j - mu)^2 + (1/J) sum_j s_j^2``
  = epistemic (ensemble spread, population variance ``ddof = 0``) + aleatoric (noise),

so ``total_std^2 = epistemic_std^2 + aleatoric_std^2`` exactly. Intervals are the mixture's
central quantiles (found by bisection on its CDF) or the moment-matched Gaussian's.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ekibnn.errors import input_error

__all__ = ["Predictive", "predictive", "predictive_interval", "predictive_samples"]


class Predictive(NamedTuple):
    """Moments of the predictive distribution at ``n`` points (each field ``(n,)``).

    Attributes:
        mean: predictive mean (ensemble mean of the member predictions).
        epistemic_std: ensemble spread of the member predictions (model uncertainty).
        aleatoric_std: observation-noise std (data uncertainty).
        total_std: ``sqrt(epistemic_std^2 + aleatoric_std^2)``.
    """

    mean: Float[Array, " n"]
    epistemic_std: Float[Array, " n"]
    aleatoric_std: Float[Array, " n"]
    total_std: Float[Array, " n"]


def _prepare(member_preds: ArrayLike, noise_std: ArrayLike) -> tuple[Array, Array]:
    preds = jnp.asarray(member_preds)
    if not jnp.issubdtype(preds.dtype, jnp.floating):
        preds = preds.astype(jnp.result_type(float))
    if preds.ndim != 2:
        raise input_error(
            "member_preds",
            "an array of shape (J, n): one row of predictions per ensemble member",
            f"shape {tuple(preds.shape)}",
            "for a single output take model outputs[..., 0]",
        )
    noise = jnp.asarray(noise_std, dtype=preds.dtype)
    try:
        noise = jnp.broadcast_to(noise, preds.shape)
    except ValueError:
        raise input_error(
            "noise_std",
            f"a scalar, an (n,) or a (J, n) array broadcastable to {tuple(preds.shape)}",
            f"shape {tuple(noise.shape)}",
            "pass the noise std per point or one scalar",
        ) from None
    return preds, noise


def predictive(member_preds: ArrayLike, noise_std: ArrayLike) -> Predictive:
    """Predictive mean and std decomposition from member predictions.

    Args:
        member_preds: ``(J, n)`` member predictions ``f_j(x_i)``.
        noise_std: observation-noise std: scalar, ``(n,)`` or ``(J, n)``.

    Returns:
        :class:`Predictive` with ``(n,)`` fields.

    Example:
        >>> import jax.numpy as jnp
        >>> p = predictive(jnp.array([[0.0], [2.0]]), 1.0)
        >>> float(p.mean[0]), float(p.epistemic_std[0]), round(float(p.total_std[0]) ** 2, 6)
        (1.0, 1.0, 2.0)
    """
    preds, noise = _prepare(member_preds, noise_std)
    mean = jnp.mean(preds, axis=0)
    epistemic = jnp.sqrt(jnp.mean((preds - mean) ** 2, axis=0))
    aleatoric = jnp.sqrt(jnp.mean(noise**2, axis=0))
    total = jnp.sqrt(epistemic**2 + aleatoric**2)
    return Predictive(mean, epistemic, aleatoric, total)


def _mixture_quantile(preds: Array, noise: Array, q: Array, iters: int = 60) -> Array:
    """Quantile ``q`` of the equal-weight Gaussian mixture at each point, by bisection."""
    width = 10.0 * jnp.max(noise, axis=0)
    lo = jnp.min(preds, axis=0) - width
    hi = jnp.max(preds, axis=0) + width

    def cdf(t):
        return jnp.mean(ndtr((t[None, :] - preds) / noise), axis=0)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = cdf(mid) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return 0.5 * (lo + hi)


def predictive_interval(
    member_preds: ArrayLike,
    noise_std: ArrayLike,
    level: float = 0.95,
    method: Literal["mixture", "gaussian"] = "mixture",
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Central predictive interval with nominal coverage ``level``.

    Args:
        member_preds: ``(J, n)`` member predictions.
        noise_std: observation-noise std (> 0): scalar, ``(n,)`` or ``(J, n)``.
        level: nominal coverage in ``(0, 1)``.
        method: ``"mixture"``: the exact quantiles ``(1 -+ level) / 2`` of the Gaussian mixture;
            ``"gaussian"``: ``mean -+ z * total_std`` of the moment-matched Gaussian.

    Returns:
        ``(lower, upper)``, each ``(n,)``.
    """
    if not 0.0 < float(level) < 1.0:
        raise input_error("level", "a number in (0, 1)", repr(level), "pass e.g. 0.95")
    preds, noise = _prepare(member_preds, noise_std)
    alpha = jnp.asarray([(1.0 - level) / 2.0, (1.0 + level) / 2.0], preds.dtype)
    if method == "gaussian":
        p = predictive(preds, noise)
        z = ndtri(alpha[1])
        return p.mean - z * p.total_std, p.mean + z * p.total_std
    if method == "mixture":
        return _mixture_quantile(preds, noise, alpha[0]), _mixture_quantile(preds, noise, alpha[1])
    raise input_error("method", "'mixture' or 'gaussian'", repr(method), "pick one of them")


def predictive_samples(
    key: PRNGKeyArray,
    member_preds: ArrayLike,
    noise_std: ArrayLike,
    num_per_member: int = 1,
) -> Float[Array, "S n"]:
    """Draws from the predictive mixture: member prediction plus observation noise.

    Args:
        key: PRNG key.
        member_preds: ``(J, n)`` member predictions.
        noise_std: observation-noise std: scalar, ``(n,)`` or ``(J, n)``.
        num_per_member: noise draws per member.

    Returns:
        ``(num_per_member * J, n)`` samples (draw ``r`` of member ``j`` in row ``r J + j``).
    """
    if not isinstance(num_per_member, int) or num_per_member < 1:
        raise input_error("num_per_member", "a positive integer", repr(num_per_member), "e.g. 1")
    preds, noise = _prepare(member_preds, noise_std)
    eps = jax.random.normal(key, (num_per_member, *preds.shape), preds.dtype)
    return (preds[None] + noise[None] * eps).reshape(-1, preds.shape[1])
