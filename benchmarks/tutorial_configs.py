"""The `tutorial` and `default` demo configurations over several seeds (data, prior draw and
run key all change with the seed): RMSE against the truth on |x| <= 2, held-out NLL and 95%
coverage, mean epistemic std inside (|x| <= 2) and outside (2 < |x| <= 2.5) the data region,
wall time with compilation. Run:

    python benchmarks/tutorial_configs.py              # seeds 0..4, J = 1000, 500 steps
    python benchmarks/tutorial_configs.py --quick      # seeds 0..1, J = 100, 50 steps
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ekibnn.demo import run_demo

RESULTS = Path(__file__).parent / "results"
KEYS = ("rmse", "nll", "coverage_95", "epistemic_std_in", "epistemic_std_out", "wall_time_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    seeds = range(2 if args.quick else args.seeds)
    scale = 0.1 if args.quick else 1.0
    table = {}
    for config in ("tutorial", "default"):
        runs = [run_demo(config, seed=s, progress=False, scale=scale) for s in seeds]
        table[config] = {k: [r[k] for r in runs] for k in KEYS}
    print(f"seeds {list(seeds)}, scale {scale}: mean +- std over seeds")
    print("| config | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for config, values in table.items():
        cells = [f"{np.mean(values[k]):.3f} +- {np.std(values[k]):.3f}" for k in KEYS]
        print(f"| {config} | " + " | ".join(cells) + " |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tutorial_configs.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
