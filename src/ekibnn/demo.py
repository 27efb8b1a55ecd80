"""The tutorial problem end to end: data, BNN, EKI fit, metrics and plots.

Two configurations (:data:`CONFIGS`) of the same posterior — 500 points
``y = sin(pi x) + 0.1 N(0, 1)``, a [1, 20, 20, 1] tanh network with raw N(0, 1) weights, the
noise 0.1 known:

* ``tutorial`` reproduces the notebook's algorithm and settings exactly — J = 1000 networks,
  500 steps of perturbed-observation EKI with ``dt = 1``, minibatches of 100 drawn without
  replacement, ``R = 0.1^2 I`` and a random walk ``sigma_xi = 0.02`` before every update — with
  its defects fixed: independent keys for every parameter leaf, the whole loop compiled, and
  bands that include the observation noise. Its spread is set by the random walk, not by the
  posterior.
* ``default`` runs the library's default recipe (:data:`ekibnn.recipes.DEFAULT`, ``laplace``:
  Levenberg–Marquardt MAP in Kalman form from 4 prior draws, then the linearised-Laplace
  posterior) on that posterior; its predictive bands are the linearised posterior's exact
  Gaussian moments. How both compare with NUTS: ``docs/recipes.md``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import ekibnn as ek
from ekibnn import metrics
from ekibnn.bnn.likelihoods import regression
from ekibnn.bnn.models import MLP, ensemble_apply, num_params
from ekibnn.bnn.predictive import predictive, predictive_interval
from ekibnn.datasets import sine_truth, tutorial_sine
from ekibnn.report import preload_plotting, prepare_out_dir, write_json

__all__ = ["CONFIGS", "OUTPUT_FILES", "DemoConfig", "DemoSetup", "run_demo", "setup_demo"]

OUTPUT_FILES = ("metrics.json", "predictive.png", "misfit.png")  # what run_demo(out_dir=) writes


@dataclass(frozen=True)
class DemoConfig:
    """Settings of a demo run (all sizes can be shrunk for tests with ``scale``)."""

    name: str
    method: str = "eki"  # "eki": the tutorial's loop; else a Jacobian recipe of ekibnn.recipes
    ensemble_size: int = 1000
    num_steps: int = 500
    batch_size: int = 100
    inflation: float = 0.02
    noise_std: float = 0.1
    hidden: tuple[int, ...] = (20, 20)
    activation: str = "tanh"
    parameterization: str = "standard"
    prior_std: float = 1.0
    dt: float = 1.0
    num_train: int = 500

    def scaled(self, scale: float) -> DemoConfig:
        """A smaller copy (ensemble and steps times ``scale``; for ``laplace`` the
        Levenberg–Marquardt steps) for smoke tests."""
        if scale == 1.0:
            return self
        return replace(
            self,
            ensemble_size=max(8, int(self.ensemble_size * scale)),
            num_steps=max(2, int(self.num_steps * scale)),
        )


CONFIGS: dict[str, DemoConfig] = {
    "tutorial": DemoConfig("tutorial"),
    # The library default on the tutorial's posterior. Only `num_steps` (the recipe's
    # Levenberg-Marquardt budget, 400) and the posterior's definition (hidden, activation,
    # parameterization, prior_std, noise_std, num_train) apply; the ensemble settings do not.
    "default": DemoConfig("default", method="laplace", num_steps=400),
}

#: settings of :class:`DemoConfig` that only the ensemble (``method="eki"``) loop reads
ENSEMBLE_SETTINGS = ("ensemble_size", "batch_size", "inflation", "dt")


class DemoSetup(NamedTuple):
    """Everything an ensemble demo fit needs, built by :func:`setup_demo` (reuse ``algo`` to
    time a second, already compiled run)."""

    config: DemoConfig
    algo: ek.EKI
    particles: ek.bnn.MLP  # the prior ensemble (leading axis J)
    key: jax.Array  # the run's key
    model: ek.bnn.MLP  # template network
    train: tuple[np.ndarray, np.ndarray]  # (x (n, 1), y (n,))
    test: tuple[np.ndarray, np.ndarray]  # held-out noisy data


def _config(config: str | DemoConfig, scale: float) -> DemoConfig:
    return (CONFIGS[config] if isinstance(config, str) else config).scaled(scale)


def _problem(cfg: DemoConfig, seed: int):
    """Keys (prior draws, run), the template network, the prior, the likelihood and the
    train / test data of a configuration."""
    key_model, key_prior, key_run = jax.random.split(jax.random.key(seed), 3)
    x, y = tutorial_sine(seed=seed, n=cfg.num_train, noise=cfg.noise_std)
    x_test, y_test = tutorial_sine(seed=seed + 10_000, n=500, noise=cfg.noise_std)
    model = MLP(
        key_model,
        1,
        1,
        cfg.hidden,
        activation=cfg.activation,
        parameterization=cfg.parameterization,
    )
    prior = ek.GaussianPrior.like(model, std=cfg.prior_std)
    likelihood = regression(x, y, cfg.noise_std)
    return key_prior, key_run, model, prior, likelihood, (x, y), (x_test, y_test)


def setup_demo(config: str | DemoConfig = "tutorial", seed: int = 0, scale: float = 1.0):
    """Data, network, prior ensemble and EKI algorithm of an ensemble (``method="eki"``)
    configuration.

    Raises:
        InputError: the configuration runs a Jacobian recipe (``default``): use
            :func:`run_demo`.
    """
    cfg = _config(config, scale)
    if cfg.method != "eki":
        from ekibnn.errors import input_error

        raise input_error(
            "setup_demo config",
            "an ensemble configuration (method='eki', e.g. 'tutorial')",
            f"{cfg.name!r} (method={cfg.method!r})",
            "use run_demo for it, or setup_demo('tutorial')",
        )
    key_prior, key_run, model, prior, likelihood, train, test = _problem(cfg, seed)
    particles = prior.sample(key_prior, cfg.ensemble_size)
    algo = ek.eki(
        likelihood.indexed_forward_fn,
        likelihood.obs,
        prior=prior,
        scheduler=ek.schedulers.constant(cfg.dt),
        inflation=cfg.inflation,
        minibatch=ek.minibatch.random(min(cfg.batch_size, cfg.num_train)),
        indexed_forward=True,
    )
    return DemoSetup(cfg, algo, particles, key_run, model, train, test)


def run_demo(
    config: str | DemoConfig = "default",
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    scale: float = 1.0,
) -> dict:
    """Fit the tutorial problem, compute metrics, and (with ``out_dir``) write
    ``predictive.png``, ``misfit.png`` and ``metrics.json`` there.

    Returns:
        The metrics dictionary (also written as JSON): ``rmse`` (predictive mean against the
        noise-free truth on |x| <= 2), ``nll`` (held-out noisy data; the ensemble's Gaussian
        mixture, or the linearised posterior's Gaussian), ``nll_in_data`` (the same over the
        held-out points with |x| <= 2: the test inputs are drawn like the training inputs, so
        a few lie beyond the data, where one tanh network's extrapolation dominates ``nll``),
        ``crps``, ``coverage_95`` (held-out
        noisy data in the 95% predictive interval), ``epistemic_std_in`` /
        ``epistemic_std_out`` (mean epistemic std for |x| <= 2 and at 2 < |x| <= 2.5),
        ``final_misfit``, ``wall_time_s`` (fit, compilation included), ``steps_per_s``,
        ``num_steps``, ``method``, ``ensemble_size`` (None for a Jacobian recipe),
        ``converged`` and ``warnings`` (Jacobian recipes: the MAP's convergence), ``n_params``,
        ``config``, ``settings``.

    Raises:
        InputError: ``out_dir`` cannot take the files (checked before the fit).
    """
    if out_dir is not None:
        out_dir = prepare_out_dir(out_dir, OUTPUT_FILES, what="run_demo out_dir")
        preload_plotting()  # matplotlib loads while the fit runs
    cfg = _config(config, scale)
    fit = _fit_ensemble if cfg.method == "eki" else _fit_jacobian
    report, bands, misfit = fit(cfg, seed, progress)
    if out_dir is not None:
        from ekibnn import plotting

        out = Path(out_dir)
        x_grid, mean, epistemic, total, (x, y), truth = bands
        plotting.plot_predictive(
            out / "predictive.png",
            x_grid,
            mean,
            epistemic,
            total,
            x[:, 0],
            y,
            truth,
            title=f"ekibnn '{cfg.name}' ({cfg.method}): RMSE {report['rmse']:.3f}, "
            f"coverage {report['coverage_95']:.2f}",
        )
        plotting.plot_misfit(out / "misfit.png", misfit, title=f"'{cfg.name}'")
        write_json(out / "metrics.json", report)
    return report


_GRID = np.linspace(-2.5, 2.5, 401, dtype=np.float32)
_DATA_RANGE = 2.0  # |x| <= 2: "inside the data" for the grid and the held-out points
_INSIDE = np.abs(_GRID) <= _DATA_RANGE


def _settings(cfg: DemoConfig) -> dict:
    settings = asdict(cfg)
    if cfg.method != "eki":
        for name in ENSEMBLE_SETTINGS:
            del settings[name]
    return settings


def _fit_ensemble(cfg: DemoConfig, seed: int, progress: bool):
    """The tutorial's EKI loop; metrics from the members' predictions (Gaussian mixture)."""
    cfg, algo, particles, key_run, model, (x, y), (x_test, y_test) = setup_demo(cfg, seed)
    start = time.perf_counter()
    result = ek.run(key_run, algo, particles, num_steps=cfg.num_steps, progress=progress)
    jax.block_until_ready(result.particles)
    wall = time.perf_counter() - start

    predict = jax.jit(lambda p, xs: ensemble_apply(p, xs[:, None])[..., 0])
    grid_preds = np.asarray(predict(result.particles, jnp.asarray(_GRID)))
    test_preds = np.asarray(predict(result.particles, jnp.asarray(x_test[:, 0])))
    grid = predictive(grid_preds, cfg.noise_std)
    truth = np.asarray(sine_truth(_GRID))
    lo, hi = predictive_interval(test_preds, cfg.noise_std, 0.95)
    held_in = np.abs(x_test[:, 0]) <= _DATA_RANGE
    noisy = test_preds + cfg.noise_std * np.random.default_rng(seed).normal(
        size=test_preds.shape
    ).astype(np.float32)
    report = {
        "config": cfg.name,
        "method": cfg.method,
        "rmse": float(metrics.rmse(truth[_INSIDE], np.asarray(grid.mean)[_INSIDE])),
        "nll": float(metrics.gaussian_nll(y_test, test_preds, cfg.noise_std)),
        "nll_in_data": float(
            metrics.gaussian_nll(y_test[held_in], test_preds[:, held_in], cfg.noise_std)
        ),
        "crps": float(metrics.crps(y_test, noisy)),
        "coverage_95": float(metrics.interval_coverage(y_test, lo, hi)),
        "epistemic_std_in": float(np.mean(np.asarray(grid.epistemic_std)[_INSIDE])),
        "epistemic_std_out": float(np.mean(np.asarray(grid.epistemic_std)[~_INSIDE])),
        "final_misfit": float(result.history.misfit[-1]),
        "wall_time_s": wall,
        "steps_per_s": result.num_steps / wall,
        "num_steps": result.num_steps,
        "ensemble_size": cfg.ensemble_size,
        "n_params": num_params(model),
        "settings": _settings(cfg),
    }
    epistemic = predictive_interval(grid_preds, 1e-6, 0.95, method="gaussian")
    total = predictive_interval(grid_preds, cfg.noise_std, 0.95)
    bands = (
        _GRID,
        np.asarray(grid.mean),
        tuple(map(np.asarray, epistemic)),
        tuple(map(np.asarray, total)),
        (x, y),
        truth,
    )
    return report, bands, np.asarray(result.history.misfit)


@jax.jit
def _gaussian_scores(mean, epistemic_std, noise_std, y_test, x_test, truth):
    """Every metric of a Gaussian predictive in one program: ``mean`` and ``epistemic_std``
    on the grid then the test inputs (``(401 + n_test,)``); the held-out scores are
    :func:`ekibnn.metrics.regression_report`'s. Also the grid's 95% epistemic and total
    bands (``"bands"``: two ``(lower, upper)`` pairs), for the plot."""
    g = _GRID.size
    total_std = jnp.sqrt(epistemic_std**2 + noise_std**2)
    held_out = metrics.regression_report(y_test, mean[g:], total_std[g:])
    held_in = jnp.abs(x_test) <= _DATA_RANGE
    inside = jnp.asarray(_INSIDE)
    epi = epistemic_std[:g]
    return {
        "rmse": jnp.sqrt(jnp.sum(jnp.where(inside, (mean[:g] - truth) ** 2, 0)) / inside.sum()),
        **{k: held_out[k] for k in ("nll", "crps", "coverage_95")},
        "nll_in_data": metrics.gaussian_nll_moment(y_test, mean[g:], total_std[g:], held_in),
        "epistemic_std_in": jnp.sum(jnp.where(inside, epi, 0)) / inside.sum(),
        "epistemic_std_out": jnp.sum(jnp.where(inside, 0, epi)) / (~inside).sum(),
        "bands": (
            metrics.gaussian_interval(mean[:g], epi, 0.95),
            metrics.gaussian_interval(mean[:g], total_std[:g], 0.95),
        ),
    }


def _fit_jacobian(cfg: DemoConfig, seed: int, progress: bool):
    """A Jacobian recipe (``laplace``) through :func:`ekibnn.recipes.fit`, exactly as the
    estimators run it; metrics from the linearised posterior's exact Gaussian moments."""
    from ekibnn import recipes
    from ekibnn.bnn.likelihoods import RegressionForward
    from ekibnn.errors import convergence_recorded

    _, key_run, model, prior, likelihood, (x, y), (x_test, y_test) = _problem(cfg, seed)
    problem = recipes.Problem(
        likelihood.forward_fn,
        likelihood.obs,
        prior,
        indexed_forward_fn=likelihood.indexed_forward_fn,
    )
    start = time.perf_counter()
    with convergence_recorded() as warned:
        fit = recipes.fit(cfg.method, problem, key_run, num_steps=cfg.num_steps, progress=progress)
        jax.block_until_ready(fit.posterior.mean)
    wall = time.perf_counter() - start
    points = np.concatenate([_GRID, x_test[:, 0]])[:, None]
    mean, epistemic_std = fit.posterior.predict(RegressionForward(jnp.asarray(points), 1))
    truth = np.asarray(sine_truth(_GRID))
    scores = _gaussian_scores(
        mean, epistemic_std, cfg.noise_std, jnp.asarray(y_test), jnp.asarray(x_test[:, 0]), truth
    )
    epistemic, total = jax.tree_util.tree_map(np.asarray, scores.pop("bands"))
    misfit = np.asarray(fit.history.misfit)
    report = {
        "config": cfg.name,
        "method": cfg.method,
        **{name: float(value) for name, value in scores.items()},
        "final_misfit": float(misfit[-1]),
        "wall_time_s": wall,
        "steps_per_s": fit.num_steps / wall,
        "num_steps": fit.num_steps,
        "ensemble_size": None,
        "converged": fit.converged,
        "warnings": list(warned),
        "n_params": num_params(model),
        "settings": _settings(cfg),
    }
    bands = (_GRID, np.asarray(mean)[: _GRID.size], epistemic, total, (x, y), truth)
    return report, bands, misfit
