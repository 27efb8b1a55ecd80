"""Which held-out points carry the tutorial's NLL: the demo's default (``laplace``) on the
fidelity suite's tutorial data, the mean NLL overall and inside ``|x| <= 2``, and the points
with the largest NLL. Run from the repository root:

    python benchmarks/tutorial_nll_points.py
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ekibnn import demo, recipes
from ekibnn.bnn.likelihoods import RegressionForward


def main(seed: int = 0, worst: int = 5) -> None:
    cfg = demo.CONFIGS["default"]
    _, key_run, _, prior, likelihood, _, (x_test, y_test) = demo._problem(cfg, seed)
    problem = recipes.Problem(
        likelihood.forward_fn,
        likelihood.obs,
        prior,
        indexed_forward_fn=likelihood.indexed_forward_fn,
    )
    fit = recipes.fit(cfg.method, problem, key_run, num_steps=cfg.num_steps)
    outputs = RegressionForward(jnp.asarray(x_test), 1)
    mean, epi = (np.asarray(a) for a in fit.posterior.predict(outputs))
    std = np.sqrt(epi**2 + cfg.noise_std**2)
    nll = 0.5 * np.log(2 * np.pi * std**2) + 0.5 * (y_test - mean) ** 2 / std**2
    inside = np.abs(x_test[:, 0]) <= 2
    print(
        f"mean NLL {nll.mean():.4f}; inside |x| <= 2 ({inside.sum()} points) "
        f"{nll[inside].mean():.4f}"
    )
    for i in np.argsort(-nll)[:worst]:
        print(
            f"x {x_test[i, 0]:+.3f}  truth {np.sin(np.pi * x_test[i, 0]):+.3f}  mean {mean[i]:+.3f}"
            f"  epistemic std {epi[i]:.3f}  NLL {nll[i]:.2f}  (adds {nll[i] / nll.size:.4f})"
        )


if __name__ == "__main__":
    main()
