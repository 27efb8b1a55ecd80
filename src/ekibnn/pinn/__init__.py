"""Bayesian PINNs solved with ensemble Kalman inversion.

A :class:`PINNProblem` turns a solution network, a PDE operator written with JAX autodiff at one
point, boundary and measurement data, per-group noise and physical parameters with priors and
constraints into ``forward_fn`` and an :class:`ekibnn.Observation` laid out as
``[u data; boundary data; f at residual points]``. :func:`fit` runs the Kalman recipe,
:func:`evaluate` summarises an ensemble, :func:`run_pinn` does both for a ready-made problem.

Layout of the state and the data (see :mod:`ekibnn.pinn.problem`): one member is
``{"net": MLP, "phys": {name: z}}`` with ``z`` unconstrained (``Positive``: log, ``Bounded``:
logit, reported back in constrained space); ``y = [y_u (n_u); y_b (n_b); f(x_f) (n_f)]`` with
noise stds ``[noise_u; noise_b; noise_f]``; ``PINNProblem.layout`` gives the slices.

How well it works: ``benchmarks/bpinn.py`` compares the recipes with BlackJAX NUTS on the SAME
posterior (NTK-parameterised networks, the ready-made problems' default; J = 200, 200 EKI steps),
in one process. NUTS: 4 chains from prior draws, window adaptation; converged on the physical
parameters (R-hat of k 1.00-1.04) except the oscillator's ``c`` (R-hat 1.36, 500 + 500 draws).
Measured (H200 GPU run; the 2-core CPU run of poisson1d agrees):

====================  =====================  ==============  ==============  =============
problem               NUTS                   ``"eki"``       ``"eks"``       ``"eki-disc"``
====================  =====================  ==============  ==============  =============
poisson1d k           0.803 +- 0.040         0.730 +- 0.063  0.646 +- 0.025  0.686 +- 0.011
  rel. L2 u, cov95    0.281, 0.81            0.105, 1.00     0.087, 1.00     0.197, 0.99
diffusion_reaction2d  1.120 +- 0.065         0.840 +- 0.049  0.845 +- 0.027  0.996 +- 0.005
  rel. L2 u, cov95    0.106, 0.84            0.226, 0.74     0.238, 0.55     0.195, 0.06
damped_oscillator c   0.446 +- 0.050         1.78 +- 0.09    0.338 +- 0.016  1.86 +- 0.005
  w2                  3.60 +- 0.10           0.500 (bound)   3.77 +- 0.05    0.503 (bound)
  rel. L2 u, cov95    0.101, 0.70            0.656, 0.25     0.085, 0.44     0.650, 0.01
====================  =====================  ==============  ==============  =============

No recipe reproduces the NUTS posterior of the physical parameters within one NUTS std, and
the benchmark's log-posterior column says why on poisson1d (2-core CPU run): the ``"eki"``
members sit ~9600 nats below the NUTS draws (mean log posterior -13786 against -4162): they fit
the data better than the posterior does (misfit 2.2 per datum against NUTS's 5.5; rel. L2 of u
0.107 against 0.285) with weights ~3x larger than the N(0, 1) prior allows (RMS 2.9 against NUTS's
1.1): the unregularised Kalman updates inflate them and nothing pulls them back (``"eki-disc"``,
without the random walk, sits as low: -14410). NUTS started FROM
``"eki"`` members leaves that region for NUTS's own (k = 0.811 +- 0.039, log posterior -4167),
so the reference is not a sampling artefact. The NTK posterior itself is a poor fit of
sin^3(6x) (its prior favours smoother functions; NUTS's mean u has rel. L2 error 0.28 and its
chains disagree on u, R-hat up to 1.4-1.9), unlike the published standard-parameterised one (HMC
k = 0.665 +- 0.056, rel. L2 of u 0.057). ``"eks"`` cannot repair the weights: it moves only in
the affine span of its warm start (dimension J - 1 << p), which does not contain the
directions that shrink the ensemble mean, and without the finite-ensemble correction (ALDI
needs J >= p + 2) its spread shrinks there. The ``"eki"`` recipe's spread is set by its
random walk (tuned on poisson1d), not by the posterior.

With standard-parameterised [1, 50, 50, 1] networks (N(0, 1) raw weights) EKI
fits only by luck of the seed (at J = 1000 the misfit was still ~800 after 20 steps) and the
random-walk recipe fails; tempering to T = 1 and Tikhonov EKI do not fit at all; without the
random walk (``"eki-disc"``) the ensemble collapses (spreads 3-10x too small). On the
oscillator only ``"eks"`` escapes the stiffness bound ``w2 -> 0.5`` that EKI falls into.

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
    GROUPS,
    METHODS,
    SAMPLER_TIME,
    SAMPLERS,
    UKI_MAX_PARAMS,
    PhysicalParam,
    PINNProblem,
    build_algorithm,
    dirichlet,
    evaluate,
    fit,
    laplacian,
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
    "GROUPS",
    "METHODS",
    "PROBLEMS",
    "SAMPLERS",
    "SAMPLER_TIME",
    "UKI_MAX_PARAMS",
    "Bounded",
    "Identity",
    "PINNProblem",
    "PhysicalParam",
    "Positive",
    "Transform",
    "build_algorithm",
    "damped_oscillator",
    "diffusion_reaction2d",
    "dirichlet",
    "evaluate",
    "fit",
    "laplacian",
    "poisson1d",
    "run_pinn",
    "to_inference_data",
]
