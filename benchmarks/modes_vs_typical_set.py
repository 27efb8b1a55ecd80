"""Why no mode-based posterior matches NUTS on friedman1: where NUTS's draws sit relative to
the posterior's modes, and what a mixture over modes gives.

On the fidelity suite's friedman1 posterior (:func:`posterior_fidelity.split_dataset`'s
standardised data, ``[10, 50, 1]`` tanh network, NTK parameterisation, raw ``N(0, 1)`` prior,
noise unknown with ``log sigma ~ N(-1, 1)``), in one process:

1. **NUTS** (BlackJAX, ``--chains`` x (``--warmup`` + ``--samples``)): the test RMSE of its
   posterior mean, its epistemic std and noise, and per draw the training misfit, ``|theta|^2``
   and the objective ``Phi = 0.5 |y - f|^2 / sigma^2 + 0.5 |theta|^2`` at NUTS's posterior-mean
   noise ``sigma``.
2. **Levenberg-Marquardt** (:func:`ekibnn.gauss_newton`, the same ``Phi``) started from
   ``--starts`` NUTS draws and from as many prior draws: the mode each reaches, with the same
   columns. If the draws' modes were better predictors than the prior draws', a better global
   phase (restarts, an ensemble stage) could close the gap; if they are the same modes, the
   posterior's mass is away from every mode and one mode's Laplace cannot match NUTS.
3. With ``--mixture K``: ``EKIRegressor()`` at its defaults with ``random_state`` 0..K-1 (K
   modes with their own evidence-tuned Laplace posteriors) and their equal-weight mixture
   (Eschenhagen et al. 2021) against the NUTS row.

Run from the repository root:

    python benchmarks/modes_vs_typical_set.py                 # steps 1 and 2 (~5 min)
    python benchmarks/modes_vs_typical_set.py --mixture 8     # and step 3 (~2 min more)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

sys.path.insert(0, str(Path(__file__).resolve().parent))

import posterior_fidelity as pf
from nuts_reference import gaussian_regression_logdensity, run_nuts

import ekibnn as ek
from ekibnn.bnn import MLP
from ekibnn.estimators import EKIRegressor

HIDDEN = (50,)  # EKIRegressor's default


def _rows(label, thetas, apply, data, sigma):
    """One line per flat point: objective, training misfit per datum, |theta|^2, test RMSE
    (the target's units)."""
    X, y = jnp.asarray(data["Xs_tr"]), jnp.asarray(data["ys_tr"])
    X_te = jnp.asarray(data["Xs_te"])
    for i, theta in enumerate(thetas):
        fit = apply(theta, X)
        objective = 0.5 * jnp.sum((fit - y) ** 2) / sigma**2 + 0.5 * jnp.sum(theta**2)
        rmse = np.sqrt(np.mean((np.asarray(apply(theta, X_te)) - data["ys_te"]) ** 2))
        print(
            f"| {label} {i} | {float(objective):.1f} | {float(jnp.mean((fit - y) ** 2)):.4f} "
            f"| {float(jnp.sum(theta**2)):.0f} | {rmse * data['y_std']:.3f} |"
        )


def modes(args, data) -> None:
    """Steps 1 and 2 of the module docstring."""
    X, y = jnp.asarray(data["Xs_tr"]), jnp.asarray(data["ys_tr"])
    model = MLP(jax.random.key(args.seed), X.shape[1], 1, HIDDEN, parameterization="ntk")
    flat, unravel = ravel_pytree(model)
    p = flat.size

    def apply(theta, inputs):
        return unravel(theta)(inputs)[:, 0]

    logdensity = gaussian_regression_logdensity(apply, X, y, None)
    init = jnp.concatenate(
        [
            jax.random.normal(jax.random.key(args.seed + 5), (args.chains, p)),
            jnp.full((args.chains, 1), -1.0),
        ],
        axis=1,
    )
    start = time.perf_counter()
    nuts = run_nuts(logdensity, init, jax.random.key(args.seed + 6), args.warmup, args.samples)
    draws = jnp.asarray(nuts.samples.reshape(-1, p + 1))
    preds = jax.vmap(lambda t: apply(t[:-1], jnp.asarray(data["Xs_te"])))(draws)
    sigma = float(jnp.exp(draws[:, -1]).mean())
    rmse = np.sqrt(np.mean((np.asarray(preds.mean(0)) - data["ys_te"]) ** 2)) * data["y_std"]
    print(
        f"NUTS {args.chains} x ({args.warmup} + {args.samples}), {time.perf_counter() - start:.0f}"
        f" s, {nuts.divergences} divergences: posterior-mean test RMSE {rmse:.3f}, epistemic std"
        f" {float(preds.std(0).mean()) * data['y_std']:.3f}, noise {sigma * data['y_std']:.3f}"
        f" (the target's units); p = {p}\n"
    )
    print("| point | objective Phi | train misfit / datum | abs(theta)^2 | test RMSE |")
    print("|---|---|---|---|---|")
    picks = np.linspace(0, draws.shape[0] - 1, args.starts).astype(int)
    nuts_points = draws[picks, :-1]
    _rows("NUTS draw", nuts_points, apply, data, sigma)
    solver = ek.gauss_newton(
        lambda theta: apply(theta, X),
        ek.Observation(y, sigma),
        ek.GaussianPrior(jnp.zeros(p), 1.0),
        max_steps=args.lm_steps,
    )
    for label, starts in (
        ("LM from NUTS draw", nuts_points),
        ("LM from prior draw", jax.random.normal(jax.random.key(args.seed + 9), (args.starts, p))),
    ):
        key = jax.random.key(args.seed + 1)
        result = ek.run(key, solver, starts, args.lm_steps, progress=False)
        _rows(label, result.state.x, apply, data, sigma)
        converged = int(result.state.converged.sum())
        print(f"| ({label}: {converged} of {args.starts} converged) | | | | |")


def mixture(args, data) -> None:
    """Step 3 of the module docstring."""
    y = data["y_te"]
    means, epis, noises = [], [], []
    print("\n| EKIRegressor(random_state=s) | test RMSE | epistemic std | NLL | noise_ |")
    print("|---|---|---|---|---|")
    for s in range(args.mixture):
        reg = EKIRegressor(random_state=s).fit(data["X_tr"], data["y_tr"])
        mean, std = reg.predict(data["X_te"], return_std=True)
        epi = np.sqrt(np.maximum(std**2 - reg.noise_**2, 0.0))
        nll = np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5 * (y - mean) ** 2 / std**2)
        rmse = np.sqrt(np.mean((mean - y) ** 2))
        print(f"| s = {s} | {rmse:.3f} | {epi.mean():.3f} | {nll:.3f} | {reg.noise_:.3f} |")
        means.append(mean), epis.append(epi), noises.append(reg.noise_)
    M, E, N = np.array(means), np.array(epis), np.array(noises)[:, None]
    for k in sorted({2, args.mixture // 2, args.mixture} - {0, 1}):
        mean = M[:k].mean(0)
        epi = np.sqrt((E[:k] ** 2 + M[:k] ** 2).mean(0) - mean**2)  # the mixture's spread
        std = np.sqrt(E[:k] ** 2 + N[:k] ** 2)
        log_pdf = -0.5 * np.log(2 * np.pi * std**2) - 0.5 * (y - M[:k]) ** 2 / std**2
        nll = -np.mean(np.logaddexp.reduce(log_pdf, axis=0) - np.log(k))
        rmse = np.sqrt(np.mean((mean - y) ** 2))
        print(f"| mixture of {k} | {rmse:.3f} | {epi.mean():.3f} | {nll:.3f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--starts", type=int, default=4, help="LM starts of each kind")
    parser.add_argument("--lm-steps", type=int, default=400)
    parser.add_argument("--mixture", type=int, default=0, help="K estimator fits to mix (0: no)")
    args = parser.parse_args()
    data = pf.split_dataset("friedman1", args.seed)
    modes(args, data)
    if args.mixture:
        mixture(args, data)


if __name__ == "__main__":
    main()
