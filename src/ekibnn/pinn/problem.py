"""A B-PINN inverse problem as a forward map and an :class:`ekibnn.Observation`.

The state of one ensemble member is the pytree ``{"net": MLP, "phys": {name: z}}``: the
solution network's weights and the *unconstrained* physical parameters ``z`` (see
:mod:`ekibnn.pinn.transforms`). Following Pensoneault & Zhu (2023), the forward map stacks three
groups of outputs, and the observation vector stacks the matching data:

============  =====================================  ============================  ==========
group         forward output ``G(theta)``            data ``y``                    noise std
============  =====================================  ============================  ==========
``"u"``       ``u(x_u)``  (``n_u`` values)           noisy measurements of u       ``noise_u``
``"b"``       ``B[u](x_b)`` (``n_b`` values)         boundary data                 ``noise_b``
``"f"``       ``N[u; k](x_f)`` (``n_f`` values)      source term ``f(x_f)``        ``noise_f``
============  =====================================  ============================  ==========

in that order: ``y = [y_u; y_b; y_f]`` of length ``m = n_u + n_b + n_f`` (``PINNProblem.layout``
gives the slices). ``y - G`` on the last block is minus the PDE residual ``N[u; k] - f``.
Differential operators are written for ONE point with JAX autodiff with respect to the input
(``jax.grad``, ``jax.hessian``, :func:`laplacian`) and vectorised over points with ``vmap``.

Example (the 1-D Poisson problem in a few lines):
    >>> import jax, jax.numpy as jnp
    >>> from ekibnn.bnn import MLP
    >>> from ekibnn.pinn import PINNProblem, PhysicalParam, laplacian
    >>> x = jnp.linspace(-0.7, 0.7, 8)[:, None]
    >>> problem = PINNProblem(
    ...     net=MLP(jax.random.key(0), 1, 1, hidden=(16,)),
    ...     operator=lambda u, x, p: 0.01 * laplacian(u)(x) + p["k"] * jnp.tanh(u(x)),
    ...     x_u=x, y_u=jnp.sin(6 * x[:, 0]) ** 3,
    ...     x_b=jnp.array([[-0.7], [0.7]]), y_b=jnp.sin(6 * jnp.array([-0.7, 0.7])) ** 3,
    ...     x_f=x, y_f=jnp.zeros(8),
    ...     phys={"k": PhysicalParam(0.0, 1.0)}, noise_u=0.1, noise_b=0.1, noise_f=0.1)
    >>> problem.observation().size, problem.forward_fn(problem.template()).shape
    (18, (18,))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from ekibnn import schedulers
from ekibnn.bnn.models import MLP
from ekibnn.ensemble import flatten_member, unflatten
from ekibnn.errors import input_error
from ekibnn.inversion import KalmanAlgorithm, aldi, eki, eks, etki, uki
from ekibnn.observations import Observation
from ekibnn.pinn.transforms import Identity, Transform
from ekibnn.priors import GaussianPrior
from ekibnn.run import RunResult, run

__all__ = [
    "GROUPS",
    "PINNProblem",
    "PhysicalParam",
    "dirichlet",
    "laplacian",
]

GROUPS = ("u", "b", "f")

# A scalar field of one point: u(x) with x of shape (d,).
ScalarField = Callable[[Float[Array, " d"]], Float[Array, ""]]
# An operator at one point: op(u, x, phys) with phys the *constrained* physical parameters.
PointOperator = Callable[[ScalarField, Float[Array, " d"], dict], Float[Array, ""]]


def laplacian(u: ScalarField) -> ScalarField:
    """``x -> sum_i d^2 u / dx_i^2 (x)`` for a scalar field of one point (trace of the Hessian,
    by forward-over-reverse autodiff)."""
    return lambda x: jnp.trace(jax.hessian(u)(x))


def dirichlet(u: ScalarField, x: Float[Array, " d"], phys: dict) -> Float[Array, ""]:
    """The Dirichlet boundary operator ``B[u](x) = u(x)`` (the default)."""
    del phys
    return u(x)


@dataclasses.dataclass(frozen=True)
class PhysicalParam:
    """An unknown physical parameter with a Gaussian prior on its unconstrained value.

    Args:
        loc: prior location **in constrained space**; the prior mean of the unconstrained value
            is ``transform.to_unconstrained(loc)`` (so ``loc`` is the prior median).
        scale: prior std of the unconstrained value (for :class:`Identity`, of the value itself).
        transform: :class:`~ekibnn.pinn.transforms.Identity` (default), ``Positive`` or
            ``Bounded``.
        true: the true value if known (reported beside the estimate; not used in the fit).
    """

    loc: float
    scale: float = 1.0
    transform: Transform = dataclasses.field(default_factory=Identity)
    true: float | None = None

    def __post_init__(self):
        if not self.scale > 0:
            raise input_error(
                "PhysicalParam scale", "a positive prior std", repr(self.scale), "pass scale > 0"
            )

    @property
    def prior_mean(self) -> Array:
        """Prior mean of the unconstrained value."""
        return jnp.asarray(self.transform.to_unconstrained(jnp.asarray(float(self.loc))))


def _points(name: str, x: ArrayLike, dim: int | None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise input_error(
            f"PINNProblem {name}",
            f"points of shape (n, {dim if dim is not None else 'd'})",
            f"shape {tuple(x.shape)}",
            "pass one row per point, e.g. x.reshape(-1, 1) in 1-D",
        )
    return x


class PINNProblem:
    """A Bayesian PINN inverse problem: network, operators, points, data, noise and physics.

    Args:
        net: the solution network (an :class:`ekibnn.bnn.MLP` with ``out_size=1``), used as the
            template of the ``"net"`` entry (its values are irrelevant: the prior draws members).
        operator: ``operator(u, x, phys) -> scalar``: the differential operator ``N[u; k](x)`` at
            ONE point ``x`` of shape ``(d,)``, for a scalar field ``u`` and the constrained
            physical parameters ``phys`` (a dict of scalars). The PDE is ``N[u; k] = f``.
        x_u, y_u: measurement points ``(n_u, d)`` and measured ``u`` values ``(n_u,)``.
        x_b, y_b: boundary points and data for ``boundary(u, x, phys) = y_b``.
        x_f, y_f: residual (collocation) points and the source ``f`` there.
        phys: ``{name: PhysicalParam}`` (may be empty for a forward problem).
        noise_u, noise_b, noise_f: likelihood noise std of each group (scalar or per point).
        boundary: the boundary operator (default :func:`dirichlet`).
        net_prior_std: prior std of every network weight and bias (N(0, s^2)).
        exact_u: optional exact solution ``u(x)`` of one point, for metrics and tests.
        exact_f: optional exact source ``f(x)`` of one point, for metrics.
        domain: optional ``(low, high)`` arrays of shape ``(d,)``, the box used for metrics.
        name: a label.
    """

    def __init__(
        self,
        net: MLP,
        operator: PointOperator,
        x_u: ArrayLike,
        y_u: ArrayLike,
        x_b: ArrayLike,
        y_b: ArrayLike,
        x_f: ArrayLike,
        y_f: ArrayLike,
        phys: dict[str, PhysicalParam] | None = None,
        noise_u: float | ArrayLike = 0.1,
        noise_b: float | ArrayLike = 0.1,
        noise_f: float | ArrayLike = 0.1,
        boundary: PointOperator = dirichlet,
        net_prior_std: float = 1.0,
        exact_u: ScalarField | None = None,
        exact_f: ScalarField | None = None,
        domain: tuple | None = None,
        name: str = "pinn",
    ):
        if not isinstance(net, MLP) or net.sizes[-1] != 1:
            raise input_error(
                "PINNProblem net",
                "an ekibnn.bnn.MLP with out_size=1 (a scalar solution u)",
                repr(type(net).__name__),
                "build MLP(key, d, 1, hidden=...)",
            )
        d = net.sizes[0]
        self.net = net
        self.operator = operator
        self.x_u = _points("x_u", x_u, d)
        self.x_b = _points("x_b", x_b, d)
        self.x_f = _points("x_f", x_f, d)
        self.y_u = np.asarray(y_u).reshape(-1)
        self.y_b = np.asarray(y_b).reshape(-1)
        self.y_f = np.asarray(y_f).reshape(-1)
        for group in GROUPS:
            n_x = getattr(self, f"x_{group}").shape[0]
            n_y = getattr(self, f"y_{group}").shape[0]
            if n_x != n_y:
                raise input_error(
                    f"PINNProblem y_{group}",
                    f"{n_x} values (one per point of x_{group})",
                    f"{n_y} values",
                    "give one datum per point",
                )
        self.phys = dict(phys or {})
        for key, value in self.phys.items():
            if not isinstance(value, PhysicalParam):
                raise input_error(
                    f"PINNProblem phys[{key!r}]",
                    "a PhysicalParam",
                    type(value).__name__,
                    "wrap it: PhysicalParam(loc, scale, transform)",
                )
        self.noise_u, self.noise_b, self.noise_f = noise_u, noise_b, noise_f
        self.boundary = boundary
        self.net_prior_std = float(net_prior_std)
        self.exact_u = exact_u
        self.exact_f = exact_f
        self.domain = domain
        self.name = name

    # ----------------------------------------------------------------- layout and observation
    @property
    def dim(self) -> int:
        """Spatial dimension ``d``."""
        return self.net.sizes[0]

    @property
    def layout(self) -> dict[str, slice]:
        """Slices of the groups ``"u"``, ``"b"``, ``"f"`` in ``y`` and in ``forward_fn``'s
        output (in this order)."""
        out, start = {}, 0
        for group in GROUPS:
            n = getattr(self, f"x_{group}").shape[0]
            out[group] = slice(start, start + n)
            start += n
        return out

    def noise_std(self) -> Float[Array, " m"]:
        """The ``(m,)`` noise stds ``[noise_u...; noise_b...; noise_f...]``."""
        parts = [
            np.broadcast_to(np.asarray(getattr(self, f"noise_{g}"), float), self.y(g).shape)
            for g in GROUPS
        ]
        return jnp.asarray(np.concatenate(parts), dtype=jnp.result_type(float))

    def y(self, group: str) -> np.ndarray:
        """The data of one group."""
        return getattr(self, f"y_{group}")

    def observation(self) -> Observation:
        """``Observation([y_u; y_b; y_f], [noise_u; noise_b; noise_f])`` (diagonal noise)."""
        y = jnp.asarray(np.concatenate([self.y(g) for g in GROUPS]), jnp.result_type(float))
        return Observation(y, self.noise_std())

    # ----------------------------------------------------------------- parameters and prior
    def template(self) -> PyTree:
        """One member's state ``{"net": MLP, "phys": {name: z}}`` at the prior mean of ``z``."""
        dtype = jnp.result_type(float)
        return {
            "net": self.net,
            "phys": {k: p.prior_mean.astype(dtype) for k, p in self.phys.items()},
        }

    def prior(self) -> GaussianPrior:
        """N(0, net_prior_std^2) on every network parameter, N(prior_mean, scale^2) on each
        unconstrained physical parameter."""
        mean = jax.tree_util.tree_map(
            lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, self.net
        )
        dynamic = eqx.filter(mean, eqx.is_inexact_array)
        net_std = jax.tree_util.tree_map(lambda x: jnp.full_like(x, self.net_prior_std), dynamic)
        template = self.template()
        phys_std = {k: jnp.full_like(template["phys"][k], p.scale) for k, p in self.phys.items()}
        return GaussianPrior(
            {"net": mean, "phys": template["phys"]}, {"net": net_std, "phys": phys_std}
        )

    def constrained(self, phys: dict) -> dict[str, Array]:
        """Constrained physical parameters from unconstrained ones (elementwise: works on one
        member's scalars or on an ensemble's ``(J,)`` arrays)."""
        return {k: self.phys[k].transform.to_constrained(v) for k, v in phys.items()}

    # ----------------------------------------------------------------- forward map
    @staticmethod
    def scalar_field(net: MLP) -> ScalarField:
        """The network as a scalar field of one point."""
        return lambda x: net(x)[0]

    def operator_values(
        self, u: ScalarField, phys_constrained: dict, x: ArrayLike
    ) -> Float[Array, " n"]:
        """``N[u; k](x_i)`` for every row of ``x`` (vmapped over points)."""
        x = jnp.asarray(x, jnp.result_type(float))
        return jax.vmap(lambda xi: self.operator(u, xi, phys_constrained))(x)

    def residual(self, u: ScalarField, phys_constrained: dict) -> Float[Array, " n_f"]:
        """PDE residual ``N[u; k](x_f) - y_f`` at the residual points."""
        return self.operator_values(u, phys_constrained, self.x_f) - jnp.asarray(
            self.y_f, jnp.result_type(float)
        )

    def outputs(self, u: ScalarField, phys_constrained: dict) -> Float[Array, " m"]:
        """``[u(x_u); B[u](x_b); N[u; k](x_f)]`` for any scalar field ``u``."""
        dtype = jnp.result_type(float)
        x_u = jnp.asarray(self.x_u, dtype)
        x_b = jnp.asarray(self.x_b, dtype)
        return jnp.concatenate(
            [
                jax.vmap(u)(x_u),
                jax.vmap(lambda xi: self.boundary(u, xi, phys_constrained))(x_b),
                self.operator_values(u, phys_constrained, self.x_f),
            ]
        )

    def forward_fn(self, params: PyTree) -> Float[Array, " m"]:
        """The forward map of ONE member ``{"net": MLP, "phys": {...}}`` (unconstrained phys),
        in the layout of :attr:`layout`; pass it to :func:`ekibnn.eki`."""
        return self.outputs(self.scalar_field(params["net"]), self.constrained(params["phys"]))

    def log_likelihood(self, params: PyTree) -> Float[Array, ""]:
        """Gaussian log-likelihood of one member (up to a constant), for samplers such as HMC."""
        return -self.observation().misfit(self.forward_fn(params))

    # ----------------------------------------------------------------- predictions
    def predict_u(self, particles: PyTree, x: ArrayLike) -> Float[Array, "J n"]:
        """Every member's ``u`` at the rows of ``x``: ``(J, n)``."""
        x = jnp.asarray(_points("x", x, self.dim), jnp.result_type(float))
        return eqx.filter_vmap(lambda net: net(x)[:, 0])(particles["net"])

    def predict_f(self, particles: PyTree, x: ArrayLike) -> Float[Array, "J n"]:
        """Every member's ``N[u; k]`` at the rows of ``x``: ``(J, n)``."""
        x = jnp.asarray(_points("x", x, self.dim), jnp.result_type(float))

        def one(params):
            u = self.scalar_field(params["net"])
            return self.operator_values(u, self.constrained(params["phys"]), x)

        return eqx.filter_vmap(one)(particles)

    def grid(self, n: int = 201) -> np.ndarray:
        """A regular grid over :attr:`domain` with ``n`` points per axis in 1-D (``ceil(sqrt)``
        per axis in 2-D, ...): rows of shape ``(d,)``."""
        if self.domain is None:
            raise input_error(
                "PINNProblem.grid", "a problem with a domain", "domain=None", "pass domain=..."
            )
        low, high = (np.atleast_1d(np.asarray(v, float)) for v in self.domain)
        per_axis = n if self.dim == 1 else int(np.ceil(n ** (1 / self.dim)))
        axes = [np.linspace(a, b, per_axis) for a, b in zip(low, high, strict=True)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=1)


# --------------------------------------------------------------------------------- fitting
METHODS = ("eki", "eki-disc", "eki-t1", "eki-reg", "etki", "uki", "eks", "aldi")

#: Recipes that sample from an EKI warm start (see :func:`fit`).
SAMPLERS = ("eks", "aldi")

#: Largest parameter count accepted by the ``"uki"`` recipe: each UKI step evaluates
#: ``2p + 1`` sigma points and factorises ``2p x 2p`` matrices (about ``16 p^3`` flops: 3e11 for
#: the ``[1, 50, 50, 1]`` networks of the ready-made problems, an estimated several seconds per
#: step on 2 CPU cores, and dozens of steps are needed).
UKI_MAX_PARAMS = 1200

#: Algorithm time the ``"eks"``/``"aldi"`` samplers run for after the warm start.
SAMPLER_TIME = 2.0


def _method_error(method: str) -> Exception:
    return input_error("method", f"one of {METHODS}", repr(method), "pick a listed recipe")


def _check_uki_size(problem: PINNProblem) -> None:
    p = problem.prior().num_params
    if p > UKI_MAX_PARAMS:
        raise input_error(
            "method='uki'",
            f"at most {UKI_MAX_PARAMS} parameters (UKI evaluates 2p + 1 sigma points and "
            "factorises 2p x 2p matrices every step, about 16 p^3 flops)",
            f"p = {p} parameters ({2 * p + 1} sigma points, ~{16 * p**3 / 1e9:.0f} GFLOP per "
            "step) for the network of sizes " + str(problem.net.sizes),
            "use a smaller network (p ~ 330 with hidden=(16, 16): pinn.poisson1d(hidden=(16, "
            "16)), or run_pinn(..., problem_kwargs={'hidden': (16, 16)})), or the ensemble "
            "recipes method='eki' / 'eks' whose cost is linear in p",
        )


def _check_aldi_size(problem: PINNProblem, ensemble_size: int) -> None:
    p = problem.prior().num_params
    if ensemble_size < p + 2:
        raise input_error(
            "method='aldi'",
            f"ensemble_size >= p + 2 = {p + 2} (ALDI's finite-ensemble correction "
            "(p + 1)/J (theta_j - mean) blows the ensemble up when J < p + 2)",
            f"ensemble_size = {ensemble_size} for p = {p} parameters",
            f"use method='eks' (works with J << p, in the ensemble's span), pass "
            f"ensemble_size >= {p + 2}, or use a smaller network",
        )


def build_algorithm(
    problem: PINNProblem,
    method: str = "eki",
    tau: float = 1.0,
    inflation: float = 0.1,
    sampler_time: float = SAMPLER_TIME,
) -> KalmanAlgorithm:
    """The Kalman algorithm for ``problem`` (see :func:`fit` for the recipes).

    For ``"eks"`` and ``"aldi"`` this is the sampling stage alone (run until algorithm time
    ``sampler_time``); :func:`fit` starts it from an EKI warm start. For ``"uki"`` it is the
    Bayesian UKI of :func:`ekibnn.uki` (raises :class:`ekibnn.InputError` above
    :data:`UKI_MAX_PARAMS` parameters).
    """
    if method not in METHODS:
        raise _method_error(method)
    obs, prior = problem.observation(), problem.prior()
    until_fit = schedulers.stop_on_discrepancy(schedulers.constant(1.0), tau)
    if method == "eki":
        return eki(
            problem.forward_fn,
            obs,
            prior=prior,
            scheduler=schedulers.constant(1.0),
            stochastic=True,
            inflation=inflation,
        )
    if method == "eki-disc":
        return eki(problem.forward_fn, obs, prior=prior, scheduler=until_fit, stochastic=True)
    if method == "eki-t1":
        return eki(problem.forward_fn, obs, prior=prior, scheduler=schedulers.data_misfit(1.0))
    if method == "eki-reg":
        return eki(
            problem.forward_fn,
            obs,
            prior=prior,
            scheduler=schedulers.constant(1.0),
            regularize=True,
        )
    if method == "etki":
        return etki(
            problem.forward_fn,
            obs,
            prior=prior,
            scheduler=schedulers.constant(1.0),
            inflation=inflation,
        )
    if method == "uki":
        _check_uki_size(problem)
        # run() bounds the iterations; UKI's own cap is set out of the way.
        return uki(problem.forward_fn, obs, prior, max_steps=10**9)
    sampler = eks if method == "eks" else aldi
    return sampler(problem.forward_fn, obs, prior, final_time=float(sampler_time))


def _gaussian_draws(key: Array, mean: PyTree, cov: Array, num: int) -> PyTree:
    """``num`` draws of ``N(mean, cov)`` in the layout of ``mean`` (one member's pytree)."""
    flat_mean = flatten_member(mean)
    chol = jnp.linalg.cholesky(0.5 * (cov + cov.T))
    z = jax.random.normal(key, (num, flat_mean.size), flat_mean.dtype)
    stacked = jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (num, *x.shape)) if eqx.is_inexact_array(x) else x, mean
    )
    return unflatten(flat_mean + z @ chol.T, stacked)


def _join_histories(first, second):
    """Concatenate the per-step infos of two stages, field by field (the second stage's
    fields; a field missing from the first is NaN there)."""
    n_first = len(first.misfit)
    fields = {}
    for name in second._fields:
        tail = np.asarray(getattr(second, name))
        head = getattr(first, name, None)
        if head is None:
            head = np.full((n_first, *tail.shape[1:]), np.nan, np.result_type(tail, np.float32))
            tail = tail.astype(head.dtype)
        fields[name] = np.concatenate([np.asarray(head).astype(tail.dtype), tail])
    return type(second)(**fields)


def fit(
    problem: PINNProblem,
    key: Array,
    method: str = "eki",
    ensemble_size: int = 200,
    max_steps: int = 200,
    tau: float = 1.0,
    inflation: float = 0.1,
    progress: bool = False,
    sampler_time: float = SAMPLER_TIME,
    warm_start: str = "eki",
    max_sampler_steps: int | None = None,
) -> RunResult:
    """Fit a B-PINN by ensemble Kalman inversion; returns :class:`ekibnn.RunResult`.

    Recipes (``method``), all starting from ``ensemble_size`` prior draws (measured on
    poisson1d: see ``benchmarks/bpinn.py`` and the module docs of :mod:`ekibnn.pinn`):

    * ``"eki"`` (default): perturbed-observation EKI with ``dt = 1`` (the Pensoneault & Zhu 2023
      iteration: unknowns in the state, observations ``[u; b; f]``, a fixed number of steps)
      plus an additive random walk of std ``inflation`` (default 0.1) on every unconstrained
      parameter before each update (the tutorial's ``sigma_xi``), for exactly ``max_steps``
      steps. The ensemble settles to a stationary spread set by the balance of the random walk
      and the Kalman contraction. Caveat: that spread is calibrated by ``inflation`` (tuned on
      poisson1d against HMC), not derived from the posterior.
    * ``"eki-disc"``: the same iteration without the random walk, stopped by the discrepancy
      principle once the ensemble-mean output fits the data to the noise level
      (``|Gamma^{-1/2}(y - mean G)|^2 <= tau^2 m``), at most ``max_steps`` steps. Fits well but
      the ensemble collapses (parameter spreads 3-5x too small).
    * ``"eki-t1"``: EKI tempered to algorithm time ``T = 1`` by the data-misfit controller (the
      exact Bayesian update for linear problems). Fails here: the network is far too nonlinear
      over the prior for one unit of Kalman time; the ensemble barely leaves the prior.
    * ``"eki-reg"``: Tikhonov (extended-state) EKI with ``dt = 1`` for ``max_steps`` steps.
      Fails here: with ``J << p`` the prior block pins the members near prior-like functions.
    * ``"etki"``: the transform (square-root) variant with the ``"eki"`` schedule.
    * ``"uki"``: Bayesian unscented Kalman inversion (:func:`ekibnn.uki`, prior imposed) for
      ``max_steps`` iterations from the prior; ``result.particles`` are ``ensemble_size`` draws
      of the final Gaussian ``N(mean, cov)`` (``result.state`` keeps ``mean`` and ``cov``).
      Exact for forward maps linear in the parameters (tested), but it fails on networks: the
      prior mean is the all-zero network, a saddle where each sigma point (one weight moved)
      leaves the output unchanged, so UKI stays there (poisson1d with ``hidden=(8,)``, p = 26:
      misfit 27 per datum after 13 iterations, k = -0.01 +- 0.54); started instead at an EKI
      fit (``hidden=(16, 16)``, p = 322, misfit 0.45; mean and diagonal covariance of the EKI
      ensemble) it drifts back to that saddle in ~30 iterations (misfit 27, k = 0.01 +-
      0.50), since the statistical linearisation over the sigma points' +-2 sqrt(2 C) spread
      sees almost no data sensitivity and the prior term wins. Meant for small problems
      (physical parameters with a tiny or fixed network); raises :class:`ekibnn.InputError` above
      :data:`UKI_MAX_PARAMS` parameters (the ready-made problems' default networks have
      1155-2752).
    * ``"eks"``: the ensemble Kalman sampler (:func:`ekibnn.eks`, EKS-stable adaptive step
      capped at 0.02) for algorithm time ``sampler_time`` (default 2), started from the
      ``warm_start`` recipe's ensemble after ``max_steps`` steps (default ``"eki"``). Why the
      warm start: from the prior ``|D|_F`` is huge, so the sampler's stable steps are tiny and
      thousands are needed before the ensemble reaches the data; EKI does that part in
      ``max_steps`` cheap steps. Measured (J = 200, same posterior as NUTS; see
      :mod:`ekibnn.pinn`): on damped_oscillator it is the only recipe that fits (c = 0.34 +-
      0.02, w2 = 3.77 +- 0.05 against NUTS 0.45 +- 0.05, 3.60 +- 0.10; rel. L2 of u 0.085,
      NUTS 0.101), where the EKI warm start is stuck at the bound w2 = 0.5; on poisson1d and
      diffusion_reaction2d it keeps the warm start's fit of u but its spreads are 0.4-0.6x
      NUTS's and k moves away from NUTS's mean as ``sampler_time`` grows (poisson1d k: 0.60
      +- 0.026 at T = 2, 0.56 +- 0.024 at T = 5; NUTS 0.80 +- 0.04). The reason: with J << p
      the sampler only moves in the ensemble's (J - 1)-dimensional affine span, and EKS
      without the finite-ensemble correction shrinks there (ALDI's correction needs
      J >= p + 2). Warm start ``"eki-disc"`` (collapsed, no random walk) is worse (poisson1d
      k = 0.63 +- 0.009, misfit 10 per datum after T = 2). Cost: ``max_steps`` EKI steps plus
      ``sampler_time / dt`` sampler steps (100-400 at J = 200), each about one EKI step.
      At most ``max_sampler_steps`` sampler steps (default ``10 * sampler_time / 0.02``).
    * ``"aldi"``: the same with ALDI (:func:`ekibnn.aldi`; exact finite-ensemble correction,
      exact for linear problems: tested on a linear B-PINN), which needs
      ``ensemble_size >= p + 2``: raises :class:`ekibnn.InputError` before any work otherwise
      (``p`` ~ 2700 for ``[1, 50, 50, 1]``, where J = p + 2 members would cost ~14x an EKI
      step of J = 200 plus a p x p eigendecomposition per step: use ``"eks"`` there).

    Args:
        problem: the B-PINN problem.
        key: a JAX PRNG key.
        method: a recipe of :data:`METHODS` (above).
        ensemble_size: members ``J`` (draws of the final Gaussian for ``"uki"``).
        max_steps: steps of the Kalman iteration (of the warm start for ``"eks"``/``"aldi"``).
        tau: discrepancy-principle factor of ``"eki-disc"``.
        inflation: random-walk std of ``"eki"``/``"etki"`` (and of an ``"eki"`` warm start).
        progress: show progress bars.
        sampler_time: algorithm time of the ``"eks"``/``"aldi"`` sampling stage.
        warm_start: the recipe that starts ``"eks"``/``"aldi"`` (``"eki"`` or ``"eki-disc"``).
        max_sampler_steps: cap on the sampler's steps.

    Returns:
        :class:`ekibnn.RunResult`. For ``"eks"``/``"aldi"`` its ``history`` concatenates both
        stages (the sampler's ``time`` restarts at 0; ``d_norm`` is NaN during the warm start)
        and ``num_steps`` counts both; ``state`` is the sampler's.
    """
    if method not in METHODS:
        raise _method_error(method)
    key_init, key_run = jax.random.split(key)
    prior = problem.prior()
    if method == "uki":
        algo = build_algorithm(problem, method, tau, inflation)
        key_run, key_draw = jax.random.split(key_run)
        result = run(key_run, algo, prior.sample(key_init, 1), max_steps, progress=progress)
        particles = _gaussian_draws(key_draw, result.state.mean, result.state.cov, ensemble_size)
        return result._replace(particles=particles)
    if method in SAMPLERS:
        if warm_start not in ("eki", "eki-disc"):
            raise input_error(
                "warm_start", "'eki' or 'eki-disc'", repr(warm_start), "use the default 'eki'"
            )
        if method == "aldi":
            _check_aldi_size(problem, ensemble_size)
        if not sampler_time > 0:
            raise input_error(
                "sampler_time", "a positive algorithm time", repr(sampler_time), "e.g. 2.0"
            )
        key_warm, key_sample = jax.random.split(key_run)
        warm_algo = build_algorithm(problem, warm_start, tau, inflation)
        particles = prior.sample(key_init, ensemble_size)
        warm = run(key_warm, warm_algo, particles, max_steps, progress=progress)
        sampler = build_algorithm(problem, method, tau, inflation, sampler_time)
        cap = max_sampler_steps or max(1, math.ceil(10 * sampler_time / 0.02))
        result = run(key_sample, sampler, warm.particles, cap, progress=progress)
        return result._replace(
            history=_join_histories(warm.history, result.history),
            num_steps=warm.num_steps + result.num_steps,
        )
    algo = build_algorithm(problem, method, tau, inflation)
    particles = prior.sample(key_init, ensemble_size)
    return run(key_run, algo, particles, max_steps, progress=progress)


def evaluate(problem: PINNProblem, particles: PyTree, n_grid: int = 201) -> dict:
    """Posterior summaries of an ensemble (or of posterior samples in the same layout).

    Returns a dict with ``"parameters"`` (``{name: {"mean", "std", "true"}}`` in constrained
    space), ``"rel_l2_u"`` (relative L2 error of the ensemble-mean ``u`` on a regular grid of
    :attr:`PINNProblem.domain`), ``"rel_l2_f"`` (the same for the ensemble mean of
    ``N[u_j; k_j]`` against the exact ``f``; the RMS error where ``f = 0``) and
    ``"coverage_u_95"`` (share of the grid where the exact ``u`` lies between the ensemble's
    2.5% and 97.5% quantiles; model uncertainty only).
    """
    x = problem.grid(n_grid)
    xj = jnp.asarray(x, jnp.result_type(float))
    u_true = np.asarray(jax.vmap(problem.exact_u)(xj))
    f_true = np.asarray(jax.vmap(problem.exact_f)(xj))
    u = np.asarray(problem.predict_u(particles, x))
    f = np.asarray(problem.predict_f(particles, x))
    lo, hi = np.quantile(u, [0.025, 0.975], axis=0)
    phys = problem.constrained(particles["phys"])
    params = {
        k: {
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)),
            "true": problem.phys[k].true,
        }
        for k, v in phys.items()
    }

    def rel(a, b):
        # relative L2 error; an absolute RMS error where the reference vanishes (f = 0)
        ref = float(np.linalg.norm(b))
        err = float(np.linalg.norm(a - b))
        return err / ref if ref > 0 else err / np.sqrt(b.size)

    return {
        "parameters": params,
        "rel_l2_u": rel(u.mean(0), u_true),
        "rel_l2_f": rel(f.mean(0), f_true),
        "coverage_u_95": float(np.mean((u_true >= lo) & (u_true <= hi))),
    }
