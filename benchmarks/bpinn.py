"""B-PINN posteriors: ekibnn's Kalman recipes against BlackJAX NUTS on the SAME posterior (same
network parameterisation, priors, likelihood and data), in one process.

For each problem of :mod:`ekibnn.pinn` the unnormalised log posterior of one flat parameter
vector (``jax.flatten_util.ravel_pytree`` of ``{"net": MLP, "phys": {...}}``) is

    log p(theta | y) = -0.5 |Gamma^{-1/2}(y - G(theta))|^2 + log N(theta | m0, C0) + const,

with ``G`` and ``y`` the problem's ``forward_fn`` and ``Observation`` (layout
``[u data; boundary data; f at residual points]``). NUTS (Stan-style window adaptation of step
size and diagonal mass matrix, several independent chains started from prior draws) samples it;
each ekibnn recipe is fitted from the prior. Both use the NTK-parameterised network by default
(raw N(0, 1) weights scaled by 1/sqrt(fan_in)), the posterior ekibnn fits;
``--parameterization standard`` runs both on the published B-PINN posterior (raw N(0, 1)
weights), where EKI does not fit. NUTS convergence is judged on the quantities compared: R-hat
of each physical parameter and of u at the grid points (the weights themselves never mix
between chains: a BNN posterior has many equivalent modes, so their R-hat is meaningless and
only reported for information).

Reported per method: physical parameters (mean +- std), |mean - NUTS mean| / NUTS std, std
ratio to NUTS, relative L2 error of the mean u and mean f on a grid, coverage of the exact u by
the 95% band, wall time (compilation included) and speed-up over NUTS, and whether the issue's
targets are met: every parameter's mean within one NUTS std of NUTS's mean and its std within
1.5x, rel. L2 error of u at most 1.2x NUTS's, coverage >= 0.9, speed-up >= 20.

    python benchmarks/bpinn.py --quick                       # smoke run (tiny sizes)
    python benchmarks/bpinn.py --problems poisson1d          # same posterior, CPU-sized NUTS
    python benchmarks/bpinn.py --problems poisson1d diffusion_reaction2d damped_oscillator
    python benchmarks/bpinn.py --problems poisson1d --parameterization standard \
        --methods eki eks                                    # the published posterior

Writes ``results/bpinn.json`` (after each problem) and ``results/bpinn.png``. Columns
``misfit`` (mean data misfit per datum) and ``logpost`` (mean log posterior density of the
samples) show where each method's samples sit relative to NUTS's.

Measured (seed 0, J = 200, 200 EKI steps, EKS for T = 2 after the EKI warm start):

* 2-core shared CPU, ``python benchmarks/bpinn.py --problems poisson1d`` (NUTS 4 x (300 + 300)):
  NUTS k = 0.798 +- 0.040 (R-hat of k 1.007, ESS 753; of u max 1.14), rel. L2 u 0.285, 95%
  coverage 0.77, misfit 5.5/datum, log posterior -4162, 356 s. ``eki``: 0.714 +- 0.055 (2.1
  NUTS stds off, std ratio 1.38), rel. L2 u 0.107, coverage 1.00, misfit 2.2, log posterior
  -13786, 7x faster. ``eks``: 0.597 +- 0.026, 9x. ``eki-disc``: 0.603 +- 0.011, 25x. NUTS
  started from ``eki`` members (``--methods eki --nuts-init ekibnn``): 0.811 +- 0.039, log
  posterior -4167 (it leaves the EKI region). No row meets the parameter targets.
* H200 GPU (one process per card), ``--problems poisson1d damped_oscillator
  diffusion_reaction2d --nuts-budget poisson1d=4,500,500 damped_oscillator=4,500,500
  diffusion_reaction2d=4,300,300``: poisson1d NUTS 0.803 +- 0.040 (93 s); diffusion_reaction2d
  NUTS k = 1.120 +- 0.065 (R-hat 1.001, u 1.015; 110 s), ``eki`` 0.840 +- 0.049,
  ``eki-disc`` 0.996 +- 0.005; damped_oscillator NUTS c = 0.446 +- 0.050 (R-hat 1.36),
  w2 = 3.60 +- 0.10 (148 s), ``eks`` 0.338 +- 0.016 / 3.77 +- 0.05 (the only recipe that
  fits; ``eki`` is stuck at the bound w2 = 0.5). See :mod:`ekibnn.pinn` for the discussion.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.diagnostics import effective_sample_size
from jax.flatten_util import ravel_pytree
from nuts_reference import run_nuts

from ekibnn import pinn

RESULTS = Path(__file__).parent / "results"

#: Default recipes compared with NUTS.
METHODS = ("eki", "eks", "eki-disc")

#: NUTS budget per problem (chains, warm-up, samples) sized for a shared 2-core CPU.
NUTS_BUDGET = {
    "poisson1d": (4, 300, 300),
    "diffusion_reaction2d": (4, 150, 150),
    "damped_oscillator": (4, 300, 300),
}

TARGETS = {
    "mean_within_std": 1.0,
    "std_ratio_max": 1.5,
    "rel_l2_u_ratio_max": 1.2,
    "coverage_min": 0.9,
    "speedup_min": 20.0,
}


def _rhat(draws: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat (not split) of ``(chains, draws, k)`` quantities: one per quantity,
    ``sqrt(((n - 1)/n W + B/n) / W)`` with ``W`` the mean within-chain variance and ``B/n`` the
    variance of the chain means (the formula of BlackJAX's ``potential_scale_reduction``)."""
    draws = np.asarray(draws, float)
    n = draws.shape[1]
    within = draws.var(axis=1, ddof=1).mean(axis=0)
    between = draws.mean(axis=1).var(axis=0, ddof=1)
    return np.sqrt(((n - 1) / n * within + between) / within)


def nuts_posterior(problem, key, chains, warmup, samples, keep, init_particles=None):
    """NUTS on the problem's posterior.

    Returns ``(particles, wall_s, info)``: ``keep`` draws pooled over chains (pytree in the
    ensemble layout), the wall time (compilation included) and diagnostics: R-hat of every
    physical parameter (constrained) and of u on the metrics grid, and of the raw parameters.
    """
    prior = problem.prior()
    _, unravel = ravel_pytree(problem.template())

    def logdensity(theta):
        params = unravel(theta)
        return problem.log_likelihood(params) + prior.log_prob(params)

    key_init, key_run, key_pick = jax.random.split(key, 3)
    start = init_particles if init_particles is not None else prior.sample(key_init, chains)
    init = jax.vmap(lambda p: ravel_pytree(p)[0])(start)
    res = run_nuts(logdensity, init, key_run, num_warmup=warmup, num_samples=samples)
    chain_draws = jax.vmap(jax.vmap(unravel))(jnp.asarray(res.samples))  # (chains, draws, ...)
    phys = problem.constrained(chain_draws["phys"])
    grid = problem.grid(201)
    flat = jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:]), chain_draws)
    u = np.asarray(problem.predict_u(flat, grid)).reshape(chains, samples, -1)
    rhat_u = _rhat(u)
    info = {
        "rhat": {k: float(_rhat(np.asarray(v)[..., None])[0]) for k, v in phys.items()},
        "ess": {
            k: float(np.atleast_1d(effective_sample_size(jnp.asarray(v)[..., None], 0, 1))[0])
            for k, v in phys.items()
        },
        "rhat_u_max": float(np.nanmax(rhat_u)),
        "rhat_u_median": float(np.nanmedian(rhat_u)),
        "rhat_weights_max": res.max_rhat,
        "chain_means": {k: np.asarray(v).mean(1).round(4).tolist() for k, v in phys.items()},
        "min_ess_weights": res.min_ess,
        "divergences": res.divergences,
        "mean_acceptance": res.mean_acceptance,
        "chains": chains,
        "warmup": warmup,
        "samples": samples,
        "init": "given" if init_particles is not None else "prior",
    }
    pick = np.asarray(
        jax.random.choice(key_pick, chains * samples, (min(keep, chains * samples),), False)
    )
    particles = jax.tree_util.tree_map(lambda a: a[pick], flat)
    return particles, res.wall_time_s, info


def fit_quality(problem, particles) -> dict:
    """Mean over samples of the data misfit per datum ``|Gamma^{-1/2}(y - G)|^2 / m`` and of
    the log prior density: tells whether a method's samples sit where NUTS's do (a sampler
    stuck away from the posterior mass shows a higher misfit or a lower log prior)."""
    obs, prior = problem.observation(), problem.prior()
    outputs = jax.vmap(problem.forward_fn)(particles)
    misfit = jax.vmap(lambda g: 2 * obs.misfit(g) / obs.size)(outputs)
    log_prior = jax.vmap(prior.log_prob)(particles)
    return {
        "misfit_per_datum": float(jnp.mean(misfit)),
        "log_posterior": float(jnp.mean(log_prior - 0.5 * obs.size * misfit)),
    }


def compare(row: dict, nuts: dict) -> dict:
    """The issue's targets for one ekibnn row against the NUTS row."""
    params = {}
    ok = True
    for name, ref in nuts["parameters"].items():
        est = row["parameters"][name]
        z = abs(est["mean"] - ref["mean"]) / ref["std"]
        ratio = est["std"] / ref["std"]
        met = z <= TARGETS["mean_within_std"] and (
            1 / TARGETS["std_ratio_max"] <= ratio <= TARGETS["std_ratio_max"]
        )
        params[name] = {"mean_diff_in_nuts_std": z, "std_ratio": ratio, "met": bool(met)}
        ok &= met
    u_ratio = row["rel_l2_u"] / nuts["rel_l2_u"]
    checks = {
        "parameters": all(p["met"] for p in params.values()),
        "rel_l2_u": u_ratio <= TARGETS["rel_l2_u_ratio_max"],
        "coverage": row["coverage_u_95"] >= TARGETS["coverage_min"],
        "speedup": row["speedup_vs_nuts"] >= TARGETS["speedup_min"],
    }
    return {
        "parameters": params,
        "rel_l2_u_ratio": u_ratio,
        "checks": {k: bool(v) for k, v in checks.items()},
        "all_met": bool(all(checks.values())),
    }


def fit_row(problem, method, key, **settings):
    """Fit one recipe (its defaults, unless ``settings`` says otherwise) and summarise it.

    Returns ``(row, posterior)``: the row has ``method``, ``wall_time_s`` (compilation
    included), ``num_steps``, :func:`ekibnn.pinn.evaluate`'s metrics and (for an ensemble)
    :func:`fit_quality`'s; ``posterior`` is the ensemble's particles, or the linearised
    posterior of the Jacobian recipes (no weight draws: its misfit columns are NaN)."""
    start = time.perf_counter()
    result = pinn.fit(problem, key, method=method, **settings)
    posterior = result.posterior
    posterior = posterior.particles if hasattr(posterior, "particles") else posterior
    jax.block_until_ready(posterior)
    wall = time.perf_counter() - start
    row = {"method": method, "wall_time_s": wall, "num_steps": int(result.num_steps)}
    row.update(pinn.evaluate(problem, posterior, key=jax.random.fold_in(key, 1)))
    if isinstance(posterior, dict):  # an ensemble: where its members sit
        row.update(fit_quality(problem, posterior))
    return row, posterior


def nuts_row(problem, key, chains, warmup, samples, keep, init_particles=None):
    """NUTS on the problem's posterior: ``(row, particles)``, the row with
    :func:`nuts_posterior`'s diagnostics and the same metrics as :func:`fit_row`'s."""
    particles, wall, info = nuts_posterior(
        problem, key, chains, warmup, samples, keep, init_particles
    )
    row = {"method": "nuts", "wall_time_s": wall, **info}
    row.update(pinn.evaluate(problem, particles))
    row.update(fit_quality(problem, particles))
    return row, particles


def run_problem(name, args):
    kwargs = {} if args.noise is None else {"noise": args.noise}
    problem = pinn.PROBLEMS[name](parameterization=args.parameterization, **kwargs)
    chains, warmup, samples = args.nuts_budget.get(name, NUTS_BUDGET[name])
    chains = args.chains or chains
    warmup = args.warmup or warmup
    samples = args.samples or samples
    rows, ensembles = [], {}
    for method in args.methods:
        row, ensembles[method] = fit_row(
            problem,
            method,
            jax.random.key(args.seed),
            ensemble_size=args.ensemble_size,
            max_steps=args.max_steps,
            inflation=args.inflation,
            sampler_time=args.sampler_time,
        )
        rows.append(row)
        print(f"  {name} {method}: {row['wall_time_s']:.1f} s", flush=True)
    init_particles = None
    if args.nuts_init == "ekibnn":
        first = ensembles[args.methods[0]]
        init_particles = jax.tree_util.tree_map(lambda a: a[:chains], first)
    nuts, particles = nuts_row(
        problem,
        jax.random.key(args.seed + 1),
        chains,
        warmup,
        samples,
        args.keep,
        init_particles,
    )
    wall = nuts["wall_time_s"]
    print(f"  {name} nuts: {wall:.1f} s", flush=True)
    for row in rows:
        row["speedup_vs_nuts"] = wall / row["wall_time_s"]
        row["targets"] = compare(row, nuts)
    nuts_phys = problem.constrained(particles["phys"])
    samples_k = {"nuts": {k: np.asarray(v).tolist() for k, v in nuts_phys.items()}}
    for method, ens in ensembles.items():
        if not isinstance(ens, dict):  # a linearised posterior: no members to histogram
            continue
        phys = problem.constrained(ens["phys"])
        samples_k[method] = {k: np.asarray(v).tolist() for k, v in phys.items()}
    return {
        "problem": name,
        "parameterization": args.parameterization,
        "noise": float(problem.noise_u) if np.ndim(problem.noise_u) == 0 else None,
        "true": {k: p.true for k, p in problem.phys.items()},
        "nuts": nuts,
        "ekibnn": rows,
        "_samples": samples_k,
    }


def print_table(report):
    n = report["nuts"]
    print(
        f"\n== {report['problem']} (noise {report['noise']}), {report['parameterization']} "
        f"parameterisation, same posterior for all rows =="
    )
    rhat = ", ".join(f"{k} {v:.3f} (ESS {n['ess'][k]:.0f})" for k, v in n["rhat"].items())
    print(
        f"NUTS {n['chains']} chains x ({n['warmup']} warm-up + {n['samples']} draws), init "
        f"{n['init']}: R-hat {rhat}; u max {n['rhat_u_max']:.3f} (median "
        f"{n['rhat_u_median']:.3f}); raw weights max {n['rhat_weights_max']:.2f}; "
        f"divergences {n['divergences']}, acceptance {n['mean_acceptance']:.2f}"
    )
    names = list(n["parameters"])
    head = f"{'method':<9}" + "".join(
        f"{p + ' mean+-std':>17}{'|dm|/s':>7}{'s ratio':>8}" for p in names
    )
    print(
        head + f"{'relL2 u':>8}{'relL2 f':>8}{'cov95':>6}{'misfit':>7}{'logpost':>9}"
        f"{'wall s':>8}{'speedup':>8}  targets met"
    )
    for row in [n, *report["ekibnn"]]:
        cells = ""
        for p in names:
            est = row["parameters"][p]
            cells += f"{est['mean']:>10.3f}+-{est['std']:<5.3f}"
            if row is n:
                cells += f"{'':>7}{'':>8}"
            else:
                t = row["targets"]["parameters"][p]
                cells += f"{t['mean_diff_in_nuts_std']:>7.2f}{t['std_ratio']:>8.2f}"
        if row is n:
            verdict = "(reference)"
            speed = 1.0
        else:
            checks = row["targets"]["checks"]
            failed = [k for k, v in checks.items() if not v]
            verdict = "yes" if not failed else "no (" + ", ".join(failed) + ")"
            speed = row["speedup_vs_nuts"]
        print(
            f"{row['method']:<9}{cells}{row['rel_l2_u']:>8.3f}{row['rel_l2_f']:>8.3f}"
            f"{row['coverage_u_95']:>6.2f}{row.get('misfit_per_datum', np.nan):>7.2f}"
            f"{row.get('log_posterior', np.nan):>9.1f}{row['wall_time_s']:>8.1f}{speed:>8.1f}"
            f"  {verdict}"
        )


def plot(reports, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r, k) for r in reports for k in r["true"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (report, name) in zip(axes[0], panels, strict=True):
        every = np.concatenate([np.asarray(v[name]) for v in report["_samples"].values()])
        bins = np.linspace(every.min(), every.max(), 60)
        top = 0.0
        for method, values in report["_samples"].items():
            style = {"color": "k", "lw": 2} if method == "nuts" else {}
            heights, _, _ = ax.hist(
                values[name], bins=bins, density=True, histtype="step", label=method, **style
            )
            if method == "nuts":
                top = float(np.max(heights))
        ax.set_ylim(0, 3 * top)  # collapsed ensembles are spikes: clipped, NUTS stays visible
        if report["true"][name] is not None:
            ax.axvline(report["true"][name], color="grey", ls="--", label="true")
        ax.set_title(f"{report['problem']}: {name}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["poisson1d"], choices=pinn.PROBLEMS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=pinn.METHODS)
    parser.add_argument("--noise", type=float, default=None)
    parser.add_argument("--parameterization", default="ntk", choices=["ntk", "standard"])
    parser.add_argument("--ensemble-size", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--inflation", type=float, default=0.1)
    parser.add_argument("--sampler-time", type=float, default=pinn.SAMPLER_TIME)
    parser.add_argument("--chains", type=int, default=None, help="default: NUTS_BUDGET")
    parser.add_argument("--warmup", type=int, default=None, help="default: NUTS_BUDGET")
    parser.add_argument("--samples", type=int, default=None, help="default: NUTS_BUDGET")
    parser.add_argument(
        "--nuts-budget",
        nargs="*",
        default=[],
        metavar="PROBLEM=CHAINS,WARMUP,SAMPLES",
        help="per-problem NUTS budget (default: NUTS_BUDGET; --chains etc. override)",
    )
    parser.add_argument(
        "--nuts-init",
        default="prior",
        choices=["prior", "ekibnn"],
        help="start the NUTS chains from prior draws (default) or from members of the first "
        "method's ensemble",
    )
    parser.add_argument("--keep", type=int, default=1000, help="NUTS draws kept for metrics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args()
    args.nuts_budget = {
        item.split("=")[0]: tuple(int(v) for v in item.split("=")[1].split(","))
        for item in args.nuts_budget
    }
    if args.quick:
        args.ensemble_size, args.max_steps, args.sampler_time = 16, 5, 0.05
        args.chains, args.warmup, args.samples, args.keep = 2, 10, 10, 20
    out = args.out or RESULTS / ("bpinn_quick.json" if args.quick else "bpinn.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
    }
    reports = []
    for name in args.problems:
        report = run_problem(name, args)
        print_table(report)
        reports.append(report)
        # written after every problem, so a long run leaves its finished tables behind
        out.write_text(json.dumps({**meta, "reports": reports}, indent=1))
        plot(reports, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
