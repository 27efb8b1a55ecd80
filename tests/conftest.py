"""Shared test problems: linear-Gaussian inverse problems with closed-form posteriors."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple

#: XLA CPU's fusion emitters off: its older elemental emitters compile small programs faster
_LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _compile_fast() -> None:
    """Compile the test run's programs fast: LLVM's optimisations off
    (``--xla_backend_optimization_level=0``) and XLA CPU's older elemental emitters instead of
    its fusion emitters (``--xla_cpu_use_fusion_emitters=false``, where this jaxlib knows the
    flag), added to ``XLA_FLAGS`` and inherited by the xdist workers and every subprocess.
    Most of a small test's time is XLA compiling; the tests' small programs run about as fast
    either way (a full-size fit does not: both flags slow the tutorial configuration, and the
    CLI keeps XLA's defaults). What changes is the machine code, hence float round-off, which
    no test may depend on.

    An unknown flag in ``XLA_FLAGS`` aborts the process, so the emitter flag is first tried in
    a subprocess (once: the workers inherit the answer). ``EKIBNN_TEST_FAST_COMPILE=0`` keeps
    XLA's defaults; a flag already in ``XLA_FLAGS`` is left as it is. Must run before JAX
    creates its CPU backend, which reads the flags."""
    if os.environ.get("EKIBNN_TEST_FAST_COMPILE", "1") == "0":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        flags = f"{flags} --xla_backend_optimization_level=0".strip()
    tried = "EKIBNN_TEST_EMITTERS_TRIED" in os.environ
    if "xla_cpu_use_fusion_emitters" not in flags and not tried:
        os.environ["EKIBNN_TEST_EMITTERS_TRIED"] = "1"
        probe = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices('cpu')"],
            env={**os.environ, "XLA_FLAGS": f"{flags} {_LEGACY_EMITTERS}"},
            capture_output=True,
            timeout=300,
        )
        if probe.returncode == 0:
            flags = f"{flags} {_LEGACY_EMITTERS}"
    os.environ["XLA_FLAGS"] = flags


_compile_fast()

import jax  # noqa: E402  (after the flags are set)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_SHARED_CACHE: str | None = None  # the folder this process made (removed at the end)


def _share_compiled_programs() -> None:
    """One JAX persistent compilation cache for the whole test run: the xdist workers and every
    subprocess they start (CLI commands, notebooks, multi-process runs) reuse a program another
    test already compiled instead of compiling it again. Most of a small test's time is XLA
    compiling, and tests build fresh closures (new algorithm objects, new forward maps) that
    JAX's in-memory caches cannot match; the persistent cache keys on the program itself.

    The first pytest process (the xdist controller, or the only process) makes a new folder and
    removes it at the end, so nothing carries over between runs; workers and subprocesses
    inherit it through ``JAX_COMPILATION_CACHE_DIR``. Programs that compile in under 0.1 s are
    not stored. ``EKIBNN_TEST_COMPILE_CACHE=0`` turns it off. The tests of the CLI's own cache
    and of the compilation budget set their own folder or turn it off."""
    global _SHARED_CACHE
    if os.environ.get("EKIBNN_TEST_COMPILE_CACHE", "1") == "0":
        return
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        _SHARED_CACHE = tempfile.mkdtemp(prefix="ekibnn-tests-jax-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _SHARED_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    # JAX read the variables when it was imported, before they were set here
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )


_share_compiled_programs()


def pytest_unconfigure(config):
    if _SHARED_CACHE is not None:
        shutil.rmtree(_SHARED_CACHE, ignore_errors=True)


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
