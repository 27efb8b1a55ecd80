"""What a fit returns: a posterior over the parameters with one predictive interface.

* :class:`EnsemblePosterior`: J members (samples); a quantity ``fn(theta)`` is predicted by
  evaluating ``fn`` on every member.
* :class:`GaussianPosterior`: ``N(mean, cov)`` over the flat parameters (e.g. from UKI, whose
  Gaussian is an approximation of the posterior *in parameter space*); quantities are
  predicted by sampling parameters and evaluating ``fn`` on the draws.
* :class:`LinearisedPosterior`: the linearised-Laplace (GGN) posterior at a MAP
  (:func:`ekibnn.laplace`, :meth:`ekibnn.inversion.GaussNewton.posterior`), a Gaussian of the
  *linearised* model: quantities are predicted through ``fn``'s Jacobian at the MAP, never by
  pushing weight draws through ``fn`` (it refuses :meth:`~LinearisedPosterior.sample`).

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

__all__ = [
    "EnsemblePosterior",
    "GaussianPosterior",
    "LinearisedPosterior",
    "OutputMoments",
    "Posterior",
]


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


class LinearisedPosterior(Posterior):
    """The linearised-Laplace (generalised Gauss–Newton) posterior at a MAP ``theta*``: the
    Gaussian posterior of the model *linearised* at ``theta*`` (Immer, Korzepa & Bauer 2021;
    Daxberger et al. 2021; MacKay 1992). Build it with :func:`ekibnn.laplace` or
    :meth:`ekibnn.inversion.GaussNewton.posterior`.

    In prior-whitened coordinates ``theta = theta* + C_0^{1/2} dz`` the covariance is

        Sigma_z = (I + J^T J^)^{-1} = I - U diag(S^2 / (1 + S^2)) U^T,

    held as the factor ``U`` ``(p, r)`` (orthonormal columns) and ``S`` ``(r,)``, never as a
    ``p x p`` matrix. Every output ``fn(theta)`` is predicted **linearised**: mean
    ``fn(theta*)``, covariance ``J_fn C_0^{1/2} Sigma_z C_0^{1/2} J_fn^T`` by Jacobian products
    of ``fn`` at ``theta*`` (:meth:`predict`, :meth:`sample_outputs`). This is what makes the
    Laplace posterior of a network faithful: the same Gaussian's weight draws pushed through
    the *nonlinear* network give a spread tens to hundreds of times too wide (measured in
    issue #12), so :meth:`sample` refuses to hand out weight draws.

    Attributes:
        mean: ``theta*`` as ONE member's parameters (pytree).
        scale: prior stds ``C_0^{1/2}`` ``(p,)`` (order of :func:`ekibnn.ensemble.flatten_member`).
        basis: ``U`` ``(p, r)``.
        singular_values: ``S`` ``(r,)`` of the whitened Jacobian ``J^``.
        log_evidence: the Laplace log marginal likelihood ``log p(y)`` (exact for a
            linear-Gaussian model).
        objective: ``Phi(theta*)`` (negative log posterior up to a constant).
        grad_norm: ``|grad_z Phi(theta*)|`` (0 at an exact MAP).
        converged: whether the MAP run converged (None: unknown).
    """

    mean: PyTree
    scale: Float[Array, " p"]
    basis: Float[Array, "p r"]
    singular_values: Float[Array, " r"]
    log_evidence: Float[Array, ""]
    objective: Float[Array, ""]
    grad_norm: Float[Array, ""]
    converged: bool | None = eqx.field(static=True, default=None)

    @property
    def num_params(self) -> int:
        """``p``."""
        return self.basis.shape[0]

    @property
    def effective_num_params(self) -> Float[Array, ""]:
        """``gamma = sum_i S_i^2 / (1 + S_i^2)``: how many directions the data determine
        (MacKay 1992)."""
        s2 = self.singular_values**2
        return jnp.sum(s2 / (1 + s2))

    def sample(self, key: PRNGKeyArray, num: int) -> PyTree:
        """Refused: see the class docstring. Use :meth:`sample_outputs` or :meth:`predict`.

        Raises:
            InputError: always.
        """
        raise input_error(
            "LinearisedPosterior.sample",
            "outputs, not weights: this Gaussian is the posterior of the network linearised at "
            "the MAP, and its weight draws pushed through the nonlinear network give a spread "
            "tens to hundreds of times too wide",
            "a request for parameter draws",
            "use posterior.sample_outputs(fn, key, num) (linearised samples of any output) or "
            "posterior.predict(fn) (exact linearised mean and std); for an ensemble of weights "
            "that goes through the nonlinear network, use ek.inversion.rml",
        )

    def _whitened(self, fn: Callable) -> tuple[Callable, Array]:
        layout = Layout.of_member(self.mean)
        theta = flatten_member(self.mean)
        scale = self.scale.astype(theta.dtype)

        def g(dz):
            return jnp.ravel(fn(layout.member(theta + scale * dz)))

        return g, jnp.zeros_like(theta)

    def _root(self, xi: Float[Array, "n p"]) -> Float[Array, "n p"]:
        """Rows ``Sigma_z^{1/2} xi_i`` (symmetric root; the complement of ``U`` is written out
        so no ``I - U D U^T`` cancellation occurs)."""
        proj = xi @ self.basis
        inside = (proj / jnp.sqrt(1 + self.singular_values**2)) @ self.basis.T
        if self.basis.shape[1] == self.basis.shape[0]:
            return inside
        return xi - proj @ self.basis.T + inside

    def predict(
        self,
        fn: Callable,
        key: PRNGKeyArray | None = None,
        num: int | None = None,
        *,
        chunk_size: int = 256,
    ) -> OutputMoments:
        """The linearised predictive mean ``fn(theta*)`` and std (exact for the linearised
        model; ``key`` and ``num`` are not needed).

        The variance of output ``i`` is ``|rho_i - (rho_i U) U^T|^2 + |rho_i U / sqrt(1 + S^2)|^2``
        with ``rho_i = d fn_i / dz`` (a VJP), evaluated ``chunk_size`` outputs at a time.

        Args:
            fn: ``fn(params) -> array`` for ONE member (the network on new inputs, a PINN's
                ``u``, a physical parameter, ...), differentiable by JAX.
            key: unused.
            num: unused.
            chunk_size: outputs whose VJPs are evaluated together (memory ``chunk_size * p``).

        Returns:
            :class:`OutputMoments` of ``fn``'s output shape.
        """
        del key, num
        chunk_size = _positive(chunk_size, "chunk_size", "pass e.g. chunk_size=256")
        return _linearised_moments(self, fn, chunk_size)

    def sample_outputs(
        self,
        fn: Callable,
        key: PRNGKeyArray | None = None,
        num: int | None = None,
        *,
        chunk_size: int = 256,
    ) -> Array:
        """Samples of the **linearised** output ``fn(theta*) + J_fn C_0^{1/2} dz``,
        ``dz ~ N(0, Sigma_z)``: ``(num, *out_shape)`` (JVPs, ``chunk_size`` samples at a
        time)."""
        if key is None or num is None:
            raise input_error(
                "sample_outputs",
                "a key and a number of draws for a linearised posterior",
                f"key={key!r}, num={num!r}",
                "pass e.g. key=jax.random.key(0), num=200",
            )
        num = _positive(num, "num", "pass e.g. num=200")
        chunk_size = _positive(chunk_size, "chunk_size", "pass e.g. chunk_size=256")
        return _linearised_samples(self, fn, key, num, chunk_size)

    def predict_proba(
        self, fn: Callable, key: PRNGKeyArray | None = None, num: int | None = None
    ) -> Array:
        """Predictive class probabilities from logits ``fn(params) -> (..., K)``.

        Without a key, the pairwise probit approximation (MacKay 1992, applied to every
        difference of logits as in the mean-field method of Lu, Ie & Sha 2020, but with the
        differences' exact linearised variances ``s_kj^2 = Var(f_k - f_j)``, so the logits'
        strong correlations are kept):
        ``p_k ~ 1 / sum_j exp(-(mu_k - mu_j) / sqrt(1 + pi s_kj^2 / 8))``, renormalised
        (``K^2`` outputs per point are differentiated). With a key, the average softmax over
        ``num`` samples of the linearised logits (:meth:`sample_outputs`): the linearised
        predictive itself, up to Monte Carlo.
        """
        if key is not None:
            return jnp.mean(jax.nn.softmax(self.sample_outputs(fn, key, num), axis=-1), axis=0)

        gap, spread = self.predict(_LogitGaps(fn))
        probs = 1 / jnp.sum(jnp.exp(-gap / jnp.sqrt(1 + jnp.pi / 8 * spread**2)), axis=-1)
        return probs / jnp.sum(probs, axis=-1, keepdims=True)

    def covariance(self) -> Float[Array, "p p"]:
        """The dense ``(p, p)`` parameter covariance ``C_0^{1/2} Sigma_z C_0^{1/2}``. For small
        ``p`` and tests only: predictions never form it."""
        return _dense_covariance(self)


class _LogitGaps(eqx.Module):
    """``f_k - f_j`` for every pair of classes, ``(..., K, K)``: a module, so that the arrays
    of ``fn`` stay traced and every call of the same shapes reuses one compilation."""

    fn: Callable

    def __call__(self, params: PyTree) -> Array:
        logits = self.fn(params)
        return logits[..., :, None] - logits[..., None, :]


@eqx.filter_jit
def _dense_covariance(post: LinearisedPosterior) -> Array:
    root = post._root(jnp.eye(post.num_params, dtype=post.basis.dtype))  # Sigma_z^{1/2}
    return post.scale[:, None] * (root @ root.T) * post.scale[None, :]


def _positive(value: Any, what: str, fix: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise input_error(what, "a positive integer", repr(value), fix)
    return int(value)


@eqx.filter_jit
def _linearised_moments(post: LinearisedPosterior, fn: Callable, chunk: int) -> OutputMoments:
    g, zero = post._whitened(fn)
    out, pullback = jax.vjp(g, zero)
    q = out.shape[0]
    chunk = min(chunk, q)
    blocks = -(-q // chunk)
    index = jnp.arange(blocks * chunk).reshape(blocks, chunk)
    complete = post.basis.shape[1] == post.basis.shape[0]
    root = jnp.sqrt(1 + post.singular_values**2)

    def variance(rows_index):
        cotangents = jax.nn.one_hot(rows_index, q, dtype=out.dtype)  # rows past q are zero
        rows = jax.vmap(lambda c: pullback(c)[0])(cotangents)  # (chunk, p): d g_i / dz
        proj = rows @ post.basis
        var = jnp.sum((proj / root) ** 2, axis=1)
        if not complete:
            var = var + jnp.sum((rows - proj @ post.basis.T) ** 2, axis=1)
        return var

    var = jax.lax.map(variance, index).reshape(-1)[:q]
    shape = eqx.filter_eval_shape(fn, post.mean).shape
    return OutputMoments(out.reshape(shape), jnp.sqrt(var).reshape(shape))


@eqx.filter_jit
def _linearised_samples(
    post: LinearisedPosterior, fn: Callable, key: PRNGKeyArray, num: int, chunk: int
) -> Array:
    g, zero = post._whitened(fn)
    out, jvp = jax.linearize(g, zero)
    xi = jax.random.normal(key, (num, zero.shape[0]), zero.dtype)
    dz = post._root(xi)
    samples = out + jax.lax.map(jvp, dz, batch_size=min(chunk, num))
    shape = eqx.filter_eval_shape(fn, post.mean).shape
    return samples.reshape(num, *shape)


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
