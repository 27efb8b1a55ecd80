"""Export of B-PINN posterior samples to ArviZ (the optional ``arviz`` extra).

:func:`to_inference_data` turns a posterior — the result of :func:`ekibnn.pinn.fit` (an
ensemble, or the default recipe's linearised-Laplace posterior, exported as samples of its
linearised outputs), or any particles in the layout ``{"net": MLP, "phys": {name: z}}``, e.g.
NUTS draws — into an :class:`arviz.InferenceData` whose ``posterior`` group holds the
*constrained* physical parameters (``chain = 1``, ``draw = J`` for an ensemble), optionally the
solution ``u`` at given points, and whose ``observed_data`` group holds the stacked data
``[y_u; y_b; y_f]``. ArviZ is imported only when the function is called.

Example:
    >>> import jax
    >>> from ekibnn import pinn
    >>> problem = pinn.poisson1d(hidden=(4,))
    >>> particles = problem.prior().sample(jax.random.key(0), 50)
    >>> idata = pinn.to_inference_data(particles, problem)  # doctest: +SKIP
    >>> idata.posterior["k"].shape  # doctest: +SKIP
    (1, 50)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, PyTree

from ekibnn.errors import input_error
from ekibnn.pinn.problem import PINNProblem, draws
from ekibnn.posterior import LinearisedPosterior, _import_arviz

__all__ = ["to_inference_data"]


def _leading_shape(problem: PINNProblem, particles: PyTree) -> tuple[int, ...]:
    """``(J,)`` for an ensemble, ``(chains, draws)`` for chains of draws."""
    if not isinstance(particles, dict) or set(particles) != {"net", "phys"}:
        raise input_error(
            "to_inference_data samples",
            "a RunResult or particles {'net': MLP, 'phys': {name: z}} with a leading "
            "ensemble axis (J,) or chain and draw axes (chains, draws)",
            type(particles).__name__
            + (f" with keys {sorted(particles)}" if isinstance(particles, dict) else ""),
            "pass the result of ekibnn.pinn.fit or its .particles",
        )
    names = sorted(problem.phys)
    if sorted(particles["phys"]) != names:
        raise input_error(
            "to_inference_data samples['phys']",
            f"the problem's physical parameters {names}",
            repr(sorted(particles["phys"])),
            "pass samples of this problem",
        )
    shapes = {np.shape(particles["phys"][k]) for k in names}
    net_leaf = jax.tree_util.tree_leaves(particles["net"])[0]
    template_leaf = jax.tree_util.tree_leaves(problem.net)[0]
    lead = np.shape(net_leaf)[: np.ndim(net_leaf) - np.ndim(template_leaf)]
    if len(shapes) > 1 or (names and shapes.pop() != lead) or len(lead) not in (1, 2):
        raise input_error(
            "to_inference_data samples",
            "every leaf with the same leading axes: (J,) for an ensemble or (chains, draws)",
            f"leading shape {lead} of the network, physical-parameter shapes "
            f"{[np.shape(particles['phys'][k]) for k in names]}",
            "stack the members (or the chains' draws) on the leading axes",
        )
    return tuple(lead)


def _check_member(problem: PINNProblem, member: PyTree) -> None:
    """Refuse a linearised posterior whose MAP is not ONE member of ``problem``'s layout."""
    shapes = jax.tree_util.tree_map(np.shape, member)
    expected = jax.tree_util.tree_map(np.shape, problem.template())
    if shapes != expected:
        raise input_error(
            "to_inference_data samples",
            "a linearised posterior of this problem (its MAP shaped like problem.template())",
            "a MAP of another layout",
            "pass the result of ekibnn.pinn.fit on this problem",
        )


def to_inference_data(
    samples: Any,
    problem: PINNProblem,
    x: ArrayLike | None = None,
    attrs: dict | None = None,
    *,
    key: jax.Array | None = None,
    num: int = 1000,
) -> Any:
    """Posterior samples of a B-PINN as an :class:`arviz.InferenceData`.

    Args:
        samples: the result of :func:`ekibnn.pinn.fit` (its posterior: an ensemble, or a
            :class:`ekibnn.posterior.LinearisedPosterior`, exported as ``num`` samples of the
            *linearised* outputs, ``chain = 1``, ``draw = num``), a ``LinearisedPosterior``, any
            object with ``particles`` (such as an :class:`ekibnn.RunResult`: its
            ``particles`` are used) or particles ``{"net": MLP, "phys": {name: z}}`` with
            unconstrained ``z``: with one leading axis ``(J,)`` (an ensemble: ``chain = 1``,
            ``draw = J``) or two ``(chains, draws)`` (e.g. NUTS chains, for ``arviz.rhat``).
        problem: the problem the samples belong to (its transforms map ``z`` to the constrained
            parameters).
        x: optional points ``(n, d)``: adds the posterior variable ``"u"`` (dims ``chain``,
            ``draw``, ``point``) with every sample's solution there, and the points as
            ``constant_data["x"]`` (dims ``point``, ``coordinate``).
        attrs: extra attributes stored on every group (``problem`` is always set).
        key: PRNG key of a linearised posterior's samples (None: ``jax.random.key(0)``).
        num: the number of samples of a linearised posterior.

    Returns:
        ``InferenceData`` with ``posterior`` (one variable per physical parameter, constrained
        space, dims ``chain``, ``draw``; plus ``"u"`` when ``x`` is given) and ``observed_data``
        (``"y"``: the data ``[y_u; y_b; y_f]``, dim ``observation``).

    Raises:
        ImportError: ArviZ is not installed (``pip install 'ekibnn[arviz]'``).
        ekibnn.InputError: the samples do not match the problem's layout.
    """
    if not isinstance(problem, PINNProblem):
        raise input_error(
            "to_inference_data problem",
            "the PINNProblem the samples belong to",
            type(problem).__name__,
            "pass e.g. ekibnn.pinn.poisson1d()",
        )
    az = _import_arviz()
    linearised = getattr(samples, "posterior", samples)
    points = None
    if x is not None:
        points = np.asarray(x, float)
        points = points[:, None] if points.ndim == 1 else points
    dims: dict[str, list[str]] = {}
    coords: dict[str, Any] = {}
    constant = None
    if isinstance(linearised, LinearisedPosterior):
        _check_member(problem, linearised.mean)
        drawn = draws(problem, linearised, problem.grid(2) if points is None else points, key, num)
        posterior = {k: v[None] for k, v in drawn.phys.items()}
        u = None if points is None else drawn.u[None]
    else:
        particles = samples.particles if hasattr(samples, "particles") else samples
        lead = _leading_shape(problem, particles)
        as_chains = (lambda a: np.asarray(a)[None]) if len(lead) == 1 else np.asarray
        constrained = problem.constrained(particles["phys"])
        posterior = {k: as_chains(v) for k, v in constrained.items()}
        u = None
        if points is not None:
            flat = jax.tree_util.tree_map(
                lambda a: jnp.reshape(a, (-1, *np.shape(a)[len(lead) :])), particles["net"]
            )
            u = np.asarray(problem.predict_u({"net": flat, "phys": {}}, points))
            u = as_chains(u.reshape(*lead, points.shape[0]))
    if points is not None:
        posterior["u"] = u
        dims["u"] = ["point"]
        dims["x"] = ["point", "coordinate"]
        coords["point"] = np.arange(points.shape[0])
        coords["coordinate"] = np.arange(points.shape[1])
        constant = {"x": points}
    observed = {"y": np.asarray(problem.observation().y)}
    dims["y"] = ["observation"]
    coords["observation"] = np.arange(observed["y"].size)
    idata = az.from_dict(
        posterior=posterior,
        observed_data=observed,
        constant_data=constant,
        coords=coords,
        dims=dims,
    )
    for group in idata.groups():
        idata[group].attrs.update({"problem": problem.name, **(attrs or {})})
    return idata
