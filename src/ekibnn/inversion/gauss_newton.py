"""The MAP by damped Gauss–Newton (Levenberg–Marquardt) in Kalman form, with the network's
own Jacobian, and the linearised-Laplace posterior at the MAP.

The ensemble methods linearise the forward map by ensemble statistics; these methods use its
Jacobian ``J = dG/dtheta`` (JAX's JVPs and VJPs). In the prior-whitened coordinates
``theta = m_0 + C_0^{1/2} z`` the objective is

    Phi(z) = l(G(theta(z))) + 0.5 |z|^2,   l(g) = 0.5 |Gamma^{-1/2} (y - g)|^2  (Gaussian)

and with ``J^ = L^T J C_0^{1/2}`` (``L L^T`` the Hessian of ``l`` in the outputs: ``Gamma^{-1}``
for the Gaussian, the generalised Gauss–Newton curvature ``diag(p) - p p^T`` per point for the
categorical likelihood) one damped Gauss–Newton (Levenberg–Marquardt) step solves

    (J^T J^ + (1 + lambda) I) dz = v,    v = -grad Phi(z) = -C_0^{1/2} J^T dl/dg - z     (*)

(Levenberg 1944; Marquardt 1963). It is solved in one of three ways (``space``):

* ``"data"`` (the Kalman form; ``m <= p``): Woodbury,
  ``dz = (v - J^T (J^ J^T + c I)^{-1} J^ v) / c`` with ``c = 1 + lambda``, an ``m x m``
  Cholesky. At ``lambda = 0`` this is the iterated extended Kalman filter update
  ``z <- J^T (J^ J^T + I)^{-1} (r + J^ z)`` (Bell & Cathey 1993), ``r = Gamma^{-1/2}(y - G)``:
  the Kalman update of the introduction with the model's own Jacobian for ``H``;
* ``"parameter"`` (``p < m``): a ``p x p`` Cholesky of ``J^T J^ + c I``;
* ``"cg"`` (both large): conjugate gradients (Lineax ``CG`` on a ``FunctionLinearOperator``
  tagged positive semi-definite) with one JVP and one VJP per CG iteration; nothing of size
  ``m x p`` is formed. Started from zero, the CG iterate keeps the identity
  ``dz^T (J^T J^ + c I) dz = v^T dz`` the gain ratio below relies on (inexact Newton).

``"auto"`` (default) materialises ``J^`` (``min(m, p)`` vmapped JVPs or VJPs, whichever are
fewer) when ``m p <= DENSE_ENTRIES`` (2^24 entries: 64 MiB per start in float32) and
``min(m, p) <= DENSE_SIZE`` (4096: the Cholesky then costs at most about the Gram product), and
uses CG otherwise. When it fits, the dense step is faster: its ``min(m, p)`` Jacobian products
run as one batched (matrix-matrix) evaluation, while CG's products run one after another.

Products per iteration and start (the issue #13 count): one linearisation (the forward pass
at ``z``, whose JVP and VJP the rest reuse), one VJP for ``v``, one forward pass at the trial
point, and for ``J^``: dense, ``min(M, p)`` JVPs (``p <= M``) or VJPs (``M < p``) of the whole
forward map, batched (with ``indexed_forward``, ``M`` VJPs of single-point evaluations, about
three forward passes in all; with ``segments``, each of its own segment's branch only); CG,
``k`` JVPs and ``k`` VJPs (``k`` CG iterations, at most ``cg_max_steps``). The first step
adds one JVP (the first damping). Gauss–Newton cannot do with fewer than the ``min(M, p)``
products that determine ``J^`` (dense) or ``2k`` (CG).

Damping and stopping, per start (Nielsen 1999; Madsen, Nielsen & Tingleff 2004): the gain
ratio ``rho = (Phi(z) - Phi(z + dz)) / (0.5 (v^T dz + lambda |dz|^2))`` (actual over predicted
decrease); the step is accepted when the objective decreased, then
``lambda <- lambda max(1/3, 1 - (2 rho - 1)^3)``, ``nu <- 2``; otherwise
``lambda <- nu lambda``, ``nu <- 2 nu``. The first ``lambda`` is ``tau`` times the curvature of
``Phi`` along ``v``, ``1 + |J^ v|^2 / |v|^2``. A start has converged once a near-Gauss–Newton
step (``lambda <= 1``: at most the prior's precision added) changes the objective, and is
predicted to change it, by at most ``0.5 atol^2 + rtol |Phi|``: the predicted decrease is
half the squared Newton decrement, the distance to the Gauss–Newton minimiser in the
posterior's own metric, so ``atol`` is that distance in posterior standard deviations (default
0.01), and ``rtol`` (default ``100 eps``) a floor for the round-off of ``Phi``. A start has
also converged when a step is rejected while it changes, and is predicted to change, the
objective by less than ``rtol |Phi|`` (MINPACK's ``ftol`` test, Moré 1978): the precision of
``Phi`` is reached, and raising ``lambda`` further would only shrink steps nothing can
measure (without this test, float32 round-off near the minimum drives ``lambda`` up for
ever). The start is then frozen. The state is ``done`` when every start has converged or is
outranked, or after ``max_steps`` steps; ``state.converged`` says which converged (a run that
hit ``max_steps`` shows it there and in ``info.num_converged``).

A start that has not converged is outranked (:func:`gauss_newton` only, not RML's members,
which are separate problems) when the minimum of its own Gauss–Newton model cannot reach the
lowest converged objective. The model ``Phi - v^T d + 0.5 d^T H d``, ``H = J^T J^ + I``, has
its minimum at ``Phi - 0.5 v^T H^{-1} v``; as ``H >= I``, ``1 / h <= (1 + lambda) / (h +
lambda)`` for each eigenvalue ``h`` of ``H``, so ``v^T H^{-1} v <= c v^T dz`` with ``dz``
the damped step (*): the model's minimum is at least ``Phi - 0.5 c v^T dz``. A start whose
floor is above a converged start's objective (or whose objective is not finite) would have
to leave its basin to win, and the run stops rather than wait for it. "Above" means by more
than the convergence tolerance ``0.5 atol^2 + rtol |Phi|``: a start whose floor is within it of
the lowest objective is in the same basin to the test's precision and runs on until it
converges (without the slack, a start that had reached the MAP in a linear problem was declared
outranked by one rounding error). On the demo's sine network the MAP's start converged at
step 178 and the slowest of the 4 starts crawled on to step 397, to settle 1.2 nats above it;
the run now stops at step 216.

Restarts: ``init(particles)`` takes R starting points (prior draws, or the members of an
ensemble stage: a derivative-free global phase); all are optimised at once (``vmap``) and the
lowest objective is the MAP (``state.best``, ``state.map``). Restarts matter for networks: LM
from different draws ends in different basins.

Why not Optimistix: ``optx.LevenbergMarquardt`` solves the damped step as a least-squares
problem in parameter space (``[J; sqrt(lambda) I] dz = [r; 0]`` by QR of a materialised
``(m + p) x p`` Jacobian; ``O(p^3)`` per step, 2702^3 for the B-PINN where the data-space form
costs ``42^2 x 2702``), runs one start per solve inside its own loop (no ``init``/``step`` for
:func:`ekibnn.run`, checkpoints and sharding), and exposes neither the Jacobian factor the
Laplace posterior needs nor per-start damping. Lineax supplies the matrix-free solve.

The posterior at the MAP: the Kalman posterior of the model linearised there, precision
``I + J^T J^`` in ``z``, i.e. the linearised-Laplace / generalised Gauss–Newton posterior
(MacKay 1992; Immer, Korzepa & Bauer 2021; Daxberger et al. 2021), held as the thin factor
``J^ = V S U^T`` (:func:`laplace`, :class:`ekibnn.posterior.LinearisedPosterior`); its
predictions are linearised too. Its weight draws must not be pushed through the nonlinear
network (see that class).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn._checks import runtime_check
from ekibnn.ensemble import Layout, flatten, flatten_member
from ekibnn.errors import input_error
from ekibnn.inversion.kernel import (
    Algorithm,
    check_choice,
    check_forward,
    check_number,
    check_observation,
    check_positive_int,
    check_precision,
    check_prior,
)
from ekibnn.linalg import matmul_precision
from ekibnn.observations import Observation
from ekibnn.posterior import LinearisedPosterior
from ekibnn.priors import GaussianPrior

__all__ = [
    "DENSE_ENTRIES",
    "DENSE_SIZE",
    "Categorical",
    "GaussNewton",
    "GaussNewtonInfo",
    "GaussNewtonState",
    "Gaussian",
    "Likelihood",
    "gauss_newton",
    "laplace",
]

#: Largest ``m p`` (entries of the whitened Jacobian, per start) that ``space="auto"``
#: materialises: 2^24, i.e. 64 MiB per start in float32.
DENSE_ENTRIES = 2**24
#: Largest ``min(m, p)`` that ``space="auto"`` factorises densely (the Cholesky's
#: ``min^3 / 3`` flops then stay below the Gram product's ``m p min``).
DENSE_SIZE = 4096

SolveSpace = Literal["auto", "data", "parameter", "cg"]


# ------------------------------------------------------------------------------ likelihoods
class Likelihood(eqx.Module):
    """The data term ``l(g)`` of the objective and its Gauss–Newton curvature.

    A likelihood is a small value object: its methods take the :class:`ekibnn.Observation`
    (the data) and the forward outputs ``g`` of ONE member. The curvature is given by a root:
    with ``L L^T`` the (generalised) Gauss–Newton Hessian of ``l`` in ``g``, :meth:`root_t`
    applies ``L^T`` to an output tangent, so that ``J^ = L^T J`` and ``J^T J^ = J^T L L^T J``.
    """

    name: ClassVar[str] = "likelihood"

    def output_size(self, obs: Observation) -> int:
        """Length of ``forward_fn``'s output for these data."""
        raise NotImplementedError

    def check(self, obs: Observation) -> None:
        """Raise :class:`ekibnn.InputError` if the data do not suit the likelihood."""

    def loss(self, obs: Observation, outputs: Array) -> Float[Array, ""]:
        """``l(g)``, the negative log-likelihood up to :meth:`log_normaliser`."""
        raise NotImplementedError

    def log_normaliser(self, obs: Observation) -> Float[Array, ""]:
        """``log p(y | g) + l(g)`` (constant in ``g``; for the log evidence)."""
        return jnp.zeros((), obs.y.dtype)

    def gradient(self, obs: Observation, outputs: Array) -> Array:
        """``dl/dg`` (by autodiff of :meth:`loss` unless overridden)."""
        return jax.grad(lambda g: self.loss(obs, g))(outputs)

    def root_t(self, obs: Observation, outputs: Array, tangent: Array) -> Array:
        """``L^T t`` for an output tangent ``t`` (linear in ``t``)."""
        raise NotImplementedError


class Gaussian(Likelihood):
    """``y ~ N(G(theta), Gamma)`` with the Observation's noise (the default):
    ``l(g) = 0.5 |Gamma^{-1/2}(y - g)|^2``, curvature ``Gamma^{-1}``, ``L^T = Gamma^{-1/2}``."""

    name: ClassVar[str] = "Gaussian"

    def output_size(self, obs: Observation) -> int:
        return obs.size

    def loss(self, obs: Observation, outputs: Array) -> Float[Array, ""]:
        return obs.misfit(outputs)

    def log_normaliser(self, obs: Observation) -> Float[Array, ""]:
        half_logdet = (
            jnp.sum(jnp.log(obs.std))
            if obs.is_diagonal
            else jnp.sum(jnp.log(jnp.diagonal(obs.chol)))
        )
        return -0.5 * obs.size * math.log(2 * math.pi) - half_logdet

    def root_t(self, obs: Observation, outputs: Array, tangent: Array) -> Array:
        return obs.whiten(tangent)


class Categorical(Likelihood):
    """Softmax cross-entropy on logits: ``forward_fn`` returns the ``(n K,)`` logits of ``n``
    points flattened row-major (point ``i``, class ``k`` at ``i K + k``), and ``obs.y`` holds
    the ``n`` labels ``0..K-1`` (as floats; the Observation's noise is ignored, e.g.
    ``ek.Observation(labels, 1.0)``).

    ``l(f) = -sum_i log softmax(f_i)[y_i]``; its Hessian per point is
    ``Lambda_i = diag(p_i) - p_i p_i^T`` (``p_i = softmax(f_i)``), the generalised Gauss–Newton
    curvature (exact for a model linear in its parameters), with the root
    ``R_i = (I - p_i 1^T) diag(sqrt(p_i))``, ``R_i R_i^T = Lambda_i``; :meth:`root_t` applies
    ``R_i^T t_i = sqrt(p_i) (t_i - p_i^T t_i)``.

    Args:
        num_classes: ``K >= 2``.
    """

    num_classes: int = eqx.field(static=True)
    name: ClassVar[str] = "categorical"

    def __init__(self, num_classes: int):
        self.num_classes = check_positive_int(
            "Categorical num_classes", num_classes, "pass the number of classes K >= 2"
        )
        if self.num_classes < 2:
            raise input_error("Categorical num_classes", "K >= 2", repr(num_classes), "pass K >= 2")

    def output_size(self, obs: Observation) -> int:
        return obs.size * self.num_classes

    def check(self, obs: Observation) -> None:
        labels = np.asarray(obs.y)
        if np.any(labels != np.round(labels)) or np.any(labels < 0):
            raise input_error(
                "Categorical labels (obs.y)",
                f"integer class indices in [0, {self.num_classes})",
                f"values from {labels.min():g} to {labels.max():g}, not all integers >= 0",
                "pass the labels as ek.Observation(labels.astype(float), 1.0)",
            )
        if np.any(labels >= self.num_classes):
            raise input_error(
                "Categorical labels (obs.y)",
                f"class indices below num_classes = {self.num_classes}",
                f"a label {labels.max():g}",
                "pass Categorical(num_classes) with K larger than every label",
            )

    def _logits(self, outputs: Array) -> Array:
        return outputs.reshape(-1, self.num_classes)

    def loss(self, obs: Observation, outputs: Array) -> Float[Array, ""]:
        logp = jax.nn.log_softmax(self._logits(outputs), axis=-1)
        labels = obs.y.astype(jnp.int32)
        return -jnp.sum(jnp.take_along_axis(logp, labels[:, None], axis=-1))

    def gradient(self, obs: Observation, outputs: Array) -> Array:
        probs = jax.nn.softmax(self._logits(outputs), axis=-1)
        onehot = jax.nn.one_hot(obs.y.astype(jnp.int32), self.num_classes, dtype=probs.dtype)
        return (probs - onehot).reshape(-1)

    def root_t(self, obs: Observation, outputs: Array, tangent: Array) -> Array:
        probs = jax.nn.softmax(self._logits(outputs), axis=-1)
        t = self._logits(tangent)
        centred = t - jnp.sum(probs * t, axis=-1, keepdims=True)
        return (jnp.sqrt(probs) * centred).reshape(-1)


def check_likelihood(likelihood: Any, obs: Observation) -> Likelihood:
    """``likelihood`` (None: :class:`Gaussian`) after checking it and the data against it."""
    likelihood = Gaussian() if likelihood is None else likelihood
    if not isinstance(likelihood, Likelihood):
        raise input_error(
            "likelihood",
            "None (Gaussian) or an ekibnn likelihood such as ek.Categorical(num_classes)",
            type(likelihood).__name__,
            "pass likelihood=ek.Categorical(K) for classification, or leave it out",
        )
    likelihood.check(obs)
    return likelihood


# ------------------------------------------------------------------------------ linearisation
class Linearisation(NamedTuple):
    """The whitened model at one point ``z`` (inside a trace; functions are linear maps).

    Attributes:
        outputs: ``G(theta(z))`` ``(M,)``.
        loss: ``l(G)``.
        minus_grad: ``v = -grad Phi(z)`` ``(p,)``.
        jhat: ``u -> J^ u`` (a JVP).
        jhat_t: ``w -> J^T w`` (a VJP).
    """

    outputs: Array
    loss: Array
    minus_grad: Array
    jhat: Callable[[Array], Array]
    jhat_t: Callable[[Array], Array]


class WhitenedModel(NamedTuple):
    """The model in prior-whitened coordinates, ``z -> G(anchor + scale z)``, with its data
    (a plain container used inside traces).

    Attributes:
        forward_fn: the forward map of ONE member (``forward_fn(params, indices)`` when
            ``indexed``).
        likelihood: the data term.
        obs: the data.
        layout: a flat vector's pytree layout.
        anchor: the centre ``(p,)`` of the prior term (the prior mean; an RML member's draw).
        scale: the prior stds ``(p,)``.
        indexed: ``forward_fn`` takes observation indices, so the Jacobian is built point by
            point (one VJP per observation of a single-point evaluation) instead of by
            ``min(M, p)`` products of the whole forward map.
        segments: None, or the ends of consecutive observation segments (``indexed`` only;
            :func:`gauss_newton`): the outputs and the Jacobian's rows of segment ``k`` are
            computed with ``forward_fn(params, indices, segment=k)``.
    """

    forward_fn: Callable
    likelihood: Likelihood
    obs: Observation
    layout: Layout
    anchor: Float[Array, " p"]
    scale: Float[Array, " p"]
    indexed: bool = False
    segments: tuple[int, ...] | None = None

    def outputs(self, z: Float[Array, " p"]) -> Float[Array, " M"]:
        """``G(anchor + scale z)`` (segment by segment when ``segments`` are given)."""
        return jnp.concatenate(
            [self._forward(z, jnp.arange(a, b), k) for k, a, b in self._ranges()]
        )

    def _ranges(self) -> list[tuple[int | None, int, int]]:
        """``(segment, start, stop)`` of every nonempty segment; without ``segments``, one
        range of all observations with segment None."""
        if self.segments is None:
            return [(None, 0, self.obs.size)]
        return segment_ranges(self.segments)

    def _forward(self, z: Array, indices: Array, segment: int | None = None) -> Array:
        params = self.layout.member(self.anchor + self.scale * z)
        if not self.indexed:
            out = self.forward_fn(params)
        elif segment is None:
            out = self.forward_fn(params, indices)
        else:
            out = self.forward_fn(params, indices, segment=segment)
        return out.astype(z.dtype)

    def linearise(self, z: Float[Array, " p"]) -> Linearisation:
        """Linearise at ``z`` (one forward pass; the JVP and VJP it returns reuse it)."""
        outputs, jvp = jax.linearize(self.outputs, z)
        vjp = jax.linear_transpose(jvp, z)
        minus_grad = -vjp(self.likelihood.gradient(self.obs, outputs))[0] - z

        def jhat(u):
            return self.likelihood.root_t(self.obs, outputs, jvp(u))

        jhat_transpose = jax.linear_transpose(jhat, z)
        return Linearisation(
            outputs,
            self.likelihood.loss(self.obs, outputs),
            minus_grad,
            jhat,
            lambda w: jhat_transpose(w)[0],
        )

    def jacobian(self, lin: Linearisation, z: Float[Array, " p"]) -> Float[Array, "M p"]:
        """The whitened Jacobian ``J^`` ``(M, p)``: point by point when ``indexed`` (``M``
        VJPs of single-point evaluations, about three forward passes in all; one vmap per
        segment when ``segments`` are given), else by ``p`` vmapped JVPs (``p <= M``) or
        ``M`` vmapped VJPs of the whole forward map."""
        m, p = lin.outputs.shape[0], z.shape[0]
        if self.indexed:

            def rows(start: int, stop: int, segment: int | None) -> Array:
                return jax.vmap(
                    lambda i: jax.jacrev(lambda w: self._forward(w, i[None], segment))(z)
                )(jnp.arange(start, stop))

            raw = jnp.concatenate([rows(a, b, k) for k, a, b in self._ranges()]).reshape(m, p)
            return jax.vmap(
                lambda col: self.likelihood.root_t(self.obs, lin.outputs, col),
                in_axes=1,
                out_axes=1,
            )(raw)
        eye = jnp.eye(min(m, p), dtype=z.dtype)
        if p <= m:
            return jax.vmap(lin.jhat)(eye).T
        return jax.vmap(lin.jhat_t)(eye)


def _two_norm(tree: PyTree) -> Array:
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def check_segments(segments: Any, indexed_forward: bool, n: int) -> tuple[int, ...] | None:
    """``segments`` as a tuple of ints after checking it (:func:`gauss_newton`): None, or
    non-decreasing segment ends whose last is the number of observations ``n``, with
    ``indexed_forward``."""
    if segments is None:
        return None
    if not indexed_forward:
        raise input_error(
            "segments",
            "segments together with indexed_forward=True (they split forward_fn's indices)",
            f"segments={segments!r} with indexed_forward=False",
            "pass indexed_forward=True and forward_fn(params, indices, segment=None), or drop "
            "segments",
        )
    try:
        ends = tuple(int(e) for e in segments)
        valid = ends == tuple(segments) and ends[-1] == n and list(ends) == sorted(ends)
    except (TypeError, ValueError, IndexError):
        valid = False
    if not valid or ends[0] < 0:
        raise input_error(
            "segments",
            f"non-decreasing integer segment ends, the last equal to the {n} observations",
            repr(segments),
            f"pass e.g. (n_data, n_data + n_boundary, {n}): the end of each segment",
        )
    return ends


def segment_ranges(ends: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """``(k, start, stop)`` of every nonempty segment ``[ends[k-1], ends[k])``."""
    starts = (0, *ends[:-1])
    return [(k, a, b) for k, (a, b) in enumerate(zip(starts, ends, strict=True)) if b > a]


def check_segment_calls(
    forward_fn: Callable, member: PyTree, segments: tuple[int, ...] | None, num_outputs: int
) -> None:
    """Raise a clear error unless ``forward_fn(member, indices, segment=k)`` returns the
    outputs of ``indices`` for every nonempty segment ``k`` (shapes only)."""
    if segments is None:
        return
    per_index = num_outputs // segments[-1]
    for k, a, b in segment_ranges(segments):
        indices = jax.ShapeDtypeStruct((b - a,), jnp.int32)
        try:
            out = eqx.filter_eval_shape(
                lambda m, i, k=k: forward_fn(m, i, segment=k), member, indices
            )
        except Exception as err:
            raise input_error(
                "forward_fn with segments",
                "forward_fn(params, indices, segment=k) for each segment k",
                f"an error for segment {k}: {type(err).__name__}: {err}",
                "add a segment=None keyword to forward_fn (k: every index lies in segment k), "
                "or drop segments",
            ) from err
        if getattr(out, "shape", None) != ((b - a) * per_index,):
            raise input_error(
                "forward_fn(params, indices, segment=k) output",
                f"shape ({(b - a) * per_index},) for the {b - a} indices of segment {k}",
                str(getattr(out, "shape", type(out).__name__)),
                "return the outputs of exactly the indices given, in their order",
            )


def choose_space(space: str, m: int, p: int) -> str:
    """The solve space ``"data"``, ``"parameter"`` or ``"cg"`` for ``space`` (``"auto"``:
    dense when ``m p <= DENSE_ENTRIES`` and ``min(m, p) <= DENSE_SIZE``, in the smaller of
    data and parameter space; CG otherwise)."""
    if space != "auto":
        return space
    if m * p <= DENSE_ENTRIES and min(m, p) <= DENSE_SIZE:
        return "data" if m <= p else "parameter"
    return "cg"


# ------------------------------------------------------------------------------ state / info
class GaussNewtonState(NamedTuple):
    """State of a Levenberg–Marquardt run over R starts (primary data only).

    Attributes:
        x: the current points, flat ``(R, p)`` in parameter space (order of
            :func:`ekibnn.ensemble.flatten`).
        layout: how a row maps back to a member's pytree (static).
        objective: ``Phi`` at each point ``(R,)`` (``inf`` before the first step).
        grad_norm: ``|grad_z Phi|`` ``(R,)`` at the point the last step started from, in
            prior-whitened units.
        damping: Levenberg–Marquardt ``lambda`` ``(R,)`` (set at the first step unless
            ``initial_damping`` was given).
        growth: Nielsen's factor ``nu`` ``(R,)``.
        converged: ``(R,)`` which starts passed the convergence test (and are frozen).
        step: steps taken.
        done: every start has converged (or is outranked: module docstring), or
            ``max_steps`` was reached.
    """

    x: Float[Array, "R p"]
    layout: Layout
    objective: Float[Array, " R"]
    grad_norm: Float[Array, " R"]
    damping: Float[Array, " R"]
    growth: Float[Array, " R"]
    converged: Bool[Array, " R"]
    step: Int[Array, ""]
    done: Bool[Array, ""]

    @property
    def particles(self) -> PyTree:
        """The R optimised points (pytree, leading axis R): restarts, NOT posterior samples
        (the posterior is :meth:`GaussNewton.posterior`)."""
        return self.layout.unflatten(self.x)

    @property
    def best(self) -> Int[Array, ""]:
        """Index of the start with the lowest finite objective."""
        return jnp.argmin(jnp.where(jnp.isfinite(self.objective), self.objective, jnp.inf))

    @property
    def map(self) -> PyTree:
        """The MAP estimate: the best start as ONE member's pytree."""
        return self.layout.member(self.x[self.best])


@eqx.filter_jit
def _initial_state(particles: PyTree, layout: Layout, damping: float) -> GaussNewtonState:
    """The state before the first step (one program; the checks are done by the caller)."""
    x = flatten(particles)
    num, dtype = x.shape[0], x.dtype
    return GaussNewtonState(
        x=x,
        layout=layout,
        objective=jnp.full((num,), jnp.inf, dtype),
        grad_norm=jnp.full((num,), jnp.inf, dtype),
        damping=jnp.full((num,), damping, dtype),
        growth=jnp.full((num,), 2.0, dtype),
        converged=jnp.zeros((num,), bool),
        step=jnp.zeros((), jnp.int32),
        done=jnp.asarray(False),
    )


@eqx.filter_jit
def best_start(state: GaussNewtonState) -> PyTree:
    """The best start (:attr:`GaussNewtonState.map`) as a one-start ensemble (leading axis 1
    on every parameter leaf), to warm-start another run there (one program)."""
    return state.layout.unflatten(state.x[state.best][None])


class GaussNewtonInfo(NamedTuple):
    """Diagnostics of one step (scalars). For :func:`gauss_newton` they describe the best start
    after the step; for :func:`ekibnn.inversion.rml` they are means over the members.

    Attributes:
        objective: ``Phi`` (negative log posterior up to a constant).
        misfit: ``2 l(G) / M`` (Gaussian: ``|Gamma^{-1/2}(y - G)|^2 / m``, about 1 when the fit
            is at the noise level).
        grad_norm: ``|grad_z Phi|`` at the point the step started from.
        damping: ``lambda`` after the step.
        num_converged: starts (members) that have converged.
        num_accepted: steps accepted in this step, over the starts.
        cg_steps: mean CG iterations (0 for the dense spaces).
    """

    objective: Float[Array, ""]
    misfit: Float[Array, ""]
    grad_norm: Float[Array, ""]
    damping: Float[Array, ""]
    num_converged: Int[Array, ""]
    num_accepted: Int[Array, ""]
    cg_steps: Float[Array, ""]


class _Update(NamedTuple):
    x: Array
    objective: Array
    grad_norm: Array
    damping: Array
    growth: Array
    converged: Array
    accepted: Array
    loss: Array
    cg_steps: Array
    model_floor: Array  # Phi - 0.5 c v^T dz at the step's start point (<= GN model minimum)


_MAX_DAMPING = 1e20  # lambda is capped (float32 headroom); nu is capped likewise


# ------------------------------------------------------------------------------ algorithm
class GaussNewton(Algorithm):
    """Levenberg–Marquardt to the MAP in Kalman form, R starts at once; build it with
    :func:`gauss_newton` (fields as its arguments)."""

    forward_fn: Callable
    obs: Observation
    prior: GaussianPrior
    likelihood: Likelihood
    indexed_forward: bool = eqx.field(static=True)
    segments: tuple[int, ...] | None = eqx.field(static=True)
    space: str = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    rtol: float | None = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    initial_damping: float | None = eqx.field(static=True)
    damping_scale: float = eqx.field(static=True)
    cg_rtol: float | None = eqx.field(static=True)
    cg_max_steps: int | None = eqx.field(static=True)
    update_precision: str | None = eqx.field(static=True)

    name: ClassVar[str] = "Gauss-Newton"

    @property
    def num_outputs(self) -> int:
        """``M``, the length of ``forward_fn``'s output (``m``; ``n K`` for categorical)."""
        return self.likelihood.output_size(self.obs)

    @property
    def solve_space(self) -> str:
        """The space the step is solved in (``space`` with ``"auto"`` resolved)."""
        return choose_space(self.space, self.num_outputs, self.prior.num_params)

    def init(self, particles: PyTree) -> GaussNewtonState:
        """The state from R starting points (leading axis R on every parameter leaf; R = 1 is
        fine), after checking them and the forward map (:class:`ekibnn.InputError`)."""
        self.prior.check_particles(particles)
        layout = Layout.of_ensemble(particles)
        member = eqx.filter_eval_shape(lambda p: layout.member(flatten(p)[0]), particles)
        indices = (
            jax.ShapeDtypeStruct((self.obs.size,), jnp.int32) if self.indexed_forward else None
        )
        check_forward(self.forward_fn, member, self.num_outputs, indices)
        check_segment_calls(self.forward_fn, member, self.segments, self.num_outputs)
        start = 0.0 if self.initial_damping is None else self.initial_damping
        return _initial_state(particles, layout, start)

    # -------------------------------------------------------------- one start
    def _solve(
        self, model: WhitenedModel, lin: Linearisation, z: Array, c: Array
    ) -> tuple[Array, Array]:
        """``dz`` of (*) for ``c = 1 + lambda`` and the CG iterations taken."""
        v = lin.minus_grad
        m, p = self.num_outputs, v.shape[0]
        space = self.solve_space
        zero = jnp.zeros((), v.dtype)
        if space == "cg":
            operator = lx.FunctionLinearOperator(
                lambda u: lin.jhat_t(lin.jhat(u)) + c * u,
                jax.ShapeDtypeStruct(v.shape, v.dtype),
                lx.positive_semidefinite_tag,
            )
            tol = self._cg_rtol(v.dtype)
            solver = lx.CG(
                rtol=0.0,
                atol=tol * _two_norm(v) + jnp.finfo(v.dtype).tiny,
                norm=_two_norm,
                max_steps=self.cg_max_steps or min(min(m, p) + 1, 250),
            )
            solution = lx.linear_solve(operator, v, solver, throw=False)
            return solution.value, solution.stats["num_steps"].astype(v.dtype)
        jac = model.jacobian(lin, z)
        # ONE batched LAPACK factorisation per step, on purpose: two independent ones in one
        # program (vmapped over R >= 4 starts, size >= 300) deadlock jaxlib 0.10.2's CPU
        # batch map on a 2-core machine (measured 2026-12-06; a step with a second Cholesky
        # for a geodesic-acceleration solve never returned)
        with matmul_precision(self.update_precision):
            if space == "data":
                gram = jac @ jac.T + c * jnp.eye(m, dtype=v.dtype)
                w = cho_solve(cho_factor(gram, lower=True), jac @ v)
                return (v - jac.T @ w) / c, zero
            gram = jac.T @ jac + c * jnp.eye(p, dtype=v.dtype)
            return cho_solve(cho_factor(gram, lower=True), v), zero

    def _cg_rtol(self, dtype: Any) -> float:
        return self.cg_rtol if self.cg_rtol is not None else float(jnp.finfo(dtype).eps) ** 0.5

    def _rtol(self, dtype: Any) -> float:
        return self.rtol if self.rtol is not None else 100 * float(jnp.finfo(dtype).eps)

    def _tolerance(self, objective: Array) -> Array:
        """The convergence tolerance ``0.5 atol^2 + rtol |Phi|`` at ``objective``."""
        return self._rtol(objective.dtype) * jnp.abs(objective) + 0.5 * self.atol**2

    def model(
        self, layout: Layout, anchor: Array, y: Array | None = None, dtype: Any = None
    ) -> WhitenedModel:
        """The :class:`WhitenedModel` of one start centred at ``anchor`` with data ``y``
        (None: ``obs.y``)."""
        obs = self.obs if y is None else eqx.tree_at(lambda o: o.y, self.obs, y)
        dtype = anchor.dtype if dtype is None else dtype
        scale = self.prior.flat_std().astype(dtype)
        return WhitenedModel(
            self.forward_fn,
            self.likelihood,
            obs,
            layout,
            anchor,
            scale,
            self.indexed_forward,
            self.segments,
        )

    def _linearise_member(self, layout: Layout, anchor: Array, y: Array, x: Array):
        model = self.model(layout, anchor, y, x.dtype)
        z = (x - anchor) / model.scale
        return model, z, model.linearise(z)

    def _member_update(
        self,
        layout: Layout,
        anchor: Array,
        y: Array,
        x: Array,
        damping: Array,
        growth: Array,
        converged: Array,
        first: Array,
    ) -> _Update:
        """One LM step of one start (vmapped by :meth:`advance`): ``anchor`` is the prior
        centre of its objective and ``y`` its data; ``first`` (not batched) says whether
        ``lambda`` is still to be set by Nielsen's rule (one JVP, at the first step only)."""
        model, z, lin = self._linearise_member(layout, anchor, y, x)
        v = lin.minus_grad
        phi = lin.loss + 0.5 * jnp.sum(z**2)
        vv = jnp.sum(v**2)
        if self.initial_damping is None:
            tiny = jnp.finfo(x.dtype).tiny
            lam = jax.lax.cond(
                first,
                lambda: (
                    self.damping_scale * (1 + jnp.sum(lin.jhat(v) ** 2) / jnp.maximum(vv, tiny))
                ),
                lambda: damping,
            )
        else:
            lam = damping
        dz, cg_steps = self._solve(model, lin, z, 1.0 + lam)
        z_trial = z + dz
        loss_trial = self.likelihood.loss(model.obs, model.outputs(z_trial))
        phi_trial = loss_trial + 0.5 * jnp.sum(z_trial**2)
        actual = phi - phi_trial
        predicted = 0.5 * (jnp.dot(v, dz) + lam * jnp.sum(dz**2))
        accepted = jnp.isfinite(phi_trial) & (actual > 0)
        rho = actual / jnp.maximum(predicted, jnp.finfo(x.dtype).tiny)
        lam_accept = lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        lam_new = jnp.minimum(jnp.where(accepted, lam_accept, lam * growth), _MAX_DAMPING)
        growth_new = jnp.where(accepted, 2.0, jnp.minimum(2.0 * growth, _MAX_DAMPING))
        roundoff = self._rtol(x.dtype) * jnp.abs(phi)
        tol = self._tolerance(phi)
        small = jnp.maximum(jnp.abs(jnp.where(jnp.isfinite(actual), actual, jnp.inf)), predicted)
        unmeasurable = ~accepted & (small <= roundoff)
        now_converged = jnp.isfinite(phi) & (((lam <= 1.0) & (small <= tol)) | unmeasurable)
        keep = converged | ~accepted
        return _Update(
            x=jnp.where(keep, x, anchor + model.scale * z_trial),
            objective=jnp.where(keep, phi, phi_trial),
            grad_norm=jnp.sqrt(vv),
            damping=jnp.where(converged, damping, lam_new),
            growth=jnp.where(converged, growth, growth_new),
            converged=converged | now_converged,
            accepted=accepted & ~converged,
            loss=jnp.where(keep, lin.loss, loss_trial),
            cg_steps=cg_steps,
            model_floor=phi - 0.5 * (1.0 + lam) * jnp.dot(v, dz),
        )

    def advance(
        self,
        state: GaussNewtonState,
        anchor: Float[Array, "R p"] | None = None,
        y: Float[Array, "R n"] | None = None,
    ) -> tuple[GaussNewtonState, _Update]:
        """One LM step of every start: the objective of start ``j`` is centred at
        ``anchor[j]`` (None: the prior mean for all) with data ``y[j]`` (None: ``obs.y`` for
        all). Shared by :func:`gauss_newton` and :func:`ekibnn.inversion.rml`."""
        dtype = state.x.dtype
        axes = (None, None if anchor is None else 0, None if y is None else 0, 0)
        args = (
            state.layout,
            self.prior.flat_mean().astype(dtype) if anchor is None else anchor,
            self.obs.y if y is None else y,
            state.x,
        )
        update = jax.vmap(self._member_update, in_axes=(*axes, 0, 0, 0, None))(
            *args, state.damping, state.growth, state.converged, state.step == 0
        )
        objective = runtime_check(
            update.objective,
            ~jnp.any(jnp.isfinite(update.objective)),
            f"{self.name}: every start has a non-finite objective; expected at least one "
            "start with a finite forward output; fix: check forward_fn for overflow/NaN, start "
            "from prior draws or shrink the prior",
        )
        step = state.step + 1
        new_state = GaussNewtonState(
            x=update.x,
            layout=state.layout,
            objective=objective,
            grad_norm=update.grad_norm,
            damping=update.damping,
            growth=update.growth,
            converged=update.converged,
            step=step,
            done=jnp.all(update.converged) | (step >= self.max_steps),
        )
        return new_state, update

    def step(
        self, key: PRNGKeyArray, state: GaussNewtonState
    ) -> tuple[GaussNewtonState, GaussNewtonInfo]:
        """One LM step of every start (module docstring); deterministic (``key`` unused)."""
        del key
        new_state, update = self.advance(state)
        converged = new_state.converged
        lowest = jnp.min(jnp.where(converged, new_state.objective, jnp.inf))
        # within the convergence tolerance of the lowest objective, a start may still reach it
        reach = lowest + self._tolerance(lowest)
        outranked = ~jnp.isfinite(update.model_floor) | (update.model_floor > reach)
        new_state = new_state._replace(
            done=new_state.done | jnp.all(converged | (outranked & jnp.isfinite(lowest)))
        )
        best = new_state.best
        info = GaussNewtonInfo(
            objective=new_state.objective[best],
            misfit=2.0 * update.loss[best] / self.num_outputs,
            grad_norm=update.grad_norm[best],
            damping=new_state.damping[best],
            num_converged=jnp.sum(new_state.converged).astype(jnp.int32),
            num_accepted=jnp.sum(update.accepted).astype(jnp.int32),
            cg_steps=jnp.mean(update.cg_steps),
        )
        return new_state, info

    def posterior(
        self,
        state: GaussNewtonState,
        *,
        rank: int | None = None,
        key: PRNGKeyArray | None = None,
    ) -> LinearisedPosterior:
        """The linearised-Laplace posterior at the best start (see :func:`laplace`; the
        solver's arguments were checked when it was built), marked with whether that start
        converged: one compiled program."""
        if rank is not None:
            rank = check_positive_int(
                "rank", rank, "pass e.g. rank=200, or None for the exact factor"
            )
        key = jax.random.key(0) if key is None else key
        fields, converged = _posterior_fields(self, state, rank, key)
        return LinearisedPosterior(**fields, converged=bool(converged))


@eqx.filter_jit
def _posterior_fields(algo: GaussNewton, state: GaussNewtonState, rank, key) -> tuple[dict, Array]:
    """:meth:`GaussNewton.posterior`'s fields (:func:`laplace` at the best start) and whether
    that start converged."""
    theta = state.x[state.best]
    model = algo.model(state.layout, algo.prior.flat_mean().astype(theta.dtype))
    fields = _laplace_fields(model, theta, rank, key, algo.update_precision)
    return fields, state.converged[state.best]


def gauss_newton(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    *,
    likelihood: Likelihood | None = None,
    indexed_forward: bool = False,
    segments: tuple[int, ...] | None = None,
    space: SolveSpace = "auto",
    max_steps: int = 200,
    rtol: float | None = None,
    atol: float = 1e-2,
    initial_damping: float | None = None,
    damping_scale: float = 1e-3,
    cg_rtol: float | None = None,
    cg_max_steps: int | None = None,
    update_precision: str | None = "highest",
) -> GaussNewton:
    """Build the Levenberg–Marquardt MAP solver in Kalman form (module docstring).

    Args:
        forward_fn: ``forward_fn(params) -> (M,)`` for ONE member (vmapped over the starts);
            differentiable by JAX. A plain function or an Equinox module (its arrays are
            then data, like ``obs``).
        obs: the data (and, for the Gaussian likelihood, its noise ``Gamma``: scalar, diagonal
            or dense).
        prior: the Gaussian prior ``N(m_0, C_0)`` (diagonal); it defines the whitened
            coordinates and the damping's metric.
        likelihood: None (Gaussian, with ``obs``'s noise) or :class:`Categorical`.
        indexed_forward: ``forward_fn(params, indices) -> (len(indices) * M / n,)`` evaluates
            only the observations ``indices`` (as for :func:`ekibnn.eki`). The Jacobian is then
            built point by point (one VJP of a single-point evaluation per observation, about
            three forward passes in all) instead of by ``min(M, p)`` products of the whole
            forward map: for a network whose outputs depend each on one input, hundreds of
            times faster. The objective still evaluates all observations.
        segments: None, or (``indexed_forward`` only) the ends ``(e_1, ..., e_K = n)`` of
            consecutive observation segments ``[e_{k-1}, e_k)`` that one branch of the model
            each evaluates (a PINN's data, boundary and residual points). The Jacobian's rows
            of segment ``k`` are then built with ``forward_fn(params, indices, segment=k)``,
            which may assume every index lies in segment ``k`` and evaluate that branch alone
            (under ``vmap`` a data-dependent branch costs as much as all of them); the
            objective's outputs are computed segment by segment too.
        space: ``"auto"``, ``"data"`` (``M x M`` Woodbury), ``"parameter"`` (``p x p``) or
            ``"cg"`` (matrix-free, Lineax CG).
        max_steps: the state is ``done`` after this many steps even if not every start has
            converged (``state.converged`` tells).
        atol: the convergence tolerance on the Newton decrement, i.e. on the distance to the
            Gauss–Newton minimiser in posterior standard deviations (module docstring).
        rtol: relative floor of the objective-change test for round-off (None: ``100 eps`` of
            the dtype, 1.2e-5 in float32, 2.2e-14 in float64).
        initial_damping: the first ``lambda`` of every start; None: ``damping_scale`` times the
            curvature along the gradient (Nielsen). ``0.0`` gives pure Gauss–Newton (stays 0).
        damping_scale: ``tau`` of the first damping (1e-3; 1e-6 when starting near the MAP).
        cg_rtol: relative residual tolerance of CG (None: ``sqrt(eps)`` of the dtype).
        cg_max_steps: CG iterations per step (None: ``min(min(M, p) + 1, 250)``).
        update_precision: matrix-product precision of the dense linear algebra (see
            :func:`ekibnn.linalg.matmul_precision`); the model's products keep JAX's default.

    Returns:
        A :class:`GaussNewton` module: ``init(particles) ->`` :class:`GaussNewtonState`,
        ``step(key, state) -> (state,`` :class:`GaussNewtonInfo` ``)``, and
        ``posterior(state)`` the linearised Laplace posterior at the MAP.

    Raises:
        InputError: for bad arguments (before anything is compiled).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> H = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> obs = ek.Observation(jnp.array([1.0, 2.0, 2.0]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.gauss_newton(lambda th: H @ th, obs, prior)
        >>> key = jax.random.key(0)
        >>> result = ek.run(key, algo, prior.sample(key, 3), num_steps=50, progress=False)
        >>> bool(result.state.converged.all()), result.state.map.round(2).tolist()
        (True, [1.0, 1.0])
    """
    check_observation(obs)
    check_prior(prior, required="it defines the objective's prior term and the whitening")
    likelihood = check_likelihood(likelihood, obs)
    check_choice("space", space, ("auto", "data", "parameter", "cg"), "leave it at 'auto'")
    max_steps = check_positive_int("max_steps", max_steps, "pass e.g. max_steps=200")
    if rtol is not None:
        rtol = check_number("rtol", rtol, 0.0, strict=True)
    atol = check_number("atol", atol)
    if initial_damping is not None:
        initial_damping = check_number("initial_damping", initial_damping)
    damping_scale = check_number("damping_scale", damping_scale, 0.0, strict=True)
    if cg_rtol is not None:
        cg_rtol = check_number("cg_rtol", cg_rtol, 0.0, strict=True)
    if cg_max_steps is not None:
        cg_max_steps = check_positive_int("cg_max_steps", cg_max_steps, "pass e.g. 100 or None")
    check_precision(update_precision)
    segments = check_segments(segments, indexed_forward, obs.size)
    return GaussNewton(
        forward_fn=forward_fn,
        obs=obs,
        prior=prior,
        likelihood=likelihood,
        indexed_forward=bool(indexed_forward),
        segments=segments,
        space=space,
        max_steps=max_steps,
        rtol=rtol,
        atol=atol,
        initial_damping=initial_damping,
        damping_scale=damping_scale,
        cg_rtol=cg_rtol,
        cg_max_steps=cg_max_steps,
        update_precision=update_precision,
    )


# ------------------------------------------------------------------------------ Laplace
class Factor(NamedTuple):
    """The thin factor ``J^ ~ V diag(S) U^T`` of the whitened Jacobian at a point, with the
    objective's pieces there (what :func:`laplace` and the evidence need)."""

    basis: Float[Array, "p r"]  # U, orthonormal columns
    singular_values: Float[Array, " r"]  # S
    loss: Float[Array, ""]  # l(G(theta))
    prior_term: Float[Array, ""]  # 0.5 |z|^2
    grad_norm: Float[Array, ""]  # |grad_z Phi|
    outputs: Float[Array, " M"]  # G(theta)


def factorise(
    model: WhitenedModel,
    z: Float[Array, " p"],
    rank: int | None = None,
    key: PRNGKeyArray | None = None,
    update_precision: str | None = "highest",
) -> Factor:
    """The :class:`Factor` of ``model`` at ``z`` (traceable). ``rank=None``: the exact
    thin SVD of the materialised ``J^`` (``r = min(M, p)``); an integer ``k``: a randomised SVD
    of rank ``k`` (Halko, Martinsson & Tropp 2011; ``k + 10`` JVPs and VJPs per power
    iteration, two power iterations), never forming ``J^``: directions outside its span keep
    the prior's variance (conservative)."""
    lin = model.linearise(z)
    m, p = lin.outputs.shape[0], z.shape[0]
    if rank is None:
        jac = model.jacobian(lin, z)
    with matmul_precision(update_precision):
        if rank is None:
            _, s, ut = jnp.linalg.svd(jac, full_matrices=False)
        else:
            width = min(rank + 10, m, p)
            omega = jax.random.normal(key, (p, width), z.dtype)
            q = jnp.linalg.qr(jax.vmap(lin.jhat, in_axes=1, out_axes=1)(omega))[0]
            for _ in range(2):  # power iterations: Q <- orth(J^ J^T Q)
                back = jax.vmap(lin.jhat_t, in_axes=1, out_axes=1)(q)
                q = jnp.linalg.qr(jax.vmap(lin.jhat, in_axes=1, out_axes=1)(back))[0]
            b = jax.vmap(lin.jhat_t, in_axes=1, out_axes=0)(q)  # Q^T J^  (width, p)
            _, s, ut = jnp.linalg.svd(b, full_matrices=False)
            s, ut = s[:rank], ut[:rank]
    return Factor(
        basis=ut.T,
        singular_values=s,
        loss=lin.loss,
        prior_term=0.5 * jnp.sum(z**2),
        grad_norm=_two_norm(lin.minus_grad),
        outputs=lin.outputs,
    )


def log_evidence(factor: Factor, log_normaliser: Array) -> Array:
    """The Laplace log marginal likelihood ``log p(y) ~ log p(y | theta*) + log p(theta*) +
    (p / 2) log(2 pi) + 0.5 log det Sigma``, in whitened coordinates
    ``-l - log_normaliser' - 0.5 |z*|^2 - 0.5 sum_i log(1 + S_i^2)`` (MacKay 1992; exact for a
    linear-Gaussian model)."""
    return (
        log_normaliser
        - factor.loss
        - factor.prior_term
        - 0.5 * jnp.sum(jnp.log1p(factor.singular_values**2))
    )


def _laplace_fields(model: WhitenedModel, theta: Array, rank, key, precision) -> dict:
    """The :class:`ekibnn.posterior.LinearisedPosterior` fields (all but ``converged``) of the
    Laplace posterior of ``model`` at the flat point ``theta`` (traceable)."""
    factor = factorise(model, (theta - model.anchor) / model.scale, rank, key, precision)
    return {
        "mean": model.layout.member(theta),
        "scale": model.scale,
        "basis": factor.basis,
        "singular_values": factor.singular_values,
        "log_evidence": log_evidence(factor, model.likelihood.log_normaliser(model.obs)),
        "objective": factor.loss + factor.prior_term,
        "grad_norm": factor.grad_norm,
    }


_laplace_fields_compiled = eqx.filter_jit(_laplace_fields)


def laplace(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    params: PyTree,
    *,
    likelihood: Likelihood | None = None,
    indexed_forward: bool = False,
    segments: tuple[int, ...] | None = None,
    rank: int | None = None,
    key: PRNGKeyArray | None = None,
    converged: bool | None = None,
    update_precision: str | None = "highest",
) -> LinearisedPosterior:
    """The linearised-Laplace (generalised Gauss–Newton) posterior at ``params``, usually the
    MAP: the Kalman posterior of the model linearised there,

        theta = theta* + C_0^{1/2} dz,   dz ~ N(0, (I + J^T J^)^{-1}),
        (I + J^T J^)^{-1} = I - U diag(S^2 / (1 + S^2)) U^T,   J^ = V diag(S) U^T

    (Immer, Korzepa & Bauer 2021; Daxberger et al. 2021), held as the thin factor ``U``
    ``(p, r)``, ``S`` ``(r,)`` with ``r = min(M, p)`` (or ``rank``), never a ``p x p`` matrix
    when ``p > M``.

    Args:
        forward_fn: the forward map of ONE member (as for :func:`gauss_newton`).
        obs: the data (and noise).
        prior: the Gaussian prior.
        params: ONE member's parameters, the linearisation point.
        likelihood: None (Gaussian) or :class:`Categorical`.
        indexed_forward: ``forward_fn(params, indices)`` evaluates the observations
            ``indices`` only (as for :func:`gauss_newton`): the Jacobian is then built point
            by point.
        segments: as for :func:`gauss_newton`.
        rank: None for the exact factor (materialises ``J^``, ``M p`` entries); an integer for
            a randomised SVD of that rank by JVPs/VJPs (large ``M`` and ``p``).
        key: PRNG key of the randomised SVD (None: ``jax.random.key(0)``).
        converged: whether ``params`` came from a converged MAP run (None: unknown), recorded
            on the posterior.
        update_precision: precision of the factorisation's matrix products.

    Returns:
        A :class:`ekibnn.posterior.LinearisedPosterior` (predictions linearised; see there).

    Raises:
        InputError: for bad arguments.

    Example:
        >>> import jax.numpy as jnp, ekibnn as ek
        >>> obs = ek.Observation(jnp.array([2.0]), 1.0)
        >>> prior = ek.GaussianPrior(jnp.zeros(1), 1.0)   # posterior N(1, 1/2)
        >>> post = ek.laplace(lambda th: th, obs, prior, jnp.array([1.0]))
        >>> mean, std = post.predict(lambda th: th[0])
        >>> float(mean), round(float(std) ** 2, 6)
        (1.0, 0.5)
    """
    check_observation(obs)
    check_prior(prior, required="the Laplace posterior is relative to it")
    likelihood = check_likelihood(likelihood, obs)
    prior.check_particles(
        jax.tree_util.tree_map(lambda a: a[None] if eqx.is_inexact_array(a) else a, params)
    )
    layout = Layout.of_member(params)
    theta = flatten_member(params)
    indices = jnp.arange(obs.size) if indexed_forward else None
    check_forward(forward_fn, params, likelihood.output_size(obs), indices)
    segments = check_segments(segments, indexed_forward, obs.size)
    check_segment_calls(forward_fn, params, segments, likelihood.output_size(obs))
    if rank is not None:
        rank = check_positive_int("rank", rank, "pass e.g. rank=200, or None for the exact factor")
    check_precision(update_precision)
    key = jax.random.key(0) if key is None else key
    model = WhitenedModel(
        forward_fn,
        likelihood,
        obs,
        layout,
        prior.flat_mean().astype(theta.dtype),
        prior.flat_std().astype(theta.dtype),
        bool(indexed_forward),
        segments,
    )
    fields = _laplace_fields_compiled(model, theta, rank, key, update_precision)
    return LinearisedPosterior(**(fields | {"mean": params}), converged=converged)
