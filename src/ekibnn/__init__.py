"""ekibnn: Bayesian neural networks and B-PINNs with Ensemble Kalman Inversion, in JAX.

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

from ekibnn import (
    bnn,
    datasets,
    ensemble,
    linalg,
    metrics,
    minibatch,
    pinn,
    schedulers,
    streaming,
)
from ekibnn.errors import InputError
from ekibnn.estimators import EKIClassifier, EKIRegressor
from ekibnn.inversion import (
    ALDI,
    EKI,
    EKS,
    ETKI,
    UKI,
    EKSInfo,
    EnsembleInfo,
    EnsembleKalman,
    EnsembleState,
    KalmanAlgorithm,
    UKIInfo,
    UKIState,
    aldi,
    eki,
    eks,
    etki,
    uki,
)
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior
from ekibnn.run import RunResult, run

__version__ = "0.1.0"

__all__ = [
    "ALDI",
    "EKI",
    "EKS",
    "ETKI",
    "UKI",
    "EKIClassifier",
    "EKIRegressor",
    "EKSInfo",
    "EnsembleInfo",
    "EnsembleKalman",
    "EnsembleState",
    "GaussianPrior",
    "InputError",
    "KalmanAlgorithm",
    "Observation",
    "RunResult",
    "UKIInfo",
    "UKIState",
    "aldi",
    "bnn",
    "datasets",
    "eki",
    "eks",
    "ensemble",
    "etki",
    "linalg",
    "metrics",
    "minibatch",
    "pinn",
    "run",
    "schedulers",
    "streaming",
    "uki",
]
