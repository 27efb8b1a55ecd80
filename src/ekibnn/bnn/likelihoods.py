"""Likelihoods: how a neural network and a data set become an EKI forward map + Observation.

Each builder returns a :class:`Likelihood` with two forward maps of ONE member:
``forward_fn(params) -> (m,)`` on all observations (the library's default contract; each data
point is evaluated once) and ``indexed_forward_fn(params, indices)`` on the observations
``indices`` only (pass ``indexed_forward=True`` to :func:`ekibnn.eki`), so a minibatch step
costs ``O(batch)`` network evaluations, not ``O(n)``.

Regression, known noise
    ``y_i = f(x_i; theta) + eps_i``, ``eps_i ~ N(0, sigma^2)``: the observation is ``y`` itself
    and ``Gamma = sigma^2 I`` (:func:`regression`).

Regression, unknown noise (:func:`noise_em_update`)
    EKI cannot learn a parameter that enters only ``Gamma``: the Kalman gain moves a parameter
    through its cross-covariance with the predicted data, ``C^{theta G}``, and a log-noise
    parameter does not change ``G(theta)``, so ``C^{theta G} = 0`` in expectation and the
    parameter only random-walks. (Adding it to the state would need a likelihood that is not a
    Gaussian of fixed covariance in ``G``.) We therefore estimate ``sigma`` by *Monte-Carlo
    expectation–maximisation* (empirical Bayes): alternate blocks of EKI steps at the current
    ``sigma`` with the M-step for a Gaussian noise variance under the ensemble (the current
    posterior approximation),

        sigma^2 <- (1 / (J n)) sum_j sum_i (y_i - f(x_i; theta_j))^2,

    i.e. the posterior-expected mean squared residual. It includes the ensemble's spread, so it
    does not collapse to the training error of the mean, and it needs no extra state. Start EM
    from a small ``sigma``: from a large one a regularised fit and the noise estimate can stall
    together at an under-fitting fixed point. Because
    ``sigma`` enters :class:`ekibnn.Observation` as an ordinary (traceable) array, the whole
    alternation reuses one compiled loop (see :mod:`ekibnn.recipes`).

Classification with K classes (:func:`classification`)
    Following Kovachki & Stuart (2019, Sec. 4), classification is treated as regression of the
    one-hot labels on the softmax probabilities: ``G(theta)_{iK+k} = softmax(f(x_i; theta))_k``
    observed against ``onehot(y_i)_k`` with a *pseudo-noise* std ``gamma``
    (default :data:`DEFAULT_PSEUDO_NOISE` ``= 0.1``). ``gamma`` is not a physical noise level: it
    sets how hard each Kalman step pulls the probabilities towards the labels (the gain is
    ``C^{GG} (C^{GG} + gamma^2 I)^{-1}``). With probabilities in ``[0, 1]``, ``gamma = 0.1`` lets a
    member's probability for the true class move by O(0.1) per assimilation while the ensemble
    spread in probability is still O(0.1–0.5), so training converges in a few hundred
    minibatch steps without collapsing the ensemble in the first ones; much smaller values
    (``0.01``) overfit quickly and make the ensemble over-confident, much larger ones (``1``)
    need many more steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from ekibnn.bnn.models import ensemble_apply
from ekibnn.errors import input_error
from ekibnn.observations import Observation

__all__ = [
    "DEFAULT_PSEUDO_NOISE",
    "Likelihood",
    "classification",
    "noise_em_update",
    "regression",
]

DEFAULT_PSEUDO_NOISE: float = 0.1
"""Default pseudo-noise std for one-hot classification targets (see the module docstring)."""


class Likelihood(NamedTuple):
    """A forward map and the data it is compared with.

    Attributes:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member: all predicted observations.
        indexed_forward_fn: ``indexed_forward_fn(params, indices) -> (len(indices),)`` for ONE
            member: the predicted observations at the flat observation indices ``indices``
            (use with ``indexed_forward=True`` and a ``batch_size``).
        obs: the :class:`ekibnn.Observation` (flattened data and noise).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> from ekibnn.bnn import MLP, regression
        >>> X = jnp.linspace(-1, 1, 20)[:, None]
        >>> lik = regression(X, jnp.sin(3 * X[:, 0]), noise_std=0.1)
        >>> prior = ek.GaussianPrior.like(MLP(jax.random.key(0), 1, 1, hidden=(8,)))
        >>> full = ek.eki(lik.forward_fn, lik.obs, prior, impose_prior=True,
        ...               scheduler=ek.schedulers.constant(1.0))
        >>> minibatch = ek.eki(lik.indexed_forward_fn, lik.obs, minibatch=ek.minibatch.random(10),
        ...                    indexed_forward=True, scheduler=ek.schedulers.constant(1.0))
    """

    forward_fn: Callable[[PyTree], Float[Array, " m"]]
    indexed_forward_fn: Callable[[PyTree, Int[Array, " b"]], Float[Array, " b"]]
    obs: Observation


class RegressionForward(eqx.Module):
    """``model(X)`` flattened row-major (flat index ``i k + c`` is point ``i``, output ``c``).
    An Equinox module: ``X`` is data, traced by :func:`ekibnn.run`, so new inputs of the same
    shape reuse the compiled loop."""

    X: Array
    num_outputs: int = eqx.field(static=True)

    def __call__(self, model: PyTree) -> Array:
        return model(self.X).reshape(-1)

    def points(self, model: PyTree, indices: Array) -> Array:
        """All outputs of the points ``indices`` (``len(indices) * num_outputs`` values, row
        major): e.g. the logits of those points for a categorical likelihood."""
        return model(self.X[indices]).reshape(-1)

    def indexed(self, model: PyTree, indices: Array) -> Array:
        """The outputs at the flat indices ``indices`` only (a minibatch)."""
        k = self.num_outputs
        if k == 1:
            return model(self.X[indices])[:, 0]
        out = model(self.X[indices // k])  # (b, k)
        return jnp.take_along_axis(out, (indices % k)[:, None], axis=1)[:, 0]


class ClassificationForward(eqx.Module):
    """``softmax(model(X))`` flattened row-major (flat index ``i K + c`` is the probability of
    class ``c`` at point ``i``); an Equinox module like :class:`RegressionForward`."""

    X: Array
    num_classes: int = eqx.field(static=True)

    def __call__(self, model: PyTree) -> Array:
        return jax.nn.softmax(model(self.X), axis=-1).reshape(-1)

    def indexed(self, model: PyTree, indices: Array) -> Array:
        """The probabilities at the flat indices ``indices`` only (a minibatch)."""
        k = self.num_classes
        probs = jax.nn.softmax(model(self.X[indices // k]), axis=-1)  # (b, K)
        return jnp.take_along_axis(probs, (indices % k)[:, None], axis=1)[:, 0]


def _check_2d(name: str, x: Array) -> None:
    if x.ndim != 2:
        raise input_error(
            name,
            "a 2-D array of shape (n, num_features)",
            f"shape {tuple(x.shape)}",
            "reshape a single feature with x.reshape(-1, 1)",
        )


def regression(X: ArrayLike, y: ArrayLike, noise_std: ArrayLike) -> Likelihood:
    """Gaussian regression likelihood ``y = model(X) + N(0, noise_std^2)``.

    Args:
        X: inputs ``(n, d)``.
        y: targets ``(n,)`` (one output) or ``(n, k)`` (k outputs, flattened row-major: flat
            index ``i k + c`` is point ``i``, output ``c``).
        noise_std: noise std: a scalar, or an array broadcastable to ``y``'s shape. May be a
            traced array (e.g. re-estimated inside a compiled loop).

    Returns:
        A :class:`Likelihood` (flat index ``i k + c`` is point ``i``, output ``c``).
    """
    X = jnp.asarray(X)
    y = jnp.asarray(y)
    _check_2d("regression X", X)
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise input_error(
            "regression y",
            f"shape ({X.shape[0]},) or ({X.shape[0]}, k) to match X",
            f"shape {tuple(y.shape)}",
            "pass one target row per row of X",
        )
    k = 1 if y.ndim == 1 else y.shape[1]
    noise = jnp.asarray(noise_std, dtype=X.dtype)
    if noise.ndim > 0:
        noise = jnp.broadcast_to(noise, y.shape).reshape(-1)

    forward = RegressionForward(X, k)
    obs = Observation(y.reshape(-1).astype(X.dtype), noise)
    return Likelihood(forward, forward.indexed, obs)


def classification(
    X: ArrayLike,
    labels: ArrayLike,
    num_classes: int,
    pseudo_noise: float = DEFAULT_PSEUDO_NOISE,
) -> Likelihood:
    """One-hot classification likelihood (Kovachki & Stuart 2019): the flattened one-hot labels
    ``(n K,)`` observed against the softmax probabilities with pseudo-noise std ``pseudo_noise``.

    Args:
        X: inputs ``(n, d)``.
        labels: integer class indices ``(n,)`` in ``[0, num_classes)``.
        num_classes: K; the model must have K outputs (logits).
        pseudo_noise: the std ``gamma`` of the pseudo-noise (see the module docstring): a
            scalar or one value per data point ``(n,)``.

    Returns:
        A :class:`Likelihood`; flat index ``i K + c`` is the probability of class ``c`` at
        point ``i``.
    """
    X = jnp.asarray(X)
    labels = jnp.asarray(labels)
    _check_2d("classification X", X)
    if labels.shape != (X.shape[0],):
        raise input_error(
            "classification labels",
            f"integer class indices of shape ({X.shape[0]},)",
            f"shape {tuple(labels.shape)}",
            "encode labels as 0..K-1 (e.g. sklearn.preprocessing.LabelEncoder)",
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise input_error(
            "classification num_classes", "an integer >= 2", repr(num_classes), "pass K"
        )
    onehot = jax.nn.one_hot(labels, num_classes, dtype=X.dtype).reshape(-1)

    forward = ClassificationForward(X, num_classes)
    noise = jnp.asarray(pseudo_noise, X.dtype)
    if noise.ndim == 1:  # one std per data point, shared by its K entries
        noise = jnp.repeat(noise, num_classes)
    return Likelihood(forward, forward.indexed, Observation(onehot, noise))


def noise_em_update(particles: PyTree, X: ArrayLike, y: ArrayLike) -> Float[Array, ""]:
    """The EM (M-step) estimate of a homoscedastic Gaussian noise std under the ensemble:

        sigma = sqrt( (1 / (J n)) sum_j sum_i (y_i - f(x_i; theta_j))^2 ).

    Args:
        particles: ensemble of models (leading axis J).
        X: inputs ``(n, d)``.
        y: targets ``(n,)`` (single output).

    Returns:
        The scalar std estimate.
    """
    preds = ensemble_apply(particles, jnp.asarray(X))[..., 0]  # (J, n)
    return jnp.sqrt(jnp.mean((jnp.asarray(y)[None, :] - preds) ** 2))
