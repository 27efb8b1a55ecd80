"""The ``ekibnn`` command line (Typer): ``demo``, ``fit``.

Every command has ``--help``; exit code 0 on success, 1 on a user error (reported as one clear
message, no traceback), 2 on bad command-line usage.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ekibnn import recipes  # the recipe registry: names only, no JAX

app = typer.Typer(
    name="ekibnn",
    help="Bayesian neural networks with Ensemble Kalman Inversion (JAX).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    x64: Annotated[
        bool, typer.Option("--x64", help="Compute in float64 (default float32).")
    ] = False,
) -> None:
    """Bayesian neural networks with Ensemble Kalman Inversion (JAX)."""
    if x64:
        import jax

        jax.config.update("jax_enable_x64", True)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.command()
def demo(
    config: Annotated[
        str, typer.Option(help="'tutorial' (the notebook's settings) or 'default' (recommended).")
    ] = "default",
    out: Annotated[Path, typer.Option(help="Output folder for PNGs and metrics.json.")] = Path(
        "out/demo"
    ),
    seed: Annotated[int, typer.Option(help="Random seed (data, prior and run).")] = 0,
    scale: Annotated[
        float, typer.Option(help="Shrink ensemble and steps by this factor (smoke tests).")
    ] = 1.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run the tutorial problem end to end: fit, metrics, predictive.png and misfit.png."""
    from ekibnn.demo import CONFIGS, run_demo

    if config not in CONFIGS:
        _fail(f"--config: expected one of {sorted(CONFIGS)}; got {config!r}")
    if not 0 < scale <= 1:
        _fail(f"--scale: expected a number in (0, 1]; got {scale}")
    report = run_demo(config, out_dir=out, seed=seed, progress=progress, scale=scale)
    shown = ("rmse", "nll", "coverage_95", "epistemic_std_in", "wall_time_s", "steps_per_s")
    for name in shown:
        typer.echo(f"{name:>18s}: {report[name]:.4g}")
    typer.echo(f"wrote {out / 'predictive.png'}, {out / 'misfit.png'}, {out / 'metrics.json'}")


@app.command()
def fit(
    dataset: Annotated[
        str,
        typer.Option(help="diabetes | breast_cancer | digits | wine | path to a CSV file."),
    ],
    target: Annotated[
        str | None, typer.Option(help="Target column (required for a CSV file).")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="regression | classification (CSV; default: guess).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/fit"),
    test_size: Annotated[float, typer.Option(help="Held-out fraction.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed for the split and the fit.")] = 0,
    ensemble_size: Annotated[int | None, typer.Option(help="Ensemble size J.")] = None,
    steps: Annotated[int | None, typer.Option(help="Maximum EKI steps.")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden widths, e.g. '50' or '64,64'.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help=" | ".join(recipes.NAMES)
            + ": the fitting recipe (docs/algorithms.md says what each does and what was "
            "measured)."
        ),
    ] = recipes.DEFAULT,
    sampler_time: Annotated[
        float | None,
        typer.Option(
            help="uki | eks | aldi: algorithm time of the second phase (UKI: iterations); "
            "default 10."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fit an EKI BNN to a bundled scikit-learn data set or a CSV file; write metrics and plots."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from ekibnn import metrics, plotting
    from ekibnn.datasets import load_csv, load_sklearn
    from ekibnn.errors import InputError
    from ekibnn.estimators import EKIClassifier, EKIRegressor

    if method not in recipes.NAMES:
        _fail(
            f"--method: expected one of {', '.join(recipes.NAMES)}; got {method!r}; fix: pass "
            f"e.g. --method {recipes.DEFAULT} (the default)"
        )
    try:
        if dataset in ("diabetes", "breast_cancer", "digits", "wine"):
            X, y, kind = load_sklearn(dataset)
        else:
            if target is None:
                _fail("--target: expected the name of the target column for a CSV file; got none")
            X, y, kind = load_csv(dataset, target, task=task or "auto")
    except InputError as err:
        _fail(str(err))
    if not 0 < test_size < 1:
        _fail(f"--test-size: expected a fraction in (0, 1); got {test_size}")
    kwargs: dict = {
        "random_state": seed,
        "progress": progress,
        "method": method,
        "sampler_time": sampler_time,
    }
    if ensemble_size is not None:
        kwargs["ensemble_size"] = ensemble_size
    if steps is not None:
        kwargs["num_steps"] = steps
    if hidden is not None:
        try:
            kwargs["hidden"] = tuple(int(h) for h in hidden.split(","))
        except ValueError:
            _fail(f"--hidden: expected comma-separated integers such as '64,64'; got {hidden!r}")
    stratify = y if kind == "classification" else None
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=stratify
    )
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report: dict = {"dataset": dataset, "task": kind, "n_train": len(y_tr), "n_test": len(y_te)}
    try:
        if kind == "regression":
            model = EKIRegressor(**kwargs).fit(X_tr, y_tr)
            report["wall_time_s"] = time.perf_counter() - start
            mean, std = model.predict(X_te, return_std=True)
            levels = np.linspace(0.05, 0.95, 19)
            nominal, observed = metrics.calibration_curve_regression(y_te, mean, std, levels)
            lo, hi = metrics.gaussian_interval(mean, std, 0.95)
            report |= {
                "rmse": float(metrics.rmse(y_te, mean)),
                "nll": float(metrics.gaussian_nll_moment(y_te, mean, std)),
                "crps": float(metrics.crps_gaussian(y_te, mean, std)),
                "coverage_95": float(metrics.interval_coverage(y_te, lo, hi)),
                "r2": float(model.score(X_te, y_te)),
            }
            plotting.plot_pred_vs_true(out / "predictions.png", y_te, mean, std, title=dataset)
        else:
            model = EKIClassifier(**kwargs).fit(X_tr, y_tr)
            report["wall_time_s"] = time.perf_counter() - start
            proba = np.asarray(model.predict_proba(X_te))
            labels = np.searchsorted(model.classes_, y_te)
            conf, acc, count = metrics.reliability_diagram(labels, proba, num_bins=10)
            keep = np.asarray(count) > 0
            nominal, observed = np.asarray(conf)[keep], np.asarray(acc)[keep]
            report |= {
                "accuracy": float(metrics.accuracy(labels, proba)),
                "nll": float(metrics.categorical_nll(labels, proba)),
                "brier": float(metrics.brier_score(labels, proba)),
                "ece": float(metrics.expected_calibration_error(labels, proba)),
            }
    except (InputError, ValueError) as err:
        _fail(str(err))
    plotting.plot_calibration(
        out / "calibration.png",
        np.asarray(nominal),
        np.asarray(observed),
        title=f"{dataset}: calibration",
    )
    report["params"] = {k: v for k, v in model.get_params().items() if _jsonable(v)}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    for name, value in report.items():
        if isinstance(value, float):
            typer.echo(f"{name:>12s}: {value:.4g}")
    typer.echo(f"wrote {out / 'metrics.json'} and plots in {out}")


@app.command()
def pinn(
    problem: Annotated[
        str, typer.Argument(help="poisson1d | diffusion_reaction2d | damped_oscillator")
    ],
    noise: Annotated[float, typer.Option(help="Noise std of the measurements.")] = 0.1,
    method: Annotated[
        str,
        typer.Option(
            help="Inversion recipe: "
            + " | ".join(recipes.NAMES)
            + f" (see ekibnn.pinn.fit; uki: at most {recipes.UKI_MAX_PARAMS} parameters, "
            "aldi: ensemble >= p + 2)."
        ),
    ] = "eki",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/pinn"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    scale: Annotated[
        float, typer.Option(help="Shrink ensemble and steps by this factor (smoke tests).")
    ] = 1.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Bayesian PINN inverse problem: posterior of the physical parameters and of u; writes
    metrics.json, solution.png and parameters.png."""
    from ekibnn.errors import InputError
    from ekibnn.pinn import PROBLEMS, run_pinn

    if problem not in PROBLEMS:
        _fail(f"PROBLEM: expected one of {sorted(PROBLEMS)}; got {problem!r}")
    if not 0 < scale <= 1:
        _fail(f"--scale: expected a number in (0, 1]; got {scale}")
    try:
        report = run_pinn(
            problem,
            noise=noise,
            method=method,
            out_dir=out,
            seed=seed,
            scale=scale,
            progress=progress,
        )
    except InputError as err:
        _fail(str(err))
    for name, post in report["parameters"].items():
        typer.echo(f"{name:>8s}: {post['mean']:.4g} +- {post['std']:.3g} (true {post['true']})")
    for name in ("rel_l2_u", "rel_l2_f", "coverage_u_95", "wall_time_s"):
        typer.echo(f"{name:>14s}: {report[name]:.4g}")
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'solution.png'}, {out / 'parameters.png'}")


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def run() -> None:  # pragma: no cover - console entry point wrapper
    """Entry point that turns uncaught user errors into one line and exit code 1."""
    from ekibnn.errors import InputError

    try:
        app()
    except InputError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    run()
