"""Shared test problems: linear-Gaussian inverse problems with closed-form posteriors."""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Subprocess entry points (they set process-wide JAX flags at import): run by the tests, never
# collected, or their imports would switch x64 on for every test in the same worker.
collect_ignore = ["scripts"]


class LinearProblem(NamedTuple):
    """y = H theta + eta, eta ~ N(0, Gamma), theta ~ N(prior_mean, diag(prior_std^2))."""

    H: np.ndarray  # (m, p)
    y: np.ndarray  # (m,)
    noise_cov: np.ndarray  # (m, m)
    noise_std: np.ndarray  # (m,) when diagonal
    prior_mean: np.ndarray  # (p,)
    prior_std: np.ndarray  # (p,)
    post_mean: np.ndarray  # (p,)
    post_cov: np.ndarray  # (p, p)

    def forward(self, theta):
        return jnp.asarray(self.H, theta.dtype) @ theta


def make_linear_problem(
    m: int = 5, p: int = 3, noise: float = 0.3, seed: int = 0, correlated: bool = False
) -> LinearProblem:
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(m, p))
    prior_mean = rng.normal(size=p) * 0.5
    prior_std = rng.uniform(0.5, 1.5, size=p)
    noise_std = noise * rng.uniform(0.5, 1.5, size=m)
    if correlated:
        corr = 0.5 ** np.abs(np.subtract.outer(np.arange(m), np.arange(m)))
        noise_cov = np.outer(noise_std, noise_std) * corr
    else:
        noise_cov = np.diag(noise_std**2)
    truth = prior_mean + prior_std * rng.normal(size=p)
    y = H @ truth + np.linalg.cholesky(noise_cov) @ rng.normal(size=m)
    prior_prec = np.diag(prior_std**-2)
    noise_prec = np.linalg.inv(noise_cov)
    post_cov = np.linalg.inv(H.T @ noise_prec @ H + prior_prec)
    post_mean = post_cov @ (H.T @ noise_prec @ y + prior_prec @ prior_mean)
    return LinearProblem(H, y, noise_cov, noise_std, prior_mean, prior_std, post_mean, post_cov)


@pytest.fixture
def linear_problem() -> LinearProblem:
    return make_linear_problem()


@pytest.fixture
def key():
    return jax.random.key(0)


class CompileLog(logging.Handler):
    """Counts XLA compilations by function name while ``jax.log_compiles()`` is on."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.names: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])

    def count(self, fragment: str) -> int:
        """Compilations whose function name contains ``fragment``."""
        return sum(fragment in name for name in self.names)


@pytest.fixture
def compile_log():
    """Yield a :class:`CompileLog` that records every XLA compilation in the test, from empty
    in-memory caches (so the count does not depend on what ran before in the worker)."""
    jax.clear_caches()
    handler = CompileLog()
    logger = logging.getLogger("jax._src.interpreters.pxla")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            yield handler
    finally:
        logger.removeHandler(handler)
