"""Each compiled step beside its floor, measured in the same run.

For every configuration the step is compiled once and timed as a ``lax.scan`` of ``--steps``
steps (best of ``--repeats``), so dispatch costs nothing. Beside it:

* **XLA's cost analysis** of the step (flops, bytes accessed, transcendentals). Its flop count
  includes branches that are not taken, e.g. the redraw of failed members (a J x J x p
  product, skipped by ``lax.cond`` when every member is finite).
* **The hand count** of the work the algorithm needs (formulas in :func:`ensemble_work`).
* **The floor**: the same essential operations timed alone, at this machine's rates measured in
  this run: each matrix product of the update at its own shape, the forward pass alone, and the
  random numbers the algorithm draws (threefry normals). The step cannot be faster than their
  sum; ``step / floor`` is the overhead of everything else (masks, statistics, copies, fusion
  boundaries).

Configurations: the ``tutorial`` demo configuration (J = 1000, minibatch 100 of 500, [1, 20,
20, 1], random walk 0.02), the default estimator fit on diabetes (full batch), and a
10^5-parameter network (J = 100, minibatch 1000 of 10^5 observations).

The Jacobian side gets the same treatment: one Levenberg-Marquardt iteration of the ``default``
demo (R = 4 starts, m = 500, p = 481, parameter space) and of the diffusion_reaction2d B-PINN
(R = 4, m = 300, p = 2752, data space, the Jacobian built group by group with ``segments``;
not with ``--quick``) beside the operations no Gauss-Newton iteration can skip, each timed
alone over the R starts (batched as in the step): the linearisation and the VJP for the
gradient, the Jacobian ``J^`` (m VJPs of single-point evaluations), the Gram matrix of the
solve space (``J^T J^`` in parameter space, ``J^ J^T`` in data space), its Cholesky factor and
solve, and the forward pass at the trial point. Products per iteration and start are those of
:mod:`ekibnn.inversion.gauss_newton`'s docstring: one forward pass and its VJP, m single-point
VJPs, one trial forward pass (the minimum: ``J^`` is needed whole for the dense solve).

    python benchmarks/step_floor.py            # all configurations
    python benchmarks/step_floor.py --quick    # fewer steps and repeats
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import ekibnn as ek
from ekibnn.bnn import MLP, regression
from ekibnn.demo import setup_demo
from ekibnn.run import blas_limits

RESULTS = Path(__file__).parent / "results"


def _best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``fn()`` (results blocked on) over ``repeats`` calls after a warm-up."""
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def time_step(algo: Any, state: Any, steps: int, repeats: int) -> float:
    """Seconds per step of ``algo`` from ``state``: a compiled ``lax.scan`` of ``steps`` steps."""
    dynamic, static = eqx.partition((algo, state), eqx.is_array)

    @jax.jit
    def many(dynamic, key):
        algo, state = eqx.combine(dynamic, static)

        def body(state, k):
            return algo.step(k, state)[0], None

        return eqx.filter(jax.lax.scan(body, state, jax.random.split(key, steps))[0], eqx.is_array)

    key = jax.random.key(0)
    return _best_of(lambda: many(dynamic, key), repeats) / steps


def cost_analysis(algo: Any, state: Any) -> dict[str, float]:
    """XLA's cost analysis of one compiled step."""
    dynamic, static = eqx.partition((algo, state), eqx.is_array)

    def one(dynamic, key):
        algo, state = eqx.combine(dynamic, static)
        return eqx.filter(algo.step(key, state), eqx.is_array)

    compiled = jax.jit(one).lower(dynamic, jax.random.key(0)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {k: float(cost.get(k, 0.0)) for k in ("flops", "bytes accessed", "transcendentals")}


def update_products(j: int, b: int, p: int) -> list[tuple[str, tuple[int, int, int]]]:
    """The matrix products (name, (rows, inner, cols)) of one EKI increment: in data space
    (b <= J) ``B^T B`` (b x b), ``B^T A`` (b x p) and the gain applied to the J innovations
    ``W [(B^T B + I)^{-1} B^T A]``; in ensemble space (b > J) ``B B^T`` (J x J), ``W B^T`` and
    the weights applied to the anomalies (J x p)."""
    if b <= j:
        return [("B^T B", (b, j, b)), ("B^T A", (b, j, p)), ("W C", (j, b, p))]
    return [("B B^T", (j, b, j)), ("W B^T", (j, b, j)), ("weights A", (j, j, p))]


def ensemble_floor(
    j: int, b: int, p: int, forward: Callable[[], Any], normals: int, repeats: int
) -> tuple[dict[str, float], float]:
    """``(seconds of each essential operation timed alone, hand-counted GFLOP)``: the forward
    pass of the J members, the products of the increment at their shapes, the Cholesky factor
    and solve of the smaller Gram, and ``normals`` threefry normal draws."""
    key = jax.random.key(1)
    times: dict[str, float] = {"forward": _best_of(forward, repeats)}
    flops = 0.0
    for name, (rows, inner, cols) in update_products(j, b, p):
        left = jax.random.normal(key, (rows, inner))
        right = jax.random.normal(key, (inner, cols))
        times[name] = _best_of(lambda a=left, c=right: _matmul(a, c), repeats)
        flops += 2.0 * rows * inner * cols
    k = min(j, b)
    gram = jnp.eye(k) * 2.0
    rhs = jax.random.normal(key, (k, p if b <= j else j))
    times["solve"] = _best_of(lambda: _cho_solve(gram, rhs), repeats)
    flops += k**3 / 3 + 2.0 * k * k * rhs.shape[1]
    times["normals"] = _best_of(lambda: _normals(key, normals), repeats)
    return times, flops / 1e9


@jax.jit
def _matmul(left: jax.Array, right: jax.Array) -> jax.Array:
    with jax.default_matmul_precision("highest"):
        return left @ right


@jax.jit
def _cho_solve(gram: jax.Array, rhs: jax.Array) -> jax.Array:
    return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(gram), True), rhs)


def _normals(key: jax.Array, num: int) -> jax.Array:
    return _normals_jit(key, num)


_normals_jit = jax.jit(lambda key, num: jax.random.normal(key, (num,)), static_argnums=1)


def mlp_problem(j: int, n: int, b: int | None, widths: tuple[int, ...], inflation: float):
    """EKI with random minibatches of ``b`` (None: full batches) of ``n`` random regression
    points for an NTK MLP of layer sizes ``widths``, and its initial state from J prior draws."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, widths[0])).astype(np.float32)
    y = np.sin(X.sum(axis=1)).astype(np.float32)
    model = MLP(jax.random.key(0), widths[0], widths[-1], widths[1:-1], parameterization="ntk")
    prior = ek.GaussianPrior.like(model)
    lik = regression(X, y, 0.1)
    algo = ek.eki(
        lik.indexed_forward_fn if b else lik.forward_fn,
        lik.obs,
        prior,
        scheduler=ek.schedulers.constant(1.0),
        minibatch=None if b is None else ek.minibatch.random(b),
        indexed_forward=b is not None,
        inflation=inflation,
    )
    return algo, algo.init(prior.sample(jax.random.key(1), j))


def configurations(quick: bool):
    """``(name, algorithm, initial state, J, b, widths)`` of every configuration."""
    demo = setup_demo("tutorial")
    yield "tutorial", demo.algo, demo.algo.init(demo.particles), 1000, 100, (1, 20, 20, 1)
    # the estimator's default network on diabetes' 331 training rows (10 features), full batch
    algo, state = mlp_problem(100, 331, None, (10, 50, 1), 0.02)
    yield "estimator default (diabetes size)", algo, state, 100, 331, (10, 50, 1)
    widths, n = ((20, 100, 100, 1), 10_000) if quick else ((20, 300, 300, 1), 100_000)
    algo, state = mlp_problem(100, n, 1000, widths, 0.01)
    yield f"{widths} network", algo, state, 100, 1000, widths


def forward_only(state: Any, b: int, d: int) -> Callable[[], Any]:
    """The forward pass of every member on ``b`` inputs, compiled alone."""
    members = jax.vmap(state.layout.member)(state.x)
    X = jnp.ones((b, d))
    apply = eqx.filter_jit(lambda members, X: eqx.filter_vmap(lambda m: m(X))(members))
    return lambda: apply(members, X)


def gauss_newton_rows(steps: int, repeats: int, quick: bool) -> list[dict]:
    """One LM iteration (4 starts) beside its floor (module docstring): the ``default`` demo
    (parameter space) and the diffusion_reaction2d B-PINN (data space, per-group ``segments``;
    left out with ``quick``)."""
    from ekibnn import demo, pinn

    cfg = demo._config("default", 1.0)
    _, key_run, _, prior, lik, _, _ = demo._problem(cfg, 0)
    rows = [
        lm_row(
            "default demo, Levenberg-Marquardt (R = 4)",
            ek.gauss_newton(
                lik.indexed_forward_fn, lik.obs, prior, indexed_forward=True, max_steps=10**6
            ),
            prior.sample(jax.random.fold_in(key_run, 0), 4),
            steps,
            repeats,
        )
    ]
    if not quick:
        problem = pinn.diffusion_reaction2d()
        prior = problem.prior()
        algo = ek.gauss_newton(
            problem.indexed_forward_fn,
            problem.observation(),
            prior,
            indexed_forward=True,
            segments=problem.segments,
            max_steps=10**6,
        )
        rows.append(
            lm_row(
                "diffusion_reaction2d B-PINN, Levenberg-Marquardt (R = 4)",
                algo,
                prior.sample(jax.random.key(0), 4),
                steps,
                repeats,
            )
        )
    return rows


def lm_row(label: str, algo: Any, starts: Any, steps: int, repeats: int) -> dict:
    """One LM iteration of ``algo`` from ``starts`` (after 20 steps) beside its floor: the
    linearisation and gradient VJP, the Jacobian, the Gram matrix of the solve space, its
    Cholesky and solve, and the trial forward pass, each timed alone over the starts."""
    state = ek.run(jax.random.key(1), algo, starts, 20, progress=False).state
    num, p = state.x.shape
    m = algo.num_outputs
    model = algo.model(state.layout, algo.prior.flat_mean().astype(state.x.dtype))
    z = (state.x - model.anchor) / model.scale
    data_space = algo.solve_space == "data"
    size = m if data_space else p

    def jacobian(z):
        return model.jacobian(model.linearise(z), z)

    batched = {
        "linearise + gradient VJP": jax.jit(jax.vmap(lambda z: model.linearise(z).minus_grad)),
        "Jacobian (m single-point VJPs)": jax.jit(jax.vmap(jacobian)),
        "trial forward": jax.jit(jax.vmap(model.outputs)),
    }
    parts = {name: _best_of(lambda f=f: f(z), repeats) for name, f in batched.items()}
    jac = batched["Jacobian (m single-point VJPs)"](z)
    gram_fn = jax.jit(jax.vmap(lambda a: _matmul(a, a.T) if data_space else _matmul(a.T, a)))
    gram_name = "Gram J^ J^T" if data_space else "Gram J^T J^"
    parts[gram_name] = _best_of(lambda: gram_fn(jac), repeats)
    gram = gram_fn(jac) + 2.0 * jnp.eye(size)
    rhs = jnp.ones((num, size))
    solve = jax.jit(jax.vmap(lambda g, v: _cho_solve(g, v[:, None])))
    parts["Cholesky + solve"] = _best_of(lambda: solve(gram, rhs), repeats)
    step = time_step(algo, state, steps, repeats)
    floor = sum(parts.values())
    gflop = num * (2.0 * m * p * size + size**3 / 3) / 1e9
    return {
        "config": label,
        "J": num,
        "b": m,
        "p": p,
        "space": algo.solve_space,
        "step_ms": 1e3 * step,
        "floor_ms": 1e3 * floor,
        "step_over_floor": step / floor,
        "floor_parts_ms": {k: 1e3 * v for k, v in parts.items()},
        "hand_gflop": gflop,
        "xla_gflop": cost_analysis(algo, state)["flops"] / 1e9,
        "products_per_start": {"forward": 2, "VJP (gradient)": 1, "single-point VJPs": m},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (20 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 5)
    rows = []
    with blas_limits(1):  # as ek.run does
        for name, algo, state, j, b, widths in configurations(args.quick):
            p = state.x.shape[1]
            walk = j * p if algo.inflation else 0
            normals = walk + j * b  # the random walk and the perturbed observations
            step = time_step(algo, state, steps, repeats)
            xla = cost_analysis(algo, state)
            parts, update_gflop = ensemble_floor(
                j, b, p, forward_only(state, b, widths[0]), normals, repeats
            )
            forward_gflop = 2e-9 * j * b * sum(x * y for x, y in itertools.pairwise(widths))
            floor = sum(parts.values())
            rows.append(
                {
                    "config": name,
                    "J": j,
                    "b": b,
                    "p": p,
                    "step_ms": 1e3 * step,
                    "floor_ms": 1e3 * floor,
                    "step_over_floor": step / floor,
                    "floor_parts_ms": {k: 1e3 * v for k, v in parts.items()},
                    "hand_gflop": forward_gflop + update_gflop,
                    "xla_gflop": xla["flops"] / 1e9,
                    "xla_bytes_mb": xla["bytes accessed"] / 1e6,
                    "normals": normals,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        for row in gauss_newton_rows(max(steps // 5, 5), repeats, args.quick):
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| configuration | J | b | p | step (ms) | floor (ms) | step / floor | hand GFLOP |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['J']} | {r['b']} | {r['p']} | {r['step_ms']:.2f} | "
            f"{r['floor_ms']:.2f} | {r['step_over_floor']:.2f} | {r['hand_gflop']:.3f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step_floor.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
