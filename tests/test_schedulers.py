import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek
from ekibnn.schedulers import MisfitStats


def _stats(misfits, time=0.0, m=10, mean_misfit=100.0):
    misfits = jnp.asarray(misfits)
    ok = jnp.ones(misfits.shape, bool)
    return MisfitStats(misfits, ok, jnp.asarray(mean_misfit), m, jnp.asarray(time))


def test_data_misfit_formula():
    sched = ek.schedulers.data_misfit()
    phi = np.array([10.0, 20.0, 30.0, 60.0])
    dt, done, _ = sched.next(sched.init(), _stats(phi))
    expected = max(10 / (2 * phi.mean()), np.sqrt(10 / (2 * phi.var(ddof=1))))
    np.testing.assert_allclose(dt, expected, rtol=1e-6)
    assert not done
    # the last step is clipped to land exactly on T
    dt, done, _ = sched.next(sched.init(), _stats(phi * 1e-3, time=0.9))
    np.testing.assert_allclose(dt, 0.1, rtol=1e-5)
    assert done


def test_constant_and_final_time():
    dt, done, _ = ek.schedulers.constant(0.3).next((), _stats([1.0, 2.0], time=5.0))
    assert float(dt) == pytest.approx(0.3) and not done
    sched = ek.schedulers.constant(0.3, final_time=1.0)
    dt, done, _ = sched.next((), _stats([1.0, 2.0], time=0.8))
    assert float(dt) == pytest.approx(0.2) and done


def test_discrepancy_principle_stops_without_moving():
    sched = ek.schedulers.stop_on_discrepancy(ek.schedulers.constant(1.0), tau=1.2)
    dt, done, _ = sched.next((), _stats([1.0, 2.0], m=10, mean_misfit=7.0))  # 14 <= 14.4
    assert done and float(dt) == 0.0
    dt, done, _ = sched.next((), _stats([1.0, 2.0], m=10, mean_misfit=8.0))
    assert not done and float(dt) == 1.0


def test_run_stops_on_discrepancy_when_data_are_fitted():
    problem = make_linear_problem(m=30, p=3, noise=0.1, seed=2)
    obs = ek.Observation(jnp.asarray(problem.y, jnp.float32), jnp.asarray(problem.noise_std))
    sched = ek.schedulers.stop_on_discrepancy(ek.schedulers.constant(0.5), tau=1.5)
    algo = ek.eki(problem.forward, obs, scheduler=sched, stochastic=False)
    x0 = jax.random.normal(jax.random.key(0), (20, 3))
    result = ek.run(jax.random.key(1), algo, x0, num_steps=500, progress=False)
    assert result.num_steps < 500
    assert result.history.mean_misfit[-1] <= 1.5**2
    assert result.history.mean_misfit[-2] > 1.5**2


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_scheduler_arguments(bad):
    with pytest.raises(ek.InputError):
        ek.schedulers.constant(bad)
    with pytest.raises(ek.InputError):
        ek.schedulers.data_misfit(bad)
