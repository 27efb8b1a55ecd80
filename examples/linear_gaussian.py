"""EKI as a posterior sampler on a linear-Gaussian inverse problem, checked against the
closed-form posterior. Run: python examples/linear_gaussian.py [--ensemble 2000] [--dim 5]"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import ekibnn as ek


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", type=int, default=2000, help="ensemble size J")
    parser.add_argument("--dim", type=int, default=5, help="number of parameters p")
    parser.add_argument("--obs", type=int, default=20, help="number of observations m")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    H = rng.normal(size=(args.obs, args.dim)).astype(np.float32)
    truth = rng.normal(size=args.dim)
    y = (H @ truth + 0.3 * rng.normal(size=args.obs)).astype(np.float32)

    obs = ek.Observation(jnp.asarray(y), 0.3)
    prior = ek.GaussianPrior(jnp.zeros(args.dim), 1.0)
    algo = ek.eki(lambda theta: jnp.asarray(H) @ theta, obs, prior=prior)
    key = jax.random.key(args.seed)
    result = ek.run(key, algo, prior.sample(key, args.ensemble), num_steps=200, progress=False)

    post_cov = np.linalg.inv(H.T @ H / 0.09 + np.eye(args.dim))
    post_mean = post_cov @ H.T @ y / 0.09
    ens = np.asarray(result.particles, np.float64)
    err_mean = np.abs(ens.mean(0) - post_mean).max() / np.sqrt(np.diag(post_cov)).max()
    err_cov = np.abs(np.cov(ens.T) - post_cov).max() / np.abs(post_cov).max()
    print(f"{result.num_steps} steps to T = {result.history.time[-1]:.3f}")
    print(f"max |mean error| / posterior std: {err_mean:.3f}")
    print(f"max |cov error| / max |cov|:     {err_cov:.3f}")
    return {"steps": result.num_steps, "mean_error": err_mean, "cov_error": err_cov}


if __name__ == "__main__":
    main()
