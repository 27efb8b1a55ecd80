"""Randomized maximum likelihood (RML; Oliver, He & Reynolds 1996; Chen & Oliver 2012): an
ensemble of MAP problems, each with its own prior draw and its own perturbed data.

Member ``j`` has the prior draw ``theta0_j ~ N(m_0, C_0)`` (the particle given to ``init``)
and the perturbed data ``y + eps_j``, ``eps_j ~ N(0, Gamma)``, and minimises

    Phi_j(theta) = 0.5 |Gamma^{-1/2}(y + eps_j - G(theta))|^2 + 0.5 |C_0^{-1/2}(theta - theta0_j)|^2

by the Levenberg–Marquardt step of :mod:`ekibnn.inversion.gauss_newton` (the same code,
vmapped over the members; each member linearises at its own point with its own Jacobian). For
a linear-Gaussian problem the minimisers are exact posterior samples
(``theta_j = m_post + K (y + eps_j - H theta0_j) + (I - K H)(theta0_j - m_post) ...``: a linear
map of Gaussians with the posterior's mean and covariance); for a network they are weight
samples that go through the *nonlinear* network, an :class:`ekibnn.posterior.EnsemblePosterior`,
unlike the linearised Laplace posterior.

``init`` has no key: the perturbations are drawn from the run's key at the first step and kept
in the state. Every per-member array has the members on its leading axis, so
``ek.run(..., mesh=...)`` shards the ensemble like EKI's.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn.ensemble import flatten, flatten_member
from ekibnn.errors import FidelityWarning, input_error
from ekibnn.inversion.gauss_newton import (
    GaussNewton,
    GaussNewtonInfo,
    GaussNewtonState,
    SolveSpace,
    gauss_newton,
)
from ekibnn.inversion.kernel import Algorithm, check_particles
from ekibnn.observations import Observation
from ekibnn.posterior import EnsemblePosterior, LinearisedPosterior
from ekibnn.priors import GaussianPrior

__all__ = ["RML", "FidelityCheck", "RMLState", "rml", "self_check"]

#: ``fold_in`` constant of the perturbations' key: with ``ek.run``'s step keys
#: ``fold_in(key, n)``, a plain draw at step 0 would equal ``prior.sample(key, J)``'s (the same
#: threefry stream), correlating each member's data perturbation with its prior draw.
_PERTURBATION_STREAM = 0x524D4C


class RMLState(NamedTuple):
    """State of an RML run (primary data only).

    Attributes:
        lm: the members' Levenberg–Marquardt state (points, damping, convergence; leading
            axis J).
        anchor: the members' prior draws ``theta0_j`` ``(J, p)``.
        perturbation: the data perturbations ``eps_j`` ``(J, m)`` (zero until the first step
            draws them).
    """

    lm: GaussNewtonState
    anchor: Float[Array, "J p"]
    perturbation: Float[Array, "J m"]

    @property
    def particles(self) -> PyTree:
        """The members (pytree, leading axis J): posterior samples once converged."""
        return self.lm.particles

    @property
    def step(self) -> Int[Array, ""]:
        """Steps taken."""
        return self.lm.step

    @property
    def done(self) -> Bool[Array, ""]:
        """Every member has converged, or ``max_steps`` was reached."""
        return self.lm.done

    @property
    def converged(self) -> Bool[Array, " J"]:
        """Which members converged."""
        return self.lm.converged


class RML(Algorithm):
    """Randomized maximum likelihood; build it with :func:`rml`.

    Attributes:
        lm: the Levenberg–Marquardt solver every member uses (its ``obs`` and ``prior``).
        start: None (each member starts at its prior draw) or ONE member's parameters where
            every member starts (e.g. the MAP).
    """

    lm: GaussNewton
    start: PyTree | None

    name: ClassVar[str] = "RML"

    def init(self, particles: PyTree) -> RMLState:
        """The state from the members' prior draws (leading axis J >= 2 on every leaf)."""
        num = check_particles(particles, self.lm.prior, minimum=2)
        anchor = flatten(particles)
        if self.start is None:
            lm = self.lm.init(particles)
        else:
            x0 = jnp.broadcast_to(flatten_member(self.start).astype(anchor.dtype), anchor.shape)
            lm = self.lm.init(particles)._replace(x=x0)
        return RMLState(
            lm=lm,
            anchor=anchor,
            perturbation=jnp.zeros((num, self.lm.obs.size), anchor.dtype),
        )

    def step(self, key: PRNGKeyArray, state: RMLState) -> tuple[RMLState, GaussNewtonInfo]:
        """One Levenberg–Marquardt step of every member (the first draws the perturbations)."""
        obs = self.lm.obs
        key = jax.random.fold_in(key, _PERTURBATION_STREAM)  # not a stream a sampler uses
        drawn = obs.colour(jax.random.normal(key, state.perturbation.shape, obs.y.dtype))
        perturbation = jnp.where(state.lm.step == 0, drawn, state.perturbation)
        lm, update = self.lm.advance(state.lm, anchor=state.anchor, y=obs.y + perturbation)
        info = GaussNewtonInfo(
            objective=jnp.mean(lm.objective),
            misfit=2.0 * jnp.mean(update.loss) / self.lm.num_outputs,
            grad_norm=jnp.mean(update.grad_norm),
            damping=jnp.median(lm.damping),
            num_converged=jnp.sum(lm.converged).astype(jnp.int32),
            num_accepted=jnp.sum(update.accepted).astype(jnp.int32),
            cg_steps=jnp.mean(update.cg_steps),
        )
        return RMLState(lm, state.anchor, perturbation), info

    def posterior(self, state: RMLState) -> EnsemblePosterior:
        """The members as an :class:`ekibnn.posterior.EnsemblePosterior`."""
        return EnsemblePosterior(state.particles)


def rml(
    forward_fn: Callable[..., Float[Array, " m"]],
    obs: Observation,
    prior: GaussianPrior,
    *,
    start: PyTree | None = None,
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
) -> RML:
    """Build a randomized-maximum-likelihood ensemble (module docstring).

    Args:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member (vmapped over the members).
        obs: the data and its Gaussian noise (RML perturbs the data by that noise).
        prior: the Gaussian prior the members' draws come from.
        start: None (each member starts from its own prior draw, the classical RML) or ONE
            member's parameters where all members start (e.g. the MAP of
            :func:`ekibnn.gauss_newton`: fewer iterations, and members stay in its basin).
        indexed_forward: as for :func:`ekibnn.gauss_newton`.
        segments: as for :func:`ekibnn.gauss_newton`.
        space: as for :func:`ekibnn.gauss_newton` (per member).
        max_steps: as for :func:`ekibnn.gauss_newton` (for every member).
        rtol: as for :func:`ekibnn.gauss_newton`.
        atol: as for :func:`ekibnn.gauss_newton`.
        initial_damping: as for :func:`ekibnn.gauss_newton`.
        damping_scale: as for :func:`ekibnn.gauss_newton`.
        cg_rtol: as for :func:`ekibnn.gauss_newton`.
        cg_max_steps: as for :func:`ekibnn.gauss_newton`.
        update_precision: as for :func:`ekibnn.gauss_newton`.

    Returns:
        An :class:`RML` module: ``init(prior draws) ->`` :class:`RMLState`,
        ``step(key, state) -> (state,`` :class:`ekibnn.inversion.GaussNewtonInfo` ``)`` (means
        over the members), ``posterior(state)`` the ensemble.

    Raises:
        InputError: for bad arguments (before anything is compiled).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> obs = ek.Observation(jnp.array([2.0]), 1.0)
        >>> prior = ek.GaussianPrior(jnp.zeros(1), 1.0)   # posterior N(1, 1/2)
        >>> algo = ek.inversion.rml(lambda th: th, obs, prior)
        >>> draws = prior.sample(jax.random.key(1), 4000)
        >>> res = ek.run(jax.random.key(0), algo, draws, num_steps=20, progress=False)
        >>> x = res.particles[:, 0]
        >>> round(float(x.mean()), 1), round(float(x.var()), 1)
        (1.0, 0.5)
    """
    lm = gauss_newton(
        forward_fn,
        obs,
        prior,
        indexed_forward=indexed_forward,
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
    if start is not None:
        prior.check_particles(
            jax.tree_util.tree_map(lambda a: a[None] if eqx.is_inexact_array(a) else a, start)
        )
    return RML(lm=lm, start=start)


#: Standard errors of the Monte-Carlo band of :attr:`FidelityCheck.band`.
FIDELITY_SIGMAS = 3.0
#: Disagreement (in ``|log std_ratio|``) tolerated beyond the Monte-Carlo band: about 10%.
FIDELITY_TOLERANCE = 0.1
#: Share of RML members that must converge for the comparison to count.
FIDELITY_MIN_CONVERGED = 0.5


class FidelityCheck(NamedTuple):
    """What :func:`self_check` measured (floats and bools, on the host), and its verdict.

    The verdict (:attr:`trusted`, :attr:`message`) fails when the MAP did not converge, when
    fewer than half the RML members converged (the comparison is then inconclusive), or when
    ``|log std_ratio|`` exceeds :attr:`band` ``= 3 / sqrt(2 (J - 1)) + 0.1``. The band: the
    RML std is estimated from ``J`` members, and the log of a sample std of ``J`` Gaussian
    draws has standard error ``1 / sqrt(2 (J - 1))`` (the Laplace std is exact, so this is the
    ratio's whole Monte-Carlo error; averaging over correlated outputs does not make it larger).
    Three standard errors make a false alarm about a 0.3% event when the linearisation is
    exact (a linear-Gaussian problem, where RML members are exact posterior samples); the
    extra 0.1 (a spread about 10% off) is a disagreement too small to change a decision, and
    keeps large ``J`` from flagging a harmless nonlinearity. ``J = 32``: the ratio must lie in
    about ``[0.62, 1.62]``; ``J = 16``: ``[0.52, 1.91]``; ``J = 8``: ``[0.41, 2.46]`` (a coarse
    screen: use ``J >= 32`` for a sharp check).

    Attributes:
        std_ratio: mean over the outputs of the Laplace predictive std over the mean of the
            RML ensemble's (unbiased, ``ddof = 1``).
        std_ratio_min: its smallest pointwise value.
        std_ratio_max: its largest pointwise value.
        laplace_std: mean Laplace predictive std.
        rml_std: mean RML predictive std.
        map_converged: whether the MAP run converged (None: unknown).
        map_grad_norm: ``|grad_z Phi|`` at the MAP.
        rml_converged: share of the RML members that converged.
        num_members: RML members used (the ratio's Monte-Carlo error is about
            ``1 / sqrt(2 J)``).
    """

    std_ratio: float
    std_ratio_min: float
    std_ratio_max: float
    laplace_std: float
    rml_std: float
    map_converged: bool | None
    map_grad_norm: float
    rml_converged: float
    num_members: int

    @property
    def band(self) -> float:
        """The largest ``|log std_ratio|`` that passes: ``3 / sqrt(2 (J - 1)) + 0.1``."""
        return FIDELITY_SIGMAS / math.sqrt(2 * max(self.num_members - 1, 1)) + FIDELITY_TOLERANCE

    @property
    def failures(self) -> tuple[str, ...]:
        """What failed, one sentence each (empty: the check passed)."""
        out = []
        if self.map_converged is False:
            out.append(
                f"the MAP did not converge (|grad| = {self.map_grad_norm:.3g} in prior-whitened "
                "units): the Laplace posterior sits at the wrong point; give the fit more steps"
            )
        if not self.rml_converged >= FIDELITY_MIN_CONVERGED:
            out.append(
                f"only {100 * self.rml_converged:.0f}% of the {self.num_members} RML members "
                "converged: the comparison is inconclusive; pass a larger max_steps"
            )
        ratio = self.std_ratio
        if not (ratio > 0 and abs(math.log(ratio)) <= self.band):
            low, high = math.exp(-self.band), math.exp(self.band)
            side = "narrower" if ratio < 1 else "wider"
            out.append(
                f"the Laplace predictive std is {ratio:.3g} times the RML ensemble's, outside "
                f"[{low:.2f}, {high:.2f}] (Monte-Carlo error of J = {self.num_members} members "
                f"plus {100 * FIDELITY_TOLERANCE:.0f}%): the linearised posterior is {side} "
                "than the nonlinear one; use method='rml' (or an ensemble), or a model closer "
                "to linear over the posterior's spread"
            )
        return tuple(out)

    @property
    def trusted(self) -> bool:
        """Whether the check passed (no :attr:`failures`)."""
        return not self.failures

    @property
    def message(self) -> str:
        """The verdict in one line."""
        head = (
            f"fidelity self-check: Laplace/RML std ratio {self.std_ratio:.3g} "
            f"(pointwise {self.std_ratio_min:.3g} to {self.std_ratio_max:.3g}, "
            f"J = {self.num_members})"
        )
        if self.trusted:
            return f"{head}: passed, the linearised posterior agrees with the nonlinear one"
        return f"{head}: FAILED: " + "; ".join(self.failures)

    def as_dict(self) -> dict:
        """The fields, with ``band``, ``trusted`` and ``message`` (for ``metrics.json``)."""
        return self._asdict() | {
            "band": self.band,
            "trusted": self.trusted,
            "message": self.message,
        }

    def warn(self, stacklevel: int = 2) -> None:
        """Warn with :class:`ekibnn.errors.FidelityWarning` unless the check passed."""
        if not self.trusted:
            warnings.warn(FidelityWarning(self.message), stacklevel=stacklevel + 1)


def self_check(
    posterior: LinearisedPosterior,
    forward_fn: Callable,
    obs: Observation,
    prior: GaussianPrior,
    fn: Callable,
    key: PRNGKeyArray,
    *,
    num_members: int = 32,
    max_steps: int = 100,
    warn: bool = True,
    **options,
) -> FidelityCheck:
    """How far the linearisation is off along the posterior's spread: the Laplace predictive
    std of ``fn`` against that of a small RML ensemble (nonlinear, started at the MAP) on the
    same problem, with the MAP's convergence. A ratio far from 1 (beyond the Monte-Carlo error
    ``1 / sqrt(2 num_members)``) or an unconverged MAP means the Laplace posterior should not
    be trusted as it is (:attr:`FidelityCheck.trusted` says which, with the threshold).

    The RML run costs about ``num_members`` MAP fits of ``max_steps`` steps from a good start
    (the MAP); for a linear-Gaussian model its members are exact posterior samples, so the
    ratio is 1 up to the Monte-Carlo error.

    Args:
        posterior: the Laplace posterior (:func:`ekibnn.laplace` or
            :meth:`ekibnn.inversion.GaussNewton.posterior`) of this problem.
        forward_fn: the forward map of ONE member.
        obs: the data and noise (Gaussian).
        prior: the prior.
        fn: the output to compare, ``fn(params) -> array`` of ONE member.
        key: PRNG key (prior draws and perturbations of the RML members).
        num_members: RML members (J >= 2).
        max_steps: their Levenberg–Marquardt steps.
        warn: warn with :class:`ekibnn.errors.FidelityWarning` when the check fails.
        **options: other :func:`rml` options (``indexed_forward``, ``space``, ...).

    Returns:
        A :class:`FidelityCheck`.

    Raises:
        InputError: for bad arguments.

    Warns:
        FidelityWarning: with ``warn=True``, when the check fails (its message says why).
    """
    from ekibnn.run import run

    if not isinstance(posterior, LinearisedPosterior):
        raise input_error(
            "posterior",
            "an ekibnn.posterior.LinearisedPosterior",
            type(posterior).__name__,
            "build it with ek.laplace(...) or algo.posterior(state)",
        )
    for name, value, least in (("num_members", num_members, 2), ("max_steps", max_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise input_error(
                f"self_check {name}", f"an integer >= {least}", repr(value), f"pass e.g. {name}=32"
            )
    num_members, max_steps = int(num_members), int(max_steps)
    key_draws, key_run = jax.random.split(key)
    algo = rml(forward_fn, obs, prior, start=posterior.mean, max_steps=max_steps, **options)
    result = run(key_run, algo, prior.sample(key_draws, num_members), max_steps, progress=False)
    # unbiased (ddof = 1): the population std of J draws is sqrt((J - 1) / J) too small
    bessel = math.sqrt(num_members / (num_members - 1))
    ensemble_std = algo.posterior(result.state).predict(fn).std * bessel
    laplace_std = posterior.predict(fn).std
    ratio = laplace_std / ensemble_std
    check = FidelityCheck(
        std_ratio=float(jnp.mean(laplace_std) / jnp.mean(ensemble_std)),
        std_ratio_min=float(jnp.min(ratio)),
        std_ratio_max=float(jnp.max(ratio)),
        laplace_std=float(jnp.mean(laplace_std)),
        rml_std=float(jnp.mean(ensemble_std)),
        map_converged=posterior.converged,
        map_grad_norm=float(posterior.grad_norm),
        rml_converged=float(jnp.mean(result.state.converged)),
        num_members=num_members,
    )
    if warn:
        check.warn(stacklevel=2)
    return check
