"""Time and memory of ONE EKI update as the ensemble size J, data size m and parameter count p
grow. Shows the cost is linear in m and p at fixed J and that no (m, m) matrix is allocated
(the compiled step's peak temporary memory comes from XLA's own memory analysis).

The forward map is deliberately cheap and O(m) (a gather and a tanh), so the measured time is
the Kalman update itself. Run:

    python benchmarks/update_scaling.py            # full grid (a few minutes on 2 cores)
    python benchmarks/update_scaling.py --quick    # small grid, seconds

Writes benchmarks/results/update_scaling.{json,png} and prints a Markdown table.
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

import ekibnn as ek

RESULTS = Path(__file__).parent / "results"


def make_step(j: int, m: int, p: int, batch_size: int | None = None):
    index = jax.random.randint(jax.random.key(1), (m,), 0, p)
    y = jnp.tanh(jax.random.normal(jax.random.key(2), (m,)))
    obs = ek.Observation(y, 0.1)
    algo = ek.eki(
        lambda theta: jnp.tanh(theta[index]),
        obs,
        scheduler=ek.schedulers.constant(1.0),
        minibatch=None if batch_size is None else ek.minibatch.random(batch_size),
    )
    particles = jax.random.normal(jax.random.key(3), (j, p))
    state = algo.init(particles)
    step = jax.jit(algo.step)
    return step, state


def measure(j: int, m: int, p: int, repeats: int = 3) -> dict:
    step, state = make_step(j, m, p)
    key = jax.random.key(0)
    compiled = step.lower(key, state).compile()
    mem = compiled.memory_analysis()
    temp = int(getattr(mem, "temp_size_in_bytes", 0)) if mem is not None else -1
    args = int(getattr(mem, "argument_size_in_bytes", 0)) if mem is not None else -1
    out = compiled(key, state)
    jax.block_until_ready(out)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.key(r + 1), state))
        times.append(time.perf_counter() - t0)
    return {
        "J": j,
        "m": m,
        "p": p,
        "space": "data" if m <= j else "ensemble",
        "time_s": float(np.median(times)),
        "temp_bytes": temp,
        "argument_bytes": args,
        "m_by_m_bytes": 4 * m * m,
    }


def slope(rows, var, fixed):
    pts = sorted((r[var], r["time_s"]) for r in rows if all(r[k] == v for k, v in fixed.items()))
    x, y = np.log([a for a, _ in pts]), np.log([b for _, b in pts])
    return float(np.polyfit(x, y, 1)[0]) if len(pts) >= 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid for a smoke test")
    args = parser.parse_args()
    if args.quick:
        js, ms, ps = [50], [100, 1000], [100, 1000]
    else:
        js, ms, ps = [100, 1000], [100, 10_000, 100_000], [1000, 100_000]
    rows = []
    for j, m, p in itertools.product(js, ms, ps):
        row = measure(j, m, p)
        rows.append(row)
        print(
            f"J={j:5d} m={m:7d} p={p:7d} {row['space']:8s} {row['time_s'] * 1e3:9.2f} ms "
            f"temp {row['temp_bytes'] / 2**20:9.1f} MiB",
            flush=True,
        )
    fits = {}
    for j in js:
        # exponents from the two largest sizes (the small ones are dominated by fixed costs)
        big_m = [r for r in rows if r["m"] >= sorted(ms)[-2]]
        big_p = [r for r in rows if r["p"] >= sorted(ps)[-2]]
        fits[f"J={j}: exponent in m (p={ps[0]}, m {sorted(ms)[-2]}->{ms[-1]})"] = slope(
            big_m, "m", {"J": j, "p": ps[0]}
        )
        fits[f"J={j}: exponent in p (m={ms[0]}, p {sorted(ps)[-2]}->{ps[-1]})"] = slope(
            big_p, "p", {"J": j, "m": ms[0]}
        )
    print("\n| J | m | p | space | time per update (ms) | peak temp (MiB) | m x m would be (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['J']} | {r['m']} | {r['p']} | {r['space']} | {r['time_s'] * 1e3:.2f} | "
            f"{r['temp_bytes'] / 2**20:.1f} | {r['m_by_m_bytes'] / 2**20:.0f} |"
        )
    for name, value in fits.items():
        print(f"{name}: {value:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "update_scaling.json").write_text(json.dumps({"rows": rows, "fits": fits}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for j, p in itertools.product(js, ps):
        sel = sorted((r["m"], r["time_s"]) for r in rows if r["J"] == j and r["p"] == p)
        axes[0].loglog(*zip(*sel, strict=True), "o-", label=f"J={j}, p={p}")
    for j, m in itertools.product(js, ms):
        sel = sorted((r["p"], r["time_s"]) for r in rows if r["J"] == j and r["m"] == m)
        axes[1].loglog(*zip(*sel, strict=True), "o-", label=f"J={j}, m={m}")
    axes[0].set(xlabel="observations m", ylabel="time per update (s)", title="cost vs m")
    axes[1].set(xlabel="parameters p", ylabel="time per update (s)", title="cost vs p")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "update_scaling.png", dpi=120)
    print(f"wrote {RESULTS / 'update_scaling.png'}")


if __name__ == "__main__":
    main()
