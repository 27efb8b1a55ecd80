"""One prepared accelerator check: does the compiled EKI path run on the GPU, is it
deterministic there, and how fast is it against baselines measured in the same process?

Sections (each prints one JSON line and is guarded, so one failure does not hide the rest):

1. ``env``: JAX version, backend, device.
2. ``matmul_peak``: float32 matmul GFLOP/s at JAX's default precision and at ``"highest"``
   (on Ampere/Hopper the default may use TF32 tensor cores), and bfloat16.
3. ``tutorial``: the notebook-structured loop of ``benchmarks/tutorial_speed.py`` against
   ekibnn's ``tutorial`` config (same settings and seed, compilation included), then ekibnn
   again warm; RMSE of both; the same run twice must give bit-identical metrics.
4. ``large_*``: EKI steps on a 10^5-parameter MLP (J = 1000 members, minibatch of 1000 of
   100 000 observations, indexed forward), steps/s after compilation, achieved GFLOP/s from a
   hand count against the measured float32 peak; with the Kalman update's matrix products at
   ``"highest"`` precision (the default) and at JAX's default (TF32 on Hopper).

Run (prints JSON lines; with ``--out DIR`` also writes ``DIR/device_check.json``)::

    PYTHONPATH=src python benchmarks/device_check.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import itertools

import ekibnn as ek
from ekibnn.bnn.likelihoods import regression
from ekibnn.bnn.models import MLP, num_params
from ekibnn.demo import run_demo, setup_demo
from ekibnn.ensemble import flatten

RESULTS: dict = {}


def section(name):
    def wrap(fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            except Exception as err:  # report and go on: one broken part must not hide others
                out = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
            out["section_s"] = round(time.perf_counter() - start, 2)
            RESULTS[name] = out
            print(json.dumps({name: out}), flush=True)
            return out

        return run

    return wrap


def best_time(fn, repeats: int = 5) -> float:
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


@section("env")
def env() -> dict:
    dev = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(dev.device_kind),
    }


@section("matmul_peak")
def matmul_peak(n: int) -> dict:
    out = {"n": n}
    for label, dtype, precision in [
        ("f32_default", jnp.float32, None),
        ("f32_highest", jnp.float32, "highest"),
        ("bf16", jnp.bfloat16, None),
    ]:
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        f = jax.jit(lambda a, p=precision: jnp.matmul(a, a, precision=p))
        out[label + "_gflops"] = 2 * n**3 / best_time(lambda f=f, a=a: f(a)) / 1e9
    return out


@section("tutorial")
def tutorial(scale: float) -> dict:
    from tutorial_speed import baseline

    j, steps = int(1000 * scale), int(500 * scale)
    base_wall, base_warm, base_rmse = baseline(j, steps)
    first = run_demo("tutorial", progress=False, scale=scale)
    repeat = run_demo("tutorial", progress=False, scale=scale)
    same = all(first[k] == repeat[k] for k in ("rmse", "nll", "coverage_95"))
    setup = setup_demo("tutorial", scale=scale)  # one algo, run twice: the second is warm
    walls = []
    for _ in range(2):
        t0 = time.perf_counter()
        result = ek.run(setup.key, setup.algo, setup.particles, setup.config.num_steps, False)
        jax.block_until_ready(result.particles)
        walls.append(time.perf_counter() - t0)
    default = run_demo("default", progress=False, scale=scale)
    return {
        "J": j,
        "steps": steps,
        "baseline_wall_s": base_wall,
        "baseline_wall_s_without_compile": base_warm,
        "baseline_rmse": base_rmse,
        "ekibnn_wall_s_with_compile": first["wall_time_s"],
        "ekibnn_wall_s_warm": walls[1],
        "compile_s": walls[0] - walls[1],
        "ekibnn_rmse": first["rmse"],
        "speedup_with_compile": base_wall / first["wall_time_s"],
        "speedup_without_compile": base_warm / walls[1],
        "bit_identical_rerun": same,
        "default_config": {k: default[k] for k in ("rmse", "coverage_95", "wall_time_s")},
    }


def large(j: int, b: int, steps: int, peak_f32: float | None, precision: str | None) -> dict:
    n, d, hidden = 100_000, 16, (384, 256)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.sin(x).sum(1).astype(np.float32) / 4 + 0.1 * rng.normal(size=n).astype(np.float32)
    model = MLP(jax.random.key(0), d, 1, hidden, parameterization="ntk")
    p = num_params(model)
    prior = ek.GaussianPrior.like(model, std=1.0)
    lik = regression(x, y, 0.1)
    algo = ek.eki(
        lik.indexed_forward_fn,
        lik.obs,
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
        minibatch=ek.minibatch.random(b),
        indexed_forward=True,
        update_precision=precision,
    )
    particles = prior.sample(jax.random.key(1), j)
    t0 = time.perf_counter()
    first = ek.run(jax.random.key(2), algo, particles, num_steps=steps, progress=False)
    jax.block_until_ready(first.particles)
    with_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = ek.run(jax.random.key(2), algo, particles, num_steps=steps, progress=False)
    jax.block_until_ready(again.particles)
    warm = time.perf_counter() - t0
    sizes = (d, *hidden, 1)
    layer = sum(a * c for a, c in itertools.pairwise(sizes))
    # forward 2 J b sum(fan_in fan_out); C^{theta G} and the gain application 2 J b p each;
    # Gram 2 J b^2; Cholesky solves 2 b^2 J
    flops = 2.0 * j * b * layer + 4.0 * j * b * p + 4.0 * j * b * b
    gflops = flops * steps / warm / 1e9
    misfit = np.asarray(again.history.misfit)
    return {
        "J": j,
        "batch": b,
        "update_precision": precision,
        "n_params": p,
        "steps": steps,
        "wall_s_with_compile": with_compile,
        "wall_s_warm": warm,
        "ms_per_step": 1e3 * warm / steps,
        "step_gflop": flops / 1e9,
        "achieved_gflops": gflops,
        "fraction_of_f32_default_peak": gflops / peak_f32 if peak_f32 else None,
        "misfit_first_last": [float(misfit[0]), float(misfit[-1])],
        "bit_identical_rerun": bool(
            np.array_equal(
                np.asarray(flatten(first.particles)),
                np.asarray(flatten(again.particles)),
            )
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()
    env()
    peak = matmul_peak(512 if args.quick else 8192)
    if not args.skip_tutorial:
        tutorial(0.05 if args.quick else 1.0)
    sizes = (16, 100, 2) if args.quick else (1000, 1000, 50)
    for precision in ("highest", None):
        section(f"large_update_precision_{precision}")(large)(
            *sizes, peak.get("f32_default_gflops"), precision
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "device_check.json").write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
