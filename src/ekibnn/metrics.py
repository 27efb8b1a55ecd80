"""Uncertainty-quality metrics for ensemble predictions.

All functions are pure, written with ``jax.numpy``, and compatible with ``jax.jit``
(shape checks are static; there is no Python branching on array values). They work in
float32 and float64: the computation dtype is the promotion of the floating inputs, with
integer inputs promoted to at least float32.

Conventions:
    * An ensemble of predictions or samples has shape ``(J, n)``: ``J`` members, ``n`` points.
    * Regression targets ``y_true`` have shape ``(n,)``.
    * Classification probabilities ``probs`` have shape ``(n, K)`` and ``labels`` are integer
      class indices of shape ``(n,)``.
    * Invalid shapes raise :class:`ekibnn.errors.InputError` (a ``ValueError``) whose message
      says what was expected, what was given and how to fix it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

from ekibnn.errors import input_error

__all__ = [
    "accuracy",
    "brier_score",
    "calibration_curve_regression",
    "categorical_nll",
    "central_interval",
    "classification_report",
    "crps",
    "crps_gaussian",
    "expected_calibration_error",
    "gaussian_interval",
    "gaussian_nll",
    "gaussian_nll_moment",
    "interval_coverage",
    "regression_report",
    "reliability_diagram",
    "rmse",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


# --------------------------------------------------------------------------------------
# Helpers (static shape / dtype validation)
# --------------------------------------------------------------------------------------


def _float_dtype(*arrays: jax.Array) -> jnp.dtype:
    """Floating dtype for a computation: promotion of inputs, at least float32."""
    return jnp.result_type(*arrays, jnp.float32)


def _to_float(*xs: jax.typing.ArrayLike) -> tuple[jax.Array, ...]:
    """Convert inputs to JAX arrays of a common floating dtype."""
    arrays = [jnp.asarray(x) for x in xs]
    dtype = _float_dtype(*arrays)
    return tuple(a.astype(dtype) for a in arrays)


def _normal_ppf(q: jax.Array) -> jax.Array:
    """Standard normal quantile in the dtype of ``q`` (``norm.ppf`` may upcast under x64)."""
    return norm.ppf(q).astype(q.dtype)


def _check_ndim(name: str, x: jax.Array, ndim: int, shape_desc: str) -> None:
    if x.ndim != ndim:
        raise input_error(
            name,
            f"shape {shape_desc}",
            f"shape {tuple(x.shape)}",
            f"pass a {ndim}-D array for {name}",
        )


def _check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise input_error(
            f"{name_a}/{name_b}",
            f"{name_a} and {name_b} with the same shape",
            f"{tuple(a.shape)} and {tuple(b.shape)}",
            "reshape so the shapes match",
        )


def _check_broadcastable(name: str, x: jax.Array, target: tuple[int, ...], desc: str) -> None:
    try:
        out = jnp.broadcast_shapes(x.shape, target)
    except ValueError:
        out = None
    if out != tuple(target):
        raise input_error(
            name,
            f"a shape broadcastable to {tuple(target)} ({desc})",
            f"shape {tuple(x.shape)}",
            f"pass {name} as {desc}",
        )


def _check_ensemble(y_true: jax.Array, ensemble: jax.Array, name: str) -> None:
    _check_ndim("y_true", y_true, 1, "(n,)")
    _check_ndim(name, ensemble, 2, "(J, n)")
    if ensemble.shape[1] != y_true.shape[0]:
        raise input_error(
            name,
            f"shape (J, n) with n = len(y_true) = {y_true.shape[0]}",
            f"shape {tuple(ensemble.shape)}",
            "put members along axis 0 and points along axis 1 (transpose if needed)",
        )
    if ensemble.shape[0] < 1:
        raise input_error(
            name,
            "at least one member (J >= 1)",
            f"shape {tuple(ensemble.shape)}",
            "pass a non-empty ensemble",
        )


def _check_classification(labels: jax.Array, probs: jax.Array) -> None:
    _check_ndim("probs", probs, 2, "(n, K)")
    _check_ndim("labels", labels, 1, "(n,)")
    if labels.shape[0] != probs.shape[0]:
        raise input_error(
            "labels",
            f"shape (n,) with n = probs.shape[0] = {probs.shape[0]}",
            f"shape {tuple(labels.shape)}",
            "pass one label per row of probs",
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise input_error(
            "labels",
            "integer class indices",
            f"dtype {labels.dtype}",
            "cast labels with .astype(jnp.int32)",
        )


# --------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------


def rmse(y_true: jax.typing.ArrayLike, y_pred: jax.typing.ArrayLike) -> jax.Array:
    """Root-mean-squared error of point predictions.

    ``RMSE = sqrt((1/n) sum_i (y_i - yhat_i)^2)``.

    Args:
        y_true: Targets, shape ``(n,)``.
        y_pred: Point predictions, shape ``(n,)``.

    Returns:
        Scalar RMSE.

    Raises:
        InputError: If the shapes of ``y_true`` and ``y_pred`` differ.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(rmse(jnp.array([0.0, 1.0]), jnp.array([0.0, 0.0]))), 4)
        0.7071
    """
    y_true, y_pred = _to_float(y_true, y_pred)
    _check_same_shape("y_true", y_true, "y_pred", y_pred)
    return jnp.sqrt(jnp.mean(jnp.square(y_true - y_pred)))


def gaussian_nll(
    y_true: jax.typing.ArrayLike,
    member_means: jax.typing.ArrayLike,
    noise_std: jax.typing.ArrayLike,
) -> jax.Array:
    """Mean negative log-likelihood under the ensemble's Gaussian mixture predictive.

    The predictive density at point ``i`` is the equally weighted mixture
    ``p(y_i) = (1/J) sum_j N(y_i; mu_ji, s_ji^2)``, evaluated stably as
    ``log p(y_i) = logsumexp_j(log N(y_i; mu_ji, s_ji^2)) - log J``. Returns
    ``-(1/n) sum_i log p(y_i)``. See e.g. Lakshminarayanan et al. (2017), "Simple and
    Scalable Predictive Uncertainty Estimation using Deep Ensembles".

    Args:
        y_true: Targets, shape ``(n,)``.
        member_means: Ensemble member means ``mu``, shape ``(J, n)``.
        noise_std: Aleatoric standard deviation ``s`` (> 0): scalar, ``(n,)`` or ``(J, n)``.

    Returns:
        Scalar mean NLL (natural log).

    Raises:
        InputError: On mismatched shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> members = jnp.array([[0.0, 1.0], [0.2, 1.2]])  # J = 2 members, n = 2 points
        >>> round(float(gaussian_nll(jnp.array([0.1, 1.1]), members, 0.1)), 4)
        -0.8836
    """
    y_true, member_means, noise_std = _to_float(y_true, member_means, noise_std)
    _check_ensemble(y_true, member_means, "member_means")
    _check_broadcastable(
        "noise_std", noise_std, member_means.shape, "a scalar, (n,) or (J, n) array"
    )
    z = (y_true[None, :] - member_means) / noise_std
    log_probs = -_HALF_LOG_2PI - jnp.log(noise_std) - 0.5 * jnp.square(z)  # (J, n)
    num_members = member_means.shape[0]
    log_mix = logsumexp(log_probs, axis=0) - math.log(num_members)  # (n,)
    return -jnp.mean(log_mix)


def gaussian_nll_moment(
    y_true: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    std: jax.typing.ArrayLike,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Mean negative log-likelihood of a single (moment-matched) Gaussian predictive.

    ``NLL = (1/n) sum_i [0.5 log(2 pi) + log s_i + 0.5 ((y_i - m_i) / s_i)^2]``.

    Args:
        y_true: Targets, shape ``(n,)``.
        mean: Predictive means ``m``, shape ``(n,)``.
        std: Predictive standard deviations ``s`` (> 0), shape ``(n,)`` or scalar.
        where: None (every point), or a boolean ``(n,)`` mask: the mean over those points
            only (a subset of fixed shape, so it works inside ``jit``).

    Returns:
        Scalar mean NLL (natural log).

    Raises:
        InputError: On mismatched shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(gaussian_nll_moment(jnp.zeros(3), jnp.zeros(3), 1.0)), 4)  # 0.5 log(2 pi)
        0.9189
    """
    y_true, mean, std = _to_float(y_true, mean, std)
    _check_same_shape("y_true", y_true, "mean", mean)
    _check_broadcastable("std", std, y_true.shape, "a scalar or (n,) array")
    z = (y_true - mean) / std
    return jnp.mean(_HALF_LOG_2PI + jnp.log(std) + 0.5 * jnp.square(z), where=where)


def crps(y_true: jax.typing.ArrayLike, samples: jax.typing.ArrayLike) -> jax.Array:
    """Mean continuous ranked probability score of an ensemble's empirical distribution.

    Uses the energy form (Gneiting & Raftery, 2007, eq. 21)
    ``CRPS(F, y) = E|X - y| - 0.5 E|X - X'|`` with ``X, X' ~ F`` independent, which is
    exact for the empirical distribution of the ``J`` samples. The second term is computed
    in ``O(J log J)`` per point by sorting: for sorted samples ``x_(1) <= ... <= x_(J)``,
    ``E|X - X'| = (2 / J^2) sum_{i=1}^{J} (2i - J - 1) x_(i)``. Lower is better.

    Args:
        y_true: Targets, shape ``(n,)``.
        samples: Ensemble samples, shape ``(J, n)``.

    Returns:
        Scalar CRPS averaged over the ``n`` points.

    Raises:
        InputError: On mismatched shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> samples = jnp.array([[0.0], [1.0]])  # J = 2 samples at n = 1 point
        >>> round(float(crps(jnp.array([0.0]), samples)), 4)  # E|X - y| - E|X - X'| / 2
        0.25
    """
    y_true, samples = _to_float(y_true, samples)
    _check_ensemble(y_true, samples, "samples")
    num_members = samples.shape[0]
    term_obs = jnp.mean(jnp.abs(samples - y_true[None, :]), axis=0)  # (n,)
    sorted_samples = jnp.sort(samples, axis=0)
    weights = (2 * jnp.arange(1, num_members + 1) - num_members - 1).astype(samples.dtype)
    spread = (2.0 / num_members**2) * jnp.sum(weights[:, None] * sorted_samples, axis=0)
    return jnp.mean(term_obs - 0.5 * spread)


def crps_gaussian(
    y_true: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    std: jax.typing.ArrayLike,
) -> jax.Array:
    """Mean closed-form CRPS of Gaussian predictives (Gneiting & Raftery, 2007).

    With ``z = (y - m) / s``:
    ``CRPS(N(m, s^2), y) = s [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)]``,
    where ``Phi`` and ``phi`` are the standard normal CDF and PDF.

    Args:
        y_true: Targets, shape ``(n,)``.
        mean: Predictive means ``m``, shape ``(n,)``.
        std: Predictive standard deviations ``s`` (> 0), shape ``(n,)`` or scalar.

    Returns:
        Scalar CRPS averaged over the ``n`` points.

    Raises:
        InputError: On mismatched shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(crps_gaussian(jnp.zeros(1), jnp.zeros(1), 1.0)), 4)  # (2^0.5 - 1)/pi^0.5
        0.2337
    """
    y_true, mean, std = _to_float(y_true, mean, std)
    _check_same_shape("y_true", y_true, "mean", mean)
    _check_broadcastable("std", std, y_true.shape, "a scalar or (n,) array")
    z = (y_true - mean) / std
    score = std * (z * (2.0 * norm.cdf(z) - 1.0) + 2.0 * norm.pdf(z) - _INV_SQRT_PI)
    return jnp.mean(score)


def interval_coverage(
    y_true: jax.typing.ArrayLike,
    lower: jax.typing.ArrayLike,
    upper: jax.typing.ArrayLike,
) -> jax.Array:
    """Fraction of targets inside their prediction interval.

    ``coverage = (1/n) sum_i 1[lower_i <= y_i <= upper_i]`` (closed interval).

    Args:
        y_true: Targets, shape ``(n,)``.
        lower: Lower interval bounds, shape ``(n,)``.
        upper: Upper interval bounds, shape ``(n,)``.

    Returns:
        Scalar coverage in ``[0, 1]``.

    Raises:
        InputError: On mismatched shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> y = jnp.array([0.0, 1.0, 5.0])
        >>> round(float(interval_coverage(y, jnp.full(3, -1.0), jnp.full(3, 2.0))), 4)
        0.6667
    """
    y_true, lower, upper = _to_float(y_true, lower, upper)
    _check_same_shape("y_true", y_true, "lower", lower)
    _check_same_shape("y_true", y_true, "upper", upper)
    inside = (y_true >= lower) & (y_true <= upper)
    return jnp.mean(inside.astype(y_true.dtype))


def central_interval(
    samples: jax.typing.ArrayLike, level: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Empirical central prediction interval from ensemble samples.

    Lower/upper bounds are the empirical quantiles (linear interpolation, as
    ``numpy.quantile``) at ``(1 - level) / 2`` and ``(1 + level) / 2`` along the member axis.

    Args:
        samples: Ensemble samples, shape ``(J, n)``.
        level: Nominal central coverage in ``(0, 1)``, scalar (may be traced).

    Returns:
        Tuple ``(lower, upper)``, each of shape ``(n,)``.

    Raises:
        InputError: If ``samples`` is not 2-D or ``level`` is not a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> samples = jnp.arange(101.0)[:, None]  # J = 101 samples at one point
        >>> lower, upper = central_interval(samples, 0.9)
        >>> round(float(lower[0]), 3), round(float(upper[0]), 3)
        (5.0, 95.0)
    """
    (samples,) = _to_float(samples)
    _check_ndim("samples", samples, 2, "(J, n)")
    level = jnp.asarray(level, dtype=samples.dtype)
    _check_ndim("level", level, 0, "() (a scalar)")
    q = jnp.stack([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    bounds = jnp.quantile(samples, q, axis=0)  # (2, n)
    return bounds[0], bounds[1]


def gaussian_interval(
    mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike, level: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Central prediction interval of Gaussian predictives.

    ``[m - z s, m + z s]`` with ``z = Phi^{-1}((1 + level) / 2)``.

    Args:
        mean: Predictive means ``m``, shape ``(n,)``.
        std: Predictive standard deviations ``s``, shape ``(n,)`` or scalar.
        level: Nominal central coverage in ``(0, 1)``, scalar.

    Returns:
        Tuple ``(lower, upper)``, each of the broadcast shape of ``mean`` and ``std``.

    Raises:
        InputError: If ``std`` is not broadcastable to ``mean`` or ``level`` is not a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> lower, upper = gaussian_interval(jnp.zeros(1), 1.0, 0.95)
        >>> round(float(lower[0]), 3), round(float(upper[0]), 3)
        (-1.96, 1.96)
    """
    mean, std, level = _to_float(mean, std, level)
    _check_broadcastable("std", std, mean.shape, "a scalar or an array shaped like mean")
    _check_ndim("level", level, 0, "() (a scalar)")
    half_width = _normal_ppf((1.0 + level) / 2.0) * std
    return mean - half_width, mean + half_width


def calibration_curve_regression(
    y_true: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    std: jax.typing.ArrayLike,
    levels: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    """Observed vs. nominal coverage of Gaussian central intervals (calibration curve).

    For each nominal level ``a``, the observed coverage is
    ``(1/n) sum_i 1[|y_i - m_i| <= Phi^{-1}((1 + a) / 2) s_i]``. A calibrated model gives
    observed ~= nominal (Kuleshov et al., 2018, "Accurate Uncertainties for Deep Learning
    Using Calibrated Regression").

    Args:
        y_true: Targets, shape ``(n,)``.
        mean: Predictive means, shape ``(n,)``.
        std: Predictive standard deviations, shape ``(n,)`` or scalar.
        levels: Nominal central levels in ``(0, 1)``, shape ``(L,)``.

    Returns:
        Tuple ``(levels, coverage)``, each of shape ``(L,)``.

    Raises:
        InputError: On mismatched shapes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> y = jax.random.normal(jax.random.key(0), (10_000,))  # N(0, 1) targets
        >>> levels, observed = calibration_curve_regression(y, jnp.zeros_like(y), 1.0,
        ...                                                 jnp.array([0.5, 0.9]))
        >>> [round(float(o), 1) for o in observed]  # a calibrated predictive: observed ~ nominal
        [0.5, 0.9]
    """
    y_true, mean, std, levels = _to_float(y_true, mean, std, levels)
    _check_ndim("y_true", y_true, 1, "(n,)")
    _check_same_shape("y_true", y_true, "mean", mean)
    _check_broadcastable("std", std, y_true.shape, "a scalar or (n,) array")
    _check_ndim("levels", levels, 1, "(L,)")
    z = _normal_ppf((1.0 + levels) / 2.0)  # (L,)
    abs_err = jnp.abs(y_true - mean)  # (n,)
    inside = abs_err[None, :] <= z[:, None] * jnp.broadcast_to(std, y_true.shape)[None, :]
    return levels, jnp.mean(inside.astype(y_true.dtype), axis=1)


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------


def accuracy(labels: jax.typing.ArrayLike, probs: jax.typing.ArrayLike) -> jax.Array:
    """Top-1 accuracy.

    ``acc = (1/n) sum_i 1[argmax_k p_ik = y_i]``.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        probs: Predicted class probabilities, shape ``(n, K)``.

    Returns:
        Scalar accuracy in ``[0, 1]``.

    Raises:
        InputError: On mismatched shapes or non-integer labels.

    Example:
        >>> import jax.numpy as jnp
        >>> probs = jnp.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
        >>> round(float(accuracy(jnp.array([0, 1, 1]), probs)), 4)
        0.6667
    """
    labels = jnp.asarray(labels)
    (probs,) = _to_float(probs)
    _check_classification(labels, probs)
    correct = jnp.argmax(probs, axis=-1) == labels
    return jnp.mean(correct.astype(probs.dtype))


def categorical_nll(
    labels: jax.typing.ArrayLike, probs: jax.typing.ArrayLike, eps: float = 1e-12
) -> jax.Array:
    """Mean categorical negative log-likelihood (cross-entropy).

    ``NLL = -(1/n) sum_i log max(p_{i, y_i}, eps)``.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        probs: Predicted class probabilities, shape ``(n, K)``.
        eps: Lower clip for the probability of the true class (avoids ``log 0``).

    Returns:
        Scalar mean NLL (natural log).

    Raises:
        InputError: On mismatched shapes or non-integer labels.

    Example:
        >>> import jax.numpy as jnp
        >>> probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])
        >>> round(float(categorical_nll(jnp.array([0, 0]), probs)), 4)  # -(log 0.5 + log 0.9) / 2
        0.3993
    """
    labels = jnp.asarray(labels)
    (probs,) = _to_float(probs)
    _check_classification(labels, probs)
    p_true = jnp.take_along_axis(probs, labels[:, None], axis=1)[:, 0]
    return -jnp.mean(jnp.log(jnp.maximum(p_true, eps)))


def brier_score(labels: jax.typing.ArrayLike, probs: jax.typing.ArrayLike) -> jax.Array:
    """Multi-class Brier score (Brier, 1950).

    ``BS = (1/n) sum_i sum_k (p_ik - 1[y_i = k])^2``; ranges in ``[0, 2]``.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        probs: Predicted class probabilities, shape ``(n, K)``.

    Returns:
        Scalar Brier score.

    Raises:
        InputError: On mismatched shapes or non-integer labels.

    Example:
        >>> import jax.numpy as jnp
        >>> probs = jnp.array([[1.0, 0.0], [0.5, 0.5]])
        >>> round(float(brier_score(jnp.array([0, 1]), probs)), 4)  # (0 + 0.25 + 0.25) / 2
        0.25
    """
    labels = jnp.asarray(labels)
    (probs,) = _to_float(probs)
    _check_classification(labels, probs)
    onehot = jax.nn.one_hot(labels, probs.shape[1], dtype=probs.dtype)
    return jnp.mean(jnp.sum(jnp.square(probs - onehot), axis=-1))


def _binned_stats(
    labels: jax.Array, probs: jax.Array, num_bins: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin sums of confidence and correctness, and counts, over equal-width bins."""
    if not isinstance(num_bins, int) or num_bins < 1:
        raise input_error(
            "num_bins",
            "a positive Python int (static under jax.jit)",
            repr(num_bins),
            "pass e.g. num_bins=15 (mark it static with jax.jit(..., static_argnames=...))",
        )
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    # Bins (m-1)/M < conf <= m/M as in Guo et al. (2017); conf = 0 falls in the first bin.
    bin_idx = jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    conf_sum = jax.ops.segment_sum(confidence, bin_idx, num_segments=num_bins)
    acc_sum = jax.ops.segment_sum(correct, bin_idx, num_segments=num_bins)
    count = jax.ops.segment_sum(jnp.ones_like(confidence), bin_idx, num_segments=num_bins)
    return conf_sum, acc_sum, count


def expected_calibration_error(
    labels: jax.typing.ArrayLike, probs: jax.typing.ArrayLike, num_bins: int = 15
) -> jax.Array:
    """Expected calibration error with equal-width confidence bins.

    Confidence is ``max_k p_ik``; points are assigned to ``num_bins`` equal-width bins
    ``B_m = ((m-1)/M, m/M]`` over ``[0, 1]`` and
    ``ECE = sum_m (|B_m| / n) |acc(B_m) - conf(B_m)|`` (Naeini et al., 2015;
    Guo et al., 2017, "On Calibration of Modern Neural Networks"). Empty bins contribute 0.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        probs: Predicted class probabilities, shape ``(n, K)``.
        num_bins: Number of bins ``M`` (a static Python int under ``jax.jit``).

    Returns:
        Scalar ECE in ``[0, 1]``.

    Raises:
        InputError: On mismatched shapes, non-integer labels or invalid ``num_bins``.

    Example:
        >>> import jax.numpy as jnp
        >>> probs = jnp.array([[0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2]])
        >>> labels = jnp.array([0, 0, 0, 0, 1])  # 80% correct at confidence 0.8: calibrated
        >>> round(float(expected_calibration_error(labels, probs, num_bins=10)), 4)
        0.0
    """
    labels = jnp.asarray(labels)
    (probs,) = _to_float(probs)
    _check_classification(labels, probs)
    conf_sum, acc_sum, _ = _binned_stats(labels, probs, num_bins)
    # (|B|/n) |acc - conf| = |sum_acc - sum_conf| / n, which is NaN-free for empty bins.
    return jnp.sum(jnp.abs(acc_sum - conf_sum)) / labels.shape[0]


def reliability_diagram(
    labels: jax.typing.ArrayLike, probs: jax.typing.ArrayLike, num_bins: int = 15
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin mean confidence, accuracy and count for a reliability diagram.

    Uses the same equal-width bins ``((m-1)/M, m/M]`` on the max-probability confidence as
    :func:`expected_calibration_error`. ``bin_confidence_m = mean(conf in B_m)`` and
    ``bin_accuracy_m = mean(correct in B_m)``; empty bins report count 0 and values 0.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        probs: Predicted class probabilities, shape ``(n, K)``.
        num_bins: Number of bins ``M`` (a static Python int under ``jax.jit``).

    Returns:
        Tuple ``(bin_confidence, bin_accuracy, bin_count)``, each of shape ``(num_bins,)``;
        ``bin_count`` is in the floating dtype of ``probs``.

    Raises:
        InputError: On mismatched shapes, non-integer labels or invalid ``num_bins``.

    Example:
        >>> import jax.numpy as jnp
        >>> probs = jnp.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
        >>> conf, acc, count = reliability_diagram(jnp.array([0, 1, 0, 1]), probs, num_bins=5)
        >>> [round(float(c), 2) for c in conf], [float(a) for a in acc], [int(n) for n in count]
        ([0.0, 0.0, 0.6, 0.0, 0.9], [0.0, 0.0, 1.0, 0.0, 0.5], [0, 0, 2, 0, 2])
    """
    labels = jnp.asarray(labels)
    (probs,) = _to_float(probs)
    _check_classification(labels, probs)
    conf_sum, acc_sum, count = _binned_stats(labels, probs, num_bins)
    safe_count = jnp.maximum(count, 1.0)
    bin_confidence = jnp.where(count > 0, conf_sum / safe_count, 0.0)
    bin_accuracy = jnp.where(count > 0, acc_sum / safe_count, 0.0)
    return bin_confidence, bin_accuracy, count


# --------------------------------------------------------------------------------------
# Reports: every metric of a command in one compiled program
# --------------------------------------------------------------------------------------


@jax.jit
def regression_report(
    y_true: jax.typing.ArrayLike, mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike
) -> dict[str, jax.Array]:
    """The held-out regression metrics of Gaussian predictives ``N(mean, std^2)``, compiled
    as one program (the functions above called eagerly compile one program per operation).

    Args:
        y_true: Targets, shape ``(n,)``.
        mean: Predictive means, shape ``(n,)``.
        std: Predictive standard deviations (noise included), shape ``(n,)``.

    Returns:
        ``{"rmse", "nll" (moment-matched Gaussian), "crps", "coverage_95",
        "calibration_levels", "calibration_observed"}``: the calibration curve at the 19
        levels 0.05, 0.10, ..., 0.95 (:func:`calibration_curve_regression`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> y = jax.random.normal(jax.random.key(0), (10_000,))
        >>> report = regression_report(y, jnp.zeros_like(y), jnp.ones_like(y))
        >>> round(float(report["coverage_95"]), 2), round(float(report["rmse"]), 1)
        (0.95, 1.0)
    """
    levels, observed = calibration_curve_regression(y_true, mean, std, jnp.linspace(0.05, 0.95, 19))
    lo, hi = gaussian_interval(mean, std, 0.95)
    return {
        "rmse": rmse(y_true, mean),
        "nll": gaussian_nll_moment(y_true, mean, std),
        "crps": crps_gaussian(y_true, mean, std),
        "coverage_95": interval_coverage(y_true, lo, hi),
        "calibration_levels": levels,
        "calibration_observed": observed,
    }


@jax.jit
def classification_report(
    labels: jax.typing.ArrayLike, probs: jax.typing.ArrayLike
) -> dict[str, jax.Array]:
    """The held-out classification metrics, compiled as one program.

    Args:
        labels: Integer class labels, shape ``(n,)``.
        probs: Predicted class probabilities, shape ``(n, K)``.

    Returns:
        ``{"accuracy", "nll", "brier", "ece" (10 bins), "bin_confidence", "bin_accuracy",
        "bin_count"}`` (the reliability diagram of :func:`reliability_diagram`, 10 bins).

    Example:
        >>> import jax.numpy as jnp
        >>> probs = jnp.array([[0.9, 0.1], [0.2, 0.8]])
        >>> float(classification_report(jnp.array([0, 1]), probs)["accuracy"])
        1.0
    """
    conf, acc, count = reliability_diagram(labels, probs, num_bins=10)
    return {
        "accuracy": accuracy(labels, probs),
        "nll": categorical_nll(labels, probs),
        "brier": brier_score(labels, probs),
        "ece": expected_calibration_error(labels, probs, num_bins=10),
        "bin_confidence": conf,
        "bin_accuracy": acc,
        "bin_count": count,
    }
