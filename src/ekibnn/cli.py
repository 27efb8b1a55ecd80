"""The ``ekibnn`` command line (Typer): ``demo``, ``fit``, ``pinn``.

Every command checks all its options, its input data and its output folder before it computes
anything, and before it imports JAX, scikit-learn or matplotlib (``--help``, ``--version`` and a
bad option cost only the start of Python and Typer). An error is one line on stderr,
``error: <what>: expected ...; got ...; fix: ...``, never a traceback (``EKIBNN_DEBUG=1`` shows
the traceback of an unexpected one).

Exit codes (Click's convention):

* 0: success.
* 1: the computation failed: bad input found by the library once it started, an error from
  scikit-learn or XLA, out of memory, an output file that could not be written.
* 2: usage error: a bad option or argument value, an unknown name, a path that cannot be read
  or written, a data file that cannot be used. Nothing was computed.

JAX's persistent compilation cache is on for every command, in ``$XDG_CACHE_HOME/ekibnn/jax``
(default ``~/.cache/ekibnn/jax``), for programs of any size and compile time, so a second run
of the same command skips most of its compilation; ``--no-compile-cache`` or
``EKIBNN_NO_COMPILE_CACHE=1`` turns it off. ``metrics.json`` says whether it was on, where, and
how many entries it held before and after the run (``compile_cache``), so cold and warm wall
times can be told apart.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from ekibnn import recipes  # the recipe registry: names only, no JAX
from ekibnn.errors import ComputationError, InputError, input_error

if TYPE_CHECKING:
    import numpy as np

# Spelled out so that checking an option imports no JAX; tests check each against its source.
DEMO_CONFIGS = ("default", "tutorial")  # = ekibnn.demo.CONFIGS
PINN_PROBLEMS = ("poisson1d", "diffusion_reaction2d", "damped_oscillator")  # = pinn.PROBLEMS
# the recipes with a second stage, which take --sampler-time
SAMPLER_METHODS = tuple(name for name, r in recipes.RECIPES.items() if len(r.stages) > 1)

DEMO_FILES = ("metrics.json", "predictive.png", "misfit.png")  # = ekibnn.demo.OUTPUT_FILES
PINN_FILES = ("metrics.json", "solution.png", "parameters.png")  # = pinn.problems.OUTPUT_FILES
FEW_ROWS = 10  # fewer training or held-out rows than this: a warning

EXIT_CODES = (
    "Exit codes: 0 success; 1 the computation failed (library, scikit-learn or XLA error, out of "
    "memory, an output file not written); 2 usage error (bad option value, unknown name, "
    "unusable path or data file; nothing computed)."
)

# Click's exceptions: Typer >= 0.20 vendors Click, older versions use the click package.
_click = importlib.import_module(typer.BadParameter.__module__)


class _Refused(_click.UsageError):
    """A command line refused by ekibnn's own checks (its message says what to do)."""


class _Group(TyperGroup):
    """The ``ekibnn`` command group: any error ends as one line on stderr and an exit code."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _click.NoArgsIsHelpError as err:
            err.show()
            code = err.exit_code
        except _click.ClickException as err:  # usage errors (2) from Click and from the checks
            message = err.format_message().rstrip(".")
            ctx = getattr(err, "ctx", None)
            if ctx is not None and not isinstance(err, _Refused):  # Click's: no fix in the text
                message += f"; see '{ctx.command_path} --help'"
            _error(message)
            code = err.exit_code
        except typer.Abort:
            _error("aborted")
            code = 1
        except Exception as err:
            if os.environ.get("EKIBNN_DEBUG"):
                raise
            _error(_explain(err))
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


# Options shared by several commands.
Scale = Annotated[
    float, typer.Option(help="Shrink ensemble and steps by this factor (smoke tests).")
]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
SelfCheck = Annotated[
    bool,
    typer.Option(
        "--self-check",
        help="laplace only: after the fit, compare the Laplace predictive spread with a "
        "32-member RML ensemble's and check the MAP converged; prints the verdict, writes it "
        "to metrics.json under self_check.",
    ),
]

app = typer.Typer(
    name="ekibnn",
    cls=_Group,
    help="Bayesian neural networks with Ensemble Kalman Inversion (JAX).",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: rich would double the start-up time of --help
)


def _error(message: str) -> None:
    typer.secho(f"error: {' '.join(message.split())}", fg=typer.colors.RED, err=True)


def _warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def _explain(err: Exception) -> str:
    """One line for an error raised by the computation (exit code 1)."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text:
        return (
            f"out of memory ({text[:300]}); fix: a smaller problem: --scale (demo, pinn), "
            "--ensemble-size or --hidden (fit)"
        )
    if isinstance(err, OSError):
        return f"{err.strerror or text}: {err.filename!r}" if err.filename else text
    if isinstance(err, (ValueError, ComputationError)):  # its message says what to do
        return text
    return (
        f"internal error: {type(err).__name__}: {text}; fix: run again with EKIBNN_DEBUG=1 for "
        "the traceback, and report it"
    )


def _require(ok: bool, what: str, expected: str, got: Any, fix: str) -> None:
    """Refuse a command line unless ``ok`` (a usage error: exit code 2)."""
    if not ok:
        raise _Refused(str(input_error(what, expected, str(got), fix)))


@contextmanager
def _usage_errors() -> Iterator[None]:
    """InputErrors raised inside are usage errors: they come before any computation."""
    try:
        yield
    except InputError as err:
        raise _Refused(str(err)) from None


def _check_common(seed: int, scale: float | None = None) -> None:
    _require(0 <= seed < 2**32, "--seed", "an integer in [0, 2**32)", seed, "pass e.g. --seed 0")
    if scale is not None:
        _require(0 < scale <= 1, "--scale", "a number in (0, 1]", scale, "pass e.g. --scale 0.1")


def _out_dir(out: Path, names: Sequence[str]) -> Path:
    """``--out`` created and checked (the last check before computing)."""
    from ekibnn.report import prepare_out_dir

    with _usage_errors():
        return prepare_out_dir(out, names, what="--out")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "ekibnn" / "jax"


def _count(folder: Path) -> int:
    return sum(1 for _ in folder.iterdir())


_NO_CACHE = {"enabled": False, "dir": None, "entries_before": None}


def _start_jax(ctx: typer.Context) -> dict[str, Any]:
    """Import JAX and apply the global options (after every check); return the cache record."""
    import jax

    from ekibnn.run import blas_limits

    # BLAS on one thread for the whole command, as ek.run does for its loops: the posterior's
    # factorisation and the predictions call LAPACK too (posterior + predictions of the demo:
    # 126-156 ms -> 85-89 ms on 2 cores); restored when the command ends, also on an error,
    # so that an in-process call (tests, notebooks) leaves the caller's BLAS as it was
    ctx.call_on_close(blas_limits(1).restore_original_limits)
    if ctx.obj["x64"]:
        jax.config.update("jax_enable_x64", True)
    if ctx.obj["no_compile_cache"]:
        return dict(_NO_CACHE)
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entries = _count(folder)
    except OSError as err:
        _warn(f"compile cache off: {str(folder)!r}: {err.strerror} (set XDG_CACHE_HOME)")
        return dict(_NO_CACHE)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size limit
    return {"enabled": True, "dir": str(folder), "entries_before": entries}


def _finish(
    out: Path, report: dict, cache: dict, shown: Sequence[str], files: Sequence[str]
) -> None:
    """Write ``metrics.json`` (strict JSON, with the compile-cache record) and print a summary."""
    from ekibnn.report import strict, write_json

    if cache["enabled"]:
        cache = cache | {"entries_after": _count(Path(cache["dir"]))}
    plain = strict(report | {"compile_cache": cache})
    write_json(out / "metrics.json", plain)
    width = max(map(len, shown))
    for name in shown:
        value = plain.get(name)
        text = f"{value:.4g}" if isinstance(value, int | float) else "undefined"
        if f"{name}_undefined" in plain:
            text += f" ({plain[f'{name}_undefined']})"
        typer.echo(f"{name:>{width}s}: {text}")
    typer.echo("wrote " + ", ".join(str(out / name) for name in files))


def _version(value: bool) -> None:
    if value:
        from ekibnn import __version__

        typer.echo(f"ekibnn {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    x64: Annotated[
        bool, typer.Option("--x64", help="Compute in float64 (default float32).")
    ] = False,
    no_compile_cache: Annotated[
        bool,
        typer.Option(
            "--no-compile-cache",
            envvar="EKIBNN_NO_COMPILE_CACHE",
            help="Do not use JAX's persistent compilation cache ($XDG_CACHE_HOME/ekibnn/jax, "
            "default ~/.cache/ekibnn/jax).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Bayesian neural networks with Ensemble Kalman Inversion (JAX)."""
    ctx.obj = {"x64": x64, "no_compile_cache": no_compile_cache}


@app.command(epilog=EXIT_CODES)
def demo(
    ctx: typer.Context,
    config: Annotated[
        str, typer.Option(help="'tutorial' (the notebook's settings) or 'default' (recommended).")
    ] = "default",
    out: Annotated[Path, typer.Option(help="Output folder for PNGs and metrics.json.")] = Path(
        "out/demo"
    ),
    seed: Annotated[int, typer.Option(help="Random seed (data, prior and run).")] = 0,
    scale: Scale = 1.0,
    progress: Progress = True,
) -> None:
    """Run the tutorial problem end to end: fit, metrics, predictive.png and misfit.png."""
    _require(
        config in DEMO_CONFIGS,
        "--config",
        f"one of {list(DEMO_CONFIGS)}",
        repr(config),
        "pass --config default (recommended) or --config tutorial",
    )
    _check_common(seed, scale)
    out = _out_dir(out, DEMO_FILES)
    cache = _start_jax(ctx)
    from ekibnn.demo import run_demo

    report = run_demo(config, out_dir=out, seed=seed, progress=progress, scale=scale)
    shown = ("rmse", "nll", "coverage_95", "epistemic_std_in", "wall_time_s", "steps_per_s")
    _finish(out, report, cache, shown, DEMO_FILES)


def _dataset_path(dataset: str, bundled: Sequence[str]) -> None:
    """Refuse a ``--dataset`` that is neither a bundled name nor a file."""
    looks_like_path = os.sep in dataset or "/" in dataset or bool(Path(dataset).suffix)
    _require(
        looks_like_path or os.path.exists(dataset),
        "--dataset",
        f"a bundled data set ({', '.join(bundled)}) or the path of a CSV file",
        f"{dataset!r}: no bundled data set has that name and no such file exists",
        "pass one of those names, or a CSV file with --target COLUMN",
    )


def _widths(hidden: str | None) -> tuple[int, ...] | None:
    if hidden is None:
        return None
    try:
        widths = tuple(int(h) for h in hidden.split(","))
    except ValueError:
        widths = ()
    _require(
        bool(widths) and min(widths) >= 1,
        "--hidden",
        "comma-separated positive layer widths such as '64,64'",
        repr(hidden),
        "pass e.g. --hidden 50",
    )
    return widths


def _check_split(y: np.ndarray, kind: str, test_size: float) -> None:
    """Refuse a split that leaves a side empty (or, for classes, a class out); warn when one side
    is too small to mean much. Sizes as scikit-learn's ``train_test_split`` makes them."""
    import numpy as np

    n = len(y)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    _require(n >= 2, "--dataset", "at least 2 data rows (to train and to test on)", n, "add rows")
    limit = f"at most {(n - 1) / n:.3g} for {n} rows"
    _require(
        n_train >= 1,
        "--test-size",
        f"a fraction that leaves rows to train on ({limit})",
        f"{test_size}: {n_test} of {n} rows held out",
        f"pass a smaller --test-size ({limit})",
    )
    if kind == "classification":
        labels, counts = np.unique(y, return_counts=True)
        labels, k = labels.tolist(), len(labels)
        _require(
            k >= 2,
            "--target",
            "at least 2 classes",
            f"only {labels[0]!r}",
            "check --target, or pass --task regression if its values are numbers",
        )
        rare = labels[int(np.argmin(counts))]
        _require(
            counts.min() >= 2,
            "--dataset",
            "at least 2 rows of every class (the split keeps the class proportions)",
            f"class {rare!r} in 1 row",
            "drop that row or add rows of its class",
        )
        _require(
            min(n_train, n_test) >= k,
            "--test-size",
            f"a fraction that leaves a row of each of the {k} classes on both sides",
            f"{test_size}: {n_train} rows to train on, {n_test} held out",
            f"pass a --test-size between {k / n:.3g} and {(n - k) / n:.3g}",
        )
    if min(n_train, n_test) < FEW_ROWS:
        _warn(
            f"{n_train} rows to train on and {n_test} held out: the fit runs, but its figures "
            "mean little"
        )
    if kind == "regression" and np.ptp(y) == 0:
        _warn(f"the target is constant ({y[0]:g}): there is nothing to learn; R^2 is undefined")


@app.command(epilog=EXIT_CODES)
def fit(
    ctx: typer.Context,
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
    delimiter: Annotated[
        str | None,
        typer.Option(help="CSV field separator: ',', ';' or 'tab' (default: detect , ; or tab)."),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="CSV text encoding, e.g. latin-1 or cp1252 (default utf-8)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/fit"),
    test_size: Annotated[float, typer.Option(help="Held-out fraction.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed for the split and the fit.")] = 0,
    ensemble_size: Annotated[int | None, typer.Option(help="Ensemble size J.")] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Steps: Levenberg-Marquardt steps per evidence round (laplace, rml) or steps "
            "of the ensemble stage (default: the recipe's)."
        ),
    ] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden widths, e.g. '50' or '64,64'.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help=" | ".join(recipes.NAMES)
            + ": the fitting recipe (docs/recipes.md says what each does and what was "
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
    self_check: SelfCheck = False,
    progress: Progress = True,
) -> None:
    """Fit an EKI BNN to a bundled scikit-learn data set or a CSV file; write metrics and plots."""
    _require(
        method in recipes.NAMES,
        "--method",
        f"one of {', '.join(recipes.NAMES)}",
        repr(method),
        f"pass e.g. --method {recipes.DEFAULT} (the default)",
    )
    _require(
        task in (None, "regression", "classification"),
        "--task",
        "regression or classification",
        repr(task),
        "pass one of them, or leave it out to guess from the target",
    )
    _require(
        0 < test_size < 1,
        "--test-size",
        "a fraction in (0, 1)",
        test_size,
        "pass e.g. --test-size 0.25",
    )
    _check_common(seed)
    _check_self_check(self_check, method)
    for option, value, least in (("--ensemble-size", ensemble_size, 2), ("--steps", steps, 1)):
        _require(
            value is None or value >= least,
            option,
            f"an integer >= {least}",
            value,
            f"pass e.g. {option} 100",
        )
    widths = _widths(hidden)
    if sampler_time is not None:
        _require(
            method in SAMPLER_METHODS,
            "--sampler-time",
            f"--method {' | '.join(SAMPLER_METHODS)} (the recipes with a second phase)",
            f"--method {method}",
            "drop --sampler-time, or pick one of those methods",
        )
        _require(
            0 < sampler_time < math.inf,
            "--sampler-time",
            "a finite number > 0",
            sampler_time,
            "pass e.g. --sampler-time 10",
        )

    from ekibnn import datasets

    with _usage_errors():
        if dataset in datasets.BUNDLED:
            given = [
                name
                for name, value in (
                    ("--target", target),
                    ("--task", task),
                    ("--delimiter", delimiter),
                    ("--encoding", encoding),
                )
                if value is not None
            ]
            _require(
                not given,
                ", ".join(given),
                "options for CSV files only",
                f"them with the bundled data set {dataset!r}",
                "drop them (a bundled data set has a fixed target and task)",
            )
            X, y, kind = datasets.load_sklearn(dataset)
        else:
            _dataset_path(dataset, datasets.BUNDLED)
            _require(
                target is not None,
                "--target",
                "the name of the target column for a CSV file",
                "none",
                "pass --target COLUMN",
            )
            separator = "\t" if delimiter in ("tab", "\\t") else delimiter
            X, y, kind = datasets.load_csv(
                dataset,
                target,
                task=task or "auto",
                delimiter=separator,
                encoding=encoding or "utf-8",
            )
    _check_split(y, kind, test_size)
    _check_self_check(self_check, method, kind)
    files = ("metrics.json", "calibration.png") + (
        ("predictions.png",) if kind == "regression" else ()
    )
    out = _out_dir(out, files)
    cache = _start_jax(ctx)
    settings = {"ensemble_size": ensemble_size, "num_steps": steps, "hidden": widths}
    settings = {name: value for name, value in settings.items() if value is not None}
    settings |= {"random_state": seed, "progress": progress, "method": method}
    settings |= {"sampler_time": sampler_time}
    report, shown = _fit(X, y, kind, test_size, out, settings, self_check)
    _finish(out, {"dataset": dataset} | report, cache, shown, files)


def _check_self_check(self_check: bool, method: str, task: str | None = None) -> None:
    _require(
        not self_check or method == "laplace",
        "--self-check",
        "--method laplace (the check compares the linearised Laplace posterior with RML)",
        f"--method {method}",
        "drop --self-check (an ensemble's members already go through the nonlinear model), "
        "or use --method laplace",
    )
    _require(
        not (self_check and task == "classification"),
        "--self-check",
        "a regression task (RML perturbs Gaussian data; no categorical counterpart)",
        "--task classification",
        "drop --self-check",
    )


class _Verdict:
    """A self-check record of metrics.json read back as the verdict (``trusted``, ``message``)."""

    def __init__(self, record: dict):
        self.trusted, self.message, self._record = record["trusted"], record["message"], record

    def as_dict(self) -> dict:
        return self._record


def _report_check(check: Any) -> dict:
    """Print the self-check's verdict; its record for metrics.json."""
    if check.trusted:
        typer.echo(check.message)
    else:
        _warn(check.message)
    return check.as_dict()


def _fit(
    X: np.ndarray,
    y: np.ndarray,
    kind: str,
    test_size: float,
    out: Path,
    settings: dict,
    self_check: bool = False,
) -> tuple[dict, tuple[str, ...]]:
    """The computation of ``ekibnn fit`` (everything checked): split, fit, figures and plots.

    Returns:
        The report and the names of the figures to print.
    """
    import time

    import numpy as np
    from sklearn.model_selection import train_test_split

    from ekibnn import metrics
    from ekibnn.errors import convergence_recorded
    from ekibnn.estimators import EKIClassifier, EKIRegressor
    from ekibnn.report import preload_plotting

    preload_plotting()  # matplotlib loads while the fit runs

    X_tr, X_te, y_tr, y_te = train_test_split(
        X,
        y,
        test_size=test_size,
        random_state=settings["random_state"],
        stratify=y if kind == "classification" else None,
    )
    start = time.perf_counter()
    report: dict = {"task": kind, "n_train": len(y_tr), "n_test": len(y_te)}
    estimator = EKIRegressor if kind == "regression" else EKIClassifier
    with convergence_recorded() as messages:  # reported (stderr, metrics.json), not fatal
        model = estimator(**settings).fit(X_tr, y_tr)
    report["wall_time_s"] = time.perf_counter() - start
    report["converged"] = model.converged_
    report["warnings"] = messages
    for message in messages:
        typer.echo(f"warning: {message}", err=True)
    if self_check:
        import warnings

        from ekibnn.errors import FidelityWarning

        with warnings.catch_warnings():  # the verdict is printed and recorded instead
            warnings.simplefilter("ignore", FidelityWarning)
            check = model.self_check(seed=settings["random_state"])
        report["self_check"] = _report_check(check)
        if not check.trusted:
            report["warnings"] = [*messages, check.message]
    from ekibnn import plotting

    if kind == "regression":
        mean, std = (np.asarray(a) for a in model.predict(X_te, return_std=True))
        scores = metrics.regression_report(y_te, mean, std)  # one compiled program
        nominal, observed = scores.pop("calibration_levels"), scores.pop("calibration_observed")
        report |= {name: float(value) for name, value in scores.items()}
        if len(y_te) < 2 or np.ptp(y_te) == 0:  # R^2 divides by the held-out target's spread
            report |= {"r2": None, "r2_undefined": "constant target on the held-out rows"}
        else:  # = model.score(X_te, y_te), from the predictions already made
            residual = np.sum((y_te - mean) ** 2)
            report["r2"] = float(1.0 - residual / np.sum((y_te - np.mean(y_te)) ** 2))
        plotting.plot_pred_vs_true(out / "predictions.png", y_te, mean, std, title=out.name)
        shown = ("wall_time_s", "rmse", "nll", "crps", "coverage_95", "r2")
    else:
        proba = np.asarray(model.predict_proba(X_te))
        labels = np.searchsorted(model.classes_, y_te)
        scores = metrics.classification_report(labels, proba)  # one compiled program
        keep = np.asarray(scores.pop("bin_count")) > 0
        nominal = np.asarray(scores.pop("bin_confidence"))[keep]
        observed = np.asarray(scores.pop("bin_accuracy"))[keep]
        report |= {name: float(value) for name, value in scores.items()}
        shown = ("wall_time_s", "accuracy", "nll", "brier", "ece")
    plotting.plot_calibration(
        out / "calibration.png", np.asarray(nominal), np.asarray(observed), title="calibration"
    )
    plain = (str, int, float, tuple, type(None))
    report["params"] = {k: v for k, v in model.get_params().items() if isinstance(v, plain)}
    return report, shown


@app.command(
    epilog=EXIT_CODES,
    help="Bayesian PINN inverse problem: posterior of the physical parameters and of u; writes "
    "metrics.json, solution.png and parameters.png.\n\n\b\nRecipes (--method): "
    + ", ".join(recipes.NAMES),  # \b: not rewrapped, so no name is split at its hyphen
)
def pinn(
    ctx: typer.Context,
    problem: Annotated[
        str, typer.Argument(help="poisson1d | diffusion_reaction2d | damped_oscillator")
    ],
    noise: Annotated[float, typer.Option(help="Noise std of the measurements.")] = 0.1,
    method: Annotated[
        str,
        typer.Option(
            help="Inversion recipe, one of those listed above (see ekibnn.pinn.fit; uki: at "
            f"most {recipes.UKI_MAX_PARAMS} parameters, aldi: ensemble >= p + 2)."
        ),
    ] = recipes.DEFAULT,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/pinn"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    scale: Scale = 1.0,
    self_check: SelfCheck = False,
    progress: Progress = True,
) -> None:
    _require(
        problem in PINN_PROBLEMS,
        "PROBLEM",
        f"one of {list(PINN_PROBLEMS)}",
        repr(problem),
        "pass e.g. poisson1d",
    )
    _require(
        method in recipes.NAMES,
        "--method",
        f"one of {', '.join(recipes.NAMES)}",
        repr(method),
        f"pass e.g. --method {recipes.DEFAULT} (the default)",
    )
    _require(
        0 < noise < math.inf,
        "--noise",
        "a finite number > 0 (the measurement noise std)",
        noise,
        "pass e.g. --noise 0.1",
    )
    _check_common(seed, scale)
    _check_self_check(self_check, method)
    out = _out_dir(out, PINN_FILES)
    cache = _start_jax(ctx)
    from ekibnn.pinn import run_pinn

    report = run_pinn(
        problem,
        noise=noise,
        method=method,
        out_dir=out,
        seed=seed,
        scale=scale,
        progress=progress,
        self_check=self_check,
    )
    for message in report["warnings"]:
        if "self_check" not in report or message != report["self_check"]["message"]:
            typer.echo(f"warning: {message}", err=True)
    if "self_check" in report:
        _report_check(_Verdict(report["self_check"]))
    for name, post in report["parameters"].items():
        typer.echo(f"{name:>8s}: {post['mean']:.4g} +- {post['std']:.3g} (true {post['true']})")
    shown = ("rel_l2_u", "rel_l2_f", "coverage_u_95", "wall_time_s")
    _finish(out, report, cache, shown, PINN_FILES)


def run() -> None:  # pragma: no cover - console entry point
    """The ``ekibnn`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    run()
