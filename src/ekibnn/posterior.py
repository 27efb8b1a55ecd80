"""What a fit returns: a posterior over the parameters with one predictive interface.

* :class:`EnsemblePosterior`: J members (samples); a quantity ``fn(theta)`` is predicted by
  evaluating ``fn`` on every member.
* :class:`GaussianPosterior`: ``N(mean, cov)`` over the flat parameters (e.g. from UKI, whose
  Gaussian is an approximation of the posterior *in parameter space*); quantities are
  predicted by sampling parameters and evaluating ``fn`` on the draws.

Every posterior answers :meth:`~Posterior.sample_outputs` (samples of any output function
``fn(params) -> array`` of ONE member: the network on new inputs, a PINN's ``u`` or ``f``, a
physical parameter), :meth:`~Posterior.predict` (their mean and std) and
:meth:`~Posterior.to_inference_data` (ArviZ, the optional ``arviz`` extra).

Example:
    >>> import jax, jax.numpy as jnp
    >>> post = EnsemblePosterior(jnp.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> mean, std = post.predict(lambda theta: theta.sum())
    >>> float(mean), float(std)
    (3.0, 2.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ekibnn.ensemble import Layout, ensemble_size, flatten_member
from ekibnn.errors import input_error

__all__ = ["EnsemblePosterior", "GaussianPosterior", "OutputMoments", "Posterior"]


class OutputMoments(NamedTuple):
    """Posterior mean and standard deviation of an output (arrays of the output's shape)."""

    mean: Array
    std: Array


def _apply(fn: Callable, particles: PyTree) -> Array:
    """``fn`` on every member of ``particles`` (leading axis) in one ``vmap``."""
    return eqx.filter_vmap(fn)(particles)


_apply_jit = eqx.filter_jit(_apply)


class Posterior(eqx.Module):
    """Base class: a distribution over one member's parameters."""

    def sample_outputs(
        self, fn: Callable, key: PRNGKeyArray | None = None, num: int | None = None
    ) -> Array:
        """Posterior samples of ``fn(params)``: ``(S, *out_shape)``."""
        raise NotImplementedError

    def predict(
        self, fn: Callable, key: PRNGKeyArray | None = None, num: int | None = None
    ) -> OutputMoments:
        """Posterior mean and std of ``fn(params)`` (population std over the samples)."""
        samples = self.sample_outputs(fn, key, num)
        return OutputMoments(jnp.mean(samples, axis=0), jnp.std(samples, axis=0))

    def to_inference_data(
        self,
        outputs: Mapping[str, Callable],
        key: PRNGKeyArray | None = None,
        num: int | None = None,
        observed: Mapping[str, Any] | None = None,
    ) -> Any:
        """An :class:`arviz.InferenceData` whose ``posterior`` group holds samples of every
        named output (``chain = 1``, ``draw = S``), plus ``observed_data`` if given.

        Args:
            outputs: ``{name: fn}`` with ``fn(params) -> array`` for ONE member.
            key: PRNG key (for posteriors that sample; ignored by an ensemble).
            num: number of draws (for posteriors that sample).
            observed: optional ``{name: array}`` for the ``observed_data`` group.

        Returns:
            The ``InferenceData`` (ArviZ is imported only here).
        """
        arviz = _import_arviz()
        posterior = {
            name: np.asarray(self.sample_outputs(fn, key, num))[None]
            for name, fn in outputs.items()
        }
        kwargs = {"posterior": posterior}
        if observed is not None:
            kwargs["observed_data"] = {k: np.asarray(v) for k, v in observed.items()}
        return arviz.from_dict(**kwargs)


class EnsemblePosterior(Posterior):
    """J equally weighted members (the ensemble of an ensemble Kalman method or of RML).

    Attributes:
        particles: the members (pytree, leading axis J on every parameter leaf).
    """

    particles: PyTree

    @property
    def size(self) -> int:
        """Number of members J."""
        return ensemble_size(self.particles)

    def sample_outputs(self, fn, key=None, num=None) -> Array:
        """``fn`` on every member: ``(J, *out_shape)`` (``key`` and ``num`` are not needed;
        ``num``, if given, must be J)."""
        if num is not None and num != self.size:
            raise input_error(
                "num",
                f"None or the ensemble size {self.size} (an ensemble has its own samples)",
                repr(num),
                "leave num=None",
            )
        return _apply_jit(fn, self.particles)


class GaussianPosterior(Posterior):
    """``N(mean, cov)`` over the flat parameters (order of
    :func:`ekibnn.ensemble.flatten_member`).

    Attributes:
        mean: the mean as ONE member's parameters (pytree).
        cov: the ``(p, p)`` covariance.
    """

    mean: PyTree
    cov: Float[Array, "p p"]

    def sample(self, key: PRNGKeyArray, num: int) -> PyTree:
        """``num`` parameter draws (pytree, leading axis ``num``); the covariance's symmetric
        root with eigenvalues clipped at 0 (a float32 covariance may be indefinite by
        round-off)."""
        if not isinstance(num, int | np.integer) or isinstance(num, bool) or num < 1:
            raise input_error("num", "a positive integer", repr(num), "pass e.g. num=200")
        flat = flatten_member(self.mean)
        values, vectors = jnp.linalg.eigh(0.5 * (self.cov + self.cov.T))
        root = (vectors * jnp.sqrt(jnp.maximum(values, 0))) @ vectors.T
        z = jax.random.normal(key, (int(num), flat.shape[0]), flat.dtype)
        return Layout.of_member(self.mean).unflatten(flat + z @ root)

    def sample_outputs(self, fn, key=None, num=None) -> Array:
        """``fn`` on ``num`` parameter draws: ``(num, *out_shape)``."""
        if key is None or num is None:
            raise input_error(
                "sample_outputs",
                "a key and a number of draws for a Gaussian posterior",
                f"key={key!r}, num={num!r}",
                "pass e.g. key=jax.random.key(0), num=200",
            )
        return _apply_jit(fn, self.sample(key, num))


def _import_arviz() -> Any:
    try:
        with warnings.catch_warnings():
            # arviz 0.2x announces its 1.0 refactor with a FutureWarning on import
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "to_inference_data needs ArviZ, an optional dependency; expected `import arviz` "
            "to work, got ImportError; fix: pip install 'ekibnn[arviz]' (or pip install arviz)"
        ) from err
    return arviz
