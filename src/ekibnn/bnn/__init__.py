"""Bayesian neural networks: Equinox models, likelihoods (forward map + Observation) and the
predictive distribution of an ensemble.

Example:
    >>> import jax, jax.numpy as jnp, ekibnn as ek
    >>> from ekibnn import bnn
    >>> X = jnp.linspace(-2, 2, 64)[:, None]
    >>> y = jnp.sin(X[:, 0])
    >>> model = bnn.MLP(jax.random.key(0), 1, 1, hidden=(16,), parameterization="ntk")
    >>> prior = ek.GaussianPrior.like(model, std=1.0)
    >>> lik = bnn.regression(X, y, noise_std=0.1)
    >>> algo = ek.eki(lik.indexed_forward_fn, lik.obs, prior=prior, inflation=0.01,
    ...               scheduler=ek.schedulers.constant(1.0), indexed_forward=True,
    ...               minibatch=ek.minibatch.random(32))
    >>> res = ek.run(jax.random.key(1), algo, prior.sample(jax.random.key(2), 32), 50,
    ...              progress=False)
    >>> preds = bnn.ensemble_apply(res.particles, X)[..., 0]          # (J, n)
    >>> bnn.predictive(preds, 0.1).total_std.shape
    (64,)
"""

from ekibnn.bnn.likelihoods import (
    DEFAULT_PSEUDO_NOISE,
    Likelihood,
    classification,
    noise_em_update,
    regression,
)
from ekibnn.bnn.models import ACTIVATIONS, MLP, ensemble_apply, num_params
from ekibnn.bnn.predictive import (
    Predictive,
    predictive,
    predictive_interval,
    predictive_samples,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_PSEUDO_NOISE",
    "MLP",
    "Likelihood",
    "Predictive",
    "classification",
    "ensemble_apply",
    "noise_em_update",
    "num_params",
    "predictive",
    "predictive_interval",
    "predictive_samples",
    "regression",
]
