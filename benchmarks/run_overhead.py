"""What the driver costs: `ek.run` with and without the progress bar (host updates at chunk
boundaries) and with checkpoints, against a Python loop that calls the jitted step once per
iteration — the structure `run` replaces. Same algorithm, key and step count in one process;
compilation excluded (each variant is warmed up first). Run:

    python benchmarks/run_overhead.py [--steps 2000] [--ensemble 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import ekibnn as ek


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--ensemble", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    m, p = 50, 20
    H = jnp.asarray(rng.normal(size=(m, p)), jnp.float32)
    obs = ek.Observation(jnp.asarray(rng.normal(size=m), jnp.float32), 0.5)
    algo = ek.eki(lambda th: jnp.tanh(H @ th), obs, scheduler=ek.schedulers.constant(0.1))
    x0 = jax.random.normal(jax.random.key(1), (args.ensemble, p))
    key = jax.random.key(0)
    tmp = Path(tempfile.mkdtemp())

    def python_loop():
        step = jax.jit(algo.step)
        state = algo.init(x0)
        for n in range(args.steps):
            state, _ = step(jax.random.fold_in(key, n), state)
        return jax.block_until_ready(state.particles)

    def checkpointed():
        path = tmp / "ckpt.npz"
        path.unlink(missing_ok=True)
        return ek.run(
            key,
            algo,
            x0,
            args.steps,
            progress=False,
            checkpoint_path=path,
            checkpoint_every=max(1, args.steps // 10),
        ).particles

    variants = {
        "python loop, jitted step": python_loop,
        "ek.run, no progress (1 chunk)": lambda: (
            ek.run(key, algo, x0, args.steps, progress=False).particles
        ),
        "ek.run, progress bar (20 chunks)": lambda: (
            ek.run(key, algo, x0, args.steps, progress=True).particles
        ),
        "ek.run, 10 checkpoints": checkpointed,
    }
    times = {}
    for name, fn in variants.items():
        jax.block_until_ready(fn())  # compile
        best = np.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best = min(best, time.perf_counter() - start)
        times[name] = best
    base = times["python loop, jitted step"]
    print(f"\nJ = {args.ensemble}, m = {m}, p = {p}, {args.steps} steps (best of {args.repeats})")
    print("| driver | wall (s) | speed-up vs Python loop | per step (us) |")
    print("|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {base / t:.2f}x | {1e6 * t / args.steps:.1f} |")


if __name__ == "__main__":
    main()
