"""EKIClassifier on scikit-learn's bundled digits (1797 8x8 images, 10 classes): accuracy,
NLL and expected calibration error on a held-out split. Run:

    python examples/classification_digits.py [--ensemble 100] [--steps 300] [--samples 1797]

The full-size default is a [64, 160, 10] tanh network (12 010 parameters, NTK parameterisation),
J = 100 members, 300 steps: measured 97.8% test accuracy (NLL 0.150, ECE 0.080) on the 450
held-out images (seed 0); fit + predict 132 s wall on this project's shared 2-core CPU (68 s
of CPU time for the whole script).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import ekibnn as ek
from ekibnn import metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=1797, help="use the first N images")
    parser.add_argument("--hidden", type=int, default=160, help="hidden width (one layer)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X, y = X[: args.samples], y[: args.samples]
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.25, random_state=args.seed, stratify=y
    )
    clf = ek.EKIClassifier(
        method="teki",  # the ensemble recipe these figures were measured with
        hidden=(args.hidden,),
        ensemble_size=args.ensemble,
        num_steps=args.steps,
        random_state=args.seed,
    )
    start = time.perf_counter()
    clf.fit(X_tr, y_tr)
    proba = np.asarray(clf.predict_proba(X_te))
    labels = np.searchsorted(clf.classes_, y_te)
    report = {
        "accuracy": float(metrics.accuracy(labels, proba)),
        "nll": float(metrics.categorical_nll(labels, proba)),
        "ece": float(metrics.expected_calibration_error(labels, proba)),
        "num_params": (X.shape[1] + 1) * args.hidden + (args.hidden + 1) * len(clf.classes_),
        "wall_s": time.perf_counter() - start,
    }
    print(
        ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items())
    )
    return report


if __name__ == "__main__":
    main()
