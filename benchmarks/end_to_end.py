"""End to end: the wall time of each ``ekibnn`` command run as a cold subprocess (a new Python
process: interpreter start, imports, compilation, computation, figures and metrics.json), beside
the notebook-structured implementation of the tutorial (``tutorial_speed.baseline``, also in a
new process) measured in the same run.

Commands timed (``--repeat N`` runs each N times, interleaved, and reports the median):

* ``ekibnn --help``, ``ekibnn --version``: start-up only (no JAX import);
* ``ekibnn demo`` (``default`` configuration): with ``--no-compile-cache`` (cold), then in a
  temporary ``XDG_CACHE_HOME`` twice: once filling JAX's persistent compilation cache and
  once with that cache warm;
* ``ekibnn demo --config tutorial`` (cold): the notebook's settings, the same problem, sizes
  and seed as the baseline; the ratio to the baseline is the end-to-end speed-up of the command;
* ``ekibnn fit --dataset diabetes`` and ``ekibnn pinn poisson1d`` (cold).

The ratio column is a command's wall time over the baseline's (below 1: faster), for the demo
rows, which solve the baseline's problem (``default`` with its own recommended settings). The
"computation" column is the command's own ``wall_time_s`` from metrics.json (fit, or fit and
prediction: without Python start, imports and figures). All processes share one temporary
``XDG_CACHE_HOME``, whose matplotlib font cache is built before timing. Writes
``benchmarks/results/end_to_end.json``. Run:

    python benchmarks/end_to_end.py             # full size
    python benchmarks/end_to_end.py --quick     # --scale 0.05; fit: --hidden 8 --steps 5
    python benchmarks/end_to_end.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
QUICK_SCALE = 0.05

# The baseline of tutorial_speed.py (imported, not copied) at the demo's sizes, in a new process
# with the single-threaded BLAS that tutorial_speed.py gives it (and ek.run sets by default).
_BASELINE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ekibnn.run import blas_limits
from tutorial_speed import baseline
from ekibnn.demo import CONFIGS
cfg = CONFIGS["tutorial"].scaled(float(sys.argv[2]))
with blas_limits(1):
    wall, warm, rmse = baseline(cfg.ensemble_size, cfg.num_steps, seed=0)
print(json.dumps({"wall_time_s": wall, "wall_s_without_compile": warm, "rmse": rmse,
                  "J": cfg.ensemble_size, "steps": cfg.num_steps}))
"""
_CLI = "import sys; from ekibnn.cli import run; sys.argv[0] = 'ekibnn'; run()"


def _launcher() -> list[str]:
    """The ``ekibnn`` console script beside this interpreter, else the same entry point run by
    this interpreter (the console script is exactly ``from ekibnn.cli import run; run()``)."""
    script = Path(sys.executable).parent / "ekibnn"
    return [str(script)] if script.is_file() else [sys.executable, "-c", _CLI]


def _commands(quick: bool) -> list[dict]:
    """What to run: a label, the arguments, whether the persistent cache is on, and whether the
    demo's ratio to the baseline is shown."""
    scale = ["--scale", str(QUICK_SCALE)] if quick else []
    fit_size = ["--hidden", "8", "--steps", "5"] if quick else []
    cold = ["--no-compile-cache"]
    return [
        {"label": "ekibnn --help", "args": ["--help"]},
        {"label": "ekibnn --version", "args": ["--version"]},
        {
            "label": "ekibnn demo (cold, --no-compile-cache)",
            "args": [*cold, "demo", *scale, "--no-progress"],
            "out": True,
            "ratio": True,
        },
        {
            "label": "ekibnn demo (compile cache empty: filling it)",
            "args": ["demo", *scale, "--no-progress"],
            "out": True,
            "ratio": True,
            "cache": "fill",
        },
        {
            "label": "ekibnn demo (compile cache warm)",
            "args": ["demo", *scale, "--no-progress"],
            "out": True,
            "ratio": True,
            "cache": "warm",
        },
        {
            "label": "ekibnn demo --config tutorial (cold)",
            "args": [*cold, "demo", "--config", "tutorial", *scale, "--no-progress"],
            "out": True,
            "ratio": True,
        },
        {
            "label": "ekibnn fit --dataset diabetes (cold)",
            "args": [*cold, "fit", "--dataset", "diabetes", *fit_size, "--no-progress"],
            "out": True,
        },
        {
            "label": "ekibnn pinn poisson1d (cold)",
            "args": [*cold, "pinn", "poisson1d", *scale, "--no-progress"],
            "out": True,
        },
    ]


def _timed(argv: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command (median)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat: expected an integer >= 1")
    scale = QUICK_SCALE if args.quick else 1.0
    commands = _commands(args.quick)
    launcher = _launcher()
    walls: dict[str, list[float]] = {c["label"]: [] for c in commands}
    computation: dict[str, list[float]] = {c["label"]: [] for c in commands}
    baseline_walls: list[float] = []
    baseline_runs: list[dict] = []

    with tempfile.TemporaryDirectory(prefix="ekibnn-e2e-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "EKIBNN_NO_COMPILE_CACHE"}
        env["XDG_CACHE_HOME"] = str(root / "xdg")
        env["MPLBACKEND"] = "Agg"
        # matplotlib's font cache, built once here, not inside the first timed command
        subprocess.run([sys.executable, "-c", "import matplotlib.pyplot"], env=env, check=True)
        for rep in range(args.repeat):
            for i, c in enumerate(commands):
                if c.get("cache") == "fill":  # an empty compile cache in each repeat
                    shutil.rmtree(root / "xdg" / "ekibnn" / "jax", ignore_errors=True)
                argv = [*launcher, *c["args"]]
                if c.get("out"):
                    argv += ["--out", str(root / f"out-{rep}-{i}")]
                wall, _ = _timed(argv, env)
                walls[c["label"]].append(wall)
                if c.get("out"):
                    metrics = json.loads((Path(argv[-1]) / "metrics.json").read_text())
                    computation[c["label"]].append(metrics["wall_time_s"])
                print(f"[{rep}] {c['label']}: {wall:.2f} s", file=sys.stderr, flush=True)
            wall, proc = _timed([sys.executable, "-c", _BASELINE, str(HERE), str(scale)], env)
            baseline_walls.append(wall)
            baseline_runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"[{rep}] baseline: {wall:.2f} s", file=sys.stderr, flush=True)

    base = statistics.median(baseline_walls)
    base_inner = statistics.median(r["wall_time_s"] for r in baseline_runs)
    b0 = baseline_runs[0]
    rows = []
    for c in commands:
        wall = statistics.median(walls[c["label"]])
        inner = computation[c["label"]]
        rows.append(
            {
                "command": c["label"],
                "argv": ["ekibnn", *c["args"]],
                "wall_s": wall,
                "wall_s_runs": walls[c["label"]],
                "computation_s": statistics.median(inner) if inner else None,
                "ratio_to_baseline": wall / base if c.get("ratio") else None,
            }
        )
    baseline_label = (
        f"notebook-structured baseline (tutorial_speed.baseline, J = {b0['J']}, "
        f"{b0['steps']} steps, cold)"
    )
    rows.append(
        {
            "command": baseline_label,
            "argv": None,
            "wall_s": base,
            "wall_s_runs": baseline_walls,
            "computation_s": base_inner,
            "ratio_to_baseline": 1.0,
        }
    )

    print(f"\nscale {scale}, {args.repeat} run(s) of each (median), {os.cpu_count()} CPUs")
    print("| command | wall (s) | computation (s) | ratio to baseline |")
    print("|---|---|---|---|")
    for row in rows:
        inner = f"{row['computation_s']:.2f}" if row["computation_s"] is not None else "-"
        ratio = row["ratio_to_baseline"]
        print(
            f"| {row['command']} | {row['wall_s']:.2f} | {inner} | "
            f"{f'{ratio:.2f}x' if ratio is not None else '-'} |"
        )
    print(
        f"baseline RMSE vs truth on |x| <= 2: {b0['rmse']:.4f}; its loop without the first "
        f"(compiling) step: {b0['wall_s_without_compile']:.2f} s"
    )
    RESULTS.mkdir(exist_ok=True)
    result = {
        "quick": args.quick,
        "scale": scale,
        "repeat": args.repeat,
        "launcher": launcher if launcher[0] != sys.executable else [sys.executable, "-c", "..."],
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "baseline_runs": baseline_runs,
    }
    (RESULTS / "end_to_end.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
