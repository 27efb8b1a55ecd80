"""Scaling of one full EKI step of a BNN (forward passes + Kalman update): wall time per step
and XLA's peak memory as the ensemble size J, the minibatch size m = b and the parameter count
p grow; one device against 4 forced CPU devices (ensemble sharded, in a subprocess); achieved
GFLOP/s against this machine's measured float32 matmul peak.

The problem is the tutorial's: minibatch regression on sine data with an MLP [1, w, w, 1]
(NTK parameterisation), indexed forward (only the b batch points are evaluated), constant step.
FLOPs are counted by hand from the shapes (the matrix products of the forward passes and of
:func:`ekibnn.linalg.kalman_increment`, following its choice of space and association), not by
XLA's cost analysis, which also counts the not-taken failed-member branch.

Run:

    python benchmarks/scaling.py --quick           # small grid, about a minute
    python benchmarks/scaling.py                   # full grid + 4-device subprocess + GFLOP/s
    python benchmarks/scaling.py --device-report   # compact JSON for whatever backend JAX sees
    python benchmarks/scaling.py --memory          # memory formula (docs/scaling.md) vs XLA

Writes ``benchmarks/results/scaling.{json,png}`` (not with ``--device-report``) and prints
Markdown tables. Timings are the best of repeated steps after compilation (the least perturbed
estimate on a shared machine; the medians are in the JSON); ratios (4 devices /
1 device, fitted exponents, fraction of peak) are measured in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

if __name__ == "__main__" and "--child-devices" in sys.argv:  # before JAX initialises
    count = sys.argv[sys.argv.index("--child-devices") + 1]
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
    os.environ["JAX_PLATFORMS"] = "cpu"

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ekibnn as ek  # noqa: E402
from ekibnn import bnn  # noqa: E402
from ekibnn.run import blas_limits  # noqa: E402

TUTORIAL = {"J": 1000, "b": 100, "hidden": (20, 20)}  # p = 481
LARGE = {"J": 1000, "b": 100, "hidden": (312, 312)}  # p = 99 529


def num_params(hidden: tuple[int, ...]) -> int:
    sizes = (1, *hidden, 1)
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def step_flops(j: int, m: int, hidden: tuple[int, ...]) -> float:
    """Matrix-product FLOPs of one step (forward passes + Kalman increment, K = J rows)."""
    sizes = (1, *hidden, 1)
    p = num_params(hidden)
    forward = 2.0 * j * m * sum(a * b for a, b in itertools.pairwise(sizes))
    if m <= j:  # data space
        update = 2.0 * j * m * m + m**3 / 3
        if p <= j:
            update += 2.0 * j * m * p + 2.0 * m * m * p + 2.0 * j * m * p
        else:
            update += 2.0 * m * m * j
            if j * (m + p) <= 2 * m * p:
                update += 2.0 * j * j * m + 2.0 * j * j * p
            else:
                update += 4.0 * j * m * p
    else:  # ensemble space
        update = 4.0 * j * j * m + j**3 / 3 + 2.0 * j**3 + 2.0 * j * j * p
    return forward + update


def make_step(
    j: int,
    b: int,
    hidden: tuple[int, ...],
    forward_batch_size: int | None = None,
    compute_dtype=None,
    seed: int = 0,
):
    """A jitted EKI step on arrays only: ``step(key, dynamic_state) -> (dynamic_state, info)``,
    with its initial dynamic state."""
    n = max(2 * b, 1000)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(n, 1)).astype(np.float32)
    y = (np.sin(x[:, 0]) + 0.1 * rng.normal(size=n)).astype(np.float32)
    lik = bnn.regression(x, y, 0.1)
    model = bnn.MLP(
        jax.random.key(seed), 1, 1, hidden, parameterization="ntk", compute_dtype=compute_dtype
    )
    prior = ek.GaussianPrior.like(model)
    kwargs = {} if forward_batch_size is None else {"forward_batch_size": forward_batch_size}
    algo = ek.eki(
        lik.indexed_forward_fn,
        lik.obs,
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
        minibatch=ek.minibatch.random(b),
        indexed_forward=True,
        inflation=0.01,
        **kwargs,
    )
    particles = eqx.filter_jit(lambda k: prior.sample(k, j))(jax.random.key(seed + 1))
    state = algo.init(particles)
    dynamic, static = eqx.partition(state, eqx.is_array)

    def step(key, dynamic):
        new, info = algo.step(key, eqx.combine(dynamic, static))
        return eqx.filter(new, eqx.is_array), info

    return jax.jit(step, donate_argnums=1), dynamic


def memory_of(compiled) -> dict:
    mem = compiled.memory_analysis()
    if mem is None:
        return {"temp_bytes": -1, "argument_bytes": -1, "output_bytes": -1}
    return {
        "temp_bytes": int(getattr(mem, "temp_size_in_bytes", -1)),
        "argument_bytes": int(getattr(mem, "argument_size_in_bytes", -1)),
        "output_bytes": int(getattr(mem, "output_size_in_bytes", -1)),
    }


def measure(
    j: int,
    b: int,
    hidden: tuple[int, ...],
    repeats: int = 5,
    mesh=None,
    forward_batch_size: int | None = None,
    compute_dtype=None,
) -> dict:
    step, dynamic = make_step(j, b, hidden, forward_batch_size, compute_dtype)
    if mesh is not None:
        from ekibnn.run import shard_ensemble

        dynamic = shard_ensemble(dynamic, mesh, j)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = step.lower(key, dynamic).compile()
    compile_s = time.perf_counter() - t0
    row = {"J": j, "b": b, "hidden": list(hidden), "p": num_params(hidden)}
    row |= memory_of(compiled)
    dynamic, _ = compiled(jax.random.key(1), dynamic)  # warm-up
    jax.block_until_ready(dynamic)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        dynamic, info = compiled(jax.random.key(r + 2), dynamic)
        jax.block_until_ready((dynamic, info))
        times.append(time.perf_counter() - t0)
    flops = step_flops(j, b, hidden)
    best = float(np.min(times))  # on a shared machine the least perturbed estimate
    row |= {
        "time_s": best,
        "time_median_s": float(np.median(times)),
        "compile_s": compile_s,
        "gflop": flops / 1e9,
        "gflops": flops / best / 1e9,
        "devices": 1 if mesh is None else int(mesh.size),
    }
    return row


def matmul_peak(n: int | None = None, repeats: int = 10, precision: str | None = None) -> dict:
    """Measured float32 matmul GFLOP/s (best of ``repeats``) at JAX's default precision, or at
    ``precision`` (e.g. ``"highest"``: full float32 products; on GPUs the default may use TF32
    tensor cores)."""
    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: jnp.matmul(a, a, precision=precision))
    jax.block_until_ready(f(a))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "gflops": 2 * n**3 / best / 1e9}


def breakdown(j: int, b: int, hidden: tuple[int, ...], repeats: int = 5) -> dict:
    """Time the forward passes alone and the Kalman increment alone at the step's shapes, to
    see which part of the step dominates."""
    from ekibnn.linalg import kalman_increment

    model = bnn.MLP(jax.random.key(0), 1, 1, hidden, parameterization="ntk")
    particles = eqx.filter_jit(lambda k: ek.GaussianPrior.like(model).sample(k, j))(
        jax.random.key(1)
    )
    xb = jnp.linspace(-3, 3, b)[:, None]
    forward = eqx.filter_jit(lambda ps: bnn.ensemble_apply(ps, xb))
    p = num_params(hidden)
    a = jax.random.normal(jax.random.key(2), (j, p)) / math.sqrt(j)
    bb = jax.random.normal(jax.random.key(3), (j, b)) / math.sqrt(j)
    w = jax.random.normal(jax.random.key(4), (j, b))
    update = jax.jit(kalman_increment)

    def best(f, *args):
        jax.block_until_ready(f(*args))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            ts.append(time.perf_counter() - t0)
        return float(np.min(ts))

    sizes = (1, *hidden, 1)
    fwd_flops = 2.0 * j * b * sum(u * v for u, v in itertools.pairwise(sizes))
    t_fwd = best(forward, particles)
    t_upd = best(update, a, bb, w)
    upd_flops = step_flops(j, b, hidden) - fwd_flops
    return {
        "forward_s": t_fwd,
        "forward_gflops": fwd_flops / t_fwd / 1e9,
        "update_s": t_upd,
        "update_gflops": upd_flops / t_upd / 1e9,
    }


def memory_formula(
    j: int, b: int, hidden: tuple[int, ...], forward_batch_size: int | None = None
) -> dict[str, int]:
    """Peak temporary bytes of one float32 EKI step of an MLP BNN (docs/scaling.md): the
    largest of three phases, fitted to XLA's buffer assignment on CPU.

    * forward: the raveled ensemble plus two (F, b, w_max) activation buffers of the F members
      evaluated at a time (F = forward_batch_size or J) and a few (J, b) output arrays:
      ``J p + F b (2 w_max + 2) + 3 J b``;
    * update: about five (J, p) arrays (raveled, anomalies, increment, updated, unraveled)
      plus the (J, b) output anomalies/innovations and the min(b, J)^2 Gram matrix:
      ``5 J p + 5 J b + min(b, J)^2``;
    * redraw (failed-member handling, a (J, J) Gaussian draw): ``J p + 4.5 J^2``.
    """
    p = num_params(hidden)
    f = j if forward_batch_size is None else min(forward_batch_size, j)
    phases = {
        "forward": j * p + f * b * (2 * max(hidden) + 2) + 3 * j * b,
        "update": 5 * j * p + 5 * j * b + min(b, j) ** 2,
        "redraw": j * p + int(4.5 * j * j),
    }
    return {k: 4 * v for k, v in phases.items()}


def check_formula(quick: bool = False) -> list[dict]:
    """Compare :func:`memory_formula` with XLA's temp size of the compiled step."""
    cases = [
        (100, 100, (20, 20), None),
        (1000, 100, (20, 20), None),
        (1000, 100, (20, 20), 100),
        (100, 800, (20, 20), None),
        (100, 800, (20, 20), 10),
        (50, 2000, (20, 20), None),
        (300, 300, (64, 64), None),
        (300, 300, (64, 64), 30),
        (100, 100, (160, 160), None),
        (1000, 100, (312, 312), None),
    ]
    if quick:
        cases = cases[:5]
    rows = []
    print(
        "| J | b | widths | forward_batch_size | p | XLA temp (MiB) | formula (MiB) | "
        "dominant phase | formula / XLA |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for j, b, hidden, fb in cases:
        step, dynamic = make_step(j, b, hidden, fb)
        xla = memory_of(step.lower(jax.random.key(0), dynamic).compile())["temp_bytes"]
        phases = memory_formula(j, b, hidden, fb)
        phase, pred = max(phases.items(), key=lambda kv: kv[1])
        row = {"J": j, "b": b, "hidden": list(hidden), "forward_batch_size": fb,
               "p": num_params(hidden), "xla_temp_bytes": xla, "formula_bytes": pred,
               "phase": phase}  # fmt: skip
        rows.append(row)
        print(
            f"| {j} | {b} | {list(hidden)} | {fb} | {row['p']} | {xla / 2**20:.2f} | "
            f"{pred / 2**20:.2f} | {phase} | {pred / xla:.2f} |",
            flush=True,
        )
    return rows


def slope(rows: list[dict], var: str) -> float:
    pts = sorted((r[var], r["time_s"]) for r in rows)
    if len(pts) < 2:
        return float("nan")
    x, y = np.log([u for u, _ in pts]), np.log([v for _, v in pts])
    return float(np.polyfit(x[-3:], y[-3:], 1)[0])  # the largest sizes: past fixed costs


def grids(quick: bool) -> dict[str, list[tuple[int, int, tuple[int, ...]]]]:
    if quick:
        return {
            "J": [(j, 64, (20, 20)) for j in (64, 128, 256)],
            "b": [(64, b, (20, 20)) for b in (128, 256, 512)],
            "p": [(64, 64, (w, w)) for w in (32, 64, 128)],
        }
    return {
        "J": [(j, 100, (20, 20)) for j in (100, 300, 1000, 3000)],
        "b": [(100, b, (20, 20)) for b in (300, 1000, 3000, 10_000)],
        "p": [(100, 100, (w, w)) for w in (32, 64, 128, 256, 512)],
    }


def sweep(quick: bool, mesh=None, repeats: int = 5) -> dict[str, list[dict]]:
    out = {}
    for name, cases in grids(quick).items():
        out[name] = []
        for j, b, hidden in cases:
            row = measure(j, b, hidden, repeats=repeats, mesh=mesh)
            out[name].append(row)
            print(
                f"[{row['devices']} dev] vary {name}: J={j:5d} b={b:6d} p={row['p']:7d} "
                f"{row['time_s'] * 1e3:9.2f} ms/step  temp {row['temp_bytes'] / 2**20:8.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
    return out


def device_report(quick: bool) -> dict:
    peak = matmul_peak()
    dev = jax.devices()[0]
    report = {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "jax": jax.__version__,
        "matmul_peak_gflops": round(peak["gflops"], 1),
        "matmul_peak_highest_gflops": round(matmul_peak(precision="highest")["gflops"], 1),
    }
    cases = {"tutorial": TUTORIAL, "large": LARGE}
    if quick:
        cases = {"tutorial": {"J": 100, "b": 100, "hidden": (20, 20)}}
    for name, cfg in cases.items():
        row = measure(cfg["J"], cfg["b"], cfg["hidden"], repeats=5)
        report[name] = {
            "J": cfg["J"],
            "b": cfg["b"],
            "p": row["p"],
            "step_ms": round(row["time_s"] * 1e3, 3),
            "gflop_per_step": round(row["gflop"], 4),
            "gflops": round(row["gflops"], 2),
            "fraction_of_peak": round(row["gflops"] / peak["gflops"], 4),
            "temp_mib": round(row["temp_bytes"] / 2**20, 1),
        }
        report[name] |= {
            k: round(v, 5) for k, v in breakdown(cfg["J"], cfg["b"], cfg["hidden"]).items()
        }
    return report


def child(args) -> None:
    """Subprocess entry: the sweep on ``--child-devices`` forced CPU devices, JSON to stdout."""
    count = len(jax.devices())
    mesh = jax.make_mesh((count,), ("ensemble",), axis_types=(jax.sharding.AxisType.Auto,))
    print(json.dumps(sweep(args.quick, mesh=mesh, repeats=args.repeats)))


def plot(single: dict, multi: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    labels = {"J": "ensemble size J", "b": "minibatch m = b", "p": "parameters p"}
    for col, var in enumerate(("J", "b", "p")):
        for result, style, name in ((single, "o-", "1 device"), (multi, "s--", "4 CPU devices")):
            if not result:
                continue
            rows = sorted(result[var], key=lambda r: r[var])
            xs = [r[var] for r in rows]
            axes[0, col].loglog(xs, [r["time_s"] for r in rows], style, label=name)
            axes[1, col].loglog(xs, [r["temp_bytes"] / 2**20 for r in rows], style, label=name)
        axes[0, col].set(xlabel=labels[var], ylabel="time per step (s)")
        axes[1, col].set(xlabel=labels[var], ylabel="XLA peak temporaries (MiB)")
        axes[0, col].legend(fontsize=8)
    fig.suptitle("one EKI step of a BNN [1, w, w, 1]: cost and memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(result: dict, title: str) -> None:
    print(f"\n{title}\n")
    print("| vary | J | b | p | ms / step | GFLOP/s | temp MiB |")
    print("|---|---|---|---|---|---|---|")
    for var, rows in result.items():
        for r in rows:
            print(
                f"| {var} | {r['J']} | {r['b']} | {r['p']} | {r['time_s'] * 1e3:.2f} | "
                f"{r['gflops']:.2f} | {r['temp_bytes'] / 2**20:.1f} |"
            )


def main(argv: list[str] | None = None) -> dict:
    # Like ek.run (blas_threads=1): LAPACK's Cholesky and triangular solves on one thread, so
    # they do not fight XLA's thread pool for the cores (measured here: the tutorial-sized
    # Kalman increment 28 ms -> 0.36 ms on a loaded 2-core machine).
    with blas_limits(1):
        return _main(argv)


def _main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid and problems")
    parser.add_argument("--device-report", action="store_true", help="compact JSON, any backend")
    parser.add_argument("--memory", action="store_true", help="memory formula vs XLA")
    parser.add_argument("--no-multi", action="store_true", help="skip the 4-device subprocess")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child-devices", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_devices is not None:
        child(args)
        return {}
    if args.device_report:
        report = device_report(args.quick)
        print(json.dumps(report))
        return report
    if args.memory:
        return check_formula(quick=args.quick)

    peak = matmul_peak()
    print(f"float32 matmul peak: {peak['gflops']:.1f} GFLOP/s (n = {peak['n']})", file=sys.stderr)
    single = sweep(args.quick, repeats=args.repeats)
    flops = {}
    for name, cfg in {"tutorial": TUTORIAL, "large": LARGE}.items():
        if args.quick:
            cfg = {
                "J": 100,
                "b": 100,
                "hidden": cfg["hidden"][:1] * 2 if name == "tutorial" else (128, 128),
            }
        row = measure(cfg["J"], cfg["b"], cfg["hidden"], repeats=args.repeats)
        row |= breakdown(cfg["J"], cfg["b"], cfg["hidden"], repeats=args.repeats)
        row["fraction_of_peak"] = row["gflops"] / peak["gflops"]
        flops[name] = row

    multi = None
    if not args.no_multi:  # after the 1-device runs, so the two never compete for the cores
        cmd = [sys.executable, __file__, "--child-devices", "4", "--repeats", str(args.repeats)]
        proc = subprocess.run(
            cmd + (["--quick"] if args.quick else []), stdout=subprocess.PIPE, text=True
        )
        if proc.returncode == 0:
            multi = json.loads(proc.stdout.strip().splitlines()[-1])

    fits = {f"exponent in {var} (1 device)": slope(single[var], var) for var in single}
    if multi:
        fits |= {f"exponent in {var} (4 devices)": slope(multi[var], var) for var in multi}
    table(single, "1 device")
    if multi:
        table(multi, "4 forced CPU devices (ensemble sharded)")
        print("\n| vary | J | b | p | 4 devices / 1 device time |\n|---|---|---|---|---|")
        for var in single:
            for r1, r4 in zip(single[var], multi[var], strict=True):
                print(
                    f"| {var} | {r1['J']} | {r1['b']} | {r1['p']} | "
                    f"{r4['time_s'] / r1['time_s']:.2f} |"
                )
    print("\nfitted exponents (log time vs log size, largest 3 sizes):")
    for name, value in fits.items():
        print(f"  {name}: {value:.2f}")
    print(f"\nmeasured float32 matmul peak: {peak['gflops']:.1f} GFLOP/s")
    print(
        "| case | J | b | p | ms / step | GFLOP / step | GFLOP/s | % of peak | forward GFLOP/s | "
        "update GFLOP/s | forward ms | update ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in flops.items():
        print(
            f"| {name} | {r['J']} | {r['b']} | {r['p']} | {r['time_s'] * 1e3:.2f} | "
            f"{r['gflop']:.3f} | {r['gflops']:.1f} | {100 * r['fraction_of_peak']:.1f} | "
            f"{r['forward_gflops']:.1f} | {r['update_gflops']:.1f} | "
            f"{r['forward_s'] * 1e3:.2f} | {r['update_s'] * 1e3:.2f} |"
        )
    result = {"single": single, "multi": multi, "fits": fits, "peak": peak, "flops": flops}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=1))
    plot(single, multi, RESULTS / "scaling.png")
    print(f"\nwrote {RESULTS / 'scaling.json'} and {RESULTS / 'scaling.png'}")
    return result


if __name__ == "__main__":
    main()
