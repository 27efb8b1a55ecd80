"""First-call overhead of ``EKIRegressor()`` at its defaults: two fits in one process, each
``ekibnn.run`` call timed (steps taken, seconds), so the cold fit's compilation shows as the
difference between the first fit and the second. Run from the repository root:

    python benchmarks/first_fit_overhead.py            # diabetes
    python benchmarks/first_fit_overhead.py friedman1
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import posterior_fidelity as pf

from ekibnn.estimators import EKIRegressor

_run_module = importlib.import_module("ekibnn.run")
_plain_run = _run_module.run


def _timed_run(key, algo, starts, steps, **kwargs):
    start = time.perf_counter()
    result = _plain_run(key, algo, starts, steps, **kwargs)
    print(
        f"  run({type(algo).__name__}, budget={steps}): {result.num_steps} steps, "
        f"{time.perf_counter() - start:.2f} s"
    )
    return result


def main(name: str) -> None:
    _run_module.run = _timed_run  # recipes look ``run`` up in ekibnn.run at call time
    data = pf.split_dataset(name, 0)
    for attempt in ("first (cold)", "second (warm)"):
        reg = EKIRegressor(random_state=0)
        start = time.perf_counter()
        reg.fit(data["X_tr"], data["y_tr"])
        print(f"{name} {attempt} fit: {time.perf_counter() - start:.2f} s, {reg.n_iter_} steps")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "diabetes")
