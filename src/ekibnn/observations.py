"""Observations: data ``y`` with Gaussian noise ``N(0, Gamma)``.

``Gamma`` is given as a scalar std, an ``(m,)`` vector of stds (diagonal) or an ``(m, m)``
covariance. A diagonal ``Gamma`` is never turned into a dense matrix: the library works with
*whitened* residuals ``Gamma^{-1/2} r`` (``r / std`` for diagonal noise, a triangular solve with
the Cholesky factor for dense noise).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ekibnn.errors import input_error

__all__ = ["Observation"]


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_magnitude(y: np.ndarray, whitened: np.ndarray, dtype: np.dtype) -> None:
    """Refuse data whose squares would overflow ``dtype``: the misfit sums ``m`` squared
    whitened residuals and the ensemble covariances hold squared outputs, so with
    ``|y| * sqrt(m)`` or ``|Gamma^{-1/2} y| * sqrt(m)`` above ``sqrt(max)`` (float32:
    1.8e19) they become inf and then NaN, silently, inside the compiled loop. A factor 10 of
    headroom (100 in the squares) covers residuals somewhat larger than the data."""
    m = y.shape[0]
    limit = float(np.sqrt(float(jnp.finfo(dtype).max) / m) / 10)
    raw, white = float(np.max(np.abs(y))), float(np.max(np.abs(whitened)))
    if raw > limit or white > limit:
        raise input_error(
            "Observation y",
            f"values whose squares fit in {jnp.dtype(dtype).name}: |y| and |y| / noise std at "
            f"most {limit:.2g} for m = {m}",
            f"max |y| = {raw:.3g}, max |y| / noise std = {white:.3g}",
            "standardise the data (y -> (y - mean) / scale, and the noise std / scale alike, "
            "then undo it on predictions), or work in float64 "
            "(jax.config.update('jax_enable_x64', True) before building the data)",
        )


class Observation(eqx.Module):
    """Observed data ``y`` (m,) with additive Gaussian noise ``N(0, Gamma)``.

    Args:
        y: observed vector, shape ``(m,)``; must be finite, and small enough that its squares
            (also whitened, ``y / std``) do not overflow its dtype (float32: about
            ``1.8e18 / sqrt(m)``); standardise large-valued data.
        noise: noise level: a positive scalar **std** (``Gamma = noise**2 I``), an ``(m,)`` array
            of positive stds (diagonal ``Gamma``), or an ``(m, m)`` symmetric positive-definite
            **covariance**.

    Attributes:
        y: ``(m,)`` data.
        std: ``(m,)`` noise stds when the noise is diagonal, else ``None``.
        chol: ``(m, m)`` lower Cholesky factor of ``Gamma`` when dense, else ``None``.

    Example:
        >>> import jax.numpy as jnp
        >>> obs = Observation(jnp.zeros(3), 0.1)
        >>> obs.size, obs.is_diagonal
        (3, True)
    """

    y: Float[Array, " m"]
    std: Float[Array, " m"] | None
    chol: Float[Array, "m m"] | None

    def __init__(self, y: ArrayLike, noise: ArrayLike):
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.floating):
            y = y.astype(jnp.result_type(float))
        if y.ndim != 1:
            raise input_error(
                "Observation y",
                "a 1-D array of shape (m,)",
                f"shape {tuple(y.shape)}",
                "flatten your data, e.g. y.reshape(-1), and make forward_fn return the same order",
            )
        m = y.shape[0]
        if m == 0:
            raise input_error("Observation y", "at least one observation", "m = 0", "pass data")
        if _is_concrete(y) and not bool(np.all(np.isfinite(np.asarray(y)))):
            bad = np.flatnonzero(~np.isfinite(np.asarray(y)))
            raise input_error(
                "Observation y",
                "finite values",
                f"{bad.size} non-finite value(s), first at index {int(bad[0])}",
                "remove or impute missing/infinite observations before building the Observation",
            )
        noise = jnp.asarray(noise, dtype=y.dtype)
        self.y = y
        if noise.ndim == 0 or noise.shape == (m,):
            std = jnp.broadcast_to(noise, (m,))
            if _is_concrete(std):
                s = np.asarray(std)
                if not np.all(np.isfinite(s) & (s > 0)):
                    raise input_error(
                        "Observation noise",
                        "positive finite standard deviation(s)",
                        f"min {float(s.min())!r}"
                        if np.all(np.isfinite(s))
                        else "non-finite values",
                        "pass the noise std (not variance), strictly greater than zero",
                    )
            self.std = std
            self.chol = None
            if _is_concrete(y) and _is_concrete(std):
                values = np.asarray(y, np.float64)
                _check_magnitude(values, values / np.asarray(std, np.float64), y.dtype)
        elif noise.shape == (m, m):
            if _is_concrete(noise):
                c = np.asarray(noise, dtype=np.float64)
                if not np.all(np.isfinite(c)):
                    raise input_error(
                        "Observation noise covariance",
                        "finite entries",
                        "NaN or inf entries",
                        "compute the covariance from finite data (or pass stds for diagonal noise)",
                    )
                asym = np.max(np.abs(c - c.T)) / max(np.max(np.abs(c)), 1e-300)
                if asym > 1e-6:
                    raise input_error(
                        "Observation noise covariance",
                        "a symmetric (m, m) matrix",
                        f"relative asymmetry {asym:.2e}",
                        "symmetrise it, e.g. 0.5 * (C + C.T)",
                    )
                eig_min = np.linalg.eigvalsh(c).min()
                if eig_min <= 0:
                    raise input_error(
                        "Observation noise covariance",
                        "a positive-definite matrix",
                        f"smallest eigenvalue {eig_min:.3e}",
                        "add a small nugget to the diagonal or pass stds for diagonal noise",
                    )
                if _is_concrete(y):
                    values = np.asarray(y, np.float64)
                    whitened = np.linalg.solve(np.linalg.cholesky(c), values)
                    _check_magnitude(values, whitened, y.dtype)
            self.std = None
            self.chol = jnp.linalg.cholesky(noise)
        else:
            raise input_error(
                "Observation noise",
                f"a scalar std, an ({m},) array of stds or an ({m}, {m}) covariance",
                f"shape {tuple(noise.shape)}",
                "match the noise to the length of y",
            )

    @property
    def size(self) -> int:
        """Number of observations ``m``.

        Example:
            >>> import jax.numpy as jnp
            >>> Observation(jnp.zeros(4), 0.1).size
            4
        """
        return self.y.shape[0]

    @property
    def is_diagonal(self) -> bool:
        """Whether ``Gamma`` is diagonal (stored as stds)."""
        return self.chol is None

    @property
    def covariance(self) -> Float[Array, "m m"]:
        """Dense ``Gamma`` (m, m). For display and tests only: the algorithms never form it.

        Example:
            >>> import jax.numpy as jnp
            >>> Observation(jnp.zeros(2), jnp.array([1.0, 2.0])).covariance.tolist()
            [[1.0, 0.0], [0.0, 4.0]]
        """
        if self.chol is None:
            return jnp.diag(self.std**2)
        return self.chol @ self.chol.T

    def whiten(self, r: Float[Array, "... m"]) -> Float[Array, "... m"]:
        """Return ``Gamma^{-1/2} r`` along the last axis (``r / std`` or ``L^{-1} r``).

        Example:
            >>> import jax.numpy as jnp
            >>> obs = Observation(jnp.zeros(2), jnp.array([0.5, 2.0]))
            >>> obs.whiten(jnp.array([1.0, 1.0])).tolist()
            [2.0, 0.5]
        """
        if self.chol is None:
            return r / self.std
        flat = r.reshape(-1, r.shape[-1])
        out = jax.scipy.linalg.solve_triangular(self.chol, flat.T, lower=True).T
        return out.reshape(r.shape)

    def colour(self, z: Float[Array, "... m"]) -> Float[Array, "... m"]:
        """Return ``Gamma^{1/2} z`` along the last axis: turns standard normals into noise.

        Example:
            >>> import jax.numpy as jnp
            >>> obs = Observation(jnp.zeros(2), jnp.array([0.5, 2.0]))
            >>> obs.colour(jnp.array([1.0, 1.0])).tolist()
            [0.5, 2.0]
        """
        if self.chol is None:
            return z * self.std
        return z @ self.chol.T

    def subset(self, indices: Array) -> Observation:
        """The observations at ``indices`` (a minibatch view). Dense noise keeps the exact
        marginal covariance of the subset (its Cholesky factor is recomputed, ``O(b^3)``).

        Example:
            >>> import jax.numpy as jnp
            >>> obs = Observation(jnp.arange(5.0), 0.1)
            >>> obs.subset(jnp.array([4, 0])).y.tolist()
            [4.0, 0.0]
        """
        y = self.y[indices]
        if self.chol is None:
            return eqx.tree_at(lambda o: (o.y, o.std), self, (y, self.std[indices]))
        rows = self.chol[indices]  # (b, m): the subset covariance is rows @ rows.T, no (m, m)
        chol = jnp.linalg.cholesky(rows @ rows.T)
        return eqx.tree_at(lambda o: (o.y, o.chol), self, (y, chol))

    def misfit(self, g: Float[Array, "... m"]) -> Float[Array, ...]:
        """Data misfit ``Phi(g) = 0.5 * ||Gamma^{-1/2} (y - g)||^2`` along the last axis.

        Example:
            >>> import jax.numpy as jnp
            >>> obs = Observation(jnp.array([1.0, 2.0]), 0.5)
            >>> float(obs.misfit(jnp.array([0.0, 2.0])))  # 0.5 * (1 / 0.5)^2
            2.0
        """
        return 0.5 * jnp.sum(self.whiten(self.y - g) ** 2, axis=-1)
