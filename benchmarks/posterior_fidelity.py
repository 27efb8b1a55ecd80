"""Posterior fidelity on the tutorial problem: ekibnn's ensembles against BlackJAX NUTS on the
SAME posterior (same data, network, prior and noise), in one process.

For each parameterisation used by an ekibnn configuration ("standard": the tutorial's raw
N(0, 1) weights; "ntk": N(0, 1) weights scaled by 1/sqrt(fan_in) in the forward pass) NUTS is run
on that model's posterior (4 chains, window adaptation; R-hat reported). Per method it reports:
RMSE of the predictive mean against the truth on |x| <= 2, mean epistemic std inside |x| <= 2
and at 2 < |x| <= 2.5, the ratio of the epistemic std to NUTS's, 95% coverage and NLL of
held-out noisy data, and wall time (ratio to NUTS). Saves a figure with each method's bands
beside NUTS's. Run:

    python benchmarks/posterior_fidelity.py           # full size (several minutes)
    python benchmarks/posterior_fidelity.py --quick   # tiny, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from nuts_reference import gaussian_regression_logdensity, run_nuts

import ekibnn as ek
from ekibnn import metrics
from ekibnn.bnn.likelihoods import regression
from ekibnn.bnn.models import MLP, ensemble_apply
from ekibnn.bnn.predictive import predictive_interval
from ekibnn.datasets import sine_truth, tutorial_sine
from ekibnn.demo import CONFIGS

RESULTS = Path(__file__).parent / "results"
GRID = np.linspace(-2.5, 2.5, 201, dtype=np.float32)
INSIDE = np.abs(GRID) <= 2.0


def summarise(name, grid_preds, test_preds, y_test, noise, wall):
    lo, hi = predictive_interval(test_preds, noise, 0.95)
    epi = grid_preds.std(0)
    return {
        "method": name,
        "rmse": float(np.sqrt(np.mean((grid_preds.mean(0) - sine_truth(GRID))[INSIDE] ** 2))),
        "epi_in": float(epi[INSIDE].mean()),
        "epi_out": float(epi[~INSIDE].mean()),
        "epi_edge": float(epi[[0, -1]].mean()),
        "coverage_95": float(metrics.interval_coverage(y_test, lo, hi)),
        "nll": float(metrics.gaussian_nll(y_test, test_preds, noise)),
        "wall_s": wall,
        "_epi": epi,
        "_mean": grid_preds.mean(0),
    }


def ekibnn_methods(quick: bool):
    """name -> (parameterisation, callable(particles0, likelihood, prior, key) -> particles)."""
    methods = {}
    for cfg_name in ("tutorial", "default"):
        cfg = CONFIGS[cfg_name].scaled(0.1 if quick else 1.0)

        def fit(particles, lik, prior, key, cfg=cfg):
            algo = ek.eki(
                lik.indexed_forward_fn,
                lik.obs,
                prior=prior,
                scheduler=ek.schedulers.constant(cfg.dt),
                inflation=cfg.inflation,
                batch_size=cfg.batch_size,
                indexed_forward=True,
            )
            return ek.run(key, algo, particles, cfg.num_steps, progress=False).particles

        methods[f"eki:{cfg_name}"] = (cfg.parameterization, cfg.ensemble_size, fit)
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    noise = 0.1
    x, y = tutorial_sine(seed=args.seed, n=500, noise=noise)
    x_test, y_test = tutorial_sine(seed=args.seed + 10_000, n=500, noise=noise)
    rows, nuts_rows = [], {}
    methods = ekibnn_methods(args.quick)
    for param in sorted({m[0] for m in methods.values()}):
        model = MLP(jax.random.key(args.seed), 1, 1, (20, 20), parameterization=param)
        flat0, unravel = ravel_pytree(model)
        apply_flat = lambda theta, X, u=unravel: u(theta)(X)[:, 0]  # noqa: E731
        logdensity = gaussian_regression_logdensity(
            apply_flat, jnp.asarray(x), jnp.asarray(y), noise
        )
        chains = 2 if args.quick else 4
        init = jax.random.normal(jax.random.key(args.seed + 1), (chains, flat0.size))
        nuts = run_nuts(
            logdensity,
            init,
            jax.random.key(args.seed + 2),
            num_warmup=100 if args.quick else 1000,
            num_samples=100 if args.quick else 1000,
        )
        draws = nuts.samples.reshape(-1, flat0.size)[:: (4 if not args.quick else 1)]
        preds = jax.jit(jax.vmap(apply_flat, in_axes=(0, None)))
        row = summarise(
            f"nuts:{param}",
            np.asarray(preds(draws, GRID[:, None])),
            np.asarray(preds(draws, x_test)),
            y_test,
            noise,
            nuts.wall_time_s,
        )
        row |= {"max_rhat": nuts.max_rhat, "min_ess": nuts.min_ess, "divergences": nuts.divergences}
        nuts_rows[param] = row
        rows.append(row)
        print(
            f"NUTS ({param}): {nuts.wall_time_s:.1f}s, max R-hat {nuts.max_rhat:.3f}, "
            f"min ESS {nuts.min_ess:.0f}, divergences {nuts.divergences}",
            flush=True,
        )
    lik = regression(x, y, noise)
    for name, (param, j, fit) in methods.items():
        model = MLP(jax.random.key(args.seed), 1, 1, (20, 20), parameterization=param)
        prior = ek.GaussianPrior.like(model)
        particles = prior.sample(jax.random.key(args.seed + 3), j)
        start = time.perf_counter()
        final = fit(particles, lik, prior, jax.random.key(args.seed + 4))
        jax.block_until_ready(final)
        wall = time.perf_counter() - start
        apply = jax.jit(lambda p, X: ensemble_apply(p, X)[..., 0])
        row = summarise(
            name,
            np.asarray(apply(final, jnp.asarray(GRID)[:, None])),
            np.asarray(apply(final, jnp.asarray(x_test))),
            y_test,
            noise,
            wall,
        )
        ref = nuts_rows[param]
        row |= {
            "reference": ref["method"],
            "epi_ratio_in": row["epi_in"] / ref["epi_in"],
            "epi_ratio_out": row["epi_out"] / ref["epi_out"],
            "rmse_ratio": row["rmse"] / ref["rmse"],
            "speedup": ref["wall_s"] / wall,
        }
        rows.append(row)
    print(
        "\n| method | RMSE | epi std in | epi std out | epi ratio in/out vs NUTS | "
        "coverage 95 | NLL | wall (s) | NUTS time / time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = (
            f"{r['epi_ratio_in']:.2f} / {r['epi_ratio_out']:.2f}"
            if "epi_ratio_in" in r
            else "1 / 1"
        )
        print(
            f"| {r['method']} | {r['rmse']:.4f} | {r['epi_in']:.4f} | {r['epi_out']:.4f} | "
            f"{ratio} | {r['coverage_95']:.3f} | {r['nll']:.3f} | {r['wall_s']:.1f} | "
            f"{r.get('speedup', 1.0):.1f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "posterior_fidelity.json").write_text(
        json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], indent=1)
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3), sharey=True)
    for ax, r in zip(np.atleast_1d(axes), rows, strict=True):
        ax.fill_between(GRID, r["_mean"] - 2 * r["_epi"], r["_mean"] + 2 * r["_epi"], alpha=0.4)
        ax.plot(GRID, r["_mean"], "r", lw=1)
        ax.plot(GRID, sine_truth(GRID), "k--", lw=0.8)
        ax.set_title(r["method"], fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "posterior_fidelity.png", dpi=120)
    print(f"wrote {RESULTS / 'posterior_fidelity.png'}")


if __name__ == "__main__":
    main()
