import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek


def _algo(trace_counter=None, **kwargs):
    problem = make_linear_problem(m=8, p=3, seed=11)
    H = jnp.asarray(problem.H, jnp.float32)

    def forward(theta):
        if trace_counter is not None:
            trace_counter.append(1)
        return jnp.tanh(H @ theta)  # mildly nonlinear

    obs = ek.Observation(jnp.asarray(np.tanh(problem.y), jnp.float32), 0.1)
    kwargs.setdefault("scheduler", ek.schedulers.constant(0.5))
    return ek.eki(forward, obs, inflation=0.01, minibatch=ek.minibatch.random(5), **kwargs)


def _x0(j=16):
    return jax.random.normal(jax.random.key(42), (j, 3))


def test_same_key_same_result_and_chunking_does_not_matter():
    algo = _algo()
    a = ek.run(jax.random.key(0), algo, _x0(), num_steps=30, progress=False)
    b = ek.run(jax.random.key(0), algo, _x0(), num_steps=30, progress=True, chunk_size=7)
    c = ek.run(jax.random.key(1), algo, _x0(), num_steps=30, progress=False)
    np.testing.assert_array_equal(a.particles, b.particles)
    np.testing.assert_array_equal(a.history.misfit, b.history.misfit)
    assert not np.array_equal(a.particles, c.particles)
    assert a.num_steps == 30 and a.history.misfit.shape == (30,)
    assert a.history.misfit[-1] < a.history.misfit[0]


def test_checkpoint_resume_is_bit_identical(tmp_path):
    algo = _algo()
    full = ek.run(jax.random.key(3), algo, _x0(), num_steps=40, progress=False)
    path = tmp_path / "run.ckpt.npz"
    # "interrupted" after 15 steps (the checkpoint holds step 15) ...
    part = ek.run(
        jax.random.key(3),
        algo,
        _x0(),
        num_steps=15,
        progress=False,
        checkpoint_path=path,
        checkpoint_every=5,
    )
    assert part.num_steps == 15 and path.exists()
    # ... then resumed: the same inputs again (the checkpoint's fingerprint includes the
    # initial particles; other particles are refused, see tests/test_checkpoint.py)
    resumed = ek.run(
        jax.random.key(3),
        algo,
        _x0(),
        num_steps=40,
        progress=False,
        checkpoint_path=path,
        checkpoint_every=5,
    )
    assert resumed.num_steps == 40
    np.testing.assert_array_equal(resumed.particles, full.particles)
    for name in full.history._fields:
        np.testing.assert_array_equal(getattr(resumed.history, name), getattr(full.history, name))
    # a finished checkpoint resumes to the same result without stepping
    again = ek.run(
        jax.random.key(3), algo, _x0(), num_steps=40, progress=False, checkpoint_path=path
    )
    np.testing.assert_array_equal(again.particles, full.particles)


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    algo = _algo()
    path = tmp_path / "run.ckpt.npz"
    ek.run(jax.random.key(3), algo, _x0(), num_steps=4, progress=False, checkpoint_path=path)
    with pytest.raises(ek.InputError, match="same key"):
        ek.run(jax.random.key(4), algo, _x0(), num_steps=8, progress=False, checkpoint_path=path)
    with pytest.raises(ek.InputError, match="shape"):
        ek.run(jax.random.key(3), algo, _x0(12), num_steps=8, progress=False, checkpoint_path=path)


def test_step_is_traced_once_per_run():
    traces = []
    algo = _algo(trace_counter=traces)
    ek.run(jax.random.key(0), algo, _x0(), num_steps=50, progress=True, chunk_size=5)
    # shape-only traces (init's check, the info layout) plus ONE trace of the compiled loop
    # (its body and its info layout) for all 10 chunks
    assert len(traces) <= 4, len(traces)
    n = len(traces)
    ek.run(jax.random.key(1), algo, _x0(), num_steps=50, progress=True, chunk_size=5)
    assert len(traces) - n <= 2  # no new compilation of the loop for a new key


def test_run_stops_when_the_scheduler_is_done():
    algo = _algo(scheduler=ek.schedulers.constant(0.25, final_time=1.0))
    result = ek.run(jax.random.key(0), algo, _x0(), num_steps=100, progress=False)
    assert result.num_steps == 4
    np.testing.assert_allclose(result.history.time, [0.25, 0.5, 0.75, 1.0])
    assert bool(result.state.done)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_num_steps(steps):
    with pytest.raises(ek.InputError, match="num_steps"):
        ek.run(jax.random.key(0), _algo(), _x0(), num_steps=steps, progress=False)


@pytest.mark.parametrize("key", [0, np.int64(0), jax.random.split(jax.random.key(0), 2)])
def test_a_key_that_is_not_one_prng_key_is_refused(key):
    with pytest.raises(ek.InputError, match="key: expected") as info:
        ek.run(key, _algo(), _x0(), num_steps=3, progress=False)
    assert "jax.random.key" in str(info.value)


def test_a_legacy_prngkey_gives_the_same_run():
    algo = _algo()
    typed = ek.run(jax.random.key(5), algo, _x0(), num_steps=3, progress=False)
    legacy = ek.run(jax.random.PRNGKey(5), algo, _x0(), num_steps=3, progress=False)
    np.testing.assert_array_equal(typed.particles, legacy.particles)


def test_x64_on_request():
    with jax.enable_x64(True):
        problem = make_linear_problem()
        obs = ek.Observation(jnp.asarray(problem.y), jnp.asarray(problem.noise_std))
        prior = ek.GaussianPrior(jnp.asarray(problem.prior_mean), jnp.asarray(problem.prior_std))
        algo = ek.eki(problem.forward, obs, prior=prior)
        result = ek.run(
            jax.random.key(0),
            algo,
            prior.sample(jax.random.key(1), 50),
            num_steps=50,
            progress=False,
        )
        assert result.particles.dtype == jnp.float64
        assert result.history.dt.dtype == np.float64


def test_new_data_of_the_same_shapes_reuses_the_compiled_loop(compile_log):
    """Observations, noise and prior are data: two algorithms with the same forward function
    and settings but different y and noise compile the loop once."""
    problem = make_linear_problem(m=6, p=3, seed=4)
    prior = ek.GaussianPrior(jnp.zeros(3), 1.0)
    x0 = prior.sample(jax.random.key(0), 16)
    results = []
    for shift, noise in ((0.0, 0.1), (1.0, 0.3)):
        obs = ek.Observation(jnp.asarray(problem.y + shift, jnp.float32), noise)
        algo = ek.eki(problem.forward, obs, prior, scheduler=ek.schedulers.constant(0.5))
        results.append(ek.run(jax.random.key(1), algo, x0, num_steps=6, progress=False))
    assert compile_log.count("_run_chunk") == 1, compile_log.names
    assert not np.allclose(results[0].particles, results[1].particles)  # the data did change


def test_the_compiled_loop_has_no_host_callback(key):
    """Run-time checks are carried as values inside ek.run's loop (ekibnn._checks): XLA does
    not persist programs with host callbacks, so one would keep every CLI run cold."""
    from ekibnn.run import _run_chunk

    problem = make_linear_problem(m=6, p=3)
    obs = ek.Observation(jnp.asarray(problem.y), jnp.asarray(problem.noise_std))
    prior = ek.GaussianPrior(jnp.zeros(3), 1.0)
    for algo in (
        ek.eki(problem.forward, obs, prior=prior),
        ek.gauss_newton(problem.forward, obs, prior),
        ek.uki(problem.forward, obs, prior=prior),
    ):
        state = algo.init(prior.sample(key, 8))
        text = _run_chunk.lower(algo, 4, key, state, jnp.int32(0), jnp.int32(4)).as_text()
        assert "callback" not in text, algo.name


_BLAS_PROBE = """
import json
from threadpoolctl import threadpool_info
from ekibnn.run import blas_limits
def blas():
    return [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
with blas_limits(1):
    inside = blas()
import scipy.linalg
print(json.dumps({"inside": inside, "loaded": [path for path, _ in blas()]}))
"""


def test_blas_limits_reach_the_lapack_xla_calls_in_a_fresh_process():
    """XLA's CPU LAPACK calls run in SciPy's BLAS, which JAX loads only when it lowers such a
    call: limiting before it is loaded would leave its spinning thread pool beside XLA's
    (the bug that made benchmarks/tutorial_speed.py's baseline 1.5x slower)."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _BLAS_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout)
    assert {path for path, _ in probe["inside"]} == set(probe["loaded"])
    assert [threads for _, threads in probe["inside"]] == [1] * len(probe["inside"])
