"""Unknown noise and prior scale by the Laplace evidence (type-II maximum likelihood, MacKay
1992), alternated with the Levenberg–Marquardt MAP, in one compiled loop.

With the noise ``Gamma = tau^2 Gamma_0`` and the prior std ``kappa s_0`` on a group ``g`` of
parameters (``Gamma_0``, ``s_0``: the Observation's noise and the prior's stds as given; the
scales start at 1), one round is

1. Levenberg–Marquardt to the MAP ``theta*`` at the current ``(tau, kappa)``, warm-started
   from the previous MAP (:func:`ekibnn.gauss_newton`);
2. the factor ``J^ = V S U^T`` at ``theta*`` and the effective numbers of parameters
   ``gamma = sum_i S_i^2 / (1 + S_i^2)`` and, for the group,
   ``gamma_g = sum_{k in g} [U diag(S^2 / (1 + S^2)) U^T]_kk``;
3. MacKay's fixed-point updates (the stationarity conditions of the Laplace evidence)

       kappa^2 <- |(theta* - m_0)_g / s_0|^2 / gamma_g,
       tau^2   <- |Gamma_0^{-1/2}(y - G(theta*))|^2 / (m - gamma),

   i.e. ``alpha <- gamma / |theta* - m_0|^2`` and ``sigma^2 <- |y - G|^2 / (m - gamma)`` for an
   isotropic prior ``N(m_0, alpha^{-1} I)`` and noise ``sigma^2 I``.

A safeguard keeps the rounds monotone in the evidence: for a network the fixed-point update
can overshoot (a smaller noise lets the MAP fit more, which lowers the next estimate again), so
a round whose log evidence is below the best so far is rejected: the MAP and scales go back to
the best round's and the step in ``(log tau, log kappa)`` is halved. Rounds stop when the step
is below ``tol`` (relative; a fixed point, or no better point along the update), when a round
raises the log evidence by less than ``evidence_tol`` nats, after ``patience`` rejected rounds
in a row once the best round's Levenberg-Marquardt run has converged (each round's MAP is a
fresh local optimum, so a network's evidence is noisy at the level of nats between nearby
scales, and more halvings only spend Levenberg-Marquardt runs on scales already within the
noise), or after ``max_rounds``; the result is the round with the highest evidence. For a
linear-Gaussian model the Laplace evidence is exact and the fixed point is the exact type-II
maximum. What the user set is respected: ``tune_noise=False`` keeps the given noise,
``tune_prior=False`` the given prior; the fitted values are in the state (``noise_scale``,
``prior_scale``) and in :meth:`Evidence.fitted`.

The noise and the prior are data of the compiled step (the scales are state), so the whole
alternation is one :func:`ekibnn.run` loop: each step is one LM step, and a round ends (with
the update above, inside a ``lax.cond``) when every start has converged or after the LM's
``max_steps``.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from ekibnn.ensemble import Layout, flatten_member
from ekibnn.errors import input_error
from ekibnn.inversion.gauss_newton import (
    Gaussian,
    GaussNewton,
    GaussNewtonState,
    factorise,
    log_evidence,
)
from ekibnn.inversion.kernel import Algorithm, check_number, check_positive_int
from ekibnn.observations import Observation
from ekibnn.posterior import LinearisedPosterior
from ekibnn.priors import GaussianPrior

__all__ = ["BestRound", "Evidence", "EvidenceInfo", "EvidenceState", "Fitted", "evidence"]

_SCALE_RANGE = (1e-6, 1e6)  # the scales are kept inside (a group the data do not determine)


class BestRound(NamedTuple):
    """The round with the highest log evidence (see :class:`EvidenceState`)."""

    lm: GaussNewtonState
    noise_scale: Float[Array, ""]
    prior_scale: Float[Array, ""]
    log_evidence: Float[Array, ""]
    gamma: Float[Array, ""]


class EvidenceState(NamedTuple):
    """State of the evidence alternation (primary data only).

    Attributes:
        lm: the Levenberg–Marquardt state of the current round.
        noise_scale: ``tau`` (noise std = ``tau`` times the given one).
        prior_scale: ``kappa`` (the group's prior std = ``kappa`` times the given one).
        log_evidence: the Laplace log evidence at the last round's MAP and scales (NaN before).
        gamma: the effective number of parameters there.
        rounds: rounds finished.
        rejected: rejected rounds in a row (the safeguard; module docstring).
        step: LM steps taken in all.
        settled: the last step in the scales was below ``tol``.
        done: settled, or ``max_rounds`` rounds finished.
        best: the round with the highest log evidence so far: its LM state, ``tau``,
            ``kappa``, log evidence and ``gamma`` (``best.log_evidence`` is NaN before the
            first round).
    """

    lm: GaussNewtonState
    noise_scale: Float[Array, ""]
    prior_scale: Float[Array, ""]
    log_evidence: Float[Array, ""]
    gamma: Float[Array, ""]
    rounds: Int[Array, ""]
    rejected: Int[Array, ""]
    step: Int[Array, ""]
    settled: Bool[Array, ""]
    done: Bool[Array, ""]
    best: BestRound

    @property
    def particles(self) -> PyTree:
        """The optimised points (pytree, leading axis R; restarts, not posterior samples)."""
        return self.lm.particles

    @property
    def map(self) -> PyTree:
        """The MAP at the fitted scales (ONE member)."""
        return self.lm.map


class EvidenceInfo(NamedTuple):
    """Diagnostics of one step (scalars): the LM step's, of the best start, and the scales.

    Attributes:
        objective: ``Phi`` at the current scales.
        misfit: ``|Gamma^{-1/2}(y - G)|^2 / m`` at the current noise.
        grad_norm: ``|grad_z Phi|``.
        damping: ``lambda``.
        num_converged: starts converged in this round.
        noise_scale: ``tau`` after the step.
        prior_scale: ``kappa`` after the step.
        log_evidence: the last round's Laplace log evidence.
        rounds: rounds finished.
    """

    objective: Float[Array, ""]
    misfit: Float[Array, ""]
    grad_norm: Float[Array, ""]
    damping: Float[Array, ""]
    num_converged: Int[Array, ""]
    noise_scale: Float[Array, ""]
    prior_scale: Float[Array, ""]
    log_evidence: Float[Array, ""]
    rounds: Int[Array, ""]


class Fitted(NamedTuple):
    """The fitted hyperparameters (host values) and the objects they give.

    Attributes:
        noise_scale: ``tau``.
        prior_scale: ``kappa``.
        noise_std: the fitted noise stds ``(m,)`` (diagonal noise; None for dense).
        obs: the Observation with the fitted noise.
        prior: the prior with the fitted stds.
        log_evidence: the Laplace log evidence there.
        gamma: the effective number of parameters.
        rounds: rounds taken.
        settled: whether the scales settled (False: ``max_rounds`` ran out).
    """

    noise_scale: float
    prior_scale: float
    noise_std: Array | None
    obs: Observation
    prior: GaussianPrior
    log_evidence: float
    gamma: float
    rounds: int
    settled: bool


class Evidence(Algorithm):
    """The evidence alternation; build it with :func:`evidence` (fields as its arguments)."""

    lm: GaussNewton
    group: Bool[Array, " p"]
    tune_noise: bool = eqx.field(static=True)
    tune_prior: bool = eqx.field(static=True)
    max_rounds: int = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    evidence_tol: float = eqx.field(static=True)
    patience: int = eqx.field(static=True)
    rank: int | None = eqx.field(static=True)

    name: ClassVar[str] = "Laplace evidence"

    def scaled(self, noise_scale: Array, prior_scale: Array) -> GaussNewton:
        """The LM solver with the noise and the group's prior std scaled."""
        obs = self.lm.obs
        if obs.is_diagonal:
            obs = eqx.tree_at(lambda o: o.std, obs, obs.std * noise_scale)
        else:
            obs = eqx.tree_at(lambda o: o.chol, obs, obs.chol * noise_scale)
        prior = self.lm.prior
        std = prior.flat_std() * jnp.where(self.group, prior_scale, 1.0)
        std_tree = Layout.of_member(prior.std).member(std.astype(prior.flat_std().dtype))
        prior = eqx.tree_at(lambda q: q.std, prior, std_tree)
        return eqx.tree_at(lambda a: (a.obs, a.prior), self.lm, (obs, prior))

    def init(self, particles: PyTree) -> EvidenceState:
        """The state from R starting points (as :meth:`ekibnn.inversion.GaussNewton.init`),
        scales at 1."""
        return _initial_state(self.lm.init(particles))

    def _round_end(self, algo: GaussNewton, state: EvidenceState, key: PRNGKeyArray):
        """MacKay's updates at the round's MAP (module docstring)."""
        lm = state.lm
        theta = lm.x[lm.best]
        mean = algo.prior.flat_mean().astype(theta.dtype)
        model = algo.model(lm.layout, mean)
        factor = factorise(
            model, (theta - mean) / model.scale, self.rank, key, algo.update_precision
        )
        evidence = log_evidence(factor, algo.likelihood.log_normaliser(model.obs))
        s2 = factor.singular_values**2
        shrink = s2 / (1 + s2)
        gamma = jnp.sum(shrink)
        low, high = _SCALE_RANGE
        tau, kappa = state.noise_scale, state.prior_scale
        if self.tune_prior:
            z_base = (theta - mean) / self.lm.prior.flat_std().astype(theta.dtype)
            gamma_g = jnp.sum(jnp.where(self.group, (factor.basis**2) @ shrink, 0))
            size = jnp.sum(jnp.where(self.group, z_base**2, 0))
            kappa = jnp.clip(jnp.sqrt(size / jnp.maximum(gamma_g, 1e-12)), low, high)
        if self.tune_noise:
            m = model.obs.size
            rss_base = 2 * factor.loss * state.noise_scale**2
            tau = jnp.clip(jnp.sqrt(rss_base / jnp.maximum(m - gamma, 1e-6 * m)), low, high)
        # the safeguard (module docstring): keep the best round; after a worse one, go back
        # to it and halve the step
        best = state.best
        improved = jnp.isnan(best.log_evidence) | (evidence >= best.log_evidence)
        best = jax.tree_util.tree_map(
            lambda new, old: jnp.where(improved, new, old),
            BestRound(lm, state.noise_scale, state.prior_scale, evidence, gamma),
            best,
        )
        tau = jnp.where(improved, tau, jnp.sqrt(best.noise_scale * state.noise_scale))
        kappa = jnp.where(improved, kappa, jnp.sqrt(best.prior_scale * state.prior_scale))
        change = jnp.maximum(
            jnp.abs(jnp.log(tau / best.noise_scale)), jnp.abs(jnp.log(kappa / best.prior_scale))
        )
        gain = evidence - state.best.log_evidence  # NaN in the first round
        rejected = jnp.where(improved, 0, state.rejected + 1)
        settled = (change <= self.tol) | (improved & (gain <= self.evidence_tol))
        best_converged = best.lm.converged[best.lm.best]  # a MAP, not an LM run cut short
        settled = settled | ((rejected >= self.patience) & best_converged)
        rounds = state.rounds + 1
        done = settled | (rounds >= self.max_rounds)
        fresh = best.lm._replace(  # the next round: from the best MAP, at the new scales
            converged=jnp.zeros_like(lm.converged),
            step=jnp.zeros_like(lm.step),
            done=jnp.asarray(False),
        )
        return state._replace(
            lm=jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), best.lm, fresh),
            noise_scale=jnp.where(done, best.noise_scale, tau),
            prior_scale=jnp.where(done, best.prior_scale, kappa),
            log_evidence=jnp.where(done, best.log_evidence, evidence),
            gamma=jnp.where(done, best.gamma, gamma),
            rounds=rounds,
            rejected=rejected,
            settled=settled,
            done=done,
            best=best,
        )

    def step(self, key: PRNGKeyArray, state: EvidenceState) -> tuple[EvidenceState, EvidenceInfo]:
        """One LM step at the current scales; at a round's end, MacKay's updates."""
        algo = self.scaled(state.noise_scale, state.prior_scale)
        lm, info = algo.step(key, state.lm)
        state = state._replace(lm=lm, step=state.step + 1)
        state = jax.lax.cond(lm.done, lambda s: self._round_end(algo, s, key), lambda s: s, state)
        return state, EvidenceInfo(
            objective=info.objective,
            misfit=info.misfit,
            grad_norm=info.grad_norm,
            damping=info.damping,
            num_converged=info.num_converged,
            noise_scale=state.noise_scale,
            prior_scale=state.prior_scale,
            log_evidence=state.log_evidence,
            rounds=state.rounds,
        )

    def fitted(self, state: EvidenceState) -> Fitted:
        """The fitted scales, noise and prior (on the host)."""
        algo = _scaled(self, state.noise_scale, state.prior_scale)
        return Fitted(
            noise_scale=float(state.noise_scale),
            prior_scale=float(state.prior_scale),
            noise_std=algo.obs.std,
            obs=algo.obs,
            prior=algo.prior,
            log_evidence=float(state.log_evidence),
            gamma=float(state.gamma),
            rounds=int(state.rounds),
            settled=bool(state.settled),
        )

    def posterior(self, state: EvidenceState, **options) -> LinearisedPosterior:
        """The linearised Laplace posterior at the MAP and the fitted scales (options as for
        :meth:`ekibnn.inversion.GaussNewton.posterior`)."""
        algo = _scaled(self, state.noise_scale, state.prior_scale)
        return algo.posterior(state.lm, **options)


@eqx.filter_jit
def _scaled(algo: Evidence, noise_scale: Array, prior_scale: Array) -> GaussNewton:
    return algo.scaled(noise_scale, prior_scale)


@eqx.filter_jit
def _initial_state(lm: GaussNewtonState) -> EvidenceState:
    """The state before the first round, scales at 1 (one program)."""
    dtype = lm.x.dtype
    one, nan = jnp.ones((), dtype), jnp.full((), jnp.nan, dtype)
    return EvidenceState(
        lm=lm,
        noise_scale=one,
        prior_scale=one,
        log_evidence=nan,
        gamma=nan,
        rounds=jnp.zeros((), jnp.int32),
        rejected=jnp.zeros((), jnp.int32),
        step=jnp.zeros((), jnp.int32),
        settled=jnp.asarray(False),
        done=jnp.asarray(False),
        best=BestRound(lm, one, one, nan, nan),
    )


def evidence(
    algorithm: GaussNewton,
    *,
    tune_noise: bool = True,
    tune_prior: bool = True,
    group: PyTree | None = None,
    max_rounds: int = 30,
    tol: float = 1e-3,
    evidence_tol: float = 1e-2,
    patience: int = 2,
    rank: int | None = None,
) -> Evidence:
    """Wrap a Levenberg–Marquardt solver (:func:`ekibnn.gauss_newton`) in the Laplace-evidence
    alternation for the noise scale and the prior scale (module docstring).

    Args:
        algorithm: the solver; its Observation's noise and its prior's stds are the starting
            point and the shape of what is tuned (scaled by ``tau`` and ``kappa``).
        tune_noise: tune the noise scale (Gaussian likelihood only). False: the noise is as
            given (a noise the user set is not tuned).
        tune_prior: tune the prior scale of ``group``. False: the prior is as given.
        group: which parameters the tuned prior scale applies to: None (all), or a pytree of
            booleans shaped like the parameters (e.g. the network's weights but not a
            physical parameter; a scalar per leaf broadcasts).
        max_rounds: at most this many rounds.
        tol: stop when both scales change by less than this (relative) in a round.
        evidence_tol: also stop when a round raises the log evidence by less than this (in
            nats; e.g. a prior scale shrinking towards 0 on data with no signal, where the
            scales never settle but the evidence does).
        patience: also stop after this many rejected rounds in a row (rounds whose log
            evidence is below the best round's; the result is the best round), if the best
            round's MAP converged (else the rounds go on from it).
        rank: the factor's rank (None: exact; see :func:`ekibnn.laplace`).

    Returns:
        An :class:`Evidence` module: ``init(particles) ->`` :class:`EvidenceState`,
        ``step(key, state) -> (state,`` :class:`EvidenceInfo` ``)``, ``fitted(state)``,
        ``posterior(state)``.

    Raises:
        InputError: for bad arguments.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, ekibnn as ek
        >>> rng = np.random.default_rng(0)
        >>> X = jnp.asarray(rng.normal(size=(200, 3)), jnp.float32)
        >>> y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3 * jnp.asarray(rng.normal(size=200))
        >>> gn = ek.gauss_newton(lambda w: X @ w, ek.Observation(y, 1.0),
        ...                      ek.GaussianPrior(jnp.zeros(3), 1.0))
        >>> algo = ek.inversion.evidence(gn)
        >>> res = ek.run(jax.random.key(0), algo, jnp.zeros((1, 3)), 500, progress=False)
        >>> round(algo.fitted(res.state).noise_scale, 1)
        0.3
    """
    if not isinstance(algorithm, GaussNewton):
        raise input_error(
            "algorithm",
            "an ekibnn Gauss-Newton solver (ek.gauss_newton(...))",
            type(algorithm).__name__,
            "pass ek.gauss_newton(forward_fn, obs, prior, ...)",
        )
    if tune_noise and not isinstance(algorithm.likelihood, Gaussian):
        raise input_error(
            "tune_noise",
            "False for a non-Gaussian likelihood (only a Gaussian noise has a scale to tune)",
            f"tune_noise=True with the {algorithm.likelihood.name} likelihood",
            "pass tune_noise=False",
        )
    prior = algorithm.prior
    if group is None:
        mask = jnp.ones((prior.num_params,), bool)
    else:
        try:
            tree = jax.tree_util.tree_map(
                lambda s, g: jnp.broadcast_to(jnp.asarray(g, bool), s.shape),
                prior.std,
                eqx.filter(group, eqx.is_array_like),
            )
            mask = flatten_member(jax.tree_util.tree_map(lambda g: g.astype(jnp.float32), tree))
        except (ValueError, TypeError) as err:
            raise input_error(
                "group",
                "None or a pytree of booleans with the structure of the parameters",
                f"{type(group).__name__} that does not match ({err})",
                "build it with jax.tree_util.tree_map(lambda leaf: True/False, params)",
            ) from None
        mask = mask > 0
        if tune_prior and not bool(jnp.any(mask)):
            raise input_error("group", "at least one parameter", "an empty group", "mark some")
    return Evidence(
        lm=algorithm,
        group=mask,
        tune_noise=bool(tune_noise),
        tune_prior=bool(tune_prior),
        max_rounds=check_positive_int("max_rounds", max_rounds, "pass e.g. max_rounds=30"),
        tol=check_number("tol", tol, 0.0, strict=True),
        evidence_tol=check_number("evidence_tol", evidence_tol, 0.0),
        patience=check_positive_int("patience", patience, "pass e.g. patience=2"),
        rank=None if rank is None else check_positive_int("rank", rank, "pass e.g. 200"),
    )
