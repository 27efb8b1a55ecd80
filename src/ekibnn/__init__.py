"""ekibnn: Bayesian neural networks and B-PINNs with Ensemble Kalman Inversion, in JAX.

Every public name is imported on first use (PEP 562), so ``import ekibnn`` and the command
line's ``--help`` do not pay for JAX, scikit-learn or matplotlib.

Example:
    >>> import jax, jax.numpy as jnp, ekibnn as ek
    >>> obs = ek.Observation(jnp.array([1.0, 2.0]), 0.1)
    >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
    >>> algo = ek.eki(lambda theta: theta, obs, prior=prior)
    >>> result = ek.run(jax.random.key(0), algo, prior.sample(jax.random.key(1), 100),
    ...                 num_steps=100, progress=False)
    >>> result.particles.shape
    (100, 2)
"""

import importlib
import sys
import types
from typing import Any

from ekibnn._version import __version__ as __version__

_SUBMODULES = (
    "bnn",
    "datasets",
    "ensemble",
    "inversion",
    "linalg",
    "metrics",
    "minibatch",
    "pinn",
    "posterior",
    "recipes",
    "schedulers",
    "streaming",
)
_HOMES = {  # public name -> the module that defines it
    "ALDI": "inversion",
    "Categorical": "inversion",
    "EKI": "inversion",
    "EKIClassifier": "estimators",
    "EKIRegressor": "estimators",
    "EKS": "inversion",
    "EKSInfo": "inversion",
    "ETKI": "inversion",
    "EnsembleInfo": "inversion",
    "EnsembleKalman": "inversion",
    "EnsembleState": "inversion",
    "Evidence": "inversion",
    "EvidenceInfo": "inversion",
    "EvidenceState": "inversion",
    "GaussNewton": "inversion",
    "GaussNewtonInfo": "inversion",
    "GaussNewtonState": "inversion",
    "GaussianPrior": "priors",
    "ComputationError": "errors",
    "ConvergenceWarning": "errors",
    "FidelityWarning": "errors",
    "InputError": "errors",
    "KalmanAlgorithm": "inversion",
    "LinearisedPosterior": "posterior",
    "Observation": "observations",
    "RML": "inversion",
    "RMLState": "inversion",
    "RunResult": "run",
    "UKI": "inversion",
    "UKIInfo": "inversion",
    "UKIState": "inversion",
    "aldi": "inversion",
    "eki": "inversion",
    "eks": "inversion",
    "etki": "inversion",
    "evidence": "inversion",
    "gauss_newton": "inversion",
    "laplace": "inversion",
    "rml": "inversion",
    "run": "run",
    "uki": "inversion",
}

__all__ = sorted([*_SUBMODULES, *_HOMES])


def __getattr__(name: str) -> Any:
    """Import a public name (or subpackage) on first access and keep it (PEP 562)."""
    if name in _HOMES:
        value = getattr(importlib.import_module(f"ekibnn.{_HOMES[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"ekibnn.{name}")
    else:
        raise AttributeError(f"module 'ekibnn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package's module type: a public name that is also a submodule's name (``run``) stays
    the public object when the submodule is first imported (the import system then sets the
    package attribute to the submodule), as it did when this file imported everything."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _HOMES and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
