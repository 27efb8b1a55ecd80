"""Fidelity suite: every DEFAULT of ekibnn against BlackJAX NUTS on the same posterior, in one
process, with one table of targets.

Problems (``--problems``, comma-separated; all by default):

* ``tutorial``: 500 points ``y = sin(pi x) + 0.1 N(0, 1)``, a [1, 20, 20, 1] tanh network with
  standard parameterisation and a raw N(0, 1) prior, noise 0.1 known. ekibnn: the ``laplace``
  recipe exactly as ``ekibnn demo`` runs it (configuration ``default``). "inside" = ``|x| <= 2``,
  "outside" = ``2 < |x| <= 2.5``; RMSE of the mean against the noise-free truth inside; NLL on
  500 held-out noisy points.
* ``diabetes``, ``friedman1`` (scikit-learn; a seeded 75/25 split): ``EKIRegressor()`` at its
  defaults (``laplace``; the noise and the prior std left unset, so the evidence fits both)
  against NUTS on the same model: the same network (NTK parameterisation, the estimator's
  default widths) with the noise std and the prior std unknown (``log sigma ~ N(-1, 1)``,
  ``log s ~ N(0, 1)``, the weights ``s eps`` with ``eps ~ N(0, I)``), the full-Bayes
  counterpart of the evidence's type-II fit. Both fitted scales are reported (ekibnn's
  ``prior_std_``, NUTS's posterior of ``s``). "inside" = the test inputs, "outside" = the test
  inputs scaled by 3 about the training mean; RMSE and NLL on the test set.
* ``poisson1d`` (noise 0.1), ``poisson1d_0.01`` (noise 0.01), ``diffusion_reaction2d``: the
  B-PINNs of :mod:`ekibnn.pinn` at their defaults (``pinn.fit`` with the default recipe on the
  problem's default posterior) against NUTS on that posterior (``bpinn.py``'s budget).
  "RMSE" = relative L2 error of the mean u against the exact u on a grid of the domain,
  epistemic std = the mean posterior std of u there (inside only: "outside" is n/a); NLL of
  held-out noisy measurements of u at the grid points (the problem's noise, a seeded draw).

Columns (target in brackets; every cell says met / missed): RMSE / NUTS's [<= 1.1], epistemic
std / NUTS's inside and outside [0.8, 1.25], whether ekibnn's std grows outside as NUTS's does,
held-out NLL minus NUTS's [<= 0.02 nats] (and, a diagnostic without a target, the same over
the tutorial's held-out points inside the data, |x| <= 2: a few test inputs fall beyond the
data, where the tails of one network's extrapolation decide the NLL), the physical
parameter's |mean - NUTS mean| / NUTS std [<= 0.5] and std / NUTS std [0.8, 1.25] (PINNs),
(a diagnostic, regression rows) the evidence's prior std over the mean of NUTS's posterior of
it, NUTS time / ekibnn time, compilation included in both [>= 30], and NUTS's max R-hat of the
predictions [< 1.1: usable; weight-space R-hat is meaningless for networks, see
``nuts_reference.py``].

Writes ``<out>/fidelity_suite.json`` and ``.md`` (after every problem) and one figure per
problem, ``<out>/fidelity_<problem>.png`` (ekibnn's 95% epistemic band over NUTS's). The work
is done by ``posterior_fidelity.py``, ``nuts_reference.py`` and ``bpinn.py``; this script
chooses the defaults, scores them and writes the table. Run from the repository root:

    python benchmarks/fidelity_suite.py            # full size: expected ~45-60 min on 2 cores
    python benchmarks/fidelity_suite.py --quick    # tiny sizes: a smoke run of every problem
    python benchmarks/fidelity_suite.py --problems tutorial,poisson1d --out /tmp/fidelity
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts

import bpinn
import jax
import jax.numpy as jnp
import numpy as np
import posterior_fidelity as pf

from ekibnn import demo, metrics, pinn
from ekibnn.errors import convergence_recorded
from ekibnn.estimators import EKIRegressor

RESULTS = Path(__file__).parent / "results"
REGRESSION = ("diabetes", "friedman1")
#: suite name -> (problem of ekibnn.pinn, noise std)
PINNS = {
    "poisson1d": ("poisson1d", 0.1),
    "poisson1d_0.01": ("poisson1d", 0.01),
    "diffusion_reaction2d": ("diffusion_reaction2d", 0.1),
}
PROBLEMS = ("tutorial", *REGRESSION, *PINNS)

#: column -> (header, target text); the checks are in :func:`checks`
COLUMNS = {
    "rmse_ratio": ("RMSE / NUTS", "<= 1.1"),
    "epi_ratio_in": ("epi std / NUTS, in", "0.8 to 1.25"),
    "epi_ratio_out": ("epi std / NUTS, out", "0.8 to 1.25"),
    "grows_outside": ("std grows out (NUTS)", "as NUTS"),
    "nll_diff": ("NLL - NUTS", "<= 0.02"),
    "nll_in_diff": ("NLL - NUTS, test points in the data", "diagnostic"),
    "phys_z": ("phys mean diff / NUTS std", "<= 0.5"),
    "phys_std_ratio": ("phys std / NUTS", "0.8 to 1.25"),
    "prior_std_ratio": ("prior std: evidence's / NUTS posterior mean", "diagnostic"),
    "time_ratio": ("NUTS time / time", ">= 30"),
    "nuts_rhat": ("NUTS R-hat pred", "< 1.1"),
}
STD_RANGE = (0.8, 1.25)


def sizes(quick: bool) -> dict:
    """Every size in one place. Full: the defaults of ekibnn (None: the library's own) against
    NUTS at ``posterior_fidelity.py``'s and ``bpinn.py``'s budgets; ``--quick``: tiny networks
    and budgets (not the defaults: a smoke run of the code, not a measurement)."""
    if quick:
        return dict(
            chains=2,
            warmup=30,
            samples=30,
            thin=1,
            hidden_tut=(8,),
            lm_steps=20,
            hidden_reg=(8,),
            pinn_hidden=(8,),
            pinn_budget=(2, 20, 20),
            keep=40,
        )
    return dict(
        chains=4,
        warmup=500,
        samples=500,
        thin=2,
        hidden_tut=demo.CONFIGS["default"].hidden,
        lm_steps=None,
        hidden_reg=None,
        pinn_hidden=None,
        pinn_budget=None,  # bpinn.NUTS_BUDGET
        keep=1000,
    )


# ------------------------------------------------------------------------------ scoring
def _ratio(a, b):
    return None if a is None or b is None else float(a) / float(b)


def score(problem: str, label: str, ours: dict, nuts: dict) -> dict:
    """One table row from two summaries with ``rmse``, ``epi_in``, ``epi_out`` (None: n/a),
    ``nll`` (None: n/a), ``wall_s``, ``parameters`` (PINNs: ``{name: {"mean", "std"}}``) and,
    for NUTS, ``rhat``."""
    phys_z = phys_ratio = None
    if ours.get("parameters"):
        ref = nuts["parameters"]
        phys_z = max(
            abs(v["mean"] - ref[k]["mean"]) / ref[k]["std"] for k, v in ours["parameters"].items()
        )
        ratios = [v["std"] / ref[k]["std"] for k, v in ours["parameters"].items()]
        phys_ratio = max(ratios, key=lambda r: abs(math.log(r)))  # the worst one
    grows = nuts_grows = None
    if ours["epi_out"] is not None:
        grows = bool(ours["epi_out"] > ours["epi_in"])
        nuts_grows = bool(nuts["epi_out"] > nuts["epi_in"])
    prior_std_ratio = None  # regression rows: the evidence's prior std against NUTS's
    if ours.get("prior_std") is not None and nuts.get("prior_std") is not None:
        prior_std_ratio = float(ours["prior_std"]) / float(nuts["prior_std"]["mean"])
    nll_diff = nll_in_diff = None
    if ours["nll"] is not None and nuts["nll"] is not None:
        nll_diff = float(ours["nll"] - nuts["nll"])
    if ours.get("nll_in") is not None and nuts.get("nll_in") is not None:
        nll_in_diff = float(ours["nll_in"] - nuts["nll_in"])
    row = {
        "problem": problem,
        "ekibnn": label,
        "rmse_ratio": _ratio(ours["rmse"], nuts["rmse"]),
        "epi_ratio_in": _ratio(ours["epi_in"], nuts["epi_in"]),
        "epi_ratio_out": _ratio(ours["epi_out"], nuts["epi_out"]),
        "grows_outside": grows,
        "nuts_grows_outside": nuts_grows,
        "nll_diff": nll_diff,
        "nll_in_diff": nll_in_diff,
        "phys_z": phys_z,
        "phys_std_ratio": phys_ratio,
        "prior_std_ratio": prior_std_ratio,
        "time_ratio": float(nuts["wall_s"]) / float(ours["wall_s"]),
        "nuts_rhat": float(nuts["rhat"]),
        "ekibnn_summary": {k: v for k, v in ours.items() if not k.startswith("_")},
        "nuts_summary": {k: v for k, v in nuts.items() if not k.startswith("_")},
    }
    row["checks"] = checks(row)
    return row


def checks(row: dict) -> dict:
    """Column -> met (bool), None where the column is n/a."""

    def within(v, lo, hi):
        return None if v is None else bool(lo <= v <= hi)

    grows = row["grows_outside"]
    return {
        "rmse_ratio": within(row["rmse_ratio"], 0, 1.1),
        "epi_ratio_in": within(row["epi_ratio_in"], *STD_RANGE),
        "epi_ratio_out": within(row["epi_ratio_out"], *STD_RANGE),
        "grows_outside": None if grows is None else grows == row["nuts_grows_outside"],
        "nll_diff": within(row["nll_diff"], -math.inf, 0.02),
        "phys_z": within(row["phys_z"], 0, 0.5),
        "phys_std_ratio": within(row["phys_std_ratio"], *STD_RANGE),
        "time_ratio": within(row["time_ratio"], 30, math.inf),
        "nuts_rhat": within(row["nuts_rhat"], 0, 1.1 - 1e-12),
    }


# ------------------------------------------------------------------------------ problems
def tutorial(seed: int, sz: dict) -> tuple[dict, dict]:
    """The demo's ``default`` (``laplace``) on the tutorial posterior against NUTS."""
    cfg = demo.CONFIGS["default"]
    cfg = replace(cfg, hidden=tuple(sz["hidden_tut"]), num_steps=sz["lm_steps"] or cfg.num_steps)
    report, bands, _ = demo._fit_jacobian(cfg, seed, False)  # what `ekibnn demo` runs
    ref = pf.nuts_tutorial(seed, sz)
    grid, mean, epi_band, _, (x, y), _ = bands
    ours = {
        "rmse": report["rmse"],
        "epi_in": report["epistemic_std_in"],
        "epi_out": report["epistemic_std_out"],
        "nll": report["nll"],
        "nll_in": report["nll_in_data"],
        "wall_s": report["wall_time_s"],
    }
    nuts = _nuts_summary(ref)
    plot = {
        "title": "tutorial: demo default (laplace) vs NUTS",
        "x": pf.GRID,
        "nuts": _gaussian_band(ref["_mean"], ref["_epi"]),
        "x_ours": grid,
        "ours": (mean, *epi_band),
        "truth": (pf.GRID, np.asarray(pf.sine_truth(pf.GRID))),
        "data": (x[:, 0], y),
        "xlabel": "x",
    }
    return score("tutorial", "demo default (laplace)", ours, nuts), plot


def regression(name: str, seed: int, sz: dict) -> tuple[dict, dict]:
    """``EKIRegressor()`` at its defaults on a data set against NUTS with the noise and the
    prior std unknown (the model the default fits by the evidence)."""
    data = pf.split_dataset(name, seed)
    settings = {} if sz["hidden_reg"] is None else {"hidden": sz["hidden_reg"]}
    if sz["lm_steps"] is not None:
        settings["num_steps"] = sz["lm_steps"]
    reg = EKIRegressor(random_state=seed, **settings)
    row = pf.regressor_row(f"EKIRegressor({_kwargs(settings)})", reg, data)
    ref = pf.nuts_dataset(f"nuts:{name}", data, tuple(reg.hidden), seed, sz, prior_std=None)
    ours = {k: row[k] for k in ("rmse", "epi_in", "epi_out", "nll")} | {"wall_s": row["wall_s"]}
    ours["prior_std"] = float(reg.prior_std_)  # the evidence's; NUTS's posterior in its summary
    order = np.argsort(ref["_mean"])
    idx = np.arange(order.size)
    plot = {
        "title": f"{name}: {row['method']} vs NUTS (test points, sorted by NUTS mean)",
        "x": idx,
        "nuts": _gaussian_band(ref["_mean"][order], ref["_epi"][order]),
        "x_ours": idx,
        "ours": _gaussian_band(row["_mean"][order], row["_epi"][order]),
        "truth": None,
        "data": (idx, data["y_te"][order]),
        "xlabel": "test point",
    }
    return score(name, row["method"], ours, _nuts_summary(ref)), plot


def _kwargs(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _nuts_summary(ref: dict) -> dict:
    keys = ("rmse", "epi_in", "epi_out", "nll", "wall_s")
    summary = {k: ref[k] for k in keys} | {
        "nll_in": ref.get("nll_in"),
        "rhat": ref["pred_max_rhat"],
        "pred_min_ess": ref["pred_min_ess"],
        "divergences": ref["divergences"],
        "draws": ref["draws"],
    }
    if "prior_std" in ref:  # the posterior of an unknown prior std (regression rows)
        summary["prior_std"] = ref["prior_std"]
    return summary


def _gaussian_band(mean, std):
    lo, hi = metrics.gaussian_interval(jnp.asarray(mean), jnp.asarray(std), 0.95)
    return np.asarray(mean), np.asarray(lo), np.asarray(hi)


def pinn_problem(name: str, seed: int, sz: dict) -> tuple[dict, dict]:
    """``ekibnn.pinn``'s default recipe on a B-PINN against NUTS (``bpinn.py``'s functions)."""
    problem_name, noise = PINNS[name]
    kwargs = {} if sz["pinn_hidden"] is None else {"hidden": sz["pinn_hidden"]}
    problem = pinn.PROBLEMS[problem_name](noise=noise, seed=seed, **kwargs)
    settings = {} if sz["lm_steps"] is None else {"max_steps": sz["lm_steps"]}
    key = jax.random.key(seed)
    row, posterior = bpinn.fit_row(problem, pinn.DEFAULT_METHOD, key, **settings)
    chains, warmup, samples = sz["pinn_budget"] or bpinn.NUTS_BUDGET[problem_name]
    nuts, particles = bpinn.nuts_row(
        problem, jax.random.key(seed + 1), chains, warmup, samples, sz["keep"]
    )
    # held-out noisy u at the metrics grid, and a line through the domain for the figure
    x = problem.grid(201)
    u_true = np.asarray(jax.vmap(problem.exact_u)(jnp.asarray(x, jnp.result_type(float))))
    rng = np.random.default_rng(seed + 20_000)
    y_held = u_true + noise * rng.normal(size=u_true.shape)
    if problem.dim == 1:
        line, along = x, x[:, 0]
    else:  # the line y = 0.5 (u = sin(pi x) there)
        along = np.linspace(-1.0, 1.0, 101)
        line = np.stack([along, np.full_like(along, 0.5)], axis=1)
    key_draw = jax.random.fold_in(key, 2)
    summaries, bands = {}, {}
    for who, post, r in (("ours", posterior, row), ("nuts", particles, nuts)):
        u = pinn.draws(problem, post, x, key_draw).u
        u_line = pinn.draws(problem, post, line, key_draw).u
        lo, hi = np.quantile(u_line, [0.025, 0.975], axis=0)
        bands[who] = (u_line.mean(0), lo, hi)
        summaries[who] = {
            "rmse": r["rel_l2_u"],
            "epi_in": r["u_std"],
            "epi_out": None,
            "nll": float(metrics.gaussian_nll(jnp.asarray(y_held), jnp.asarray(u), noise)),
            "wall_s": r["wall_time_s"],
            "parameters": r["parameters"],
            "coverage_u_95": r["coverage_u_95"],
        }
    summaries["nuts"]["rhat"] = nuts["rhat_u_max"]
    summaries["nuts"]["rhat_phys"] = nuts["rhat"]
    summaries["nuts"]["divergences"] = nuts["divergences"]
    line_true = np.asarray(jax.vmap(problem.exact_u)(jnp.asarray(line, jnp.result_type(float))))
    plot = {
        "title": f"{name} (noise {noise}): pinn.fit default ({pinn.DEFAULT_METHOD}) vs NUTS"
        + ("" if problem.dim == 1 else ", u along y = 0.5"),
        "x": along,
        "nuts": bands["nuts"],
        "x_ours": along,
        "ours": bands["ours"],
        "truth": (along, line_true),
        "data": (problem.x_u[:, 0], problem.y_u) if problem.dim == 1 else None,
        "xlabel": "x",
    }
    label = f"pinn.fit ({pinn.DEFAULT_METHOD})"
    return score(name, label, summaries["ours"], summaries["nuts"]), plot


def run_one(name: str, seed: int, sz: dict) -> tuple[dict, dict]:
    if name == "tutorial":
        return tutorial(seed, sz)
    if name in REGRESSION:
        return regression(name, seed, sz)
    return pinn_problem(name, seed, sz)


# ------------------------------------------------------------------------------ output
def _cell(row: dict, col: str) -> str:
    value, met = row.get(col), row["checks"].get(col)
    if value is None:
        return "n/a"
    if met is None:  # a diagnostic column
        return f"{value:.3g}"
    if col == "grows_outside":
        text = f"{'yes' if value else 'no'} ({'yes' if row['nuts_grows_outside'] else 'no'})"
    else:
        text = f"{value:.3g}"
    return f"{text} {'met' if met else 'missed'}"


def table(rows: list[dict]) -> str:
    """The markdown table (also what is printed)."""
    head = ["problem", "ekibnn"] + [f"{h} [{t}]" for h, t in COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["problem"], r["ekibnn"]] + [_cell(r, c) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(path: Path, plot: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    mean, lo, hi = plot["nuts"]
    ax.fill_between(plot["x"], lo, hi, color="0.6", alpha=0.6, lw=0, label="NUTS 95% band")
    ax.plot(plot["x"], mean, color="0.3", lw=1, label="NUTS mean")
    mean, lo, hi = plot["ours"]
    ax.fill_between(plot["x_ours"], lo, hi, color="C0", alpha=0.4, lw=0, label="ekibnn 95% band")
    ax.plot(plot["x_ours"], mean, color="C0", lw=1, label="ekibnn mean")
    if plot["truth"] is not None:
        ax.plot(*plot["truth"], "k--", lw=0.8, label="truth")
    if plot["data"] is not None:
        ax.plot(*plot["data"], "k.", ms=2, alpha=0.5, label="data")
    ax.set_xlabel(plot["xlabel"])
    ax.set_title(plot["title"] + "\n(epistemic bands: no observation noise)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf" / "nan": JSON has no such numbers
    return value


def run_suite(problems, sz: dict, seed: int = 0, out: Path = RESULTS, meta=None) -> list[dict]:
    """Run ``problems``; write the JSON, markdown and figures to ``out`` (after every problem);
    return the rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(problems) - set(PROBLEMS)
    if unknown:
        raise SystemExit(f"--problems: unknown {sorted(unknown)}; expected some of {PROBLEMS}")
    meta = {
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "seed": seed,
        "sizes": {k: str(v) for k, v in sz.items()},
        **(meta or {}),
    }
    rows = []
    for name in problems:
        print(f"== {name}", flush=True)
        with convergence_recorded() as warned:  # reported in the row, not raised
            row, plot = run_one(name, seed, sz)
        row["warnings"] = warned
        rows.append(row)
        figure(out / f"fidelity_{name}.png", plot)
        text = table(rows)
        targets = {c: t for c, (_, t) in COLUMNS.items()}
        doc = {"meta": meta, "targets": targets, "rows": rows}
        (out / "fidelity_suite.json").write_text(json.dumps(_jsonable(doc), indent=1))
        (out / "fidelity_suite.md").write_text(
            "# ekibnn defaults against NUTS on the same posterior\n\n"
            f"{json.dumps(meta)}\n\n{text}\n"
        )
    print("\n" + table(rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"subset of {PROBLEMS}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems = [p for p in args.problems.split(",") if p]
    run_suite(problems, sizes(args.quick), args.seed, args.out, {"quick": args.quick})
    print(f"wrote {args.out}/fidelity_suite.json, .md and fidelity_<problem>.png")


if __name__ == "__main__":
    main()
