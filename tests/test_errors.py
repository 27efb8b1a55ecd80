"""Error messages: XLA's out-of-memory error becomes one clear ek.InputError."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import pytest

import ekibnn as ek
from ekibnn.errors import OutOfMemoryError, explain_out_of_memory


def test_resource_exhausted_becomes_one_clear_error():
    xla = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 99 bytes.")
    with pytest.raises(OutOfMemoryError) as info, explain_out_of_memory(J=4, p=3, m=2):
        raise xla
    err = info.value
    assert isinstance(err, ek.InputError) and isinstance(err, MemoryError)
    message = str(err)
    assert "got RESOURCE_EXHAUSTED: Out of memory allocating 99 bytes." in message
    for lever in ("J = 4 members", "p = 3 parameters", "m = 2 observations"):
        assert lever in message
    assert "forward_batch_size=" in message and "batch_size=" in message
    # no "During handling of the above exception ..." and no second copy of XLA's error
    assert err.__cause__ is None and err.__suppress_context__


def test_other_errors_pass_through():
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        with explain_out_of_memory(J=1, p=1):
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")
    with pytest.raises(KeyError), explain_out_of_memory(J=1, p=1):
        raise KeyError("x")


@pytest.mark.skipif(sys.platform != "linux", reason="bounds the address space with RLIMIT_AS")
def test_a_run_that_cannot_fit_names_the_sizes():
    """A real allocation failure inside ek.run: a forward pass that asks for 2 TiB. The address
    space is bounded first (4 GiB above what the process maps now), so the allocation fails at
    once on any machine, whatever its overcommit policy, instead of touching memory."""
    import resource

    obs = ek.Observation(jnp.ones(3), 0.1)
    prior = ek.GaussianPrior(jnp.zeros(2), 1.0)

    def forward(theta):
        big = jnp.full((2**36,), theta[0])  # 256 GiB per member, cannot be optimised away
        return jnp.concatenate([theta, theta[:1]]) + jnp.sort(big)[-1]

    algo = ek.eki(forward, obs, prior=prior)
    particles = prior.sample(jax.random.key(1), 8)
    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    bound = mapped + 4 * 2**30
    if hard != resource.RLIM_INFINITY and hard < bound:
        pytest.skip("the hard address-space limit is too low")
    resource.setrlimit(resource.RLIMIT_AS, (bound, hard))
    try:
        with pytest.raises(OutOfMemoryError) as info:
            ek.run(jax.random.key(0), algo, particles, num_steps=2, progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    message = str(info.value)
    assert "RESOURCE_EXHAUSTED" in message
    assert "J = 8 members, p = 2 parameters, m = 3 observations" in message
    assert info.value.__suppress_context__
