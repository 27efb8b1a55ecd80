"""B-PINN posteriors: ekibnn's Kalman recipes against BlackJAX NUTS on the SAME posterior (same
network, priors, likelihood and data), in one process.

For each problem of :mod:`ekibnn.pinn` the unnormalised log posterior of one flat parameter
vector (``jax.flatten_util.ravel_pytree`` of ``{"net": MLP, "phys": {...}}``) is

    log p(theta | y) = -0.5 |Gamma^{-1/2}(y - G(theta))|^2 + log N(theta | m0, C0) + const,

with ``G`` and ``y`` the problem's ``forward_fn`` and ``Observation`` (layout
``[u data; boundary data; f at residual points]``). NUTS (window adaptation, several chains,
R-hat reported) samples it; each ekibnn recipe is fitted from the prior. With
``--nuts-parameterization standard`` NUTS samples the published B-PINN posterior (raw N(0, 1)
weights) while ekibnn uses the NTK parameterisation (N(0, 1) weights scaled by 1/sqrt(fan_in)):
EKI cannot fit the standard one, and NUTS mixes poorly on the NTK one (R-hat >> 1).
Reported per method: physical parameters (mean, std), relative L2 error of the mean u, of the
mean f, coverage of the exact u by the 95% band on a fine grid, wall time (compilation
included) and its ratio to NUTS.

    python benchmarks/bpinn.py --quick                       # smoke run (tiny NUTS)
    python benchmarks/bpinn.py --problems poisson1d          # full size, same posterior
    python benchmarks/bpinn.py --problems poisson1d --nuts-parameterization standard \
        --chains 2 --warmup 500 --samples 500                # vs the published posterior
    python benchmarks/bpinn.py --problems poisson1d diffusion_reaction2d damped_oscillator
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
from nuts_reference import run_nuts

from ekibnn import pinn

RESULTS = Path(__file__).parent / "results"


def nuts_posterior(problem, key, chains, warmup, samples, keep):
    """NUTS on the problem's posterior; returns (particles pytree of ``keep`` draws, info)."""
    prior = problem.prior()
    flat0, unravel = ravel_pytree(problem.template())

    def logdensity(theta):
        params = unravel(theta)
        return problem.log_likelihood(params) + prior.log_prob(params)

    key_init, key_run, key_pick = jax.random.split(key, 3)
    init = jax.vmap(lambda p: ravel_pytree(p)[0])(prior.sample(key_init, chains))
    res = run_nuts(logdensity, init, key_run, num_warmup=warmup, num_samples=samples)
    draws = res.samples.reshape(-1, flat0.size)
    pick = np.asarray(jax.random.choice(key_pick, draws.shape[0], (min(keep, len(draws)),), False))
    particles = jax.vmap(unravel)(jnp.asarray(draws[pick]))
    info = {
        "max_rhat": res.max_rhat,
        "min_ess": res.min_ess,
        "divergences": res.divergences,
        "mean_acceptance": res.mean_acceptance,
        "chains": chains,
        "warmup": warmup,
        "samples": samples,
    }
    return particles, res.wall_time_s, info


def run_problem(name, args):
    kwargs = {} if args.noise is None else {"noise": args.noise}
    problem = pinn.PROBLEMS[name](parameterization=args.parameterization, **kwargs)
    rows = []
    for method in args.methods:
        start = time.perf_counter()
        result = pinn.fit(
            problem,
            jax.random.key(args.seed),
            method=method,
            ensemble_size=args.ensemble_size,
            max_steps=args.max_steps,
            inflation=args.inflation,
        )
        jax.block_until_ready(result.particles)
        wall = time.perf_counter() - start
        row = {"method": method, "wall_time_s": wall, "num_steps": int(result.num_steps)}
        row.update(pinn.evaluate(problem, result.particles))
        rows.append(row)
    nuts_par = args.nuts_parameterization or args.parameterization
    nuts_problem = (
        problem
        if nuts_par == args.parameterization
        else pinn.PROBLEMS[name](parameterization=nuts_par, **kwargs)
    )
    particles, wall, info = nuts_posterior(
        nuts_problem,
        jax.random.key(args.seed + 1),
        args.chains,
        args.warmup,
        args.samples,
        args.keep,
    )
    nuts = {"method": "nuts", "wall_time_s": wall, "parameterization": nuts_par, **info}
    nuts.update(pinn.evaluate(nuts_problem, particles))
    for row in rows:
        row["speedup_vs_nuts"] = wall / row["wall_time_s"]
    return {
        "problem": name,
        "parameterization": args.parameterization,
        "nuts": nuts,
        "ekibnn": rows,
    }


def print_table(report):
    print(
        f"\n== {report['problem']}: ekibnn {report['parameterization']}, NUTS "
        f"{report['nuts']['parameterization']} parameterisation =="
    )
    n = report["nuts"]
    print(
        f"NUTS: max R-hat {n['max_rhat']:.3f}, min ESS {n['min_ess']:.0f}, "
        f"divergences {n['divergences']}, acceptance {n['mean_acceptance']:.2f}"
    )
    names = list(n["parameters"])
    head = "method    " + "".join(f"{p + ' mean':>10}{p + ' std':>9}" for p in names)
    print(head + f"{'relL2 u':>9}{'relL2 f':>9}{'cov95 u':>9}{'wall s':>9}{'speedup':>9}")
    for row in [n, *report["ekibnn"]]:
        cells = "".join(
            f"{row['parameters'][p]['mean']:>10.3f}{row['parameters'][p]['std']:>9.3f}"
            for p in names
        )
        speed = row.get("speedup_vs_nuts", 1.0)
        print(
            f"{row['method']:<10}{cells}{row['rel_l2_u']:>9.3f}{row['rel_l2_f']:>9.3f}"
            f"{row['coverage_u_95']:>9.2f}{row['wall_time_s']:>9.1f}{speed:>9.1f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["poisson1d"], choices=pinn.PROBLEMS)
    parser.add_argument("--methods", nargs="+", default=["eki", "eki-disc"], choices=pinn.METHODS)
    parser.add_argument("--noise", type=float, default=None)
    parser.add_argument("--parameterization", default="ntk", choices=["ntk", "standard"])
    parser.add_argument(
        "--nuts-parameterization",
        default=None,
        choices=["ntk", "standard"],
        help="network parameterisation of the NUTS reference (default: --parameterization); "
        "'standard' is the published B-PINN posterior",
    )
    parser.add_argument("--ensemble-size", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--inflation", type=float, default=0.1)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--keep", type=int, default=1000, help="NUTS draws kept for metrics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args()
    if args.quick:
        args.ensemble_size, args.max_steps = 32, 20
        args.chains, args.warmup, args.samples, args.keep = 2, 20, 20, 20
    reports = []
    for name in args.problems:
        report = run_problem(name, args)
        print_table(report)
        reports.append(report)
    out = args.out or RESULTS / ("bpinn_quick.json" if args.quick else "bpinn.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "reports": reports}, indent=2
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
