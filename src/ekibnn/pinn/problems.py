"""Ready-made B-PINN inverse problems with exact solutions.

* :func:`poisson1d`: ``0.01 u_xx + k tanh(u) = f`` on ``[-0.7, 0.7]``, ``u = sin^3(6x)``,
  ``k = 0.7`` (Yang, Meng & Karniadakis 2021; the HMC tutorial's problem).
* :func:`diffusion_reaction2d`: ``0.01 (u_xx + u_yy) + k u^2 = f`` on ``[-1, 1]^2``, ``k = 1``,
  with the exact solution ``u = sin(pi x) sin(pi y)`` (our choice, in the B-PINN paper's style).
* :func:`damped_oscillator`: ``u'' + c u' + w2 u = 0`` on ``[0, 3]`` with ``u(0) = 1``; unknown
  damping ``c > 0`` (log transform) and stiffness ``w2`` in ``(0.5, 10)`` (logit transform);
  exact ``u = exp(-c t / 2) (cos(w t) + c / (2 w) sin(w t))``, ``w = sqrt(w2 - c^2 / 4)``,
  with ``c = 0.4``, ``w2 = 4``.

Networks use the published references' ``parameterization="standard"`` by default (raw
N(0, 1) weights: the posterior the papers' HMC numbers refer to). ``parameterization="ntk"``
(weights scaled by ``1 / sqrt(fan_in)`` in the forward pass) is a different, smoother prior,
which the ensemble recipes fit more reliably; its MAP is close to ``u = 0`` for these
problems, so it is not the papers' posterior.

Every problem takes the noise std (used both to perturb the measurements and as the likelihood
std of all three groups), a ``seed`` for the measurement noise and sensor placement, and a
``net_key`` seed for the (irrelevant) template network values.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ekibnn import recipes
from ekibnn.bnn.models import MLP
from ekibnn.errors import convergence_recorded, input_error
from ekibnn.pinn.problem import (
    DEFAULT_METHOD,
    PhysicalParam,
    PINNProblem,
    draws,
    evaluate,
    fit,
    laplacian,
)
from ekibnn.pinn.transforms import Bounded, Positive
from ekibnn.posterior import LinearisedPosterior
from ekibnn.report import preload_plotting, prepare_out_dir, write_json

__all__ = ["PROBLEMS", "damped_oscillator", "diffusion_reaction2d", "poisson1d", "run_pinn"]


def _noisy(values: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    return values + noise * rng.standard_normal(values.shape)


# ----------------------------------------------------------------------------- Poisson 1-D
def _poisson_u(x):
    return jnp.sin(6.0 * x[0]) ** 3


def _poisson_f(x, k=0.7):
    s, c = jnp.sin(6.0 * x[0]), jnp.cos(6.0 * x[0])
    u_xx = 216.0 * s * c**2 - 108.0 * s**3  # d^2/dx^2 sin^3(6x), by hand
    return 0.01 * u_xx + k * jnp.tanh(s**3)


def _poisson_operator(u, x, phys):
    return 0.01 * laplacian(u)(x) + phys["k"] * jnp.tanh(u(x))


def poisson1d(
    noise: float = 0.1,
    n_u: int = 8,
    n_f: int = 32,
    hidden: tuple[int, ...] = (50, 50),
    parameterization: str = "standard",
    seed: int = 0,
) -> PINNProblem:
    """``0.01 u_xx + k tanh(u) = f`` on ``[-0.7, 0.7]``, exact ``u = sin^3(6x)``, ``k = 0.7``.

    Data (Yang et al. 2021): ``n_u = 8`` equally spaced interior measurements of ``u`` with
    N(0, noise^2) errors, the two exact boundary values, ``n_f = 32`` equally spaced exact values
    of ``f``; likelihood std ``noise`` for all groups; N(0, 1) priors on the weights of a
    ``[1, 50, 50, 1]`` tanh network and on ``k``.
    """
    rng = np.random.default_rng(seed)
    x_u = np.linspace(-0.7, 0.7, n_u + 2)[1:-1, None]
    x_b = np.array([[-0.7], [0.7]])
    x_f = np.linspace(-0.7, 0.7, n_f)[:, None]
    u_np = lambda x: np.sin(6.0 * x[:, 0]) ** 3  # noqa: E731
    f_np = np.asarray(jax.vmap(_poisson_f)(jnp.asarray(x_f)), float)
    return PINNProblem(
        net=MLP(jax.random.key(seed), 1, 1, hidden, "tanh", parameterization),
        operator=_poisson_operator,
        x_u=x_u,
        y_u=_noisy(u_np(x_u), noise, rng),
        x_b=x_b,
        y_b=u_np(x_b),
        x_f=x_f,
        y_f=f_np,
        phys={"k": PhysicalParam(0.0, 1.0, true=0.7)},
        noise_u=noise,
        noise_b=noise,
        noise_f=noise,
        exact_u=_poisson_u,
        exact_f=_poisson_f,
        domain=(np.array([-0.7]), np.array([0.7])),
        name="poisson1d",
    )


# ----------------------------------------------------------------------------- 2-D
def _dr_u(x):
    return jnp.sin(jnp.pi * x[0]) * jnp.sin(jnp.pi * x[1])


def _dr_f(x, k=1.0):
    u = _dr_u(x)
    return 0.01 * (-2.0 * jnp.pi**2 * u) + k * u**2


def _dr_operator(u, x, phys):
    return 0.01 * laplacian(u)(x) + phys["k"] * u(x) ** 2


def diffusion_reaction2d(
    noise: float = 0.1,
    n_sensors: int = 100,
    n_per_side: int = 25,
    hidden: tuple[int, ...] = (50, 50),
    parameterization: str = "standard",
    seed: int = 0,
) -> PINNProblem:
    """``0.01 (u_xx + u_yy) + k u^2 = f`` on ``[-1, 1]^2``, exact ``u = sin(pi x) sin(pi y)``,
    ``k = 1``.

    ``n_sensors = 100`` uniformly random sensors measure both ``u`` and ``f`` (N(0, noise^2)
    errors on both); ``n_per_side = 25`` equally spaced exact boundary values (``u = 0``) on
    each side. N(0, 1) priors on the weights of a ``[2, 50, 50, 1]`` tanh network and on ``k``.
    """
    rng = np.random.default_rng(seed)
    sensors = rng.uniform(-1.0, 1.0, size=(n_sensors, 2))
    t = np.linspace(-1.0, 1.0, n_per_side)
    one = np.ones_like(t)
    x_b = np.concatenate(
        [np.stack(s, axis=1) for s in [(t, -one), (t, one), (-one, t), (one, t)]], axis=0
    )
    u_exact = np.asarray(jax.vmap(_dr_u)(jnp.asarray(sensors)), float)
    f_exact = np.asarray(jax.vmap(_dr_f)(jnp.asarray(sensors)), float)
    return PINNProblem(
        net=MLP(jax.random.key(seed), 2, 1, hidden, "tanh", parameterization),
        operator=_dr_operator,
        x_u=sensors,
        y_u=_noisy(u_exact, noise, rng),
        x_b=x_b,
        y_b=np.sin(np.pi * x_b[:, 0]) * np.sin(np.pi * x_b[:, 1]),
        x_f=sensors,
        y_f=_noisy(f_exact, noise, rng),
        phys={"k": PhysicalParam(0.0, 1.0, true=1.0)},
        noise_u=noise,
        noise_b=noise,
        noise_f=noise,
        exact_u=_dr_u,
        exact_f=_dr_f,
        domain=(np.array([-1.0, -1.0]), np.array([1.0, 1.0])),
        name="diffusion_reaction2d",
    )


# ----------------------------------------------------------------------------- oscillator
_C, _W2 = 0.4, 4.0


def _osc_u(x, c=_C, w2=_W2):
    w = jnp.sqrt(w2 - c**2 / 4.0)
    t = x[0]
    return jnp.exp(-c * t / 2.0) * (jnp.cos(w * t) + c / (2.0 * w) * jnp.sin(w * t))


def _osc_f(x):
    return jnp.zeros((), jnp.result_type(float)) * x[0]


def _osc_operator(u, x, phys):
    du = jax.grad(u)
    d2u = jax.grad(lambda t: du(t)[0])(x)[0]
    return d2u + phys["c"] * du(x)[0] + phys["w2"] * u(x)


def damped_oscillator(
    noise: float = 0.05,
    n_u: int = 16,
    n_f: int = 48,
    hidden: tuple[int, ...] = (32, 32),
    parameterization: str = "standard",
    seed: int = 0,
) -> PINNProblem:
    """Damped oscillator ``u'' + c u' + w2 u = 0`` on ``t in [0, 3]``, ``u(0) = 1``.

    Unknowns: damping ``c`` (true 0.4; :class:`Positive`, log-normal prior with median 1 and
    log-std 1) and stiffness ``w2`` (true 4; :class:`Bounded` to (0.5, 10), logit-normal prior
    with median 2 and logit-std 1.5). ``n_u = 16`` equally spaced noisy measurements of ``u`` on
    ``(0, 3]``, the exact initial value, ``n_f = 48`` equally spaced residual points with
    ``f = 0``; likelihood std ``noise`` for all groups; ``[1, 32, 32, 1]`` tanh network.
    Exact solution ``u = exp(-c t/2) (cos(w t) + c/(2w) sin(w t))``, ``w = sqrt(w2 - c^2/4)``.
    """
    rng = np.random.default_rng(seed)
    x_u = np.linspace(0.0, 3.0, n_u + 1)[1:, None]
    x_f = np.linspace(0.0, 3.0, n_f)[:, None]
    u_exact = np.asarray(jax.vmap(_osc_u)(jnp.asarray(x_u)), float)
    return PINNProblem(
        net=MLP(jax.random.key(seed), 1, 1, hidden, "tanh", parameterization),
        operator=_osc_operator,
        x_u=x_u,
        y_u=_noisy(u_exact, noise, rng),
        x_b=np.zeros((1, 1)),
        y_b=np.ones(1),
        x_f=x_f,
        y_f=np.zeros(n_f),
        phys={
            "c": PhysicalParam(1.0, 1.0, Positive(), true=_C),
            "w2": PhysicalParam(2.0, 1.5, Bounded(0.5, 10.0), true=_W2),
        },
        noise_u=noise,
        noise_b=noise,
        noise_f=noise,
        exact_u=_osc_u,
        exact_f=_osc_f,
        domain=(np.array([0.0]), np.array([3.0])),
        name="damped_oscillator",
    )


#: The files :func:`run_pinn` writes into its ``out_dir``.
OUTPUT_FILES = ("metrics.json", "solution.png", "parameters.png")

PROBLEMS = {
    "poisson1d": poisson1d,
    "diffusion_reaction2d": diffusion_reaction2d,
    "damped_oscillator": damped_oscillator,
}


# ----------------------------------------------------------------------------- one-call driver
def _plot(problem: PINNProblem, posterior, out_dir: Path, key) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = problem.grid(201 if problem.dim == 1 else 61**2)
    u, _, phys = draws(problem, posterior, x, key)
    u_true = np.asarray(jax.vmap(problem.exact_u)(jnp.asarray(x, jnp.result_type(float))))
    if problem.dim == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        lo, hi = np.quantile(u, [0.025, 0.975], axis=0)
        ax.fill_between(x[:, 0], lo, hi, alpha=0.3, label="95% band")
        ax.plot(x[:, 0], u.mean(0), label="posterior mean")
        ax.plot(x[:, 0], u_true, "k--", label="exact")
        ax.plot(problem.x_u[:, 0], problem.y_u, "o", label="data")
        ax.set_xlabel("x")
        ax.set_ylabel("u")
        ax.legend()
    else:
        n = round(float(np.sqrt(x.shape[0])))
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        for ax, field, title in zip(
            axes,
            [u_true, u.mean(0), u.std(0)],
            ["exact u", "posterior mean", "posterior std"],
            strict=True,
        ):
            im = ax.imshow(field.reshape(n, n).T, origin="lower", extent=(-1, 1, -1, 1))
            ax.set_title(title)
            fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_dir / "solution.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(phys), figsize=(4 * len(phys), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], phys.items(), strict=True):
        ax.hist(np.asarray(values), bins=30, density=True, alpha=0.7)
        if problem.phys[name].true is not None:
            ax.axvline(problem.phys[name].true, color="k", ls="--", label="true")
            ax.legend()
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(out_dir / "parameters.png", dpi=100)
    plt.close(fig)


def run_pinn(
    problem_name: str,
    noise: float = 0.1,
    method: str = DEFAULT_METHOD,
    out_dir: str | Path | None = None,
    seed: int = 0,
    scale: float = 1.0,
    progress: bool = True,
    problem_kwargs: dict | None = None,
    self_check: bool = False,
) -> dict:
    """Build a ready-made problem, fit it, and report (and optionally save) the results.

    Args:
        problem_name: a key of :data:`PROBLEMS`.
        noise: noise std of the measurements and of the likelihood.
        method: a recipe of :func:`ekibnn.pinn.fit`.
        out_dir: if given, ``metrics.json``, ``solution.png`` and ``parameters.png`` go there.
        seed: seeds the data noise and the algorithm.
        scale: multiplies the ensemble size (200) and the step cap (200 ensemble steps, or
            400 Levenberg–Marquardt steps per start for the Jacobian recipes); e.g. 0.1 for a
            smoke test.
        progress: show a progress bar.
        problem_kwargs: extra keyword arguments of the problem's constructor (e.g.
            ``{"hidden": (8,)}`` for a tiny network).
        self_check: after a ``"laplace"`` fit, run :func:`ekibnn.pinn.self_check` (32 RML
            members and 100 steps, times ``scale``, at least 8 and 20) and put its fields and
            verdict under ``"self_check"``; a failure is reported there and under
            ``"warnings"``, not raised.

    Returns:
        The metrics of :func:`ekibnn.pinn.evaluate` plus ``"wall_time_s"`` (fit, compilation
        included), ``"method"``, ``"ensemble_size"``, ``"num_steps"``, ``"initial_misfit"``
        and ``"final_misfit"`` (mean over members of ``|Gamma^{-1/2}(y - G_j)|^2 / m`` before
        the first and the last step),
        ``"problem"`` and ``"noise"``.
    """
    if self_check and method != "laplace":
        raise input_error(
            "run_pinn self_check",
            "method='laplace' (the check compares the linearised posterior with RML)",
            f"method={method!r}",
            "drop self_check, or use method='laplace'",
        )
    if problem_name not in PROBLEMS:
        raise input_error(
            "problem_name", f"one of {sorted(PROBLEMS)}", repr(problem_name), "pick a listed one"
        )
    if not scale > 0:
        raise input_error("scale", "a positive number", repr(scale), "pass e.g. 1.0 or 0.1")
    out = None
    if out_dir is not None:  # checked before the fit, so no work is lost to a bad path
        out = prepare_out_dir(out_dir, OUTPUT_FILES, what="run_pinn out_dir")
        preload_plotting()  # matplotlib loads while the fit runs
    problem = PROBLEMS[problem_name](noise=noise, seed=seed, **(problem_kwargs or {}))
    ensemble_size = max(8, round(200 * scale))
    jacobian = recipes.get(method).jacobian
    # Levenberg-Marquardt steps (per start) for the Jacobian recipes, else ensemble steps
    max_steps = max(20, round(400 * scale)) if jacobian else max(5, round(200 * scale))
    start = time.perf_counter()
    key_fit, key_draw = jax.random.split(jax.random.key(seed))
    with convergence_recorded() as messages:  # reported in the metrics, not raised
        result = fit(
            problem,
            key_fit,
            method=method,
            ensemble_size=ensemble_size,
            max_steps=max_steps,
            progress=progress,
        )
    posterior = result.posterior
    if not hasattr(posterior, "particles") and not isinstance(posterior, LinearisedPosterior):
        posterior = result.samples(key_draw, ensemble_size)  # UKI's Gaussian: J draws
    jax.block_until_ready(posterior)
    wall = time.perf_counter() - start
    metrics = evaluate(problem, posterior, key=key_draw)
    metrics.update(
        wall_time_s=wall,
        method=method,
        ensemble_size=None if jacobian else ensemble_size,
        num_steps=int(result.num_steps),
        initial_misfit=float(result.history.misfit[0]),
        final_misfit=float(result.history.misfit[-1]),
        converged=result.converged,
        warnings=messages,
        problem=problem_name,
        noise=float(noise),
    )
    if self_check:
        from ekibnn.pinn.problem import self_check as _self_check

        check = _self_check(
            problem,
            result,
            jax.random.fold_in(key_draw, 1),
            num_members=max(8, round(32 * scale)),
            max_steps=max(20, round(100 * scale)),
            warn=False,
        )
        metrics["self_check"] = check.as_dict()
        if not check.trusted:
            metrics["warnings"] = [*messages, check.message]
    if out is not None:
        write_json(out / "metrics.json", metrics)
        _plot(problem, posterior, out, key_draw)
    return metrics
