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
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from ekibnn import recipes
from ekibnn.bnn.models import MLP
from ekibnn.errors import input_error
from ekibnn.observations import Observation
from ekibnn.pinn.transforms import Identity, Transform
from ekibnn.priors import GaussianPrior

__all__ = [
    "GROUPS",
    "Draws",
    "PINNProblem",
    "PhysicalParam",
    "dirichlet",
    "draws",
    "laplacian",
    "self_check",
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

    @property
    def segments(self) -> tuple[int, int, int]:
        """Ends of the three groups of :attr:`layout` (data, boundary, residual points): the
        ``segments`` of :meth:`indexed_forward_fn` (see :func:`ekibnn.gauss_newton`)."""
        n_u, n_b, n_f = (x.shape[0] for x in (self.x_u, self.x_b, self.x_f))
        return (n_u, n_u + n_b, n_u + n_b + n_f)

    def indexed_forward_fn(
        self, params: PyTree, indices: Array, segment: int | None = None
    ) -> Float[Array, " k"]:
        """``forward_fn(params)[indices]`` computed point by point: each output depends on ONE
        point, so a Jacobian recipe builds the Jacobian one point at a time (``m`` single-point
        VJPs) instead of ``min(m, p)`` VJPs of the whole forward map
        (``ekibnn.gauss_newton``'s ``indexed_forward``), one group at a time (its
        ``segments``: :attr:`segments`). With ``segment=None`` every operator is evaluated at
        each requested point and the one of its group kept (under ``vmap`` a branch costs as
        much as all of them), so every operator must then be finite, with finite derivatives,
        at every point of the problem: a NaN in a discarded value still reaches the result
        (``0 * nan``).

        Args:
            params: one member ``{"net": MLP, "phys": {...}}`` (unconstrained phys).
            indices: ``(k,)`` integer positions in the layout of :attr:`layout`.
            segment: None (indices from any group), or 0, 1, 2 when every index lies in the
                data, boundary or residual group (:attr:`segments`): only that group's map
                is evaluated.
        """
        dtype = jnp.result_type(float)
        u = self.scalar_field(params["net"])
        phys = self.constrained(params["phys"])
        points = jnp.asarray(np.concatenate([self.x_u, self.x_b, self.x_f]), dtype)
        n_u, n_b = self.x_u.shape[0], self.x_b.shape[0]
        groups = (
            u,
            lambda x: self.boundary(u, x, phys),
            lambda x: self.operator(u, x, phys),
        )
        indices = jnp.asarray(indices)
        if segment is not None:
            return jax.vmap(groups[segment])(points[indices])

        def one(i):
            x = points[i]
            values = jnp.stack([g(x) for g in groups])
            return values[(i >= n_u).astype(jnp.int32) + (i >= n_u + n_b).astype(jnp.int32)]

        return jax.vmap(one)(indices)

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
#: The recipes :func:`fit` accepts: every name of :data:`ekibnn.recipes.NAMES`.
METHODS = recipes.NAMES

#: The default recipe of :func:`fit` and :func:`ekibnn.pinn.run_pinn`: Levenberg–Marquardt
#: from prior draws to the MAP, then the linearised-Laplace posterior there.
DEFAULT_METHOD = recipes.DEFAULT


def fit(
    problem: PINNProblem,
    key: Array,
    method: str = DEFAULT_METHOD,
    *,
    ensemble_size: int | None = None,
    max_steps: int | None = None,
    progress: bool = False,
    **settings,
) -> recipes.Fit:
    """Fit a B-PINN with a recipe of :mod:`ekibnn.recipes` (what each does and what was
    measured against NUTS on these problems: ``docs/algorithms.md``).

    Args:
        problem: the B-PINN problem.
        key: a JAX PRNG key.
        method: a recipe name (:data:`METHODS`).
        ensemble_size: members ``J``; None: the recipe's default.
        max_steps: steps of the recipe's ensemble stage; None: the recipe's default.
        progress: show progress bars.
        **settings: other settings of the recipe (``inflation``, ``tau``, ``sampler_time``,
            ``warm_start``, ...; see :data:`ekibnn.recipes.RECIPES`).

    Returns:
        The :class:`ekibnn.recipes.Fit` (posterior, joined history, steps, final state).

    Raises:
        InputError: for an unknown recipe or setting, or a problem too large for it (UKI: at
            most :data:`ekibnn.recipes.UKI_MAX_PARAMS` parameters; ALDI: ``J >= p + 2``).
    """
    recipe = recipes.get(method)
    merged = recipe.settings(ensemble_size=ensemble_size, num_steps=max_steps, **settings)
    recipes.check_sizes(method, problem.prior().num_params, int(merged["ensemble_size"]))
    inverse = recipes.Problem(
        problem.forward_fn,
        problem.observation(),
        problem.prior(),
        indexed_forward_fn=problem.indexed_forward_fn,
        segments=problem.segments,
    )
    return recipes.fit(
        method,
        inverse,
        key,
        ensemble_size=ensemble_size,
        num_steps=max_steps,
        progress=progress,
        **settings,
    )


class Draws(NamedTuple):
    """Posterior draws of a B-PINN's outputs at the rows of ``x``.

    Attributes:
        u: ``(S, n)`` draws of ``u``.
        f: ``(S, n)`` draws of ``N[u; k]``.
        phys: ``{name: (S,)}`` draws of the constrained physical parameters.
    """

    u: np.ndarray
    f: np.ndarray
    phys: dict[str, np.ndarray]


def draws(
    problem: PINNProblem, posterior: Any, x: ArrayLike, key: Array | None = None, num: int = 200
) -> Draws:
    """Posterior draws of ``u``, ``N[u; k]`` and the physical parameters at the rows of ``x``.

    Args:
        problem: the B-PINN problem.
        posterior: an ensemble (parameter pytree with a leading axis: its members are the
            draws), an :class:`ekibnn.posterior.EnsemblePosterior`, or a
            :class:`ekibnn.posterior.LinearisedPosterior` (``num`` samples of the
            **linearised** outputs, JVPs at the MAP: never weight draws pushed through the
            network, see that class).
        x: ``(n, d)`` points.
        key: PRNG key of the linearised samples (None: ``jax.random.key(0)``).
        num: number of linearised samples.

    Returns:
        :class:`Draws`.
    """
    from ekibnn.posterior import EnsemblePosterior, LinearisedPosterior

    if isinstance(posterior, EnsemblePosterior):
        posterior = posterior.particles
    if not isinstance(posterior, LinearisedPosterior):
        phys = problem.constrained(posterior["phys"])
        return Draws(
            np.asarray(problem.predict_u(posterior, x)),
            np.asarray(problem.predict_f(posterior, x)),
            {k: np.asarray(v) for k, v in phys.items()},
        )
    xj = jnp.asarray(_points("x", x, problem.dim), jnp.result_type(float))
    names = list(problem.phys)
    key = jax.random.key(0) if key is None else key
    drawn = np.asarray(posterior.sample_outputs(_Outputs(problem, xj), key, num))
    n = xj.shape[0]
    phys = drawn[:, 2 * n :]
    return Draws(drawn[:, :n], drawn[:, n : 2 * n], {k: phys[:, i] for i, k in enumerate(names)})


class _Outputs(eqx.Module):
    """``[u(x); N[u; k](x); constrained physical parameters]`` of ONE member at the points
    ``x`` (``(2 n + num_phys,)``): a module (``x`` traced, the problem static), so all of a
    posterior's draws come from one compilation of the linearised sampler per shape."""

    problem: PINNProblem = eqx.field(static=True)
    x: Array

    def __call__(self, params: PyTree) -> Array:
        values = self.problem.constrained(params["phys"])
        u = params["net"](self.x)[:, 0]
        f = self.problem.operator_values(self.problem.scalar_field(params["net"]), values, self.x)
        phys = [jnp.asarray(values[k], u.dtype).reshape(1) for k in self.problem.phys]
        return jnp.concatenate([u, f, *phys])


def evaluate(
    problem: PINNProblem, posterior: Any, n_grid: int = 201, *, key: Array | None = None
) -> dict:
    """Posterior summaries of an ensemble or a linearised posterior (see :func:`draws`).

    Returns a dict with ``"parameters"`` (``{name: {"mean", "std", "true"}}`` in constrained
    space), ``"rel_l2_u"`` (relative L2 error of the posterior-mean ``u`` on a regular grid of
    :attr:`PINNProblem.domain`), ``"rel_l2_f"`` (the same for the posterior mean of
    ``N[u; k]`` against the exact ``f``; the RMS error where ``f = 0``), ``"coverage_u_95"``
    (share of the grid where the exact ``u`` lies between the draws' 2.5% and 97.5% quantiles;
    model uncertainty only) and ``"u_std"`` (the mean posterior std of ``u`` on the grid).
    """
    x = problem.grid(n_grid)
    xj = jnp.asarray(x, jnp.result_type(float))
    u_true = np.asarray(jax.vmap(problem.exact_u)(xj))
    f_true = np.asarray(jax.vmap(problem.exact_f)(xj))
    u, f, phys = draws(problem, posterior, x, key)
    lo, hi = np.quantile(u, [0.025, 0.975], axis=0)
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
        "u_std": float(np.mean(u.std(0))),
    }


class _CheckOutputs(eqx.Module):
    """``[u(x); constrained physical parameters]`` of ONE member (what :func:`self_check`
    compares)."""

    problem: PINNProblem = eqx.field(static=True)
    x: Array

    def __call__(self, params: PyTree) -> Array:
        values = self.problem.constrained(params["phys"])
        u = params["net"](self.x)[:, 0]
        phys = [jnp.asarray(values[k], u.dtype).reshape(1) for k in self.problem.phys]
        return jnp.concatenate([u, *phys])


def self_check(
    problem: PINNProblem,
    result: recipes.Fit,
    key: Array,
    *,
    x: ArrayLike | None = None,
    num_members: int = 32,
    max_steps: int = 100,
    warn: bool = True,
) -> Any:
    """The fidelity self-check of a ``"laplace"`` B-PINN fit: the linearised predictive std of
    ``u`` at ``x`` and of the (constrained) physical parameters against that of a small RML
    ensemble on the same problem, started at the MAP, through the nonlinear PINN; with the
    MAP's convergence (:func:`ekibnn.inversion.self_check`; the threshold is explained at
    :class:`ekibnn.inversion.FidelityCheck`). Costs about ``num_members`` short refits.

    Args:
        problem: the B-PINN problem that was fitted.
        result: what :func:`fit` returned for it (method ``"laplace"``).
        key: a JAX PRNG key.
        x: points ``(n, d)`` where ``u`` is compared; None: the problem's measurement,
            boundary and residual points.
        num_members: RML members J.
        max_steps: their Levenberg-Marquardt steps.
        warn: warn with :class:`ekibnn.errors.FidelityWarning` when the check fails.

    Returns:
        The :class:`ekibnn.inversion.FidelityCheck` (the ratio's mean runs over the ``u``
        values and the physical parameters together; its min and max are pointwise).

    Raises:
        InputError: for a fit of another recipe (nothing linearised to check) or bad points.
    """
    if not isinstance(problem, PINNProblem):
        raise input_error(
            "pinn.self_check problem", "a PINNProblem", type(problem).__name__, "pass the problem"
        )
    points = np.concatenate([problem.x_u, problem.x_b, problem.x_f]) if x is None else x
    xj = jnp.asarray(_points("x", points, problem.dim), jnp.result_type(float))
    check = recipes.self_check(
        result,
        _CheckOutputs(problem, xj),
        key,
        num_members=num_members,
        max_steps=max_steps,
        warn=False,
    )
    if warn:
        check.warn(stacklevel=2)
    return check
