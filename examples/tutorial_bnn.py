"""The tutorial BNN (sine regression, [1, 20, 20, 1] tanh) fitted with EKI, written out with
the library's parts instead of the `ekibnn demo` command. Run:

    python examples/tutorial_bnn.py [--ensemble 1000] [--steps 500] [--out out/example]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import ekibnn as ek
from ekibnn import bnn, metrics
from ekibnn.datasets import sine_truth, tutorial_sine


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="folder for predictive.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, y = tutorial_sine(seed=args.seed)  # 500 points, noise 0.1
    key_model, key_prior, key_run = jax.random.split(jax.random.key(args.seed), 3)
    model = bnn.MLP(key_model, 1, 1, hidden=(20, 20), parameterization="ntk")
    prior = ek.GaussianPrior.like(model, std=1.0)
    likelihood = bnn.regression(x, y, noise_std=0.1)
    algo = ek.eki(
        likelihood.indexed_forward_fn,
        likelihood.obs,
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
        inflation=0.005,
        minibatch=ek.minibatch.random(args.batch),
        indexed_forward=True,
    )
    result = ek.run(
        key_run, algo, prior.sample(key_prior, args.ensemble), args.steps, progress=False
    )

    grid = np.linspace(-2.5, 2.5, 201, dtype=np.float32)
    preds = np.asarray(bnn.ensemble_apply(result.particles, jnp.asarray(grid)[:, None])[..., 0])
    pred = bnn.predictive(preds, 0.1)
    inside = np.abs(grid) <= 2
    rmse = float(metrics.rmse(sine_truth(grid)[inside], np.asarray(pred.mean)[inside]))
    print(
        f"RMSE vs truth on |x| <= 2: {rmse:.4f}; "
        f"mean epistemic std there: {float(np.mean(np.asarray(pred.epistemic_std)[inside])):.4f}"
    )
    if args.out is not None:
        from ekibnn import plotting

        args.out.mkdir(parents=True, exist_ok=True)
        lo, hi = bnn.predictive_interval(preds, 0.1, 0.95)
        epi = (pred.mean - 2 * pred.epistemic_std, pred.mean + 2 * pred.epistemic_std)
        plotting.plot_predictive(
            args.out / "predictive.png",
            grid,
            np.asarray(pred.mean),
            tuple(map(np.asarray, epi)),
            (np.asarray(lo), np.asarray(hi)),
            x[:, 0],
            y,
            sine_truth(grid),
        )
    return {"rmse": rmse, "steps": result.num_steps}


if __name__ == "__main__":
    main()
