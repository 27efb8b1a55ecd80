"""Run in a subprocess with 2 forced CPU devices: a sharded RML run equals the single-device one
(the members, their prior draws and their data perturbations live on the leading axis J)."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()  # keeps the test run's flags (tests/conftest.py)

import jax
import jax.numpy as jnp
import numpy as np

import ekibnn as ek

jax.config.update("jax_enable_x64", True)
assert len(jax.devices()) == 2, jax.devices()
mesh = jax.make_mesh((2,), ("ensemble",), axis_types=(jax.sharding.AxisType.Auto,))
x = jnp.linspace(-1.0, 1.0, 9)
y = jnp.sin(2.0 * x)


def forward(theta):
    return theta[2] * jnp.tanh(theta[0] * x + theta[1])


obs = ek.Observation(y, 0.1)
prior = ek.GaussianPrior(jnp.ones(3), 1.0)
algo = ek.rml(forward, obs, prior, max_steps=8)
draws = prior.sample(jax.random.key(1), 8)
single = ek.run(jax.random.key(2), algo, draws, 8, progress=False)
sharded = ek.run(jax.random.key(2), algo, draws, 8, progress=False, mesh=mesh)
for leaf in (sharded.state.lm.x, sharded.state.anchor, sharded.state.perturbation):
    assert len(leaf.sharding.device_set) == 2 and leaf.sharding.spec[0] == "ensemble", leaf
np.testing.assert_allclose(sharded.state.perturbation, single.state.perturbation, rtol=1e-12)
np.testing.assert_allclose(sharded.particles, single.particles, rtol=1e-8, atol=1e-10)
print("SHARDED-RML-OK")
