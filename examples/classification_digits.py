"""EKIClassifier on scikit-learn's bundled digits (1797 8x8 images, 10 classes): accuracy,
NLL and expected calibration error on a held-out split. Run:

    python examples/classification_digits.py [--ensemble 100] [--steps 300] [--samples 1797]
"""

from __future__ import annotations

import argparse

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
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X, y = X[: args.samples], y[: args.samples]
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.25, random_state=args.seed, stratify=y
    )
    clf = ek.EKIClassifier(
        hidden=(args.hidden,),
        ensemble_size=args.ensemble,
        num_steps=args.steps,
        random_state=args.seed,
    )
    clf.fit(X_tr, y_tr)
    proba = np.asarray(clf.predict_proba(X_te))
    labels = np.searchsorted(clf.classes_, y_te)
    report = {
        "accuracy": float(metrics.accuracy(labels, proba)),
        "nll": float(metrics.categorical_nll(labels, proba)),
        "ece": float(metrics.expected_calibration_error(labels, proba)),
    }
    print(", ".join(f"{k} {v:.3f}" for k, v in report.items()))
    return report


if __name__ == "__main__":
    main()
