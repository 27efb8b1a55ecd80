"""BlackJAX NUTS reference posteriors for the benchmarks (the gold standard ekibnn is compared
with). Several chains, Stan-style window adaptation of step size and diagonal mass matrix,
R-hat and effective sample sizes reported.

R-hat on the *parameters* of a neural network is not a convergence diagnostic: the posterior
is invariant under permutations of hidden units and sign flips, so chains that sample the same
predictive distribution from different symmetric modes have weight-space R-hat far above 1.
Pass ``predict_fn`` to get R-hat and ESS of the *predictions* (functions of the parameters that
are invariant under those symmetries): that is the number to check (< 1.01 converged, < 1.1
usable).

Used by `posterior_fidelity.py`, `uci_style.py` and `bpinn.py`; not part of the library (BlackJAX
is a benchmark-only dependency: `pip install -e ".[bench]"`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.diagnostics import effective_sample_size, potential_scale_reduction


class NutsResult(NamedTuple):
    samples: np.ndarray  # (chains, draws, p)
    max_rhat: float  # over parameters (meaningless for networks: see the module docstring)
    min_ess: float
    divergences: int
    mean_acceptance: float
    wall_time_s: float  # compilation included
    pred_max_rhat: float = float("nan")  # over the predict_fn outputs (NaN without one)
    pred_min_ess: float = float("nan")


def prediction_diagnostics(preds: np.ndarray) -> tuple[float, float]:
    """Max split-free R-hat and min ESS over the points of ``preds`` ``(chains, draws, n)``."""
    preds = jnp.asarray(preds)
    rhat = np.asarray(potential_scale_reduction(preds, chain_axis=0, sample_axis=1))
    ess = np.asarray(effective_sample_size(preds, chain_axis=0, sample_axis=1))
    return float(np.nanmax(rhat)), float(np.nanmin(ess))


def run_nuts(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    initial_positions: jax.Array,  # (chains, p)
    key: jax.Array,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    target_acceptance: float = 0.8,
    predict_fn: Callable[[jax.Array], jax.Array] | None = None,
) -> NutsResult:
    """Adapt and sample ``chains`` independent NUTS chains (vmapped) on a flat parameter
    vector. Returns the draws with convergence diagnostics; with ``predict_fn(theta) -> (n,)``
    also R-hat / ESS of the predictions (the meaningful ones for a network)."""

    def one_chain(key, position):
        warm_key, sample_key = jax.random.split(key)
        adaptation = blackjax.window_adaptation(
            blackjax.nuts, logdensity_fn, target_acceptance_rate=target_acceptance
        )
        (state, params), _ = adaptation.run(warm_key, position, num_steps=num_warmup)
        kernel = blackjax.nuts(logdensity_fn, **params).step

        def body(state, key):
            state, info = kernel(key, state)
            return state, (state.position, info.is_divergent, info.acceptance_rate)

        _, (draws, divergent, acceptance) = jax.lax.scan(
            body, state, jax.random.split(sample_key, num_samples)
        )
        return draws, divergent.sum(), acceptance.mean()

    chains = initial_positions.shape[0]
    start = time.perf_counter()
    draws, divergent, acceptance = jax.jit(jax.vmap(one_chain))(
        jax.random.split(key, chains), initial_positions
    )
    jax.block_until_ready(draws)
    wall = time.perf_counter() - start
    draws = np.asarray(draws)
    rhat = np.asarray(potential_scale_reduction(jnp.asarray(draws), chain_axis=0, sample_axis=1))
    ess = np.asarray(effective_sample_size(jnp.asarray(draws), chain_axis=0, sample_axis=1))
    pred_rhat = pred_ess = float("nan")
    if predict_fn is not None:
        chains_, num = draws.shape[:2]
        flat = jnp.asarray(draws.reshape(chains_ * num, -1))
        preds = jax.jit(jax.vmap(predict_fn))(flat)
        pred_rhat, pred_ess = prediction_diagnostics(np.asarray(preds).reshape(chains_, num, -1))
    return NutsResult(
        samples=draws,
        max_rhat=float(np.nanmax(rhat)),
        min_ess=float(np.nanmin(ess)),
        divergences=int(np.asarray(divergent).sum()),
        mean_acceptance=float(np.asarray(acceptance).mean()),
        wall_time_s=wall,
        pred_max_rhat=pred_rhat,
        pred_min_ess=pred_ess,
    )


def gaussian_regression_logdensity(
    apply_flat,
    X,
    y,
    noise_std,
    prior_std=1.0,
    log_noise_prior=(-1.0, 1.0),
    log_prior_std_prior=(0.0, 1.0),
):
    """log N(y | f(X; theta), noise^2 I) + log N(theta | 0, prior_std^2 I) for flat theta.

    ``noise_std=None``: the noise is unknown and the entry after the network's ``p`` is
    ``log noise_std`` with prior ``N(log_noise_prior[0], log_noise_prior[1]^2)``.
    ``prior_std=None`` (with ``noise_std=None``): the prior std is unknown too, the full-Bayes
    counterpart of a type-II (evidence) fit of both: the last entry is ``log s`` with prior
    ``N(log_prior_std_prior[0], log_prior_std_prior[1]^2)``, and the network's parameters are
    ``s eps`` with ``eps ~ N(0, I)`` the first ``p`` entries (non-centred, so that NUTS does
    not meet the funnel of a centred scale). ``apply_flat`` always gets the network's
    parameters: :func:`network_params` of theta."""
    if noise_std is not None:
        if prior_std is None:
            raise ValueError("prior_std=None (unknown) needs noise_std=None (unknown) too")

        def logdensity(theta):
            resid = (y - apply_flat(theta, X)) / noise_std
            return -0.5 * jnp.sum(resid**2) - 0.5 * jnp.sum((theta / prior_std) ** 2)

        return logdensity
    loc, scale = log_noise_prior
    s_loc, s_scale = log_prior_std_prior

    def logdensity_unknown_noise(theta):
        k = 2 if prior_std is None else 1  # trailing hyperparameter entries
        weights, log_noise = theta[:-k], theta[-k]
        resid = (y - apply_flat(network_params(theta, prior_std), X)) * jnp.exp(-log_noise)
        out = -0.5 * jnp.sum(resid**2) - y.shape[0] * log_noise
        out = out - 0.5 * ((log_noise - loc) / scale) ** 2
        if prior_std is None:  # the weights are eps ~ N(0, I); s enters through the network
            return out - 0.5 * jnp.sum(weights**2) - 0.5 * ((theta[-1] - s_loc) / s_scale) ** 2
        return out - 0.5 * jnp.sum((weights / prior_std) ** 2)

    return logdensity_unknown_noise


def network_params(theta, prior_std):
    """The network's parameters in a flat theta of :func:`gaussian_regression_logdensity`
    with the noise unknown: ``theta[:-1]``, or ``exp(theta[-1]) theta[:-2]`` when the prior
    std is unknown too (``prior_std=None``). Works on a batch of thetas (leading axes)."""
    if prior_std is None:
        return jnp.exp(theta[..., -1:]) * theta[..., :-2]
    return theta[..., :-1]
