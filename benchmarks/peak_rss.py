"""Peak resident memory of an EKI run at J = 100 members, m = 10^5 observations and
p = 10^3 parameters (issue #13's memory target: under 1 GiB), with the cheap O(m) forward map
of ``update_scaling.py`` (a gather and a tanh), 20 compiled steps. Run from the repository
root (one process per measurement: the peak is the process's):

    python benchmarks/peak_rss.py
    python benchmarks/peak_rss.py --members 100 --observations 100000 --params 1000
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp

import ekibnn as ek


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--params", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    m, p = args.observations, args.params
    index = jax.random.randint(jax.random.key(1), (m,), 0, p)
    obs = ek.Observation(jnp.tanh(jax.random.normal(jax.random.key(2), (m,))), 0.1)
    prior = ek.GaussianPrior(jnp.zeros(p), 1.0)
    algo = ek.eki(
        lambda theta: jnp.tanh(theta[index]),
        obs,
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
    )
    start = time.perf_counter()
    members = prior.sample(jax.random.key(3), args.members)
    result = ek.run(jax.random.key(0), algo, members, args.steps, progress=False)
    jax.block_until_ready(result.particles)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(
        f"J={args.members} m={m} p={p}: {result.num_steps} steps in "
        f"{time.perf_counter() - start:.1f} s, peak RSS {peak:.2f} GiB"
    )


if __name__ == "__main__":
    main()
