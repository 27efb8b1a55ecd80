"""Named recipes: one registry for the estimators, :mod:`ekibnn.pinn` and the CLI.

A recipe is a named sequence of stages over an inverse problem (a forward map, an
:class:`ekibnn.Observation` and a :class:`ekibnn.GaussianPrior`). The default, ``"laplace"``,
linearises with the model's own Jacobian: Levenberg–Marquardt in Kalman form from a few prior
draws to the MAP (with an unknown noise and prior scale tuned by the Laplace evidence), then
the linearised-Laplace posterior there; ``"rml"`` gives each ensemble member its own prior
draw and perturbed data. The ensemble recipes linearise by ensemble statistics: an ensemble
stage that finds the data without gradients, then optionally a sampler or UKI started from
its ensemble.
A name means one thing everywhere, with one set of defaults (:data:`RECIPES`); the callers
pass only what the user set. This module imports neither JAX nor NumPy at import time, so the
CLI can list the recipes instantly; :func:`fit` imports the algorithms when it runs.

What each recipe gives on BNN and B-PINN posteriors, against NUTS, is measured in
``benchmarks/`` and summarised in ``docs/algorithms.md``.

Example:
    >>> from ekibnn.recipes import RECIPES
    >>> RECIPES["teki"].stages
    ('teki',)
    >>> RECIPES["eks"].stages
    ('teki', 'eks')
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["DEFAULT", "NAMES", "RECIPES", "Fit", "Problem", "Recipe", "fit", "self_check"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named sequence of stages.

    Attributes:
        name: the recipe's name (``method=`` of the estimators, ``ekibnn.pinn`` and the CLI).
        summary: one line for listings.
        stages: the stages in order: ``"laplace"`` (Levenberg–Marquardt MAP, evidence,
            linearised Laplace), ``"rml"``, ``"eki"``, ``"teki"`` (with the prior imposed),
            ``"etki"``, ``"tetki"``, ``"eki-disc"`` (stopped by the discrepancy principle),
            ``"eki-t1"`` (tempered to T = 1), ``"eks"``, ``"aldi"``, ``"uki"``.
        defaults: the settings this recipe uses unless the caller overrides them.
    """

    name: str
    summary: str
    stages: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...] = ()

    @property
    def jacobian(self) -> bool:
        """Whether the recipe differentiates the forward map (``laplace``, ``rml``): it then
        needs a differentiable forward map and, for classification, logits."""
        return self.stages[0] in _JACOBIAN_STAGES

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The recipe's settings: the common defaults, its own, then ``overrides`` (None
        values are ignored, so callers can pass what the user left unset)."""
        out = dict(_COMMON) | dict(self.defaults)
        unknown = set(overrides) - set(out)
        if unknown:
            from ekibnn.errors import input_error

            raise input_error(
                f"settings of recipe {self.name!r}",
                f"names among {sorted(out)}",
                repr(sorted(unknown)),
                "drop them or pick a recipe that uses them",
            )
        out.update({k: v for k, v in overrides.items() if v is not None})
        return out


#: Settings every recipe understands, with their defaults.
_COMMON: tuple[tuple[str, Any], ...] = (
    ("ensemble_size", 200),  # members J (draws of the final Gaussian for "uki")
    ("num_steps", 200),  # steps of the ensemble stage (a cap where it stops itself)
    ("inflation", 0.02),  # std of the random walk before each step of eki/teki/etki/tetki
    ("dt", 1.0),  # the ensemble stage's step (noise Gamma / dt) for eki/teki/etki/tetki
    ("batch_size", None),  # random minibatches of the ensemble stage (None: full batches)
    ("tau", 1.0),  # discrepancy-principle factor of "eki-disc"
    ("noise_rounds", 10),  # EM re-estimations of an unknown noise during the ensemble stage
    ("sampler_time", 10.0),  # algorithm time of eks/aldi; iterations of uki
    ("max_sampler_steps", 1000),  # cap on the steps of eks/aldi
    ("warm_start", "teki"),  # the ensemble stage in front of eks/aldi/uki
    ("restarts", 4),  # prior draws Levenberg-Marquardt starts from ("laplace")
    ("max_rounds", 30),  # evidence rounds for an unknown noise or prior scale ("laplace")
    ("progress", False),
)

_WARM = (("inflation", 0.0),)  # samplers and UKI start from a collapsed, regularised fit

_ENSEMBLE_STAGES = ("eki", "teki", "etki", "tetki", "eki-disc", "eki-t1")
_JACOBIAN_STAGES = ("laplace", "rml")

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "laplace",
            "Levenberg-Marquardt MAP in Kalman form from `restarts` prior draws (noise and "
            "prior scale left unset: Laplace evidence), then the linearised-Laplace posterior",
            ("laplace",),
            (("num_steps", 400),),
        ),
        Recipe(
            "rml",
            "randomized maximum likelihood: every member its own prior draw and perturbed "
            "data, each minimised by Levenberg-Marquardt",
            ("rml",),
            (("ensemble_size", 100), ("num_steps", 300)),
        ),
        Recipe(
            "eki",
            "perturbed-observation EKI, dt = 1 for num_steps steps, with a random walk "
            "(the tutorial's recipe; its spread is set by the walk)",
            ("eki",),
        ),
        Recipe(
            "teki",
            "Tikhonov EKI (the prior imposed as observations), dt = 1, with a random walk",
            ("teki",),
        ),
        Recipe("eki-reg", "Tikhonov EKI without a random walk", ("teki",), _WARM),
        Recipe(
            "etki", "ensemble transform Kalman inversion, dt = 1, with a random walk", ("etki",)
        ),
        Recipe("tetki", "Tikhonov ETKI, dt = 1, with a random walk", ("tetki",)),
        Recipe(
            "eki-disc",
            "EKI without a random walk, stopped by the discrepancy principle",
            ("eki-disc",),
            _WARM,
        ),
        Recipe(
            "eki-t1", "EKI tempered to algorithm time T = 1 (data-misfit scheduler)", ("eki-t1",)
        ),
        Recipe(
            "eks",
            "Tikhonov EKI without a random walk, then the ensemble Kalman sampler for sampler_time",
            ("teki", "eks"),
            _WARM,
        ),
        Recipe(
            "aldi", "as 'eks' with ALDI (needs ensemble_size >= p + 2)", ("teki", "aldi"), _WARM
        ),
        Recipe(
            "uki",
            "Tikhonov EKI without a random walk, then unscented Kalman inversion from its "
            "mean and covariance for sampler_time iterations",
            ("teki", "uki"),
            _WARM,
        ),
    )
}

#: Every recipe name, in registry order.
NAMES: tuple[str, ...] = tuple(RECIPES)

#: The recipe used when none is named.
DEFAULT = "laplace"


def get(name: str) -> Recipe:
    """The recipe called ``name`` (clear :class:`ekibnn.InputError` otherwise)."""
    if name not in RECIPES:
        from ekibnn.errors import input_error

        raise input_error("method", f"one of {list(NAMES)}", repr(name), "pick a listed recipe")
    return RECIPES[name]


class Problem(NamedTuple):
    """An inverse problem as the recipes see it.

    Attributes:
        forward_fn: ``forward_fn(params) -> (m,)`` for ONE member.
        obs: the observations with the current noise.
        prior: the Gaussian prior.
        estimate_noise: the noise std is an unknown scale to estimate (its value in ``obs``
            is the starting point).
        indexed_forward_fn: optional ``forward_fn(params, indices)`` evaluating only the
            observations ``indices`` (minibatches; a point-by-point Jacobian for ``laplace``).
        likelihood: None (Gaussian with ``obs``'s noise) or
            :class:`ekibnn.inversion.Categorical` (the Jacobian recipes only).
        estimate_prior: the prior scale of ``prior_group`` is unknown (``laplace``: tuned by
            the evidence; the prior's stds are the starting point).
        prior_group: which parameters the tuned prior scale applies to (None: all).
        segments: optional segment ends of ``indexed_forward_fn``'s observations, each
            evaluated by one branch (``indexed_forward_fn(params, indices, segment=k)``; see
            :func:`ekibnn.gauss_newton`): the Jacobian recipes build each segment's rows with
            its branch alone.
    """

    forward_fn: Callable
    obs: Any
    prior: Any
    estimate_noise: bool = False
    indexed_forward_fn: Callable | None = None
    likelihood: Any = None
    estimate_prior: bool = False
    prior_group: Any = None
    segments: tuple[int, ...] | None = None


class Fit(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        posterior: for ``"laplace"`` a :class:`ekibnn.posterior.LinearisedPosterior` (its
            predictions are linearised: never push its weight draws through the network),
            for ``"uki"`` a :class:`ekibnn.posterior.GaussianPosterior`, else an
            :class:`ekibnn.posterior.EnsemblePosterior`.
        history: the per-step infos of all stages, field by field (the last stage's fields; a
            field an earlier stage lacks is NaN there).
        num_steps: steps taken over all stages.
        state: the last stage's final state.
        noise: the final noise std (a float, the scalar noise's std) when it was estimated,
            else None.
        prior_scale: the factor the prior's stds were multiplied by when the prior scale was
            tuned, else None.
        converged: for ``"laplace"``, whether the MAP run converged (and the evidence
            settled); for ``"rml"``, whether every member converged; else None.
        problem: for the Jacobian recipes, the :class:`Problem` the posterior belongs to (with
            the fitted noise and prior scale: what :func:`self_check` needs); else None.
    """

    posterior: Any
    history: Any
    num_steps: int
    state: Any
    noise: float | None
    prior_scale: float | None = None
    converged: bool | None = None
    problem: Problem | None = None

    @property
    def particles(self) -> Any:
        """The ensemble of an ensemble posterior (see :attr:`posterior` for a Gaussian)."""
        if not hasattr(self.posterior, "particles"):
            from ekibnn.errors import input_error

            raise input_error(
                "Fit.particles",
                "an ensemble posterior",
                type(self.posterior).__name__,
                "use fit.posterior.sample(key, num) or fit.posterior.sample_outputs(fn, key, num)",
            )
        return self.posterior.particles

    def samples(self, key: Any = None, num: int | None = None) -> Any:
        """Parameter samples: the ensemble, or ``num`` draws of a Gaussian posterior (a
        linearised posterior refuses: see :class:`ekibnn.posterior.LinearisedPosterior`)."""
        if hasattr(self.posterior, "particles"):
            return self.posterior.particles
        return self.posterior.sample(key, num)


def fit(name: str, problem: Problem, key: Any, **settings: Any) -> Fit:
    """Run recipe ``name`` on ``problem`` from ``settings["ensemble_size"]`` prior draws.

    Args:
        name: a key of :data:`RECIPES`.
        problem: the inverse problem.
        key: a JAX PRNG key (the same key gives the same result).
        **settings: overrides of the recipe's settings (None means "the recipe's default").

    Returns:
        The :class:`Fit`.

    Raises:
        InputError: for an unknown recipe, unknown settings, or sizes a stage cannot take.
    """
    import jax

    from ekibnn import posterior as _posterior

    recipe = get(name)
    s = recipe.settings(**settings)
    _refuse_unused(recipe, settings)
    stages = recipe.stages
    if len(stages) > 1:
        if s["warm_start"] not in _ENSEMBLE_STAGES:
            from ekibnn.errors import input_error

            raise input_error(
                "warm_start",
                f"one of the ensemble stages {list(_ENSEMBLE_STAGES)}",
                repr(s["warm_start"]),
                "leave the default 'teki' (Tikhonov EKI)",
            )
        stages = (s["warm_start"], *stages[1:])
    key_init, key_run = jax.random.split(key)
    if stages[0] in _JACOBIAN_STAGES:
        return _jacobian_fit(stages[0], problem, key_init, key_run, s)
    if problem.likelihood is not None:
        from ekibnn.errors import input_error

        raise input_error(
            f"method={name!r} with a {problem.likelihood.name} likelihood",
            "a Jacobian recipe ('laplace', 'rml'); the ensemble recipes observe outputs with "
            "Gaussian noise",
            f"the ensemble recipe {name!r}",
            "pass method='laplace', or a Gaussian problem",
        )
    particles = problem.prior.sample(key_init, int(s["ensemble_size"]))
    obs, noise = problem.obs, None
    results = []
    for index, stage in enumerate(stages):
        key_stage = jax.random.fold_in(key_run, index)
        if stage in _ENSEMBLE_STAGES:
            current = problem._replace(obs=obs)
            result, obs, noise = _ensemble_stage(stage, current, key_stage, particles, s)
        elif stage == "uki":
            result = _uki_stage(problem._replace(obs=obs), key_stage, particles, s)
        else:
            result = _sampler_stage(stage, problem._replace(obs=obs), key_stage, particles, s)
        results.append(result)
        particles = result.particles
    last = results[-1]
    if stages[-1] == "uki":
        post = _posterior.GaussianPosterior(last.state.mean, last.state.cov)
    else:
        post = _posterior.EnsemblePosterior(last.particles)
    history = results[0].history
    for result in results[1:]:
        history = _join_histories(history, result.history)
    return Fit(post, history, sum(r.num_steps for r in results), last.state, noise)


# settings only one kind of recipe reads: passing one to the other kind is an error, not a
# silently ignored value
_ENSEMBLE_ONLY = (
    "inflation",
    "dt",
    "batch_size",
    "tau",
    "noise_rounds",
    "sampler_time",
    "max_sampler_steps",
    "warm_start",
)
_JACOBIAN_ONLY = ("restarts", "max_rounds")


def _refuse_unused(recipe: Recipe, settings: dict) -> None:
    """Refuse a setting (not None) that ``recipe`` would ignore."""
    unused = _ENSEMBLE_ONLY if recipe.jacobian else _JACOBIAN_ONLY
    given = [k for k in unused if settings.get(k) is not None]
    if given:
        from ekibnn.errors import input_error

        kind = "a Jacobian recipe" if recipe.jacobian else "an ensemble recipe"
        other = "an ensemble recipe (e.g. 'teki')" if recipe.jacobian else "method='laplace'"
        raise input_error(
            f"{', '.join(given)} with method={recipe.name!r}",
            f"only the settings {kind} reads (these are for {other})",
            f"{', '.join(f'{k}={settings[k]!r}' for k in given)}",
            f"drop {', '.join(given)}, or use {other}",
        )


# ------------------------------------------------------------------------------------- stages


def _jacobian_fit(stage: str, problem: Problem, key_init: Any, key_run: Any, s: dict) -> Fit:
    """The ``laplace`` and ``rml`` recipes (see :data:`RECIPES`); warns with
    :class:`ekibnn.errors.ConvergenceWarning` when the MAP (or the members) did not converge
    within ``num_steps`` or the evidence did not settle within ``max_rounds``."""
    import warnings

    import jax
    import numpy as np

    from ekibnn.errors import ConvergenceWarning, input_error
    from ekibnn.inversion import evidence, gauss_newton, rml
    from ekibnn.inversion.gauss_newton import best_start
    from ekibnn.run import run

    indexed = problem.indexed_forward_fn is not None
    forward = problem.indexed_forward_fn if indexed else problem.forward_fn
    steps = int(s["num_steps"])
    options = {
        "indexed_forward": indexed,
        "segments": problem.segments if indexed else None,
        "max_steps": steps,
    }
    if stage == "rml":
        if problem.likelihood is not None or problem.estimate_noise or problem.estimate_prior:
            raise input_error(
                "method='rml'",
                "a Gaussian likelihood with a known noise and prior (RML perturbs the data by "
                "the noise and draws every member from the prior)",
                "an unknown noise or prior scale, or a non-Gaussian likelihood",
                "pass the noise and prior scale, or use method='laplace' (evidence tuning)",
            )
        algo = rml(forward, problem.obs, problem.prior, **options)
        members = problem.prior.sample(key_init, int(s["ensemble_size"]))
        result = run(key_run, algo, members, steps, progress=s["progress"])
        converged = bool(result.state.converged.all())
        if not converged:
            share = float(result.state.converged.mean())
            warnings.warn(
                ConvergenceWarning(
                    f"rml: {100 * share:.0f}% of the members converged in num_steps={steps} "
                    "Levenberg-Marquardt steps; pass a larger num_steps"
                ),
                stacklevel=3,
            )
        post = algo.posterior(result.state)
        return Fit(
            post, result.history, result.num_steps, result.state, None, None, converged, problem
        )
    algo = gauss_newton(
        forward, problem.obs, problem.prior, likelihood=problem.likelihood, **options
    )
    starts = problem.prior.sample(key_init, int(s["restarts"]))
    tuned = problem.estimate_noise or problem.estimate_prior
    taken = 0
    if tuned and int(s["restarts"]) > 1:
        # the restarts at the starting scales pick the basin; the evidence rounds then refine
        # the best start alone (R = 1: a quarter of the cost per step for 4 restarts)
        first = run(key_run, algo, starts, steps, progress=s["progress"])
        starts = best_start(first.state)
        key_run, taken = jax.random.fold_in(key_run, 1), first.num_steps
    if tuned:
        algo = evidence(
            algo,
            tune_noise=problem.estimate_noise,
            tune_prior=problem.estimate_prior,
            group=problem.prior_group,
            max_rounds=int(s["max_rounds"]),
        )
    budget = steps * (int(s["max_rounds"]) if tuned else 1)
    result = run(key_run, algo, starts, budget, progress=s["progress"])
    post = algo.posterior(result.state)
    noise = prior_scale = None
    settled = True
    fitted_problem = problem
    if tuned:
        fitted = algo.fitted(result.state)
        settled = fitted.settled
        fitted_problem = problem._replace(obs=fitted.obs, prior=fitted.prior)
        if problem.estimate_noise:
            noise = fitted.noise_scale * float(np.asarray(problem.obs.std)[0])
        if problem.estimate_prior:
            prior_scale = float(fitted.prior_scale)
    converged = bool(post.converged) and settled
    if not converged:
        what = (
            f"the MAP did not converge in num_steps={steps} Levenberg-Marquardt steps"
            if not post.converged
            else f"the evidence did not settle in max_rounds={s['max_rounds']} rounds"
        )
        warnings.warn(
            ConvergenceWarning(
                f"laplace: {what} (|grad| = {float(post.grad_norm):.3g} in prior-whitened "
                "units); pass a larger num_steps / max_rounds, or check the model"
            ),
            stacklevel=3,
        )
    steps_taken = taken + result.num_steps
    return Fit(
        post,
        result.history,
        steps_taken,
        result.state,
        noise,
        prior_scale,
        converged,
        fitted_problem,
    )


def self_check(
    fit: Fit,
    fn: Callable,
    key: Any,
    *,
    num_members: int = 32,
    max_steps: int = 100,
    warn: bool = True,
) -> Any:
    """The fidelity self-check (:func:`ekibnn.inversion.self_check`) of a ``"laplace"`` fit:
    its linearised predictive std of ``fn`` against a small RML ensemble's on the same
    problem (fitted noise and prior scale), with the MAP's convergence.

    Args:
        fit: what :func:`fit` returned for ``"laplace"``.
        fn: the output to compare, ``fn(params) -> array`` of ONE member.
        key: a JAX PRNG key.
        num_members: RML members J (the verdict's band is ``3 / sqrt(2 (J - 1)) + 0.1``).
        max_steps: their Levenberg-Marquardt steps (they start at the MAP).
        warn: warn with :class:`ekibnn.errors.FidelityWarning` when the check fails.

    Returns:
        The :class:`ekibnn.inversion.FidelityCheck`.

    Raises:
        InputError: when ``fit`` has no linearised posterior (an ensemble or UKI recipe, where
            the check does not apply) or a non-Gaussian likelihood (RML perturbs Gaussian
            data).
    """
    from ekibnn.errors import input_error
    from ekibnn.inversion import self_check as _self_check
    from ekibnn.posterior import LinearisedPosterior

    if not isinstance(fit.posterior, LinearisedPosterior) or fit.problem is None:
        raise input_error(
            "self_check",
            "a fit of the 'laplace' recipe (a linearised posterior to check)",
            f"a fit with a {type(fit.posterior).__name__}",
            "the check compares the linearised Laplace posterior with RML; an ensemble's "
            "members already go through the nonlinear model, so there is nothing to check",
        )
    problem = fit.problem
    if problem.likelihood is not None:
        raise input_error(
            "self_check",
            "a Gaussian likelihood (RML perturbs the data by Gaussian noise)",
            f"a {problem.likelihood.name} likelihood",
            "no RML counterpart exists for it here; compare with a method='teki' fit instead",
        )
    return _self_check(
        fit.posterior,
        problem.forward_fn,
        problem.obs,
        problem.prior,
        fn,
        key,
        num_members=num_members,
        max_steps=max_steps,
        warn=warn,
    )


def _ensemble_algorithm(stage: str, problem: Problem, obs: Any, s: dict) -> Any:
    from ekibnn import minibatch, schedulers
    from ekibnn.inversion import eki, etki

    options: dict[str, Any] = {}
    batch = s["batch_size"]
    if batch is not None and int(batch) < obs.size:
        options["minibatch"] = minibatch.random(int(batch))
        if problem.indexed_forward_fn is not None:
            options["indexed_forward"] = True
    forward = problem.indexed_forward_fn if options.get("indexed_forward") else problem.forward_fn
    factory = etki if stage in ("etki", "tetki") else eki
    impose = stage in ("teki", "tetki")
    if stage == "eki-disc":
        scheduler = schedulers.stop_on_discrepancy(schedulers.constant(1.0), s["tau"])
    elif stage == "eki-t1":
        scheduler = schedulers.data_misfit(1.0)
    else:
        scheduler = schedulers.constant(s["dt"])
    inflation = 0.0 if stage in ("eki-disc", "eki-t1") else s["inflation"]
    return factory(
        forward,
        obs,
        problem.prior,
        scheduler=scheduler,
        impose_prior=impose,
        inflation=inflation,
        **options,
    )


def _ensemble_stage(stage: str, problem: Problem, key: Any, particles: Any, s: dict):
    """The ensemble stage: ``num_steps`` steps, in ``noise_rounds`` rounds with an EM update of
    an unknown noise std between them (Monte-Carlo EM: ``sigma^2 <- mean_{j,i} (y_i -
    G_j(theta)_i)^2``), and a degrees-of-freedom correction ``n / (n - dof)``,
    ``dof = min(J - 1, p, n / 2)`` at the end (the fit lies in the members' affine span)."""
    import jax

    from ekibnn.observations import Observation
    from ekibnn.run import run

    obs = problem.obs
    num_steps = int(s["num_steps"])
    if not problem.estimate_noise:
        algo = _ensemble_algorithm(stage, problem, obs, s)
        return run(key, algo, particles, num_steps, progress=s["progress"]), obs, None
    rounds = max(1, min(int(s["noise_rounds"]), num_steps))
    bounds = [round(num_steps * r / rounds) for r in range(rounds + 1)]
    chunk = max(b - a for a, b in itertools.pairwise(bounds))  # one compiled loop for all rounds
    results = []
    noise = float(obs.std[0])
    for r in range(rounds):
        algo = _ensemble_algorithm(stage, problem, obs, s)
        steps = bounds[r + 1] - bounds[r]
        result = run(jax.random.fold_in(key, r), algo, particles, steps, False, chunk_size=chunk)
        results.append(result)
        particles = result.particles
        noise = float(_em_noise(problem.forward_fn, obs, particles))
        obs = Observation(obs.y, noise)
    n, j, p = obs.size, int(s["ensemble_size"]), problem.prior.num_params
    dof = min(j - 1, p, n // 2)
    noise *= math.sqrt(n / (n - dof))
    obs = Observation(obs.y, noise)
    history = results[0].history
    for result in results[1:]:
        history = _join_histories(history, result.history)
    steps = sum(result.num_steps for result in results)
    return results[-1]._replace(history=history, num_steps=steps), obs, noise


def _em_noise_impl(forward_fn: Callable, obs: Any, particles: Any) -> Any:
    import equinox as eqx
    import jax.numpy as jnp

    outputs = eqx.filter_vmap(forward_fn)(particles)
    return jnp.sqrt(jnp.mean((obs.y - outputs) ** 2))


@functools.cache
def _em_noise_jit() -> Callable:
    import equinox as eqx

    return eqx.filter_jit(_em_noise_impl)


def _em_noise(forward_fn: Callable, obs: Any, particles: Any) -> Any:
    """The EM noise std ``sqrt(mean_{j,i} (y_i - G_j(theta)_i)^2)`` (compiled once per shapes)."""
    return _em_noise_jit()(forward_fn, obs, particles)


#: Largest parameter count the "uki" stage accepts: each iteration evaluates 2p + 1 sigma
#: points and factorises 2p x 2p matrices (about 16 p^3 flops).
UKI_MAX_PARAMS = 2000


def check_sizes(name: str, num_params: int, ensemble_size: int) -> None:
    """Raise :class:`ekibnn.InputError` before any work when recipe ``name`` cannot take a
    problem of ``num_params`` parameters with ``ensemble_size`` members."""
    from ekibnn.errors import input_error

    stages = get(name).stages
    if "uki" in stages and num_params > UKI_MAX_PARAMS:
        raise input_error(
            f"method={name!r}",
            f"at most {UKI_MAX_PARAMS} parameters (UKI keeps a p x p covariance and evaluates "
            "2p + 1 sigma points per iteration)",
            f"p = {num_params} parameters",
            "use a smaller network, or an ensemble recipe (cost linear in p)",
        )
    if "aldi" in stages and ensemble_size < num_params + 2:
        raise input_error(
            f"method={name!r}",
            f"ensemble_size >= p + 2 = {num_params + 2} (ALDI's finite-ensemble correction "
            "needs a non-degenerate ensemble covariance)",
            f"ensemble_size = {ensemble_size} for p = {num_params} parameters",
            f"pass ensemble_size >= {num_params + 2}, use a smaller network, or use "
            "method='eks' (no correction; works with J << p, in the ensemble's span)",
        )


def _sampler_stage(stage: str, problem: Problem, key: Any, particles: Any, s: dict):
    from ekibnn import schedulers
    from ekibnn.inversion import aldi, eks
    from ekibnn.run import run

    factory = aldi if stage == "aldi" else eks
    scheduler = schedulers.eks_stable(final_time=float(s["sampler_time"]))
    algo = factory(problem.forward_fn, problem.obs, problem.prior, scheduler=scheduler)
    return run(key, algo, particles, int(s["max_sampler_steps"]), progress=s["progress"])


def _uki_stage(problem: Problem, key: Any, particles: Any, s: dict):
    from ekibnn import schedulers
    from ekibnn.inversion import uki
    from ekibnn.run import run

    iterations = max(1, round(float(s["sampler_time"])))
    algo = uki(
        problem.forward_fn,
        problem.obs,
        problem.prior,
        scheduler=schedulers.tolerance(max_steps=iterations),
        start="ensemble",
    )
    return run(key, algo, particles, iterations, progress=s["progress"])


def _join_histories(first: Any, second: Any) -> Any:
    """Concatenate the per-step infos of two stages, field by field (the second stage's
    fields; a field missing from the first is NaN there)."""
    import numpy as np

    n_first = len(first.misfit)
    fields = {}
    for field in second._fields:
        tail = np.asarray(getattr(second, field))
        head = getattr(first, field, None)
        if head is None:
            head = np.full((n_first, *tail.shape[1:]), np.nan, np.result_type(tail, np.float32))
            tail = tail.astype(head.dtype)
        fields[field] = np.concatenate([np.asarray(head).astype(tail.dtype), tail])
    return type(second)(**fields)
