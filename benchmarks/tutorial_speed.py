"""Tutorial problem: ekibnn's compiled `tutorial` configuration against a straightforward
implementation of the notebook's algorithm, in one process, same settings and seed.

(a) baseline, structured as the notebook is: a jitted update called from a Python loop, the
    parameters flattened and unflattened on every step, the minibatch drawn on the host with
    NumPy and copied to the device each step, the Kalman gain solved in batch space.
(b) ekibnn: `ekibnn.demo.run_demo("tutorial")`, the whole loop compiled.

Both are timed with compilation included and without it (the baseline after its first step;
ekibnn on a second run of the same compiled loop). Measured on an H200 by
`benchmarks/device_check.py` (J = 1000, 500 steps): notebook-style loop 3.85 s with its
compilation; ekibnn 3.94 s with compilation (0.98x), of which 2.0 s compiling, and 0.18 s for
the 500 compiled steps (the baseline's time without compilation was not measured there).

Also reports achieved GFLOP/s of one step (XLA's own flop count) against this machine's
measured float32 matmul peak. Run:

    python benchmarks/tutorial_speed.py            # J = 1000, 500 steps (the tutorial)
    python benchmarks/tutorial_speed.py --quick    # J = 100, 50 steps
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import ekibnn as ek
from ekibnn.bnn.models import MLP, ensemble_apply
from ekibnn.datasets import sine_truth, tutorial_sine
from ekibnn.demo import CONFIGS, run_demo, setup_demo
from ekibnn.run import blas_limits

RESULTS = Path(__file__).parent / "results"


def baseline(j: int, steps: int, seed: int = 0) -> tuple[float, float, float]:
    """The notebook's structure. Returns (wall seconds, wall seconds after the first step, i.e.
    without compilation, RMSE against the truth on |x| <= 2)."""
    cfg = CONFIGS["tutorial"]
    x, y = tutorial_sine(seed=seed, n=cfg.num_train)
    key_model, key_prior, key_run = jax.random.split(jax.random.key(seed), 3)
    model = MLP(key_model, 1, 1, cfg.hidden)
    particles = ek.GaussianPrior.like(model).sample(key_prior, j)
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], particles))
    flat_all = jax.vmap(lambda m: ravel_pytree(m)[0])
    unflat_all = jax.vmap(unravel)
    r = cfg.noise_std**2

    @jax.jit
    def update(key, members, xb, yb):
        k1, k2 = jax.random.split(key)
        theta = flat_all(members)
        theta = theta + cfg.inflation * jax.random.normal(k1, theta.shape)
        g = ensemble_apply(unflat_all(theta), xb)[..., 0]  # (J, b)
        d = yb + np.sqrt(r) * jax.random.normal(k2, g.shape) - g
        dt, dg = theta - theta.mean(0), g - g.mean(0)
        c_xy = dt.T @ dg / (j - 1)  # (p, b)
        c_yy = dg.T @ dg / (j - 1)  # (b, b)
        gain_d = jnp.linalg.solve(c_yy + r * jnp.eye(c_yy.shape[0]), d.T)  # (b, J)
        return theta + (c_xy @ gain_d).T

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(cfg.num_train, cfg.batch_size, replace=False)  # host-side batch
        theta = update(jax.random.fold_in(key_run, step), particles, x[idx], y[idx])
        particles = unflat_all(theta)  # unflatten every step, as the notebook does
        if step == 0:
            jax.block_until_ready(particles)
            compiled = time.perf_counter()
    jax.block_until_ready(particles)
    end = time.perf_counter()
    wall, warm = end - start, end - compiled
    grid = np.linspace(-2, 2, 321, dtype=np.float32)
    mean = np.asarray(ensemble_apply(particles, jnp.asarray(grid)[:, None])[..., 0]).mean(0)
    return wall, warm, float(np.sqrt(np.mean((mean - sine_truth(grid)) ** 2)))


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_flops(j: int) -> float:
    """Floating-point work of one tutorial step, counted by hand from the shapes (XLA's own
    count would include the not-taken failed-member branch, a (J, J) x (J, p) product):
    forward 2 J b sum(fan_in fan_out), Gram 2 J b^2, C^{G theta} 2 J b p, two triangular solves
    2 b^2 p, gain application 2 J b p."""
    cfg = CONFIGS["tutorial"]
    sizes = (1, *cfg.hidden, 1)
    layer = sum(a * b for a, b in itertools.pairwise(sizes))
    p = sum(a * b + b for a, b in itertools.pairwise(sizes))
    b = cfg.batch_size
    return 2.0 * j * b * layer + 2.0 * j * b * b + 4.0 * j * b * p + 2.0 * b * b * p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    j, steps = int(1000 * scale), int(500 * scale)

    # The baseline gets the same single-threaded BLAS that ek.run sets by default, so the ratio
    # measures the loop structure, not thread oversubscription.
    with blas_limits(1):
        base_wall, base_warm, base_rmse = baseline(j, steps, args.seed)
    report = run_demo("tutorial", seed=args.seed, progress=False, scale=scale)
    # rmse in run_demo is on |x| <= 2 of a 401-point grid over [-2.5, 2.5]: the same region
    ours_wall, ours_rmse = report["wall_time_s"], report["rmse"]
    # the same compiled loop again (one algo object, run twice): the steps without compilation;
    # the baseline's counterpart is its wall time after the first (compiling) step
    setup = setup_demo("tutorial", seed=args.seed, scale=scale)
    ek.run(setup.key, setup.algo, setup.particles, setup.config.num_steps, progress=False)
    start = time.perf_counter()
    warm = ek.run(setup.key, setup.algo, setup.particles, setup.config.num_steps, progress=False)
    jax.block_until_ready(warm.particles)
    ours_warm = time.perf_counter() - start
    flops = step_flops(j)
    peak = matmul_peak()
    achieved = flops * steps / ours_warm / 1e9
    result = {
        "J": j,
        "steps": steps,
        "baseline_wall_s": base_wall,
        "baseline_rmse": base_rmse,
        "ekibnn_wall_s": ours_wall,
        "ekibnn_rmse": ours_rmse,
        "speedup": base_wall / ours_wall,
        "baseline_wall_s_without_compile": base_warm,
        "ekibnn_wall_s_without_compile": ours_warm,
        "speedup_without_compile": base_warm / ours_warm,
        "step_gflop": flops / 1e9,
        "achieved_gflops": achieved,
        "matmul_peak_gflops": peak,
        "fraction_of_peak": achieved / peak,
    }
    print("| implementation | wall (s, compile incl.) | RMSE vs truth, abs(x) <= 2 |")
    print("|---|---|---|")
    print(f"| notebook-style loop | {base_wall:.2f} | {base_rmse:.4f} |")
    print(f"| ekibnn `tutorial` | {ours_wall:.2f} | {ours_rmse:.4f} |")
    print(
        f"speed-up: {result['speedup']:.2f}x with compilation, "
        f"{result['speedup_without_compile']:.2f}x without ({base_warm:.2f} s vs "
        f"{ours_warm:.2f} s); one step = {flops / 1e9:.3f} GFLOP; "
        f"achieved (without compilation) {achieved:.2f} GFLOP/s = {100 * achieved / peak:.1f}% "
        "of the measured "
        f"matmul peak {peak:.1f} GFLOP/s"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tutorial_speed.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
