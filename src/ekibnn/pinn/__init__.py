"""Bayesian PINNs solved with the Kalman family (by default Levenberg–Marquardt in Kalman form
and the linearised-Laplace posterior; the ensemble recipes by name).

A :class:`PINNProblem` turns a solution network, a PDE operator written with JAX autodiff at one
point, boundary and measurement data, per-group noise and physical parameters with priors and
constraints into ``forward_fn`` and an :class:`ekibnn.Observation` laid out as
``[u data; boundary data; f at residual points]``. :func:`fit` runs the Kalman recipe,
:func:`draws` gives posterior draws of ``u``, ``N[u; k]`` and the physical parameters (an
ensemble's members, or samples of a linearised posterior's linearised outputs),
:func:`evaluate` summarises them, :func:`run_pinn` does all for a ready-made problem.

Layout of the state and the data (see :mod:`ekibnn.pinn.problem`): one member is
``{"net": MLP, "phys": {name: z}}`` with ``z`` unconstrained (``Positive``: log, ``Bounded``:
logit, reported back in constrained space); ``y = [y_u (n_u); y_b (n_b); f(x_f) (n_f)]`` with
noise stds ``[noise_u; noise_b; noise_f]``; ``PINNProblem.layout`` gives the slices.

How well the recipes reproduce NUTS on the ready-made problems is measured by
``benchmarks/bpinn.py``; ``docs/algorithms.md`` has the tables.

Posterior samples of the physical parameters (and of u at given points) export to ArviZ with
:func:`to_inference_data` (optional dependency ``ekibnn[arviz]``).

Example:
    >>> from ekibnn import pinn
    >>> problem = pinn.poisson1d(noise=0.1)
    >>> problem.layout
    {'u': slice(0, 8, None), 'b': slice(8, 10, None), 'f': slice(10, 42, None)}

``pinn.run_pinn("poisson1d")`` fits it and returns the metrics dictionary (the posterior of
``k`` under the key ``parameters``, with its mean, std and true value).
"""

from ekibnn.pinn.export import to_inference_data
from ekibnn.pinn.problem import (
    DEFAULT_METHOD,
    GROUPS,
    METHODS,
    Draws,
    PhysicalParam,
    PINNProblem,
    dirichlet,
    draws,
    evaluate,
    fit,
    laplacian,
    self_check,
)
from ekibnn.pinn.problems import (
    PROBLEMS,
    damped_oscillator,
    diffusion_reaction2d,
    poisson1d,
    run_pinn,
)
from ekibnn.pinn.transforms import Bounded, Identity, Positive, Transform

__all__ = [
    "DEFAULT_METHOD",
    "GROUPS",
    "METHODS",
    "PROBLEMS",
    "Bounded",
    "Draws",
    "Identity",
    "PINNProblem",
    "PhysicalParam",
    "Positive",
    "Transform",
    "damped_oscillator",
    "diffusion_reaction2d",
    "dirichlet",
    "draws",
    "evaluate",
    "fit",
    "laplacian",
    "poisson1d",
    "run_pinn",
    "self_check",
    "to_inference_data",
]
