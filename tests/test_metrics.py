"""Tests for ekibnn.metrics against hand-computed values and independent numpy/scipy formulas."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ekibnn import metrics as m
from ekibnn.errors import InputError

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def assert_close(actual, expected, rtol=1e-6, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------


def test_rmse_hand_value():
    # errors 0, 2, 2 -> mean square 8/3
    out = m.rmse(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 4.0, 1.0]))
    assert out.shape == ()
    assert_close(out, math.sqrt(8.0 / 3.0))


def test_gaussian_nll_moment_matches_scipy():
    y = np.array([0.3, -1.2, 2.0])
    mean = np.array([0.0, -1.0, 1.0])
    std = np.array([1.0, 0.5, 2.0])
    expected = -np.mean(stats.norm.logpdf(y, mean, std))
    assert_close(m.gaussian_nll_moment(y, mean, std), expected)
    # hand value: y = mean, std = 1 -> 0.5 log(2 pi)
    assert_close(m.gaussian_nll_moment(jnp.zeros(2), jnp.zeros(2), 1.0), HALF_LOG_2PI)
    # a mask: the mean over those points only, also compiled
    mask = np.array([True, False, True])
    subset = -np.mean(stats.norm.logpdf(y[mask], mean[mask], std[mask]))
    assert_close(m.gaussian_nll_moment(y, mean, std, where=mask), subset)
    assert_close(jax.jit(m.gaussian_nll_moment)(y, mean, std, mask), subset)


def test_gaussian_nll_single_member_equals_single_gaussian():
    y = jnp.array([0.3, -1.2, 2.0])
    mean = jnp.array([0.0, -1.0, 1.0])
    std = jnp.array([1.0, 0.5, 2.0])
    assert_close(m.gaussian_nll(y, mean[None, :], std), m.gaussian_nll_moment(y, mean, std))


def test_gaussian_nll_mixture_hand_values():
    # symmetric two-member mixture at +-1, y = 0: p = phi(1) -> NLL = 0.5 log 2pi + 0.5
    out = m.gaussian_nll(jnp.array([0.0]), jnp.array([[-1.0], [1.0]]), 1.0)
    assert_close(out, HALF_LOG_2PI + 0.5)
    # members at 0 and 10: p = 0.5 (phi(0) + phi(10))
    out = m.gaussian_nll(jnp.array([0.0]), jnp.array([[0.0], [10.0]]), 1.0)
    expected = -math.log(0.5 * (stats.norm.pdf(0.0) + stats.norm.pdf(10.0)))
    assert_close(out, expected)


def test_gaussian_nll_per_member_noise_matches_numpy():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(4, 5))
    s = rng.uniform(0.5, 2.0, size=(4, 5))
    y = rng.normal(size=5)
    expected = -np.mean(np.log(np.mean(stats.norm.pdf(y[None, :], mu, s), axis=0)))
    assert_close(m.gaussian_nll(y, mu, s), expected, rtol=1e-5)
    # (n,) noise is per point, shared across members
    s_n = s[0]
    expected_n = -np.mean(np.log(np.mean(stats.norm.pdf(y[None, :], mu, s_n[None, :]), axis=0)))
    assert_close(m.gaussian_nll(y, mu, s_n), expected_n, rtol=1e-5)


def test_gaussian_nll_is_stable_far_from_all_members():
    # naive exp underflows to 0 in float32; logsumexp keeps it finite:
    # log p = log(0.5) - 0.5 log 2pi - 5000 + log(1 + exp(-15000))
    out = m.gaussian_nll(jnp.array([0.0]), jnp.array([[100.0], [200.0]]), 1.0)
    assert np.isfinite(float(out))
    assert_close(out, HALF_LOG_2PI + 5000.0 + math.log(2.0), rtol=1e-6)


def test_crps_two_point_ensemble_by_hand():
    # point 1: samples {0, 2}, y = 0.5: E|X-y| = (0.5 + 1.5)/2 = 1, E|X-X'| = 4/4 = 1 -> 0.5
    # point 2: samples {1, 1}, y = 3:   E|X-y| = 2, E|X-X'| = 0 -> 2
    samples = jnp.array([[2.0, 1.0], [0.0, 1.0]])
    out = m.crps(jnp.array([0.5, 3.0]), samples)
    assert_close(out, (0.5 + 2.0) / 2.0)


def test_crps_single_member_is_absolute_error():
    y = jnp.array([0.0, 1.0, -2.0])
    x = jnp.array([[1.5, 1.0, 0.0]])
    assert_close(m.crps(y, x), (1.5 + 0.0 + 2.0) / 3.0)


def test_crps_matches_quadratic_energy_form():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 6))
    y = rng.normal(size=6)
    term1 = np.mean(np.abs(x - y[None, :]), axis=0)
    term2 = np.mean(np.abs(x[:, None, :] - x[None, :, :]), axis=(0, 1))
    assert_close(m.crps(y, x), np.mean(term1 - 0.5 * term2), rtol=1e-5)


def test_crps_gaussian_hand_and_quadrature():
    # z = 0, s = 1: 2 phi(0) - 1/sqrt(pi) = (sqrt(2) - 1)/sqrt(pi)
    hand = (math.sqrt(2.0) - 1.0) / math.sqrt(math.pi)
    assert_close(m.crps_gaussian(jnp.array([0.0]), jnp.array([0.0]), 1.0), hand)
    assert_close(m.crps_gaussian(jnp.array([3.0]), jnp.array([3.0]), 2.0), 2.0 * hand)

    # independent definition: CRPS = int (F(x) - 1[x >= y])^2 dx
    def crps_quad(y, mu, s):
        left = integrate.quad(lambda x: stats.norm.cdf(x, mu, s) ** 2, -np.inf, y)[0]
        right = integrate.quad(lambda x: stats.norm.sf(x, mu, s) ** 2, y, np.inf)[0]
        return left + right

    y = np.array([0.7, -2.0])
    mu = np.array([0.0, 1.0])
    s = np.array([1.5, 0.5])
    expected = np.mean([crps_quad(*args) for args in zip(y, mu, s, strict=True)])
    assert_close(m.crps_gaussian(y, mu, s), expected, rtol=1e-5)


def test_sample_crps_converges_to_gaussian_closed_form():
    num = 20000
    mu = np.array([0.0, 1.0, -2.0])
    s = np.array([1.0, 0.5, 2.0])
    y = np.array([0.3, 2.0, -2.5])
    closed = m.crps_gaussian(y, mu, s)
    # deterministic quantile-grid samples converge fast
    u = (np.arange(1, num + 1) - 0.5) / num
    grid = mu[None, :] + s[None, :] * stats.norm.ppf(u)[:, None]
    assert_close(m.crps(y, grid), closed, rtol=1e-3, atol=1e-4)
    # random samples converge at the Monte Carlo rate
    rng = np.random.default_rng(2)
    draws = mu[None, :] + s[None, :] * rng.standard_normal((num, 3))
    assert_close(m.crps(y, draws), closed, rtol=0.0, atol=2e-2)


def test_interval_coverage_hand_example():
    y = jnp.array([0.0, 1.0, 2.0, 3.0])
    lower = jnp.array([-1.0, 1.0, 2.5, 0.0])
    upper = jnp.array([1.0, 2.0, 3.0, 3.0])
    # inside, on lower bound, below, on upper bound -> 3/4
    assert_close(m.interval_coverage(y, lower, upper), 0.75)


def test_central_interval_linear_quantiles():
    samples = jnp.array([[4.0, 0.0], [0.0, 10.0], [2.0, 20.0], [1.0, 30.0], [3.0, 40.0]])
    lo, hi = m.central_interval(samples, 0.5)  # q = 0.25, 0.75 -> positions 1 and 3
    assert lo.shape == hi.shape == (2,)
    assert_close(lo, [1.0, 10.0])
    assert_close(hi, [3.0, 30.0])
    lo, hi = m.central_interval(samples, 0.8)  # q = 0.1, 0.9 -> positions 0.4 and 3.6
    assert_close(lo, [0.4, 4.0], rtol=1e-5)
    assert_close(hi, [3.6, 36.0], rtol=1e-5)


def test_gaussian_interval_hand_values():
    lo, hi = m.gaussian_interval(jnp.array([1.0, 0.0]), jnp.array([2.0, 1.0]), 0.95)
    z = 1.959963984540054
    assert_close(lo, [1.0 - 2.0 * z, -z])
    assert_close(hi, [1.0 + 2.0 * z, z])


def test_calibration_curve_regression_hand_example():
    y = jnp.array([0.1, -0.5, 1.0, 2.5])
    levels_in = jnp.array([0.5, 0.9])
    # half widths: z(0.5) = 0.6745, z(0.9) = 1.6449; |y| = 0.1, 0.5, 1.0, 2.5
    levels, cov = m.calibration_curve_regression(y, jnp.zeros(4), 1.0, levels_in)
    assert_close(levels, [0.5, 0.9])
    assert_close(cov, [0.5, 0.75])


def test_calibration_curve_regression_calibrated_gaussian():
    rng = np.random.default_rng(3)
    y = rng.standard_normal(20000)
    levels = jnp.array([0.2, 0.5, 0.8, 0.95])
    _, cov = m.calibration_curve_regression(y, jnp.zeros_like(y), jnp.ones_like(y), levels)
    assert_close(cov, levels, rtol=0.0, atol=0.015)


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------

PROBS_NP = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
PROBS = jnp.asarray(PROBS_NP, jnp.float32)
LABELS = jnp.array([0, 1, 0, 1])


def test_accuracy_hand_value():
    # argmax = 0, 1, 2, 0 vs labels 0, 1, 0, 1 -> 2/4
    assert_close(m.accuracy(LABELS, PROBS), 0.5)


def test_categorical_nll_hand_value_and_clipping():
    expected = -(math.log(0.7) + math.log(0.8) + math.log(0.3) + math.log(0.4)) / 4.0
    assert_close(m.categorical_nll(LABELS, PROBS), expected)
    out = m.categorical_nll(jnp.array([1]), jnp.array([[1.0, 0.0]]))
    assert np.isfinite(float(out))
    assert_close(out, -math.log(1e-12), rtol=1e-5)
    assert_close(
        m.categorical_nll(jnp.array([1]), jnp.array([[1.0, 0.0]]), eps=1e-3), 3 * math.log(10)
    )


def test_brier_score_hand_values():
    # rows: 0.09+0.04+0.01, 0.01+0.04+0.01, 0.49+0.09+0.16, 0.25+0.36+0.01 -> 1.56 / 4
    assert_close(m.brier_score(LABELS, PROBS), 0.39)
    onehot = jax.nn.one_hot(LABELS, 3)
    assert_close(m.brier_score(LABELS, onehot), 0.0)
    for k in (2, 3, 5):
        uniform = jnp.full((4, k), 1.0 / k)
        assert_close(m.brier_score(jnp.array([0, 1, 1, 0]), uniform), 1.0 - 1.0 / k)


def _binary(conf, n):
    return [[conf, 1.0 - conf]] * n


def test_ece_perfectly_calibrated_is_zero():
    # 4 points at confidence 0.75 with 3 correct, 2 points at confidence 1.0 both correct
    probs = jnp.array(_binary(0.75, 4) + _binary(1.0, 2))
    labels = jnp.array([0, 0, 0, 1, 0, 0])
    assert_close(m.expected_calibration_error(labels, probs, num_bins=10), 0.0)


def test_ece_and_reliability_diagram_miscalibrated_hand_value():
    # single bin: confidence 0.9, accuracy 0.5 -> ECE 0.4
    probs = jnp.array(_binary(0.9, 4))
    assert_close(m.expected_calibration_error(jnp.array([0, 1, 0, 1]), probs), 0.4)
    # two bins (M = 10): conf 0.62 (2 pts, acc 0.5), conf 0.87 (4 pts, acc 1)
    # ECE = (2 * |0.5 - 0.62| + 4 * |1 - 0.87|) / 6 = 0.76 / 6
    probs = jnp.array(_binary(0.62, 2) + _binary(0.87, 4))
    labels = jnp.array([0, 1, 0, 0, 0, 0])
    assert_close(m.expected_calibration_error(labels, probs, num_bins=10), 0.76 / 6.0)
    conf, acc, count = m.reliability_diagram(labels, probs, num_bins=10)
    assert conf.shape == acc.shape == count.shape == (10,)
    exp_conf = np.zeros(10)
    exp_acc = np.zeros(10)
    exp_count = np.zeros(10)
    exp_conf[6], exp_acc[6], exp_count[6] = 0.62, 0.5, 2
    exp_conf[8], exp_acc[8], exp_count[8] = 0.87, 1.0, 4
    assert_close(conf, exp_conf)
    assert_close(acc, exp_acc)
    assert_close(count, exp_count)
    assert np.all(np.isfinite(np.asarray(conf))) and np.all(np.isfinite(np.asarray(acc)))


def test_ece_matches_loop_reference():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(200, 4)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=200)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, 16)
    expected = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            expected += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert_close(m.expected_calibration_error(labels, probs), expected, rtol=1e-5)
    bconf, bacc, bcount = m.reliability_diagram(labels, probs)
    assert float(bcount.sum()) == 200.0
    assert_close(np.sum(np.asarray(bcount) / 200 * np.abs(bacc - bconf)), expected, rtol=1e-5)


# --------------------------------------------------------------------------------------
# Validation, dtypes, jit
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: m.rmse(jnp.zeros(3), jnp.zeros(4)),
        lambda: m.gaussian_nll(jnp.zeros(3), jnp.zeros((3, 2)), 1.0),
        lambda: m.gaussian_nll(jnp.zeros(3), jnp.zeros((2, 3)), jnp.ones(2)),
        lambda: m.gaussian_nll_moment(jnp.zeros(3), jnp.zeros(2), 1.0),
        lambda: m.crps(jnp.zeros(3), jnp.zeros(3)),
        lambda: m.crps_gaussian(jnp.zeros(3), jnp.zeros(3), jnp.ones(2)),
        lambda: m.interval_coverage(jnp.zeros(3), jnp.zeros(3), jnp.zeros(2)),
        lambda: m.central_interval(jnp.zeros(3), 0.9),
        lambda: m.calibration_curve_regression(jnp.zeros(3), jnp.zeros(3), 1.0, 0.5),
        lambda: m.accuracy(jnp.zeros(3, jnp.int32), jnp.ones((4, 2))),
        lambda: m.brier_score(jnp.zeros(3), jnp.ones((3, 2))),
        lambda: m.expected_calibration_error(jnp.zeros(3, jnp.int32), jnp.ones((3, 2)), 0),
    ],
)
def test_invalid_inputs_raise_value_error(call):
    with pytest.raises(ValueError, match=r"expected .*got .*fix: ") as info:
        call()
    assert isinstance(info.value, InputError)


def _output_dtypes(dtype):
    """Output dtypes of every metric for inputs of ``dtype`` (abstract evaluation, no compile)."""
    y = jnp.zeros(4, dtype)
    ens = jnp.zeros((3, 4), dtype)
    probs = jnp.asarray(PROBS_NP, dtype)
    levels = jnp.asarray([0.5, 0.9], dtype)
    calls = [
        (m.rmse, y, y),
        (m.gaussian_nll, y, ens, 0.5),
        (m.gaussian_nll_moment, y, y, y),
        (m.crps, y, ens),
        (m.crps_gaussian, y, y, 1.0),
        (m.interval_coverage, y, y, y),
        (m.central_interval, ens, 0.8),
        (m.gaussian_interval, y, 1.0, 0.8),
        (m.calibration_curve_regression, y, y, y, levels),
        (m.accuracy, LABELS, probs),
        (m.categorical_nll, LABELS, probs),
        (m.brier_score, LABELS, probs),
        (m.expected_calibration_error, LABELS, probs),
        (m.reliability_diagram, LABELS, probs),
    ]
    outs = [jax.eval_shape(fn, *args) for fn, *args in calls]
    return {leaf.dtype for leaf in jax.tree_util.tree_leaves(outs)}


def test_output_dtype_follows_input_dtype():
    assert _output_dtypes(jnp.float32) == {jnp.dtype(jnp.float32)}
    with jax.enable_x64(True):
        # float32 inputs stay float32 with x64 enabled and Python-scalar arguments
        assert _output_dtypes(jnp.float32) == {jnp.dtype(jnp.float32)}
        assert _output_dtypes(jnp.float64) == {jnp.dtype(jnp.float64)}


def test_float64_precision():
    y = np.array([0.3, -1.2, 2.0])
    mean = np.array([0.0, -1.0, 1.0])
    std = np.array([1.0, 0.5, 2.0])
    with jax.enable_x64(True):
        f64 = [jnp.asarray(a, jnp.float64) for a in (y, mean, std)]
        expected = -np.mean(stats.norm.logpdf(y, mean, std))
        assert_close(m.gaussian_nll_moment(*f64), expected, rtol=1e-13, atol=0.0)
        assert_close(m.gaussian_nll(f64[0], f64[1][None], f64[2]), expected, rtol=1e-13, atol=0.0)
        probs = jnp.asarray(PROBS_NP, jnp.float64)
        assert_close(m.brier_score(LABELS, probs), 0.39, rtol=1e-13, atol=0.0)
        lo, hi = m.gaussian_interval(f64[1], f64[2], 0.9)
        assert_close(lo, mean - stats.norm.ppf(0.95) * std, rtol=1e-13, atol=0.0)
        assert_close(hi, mean + stats.norm.ppf(0.95) * std, rtol=1e-13, atol=0.0)


def test_functions_work_under_jit():
    rng = np.random.default_rng(5)
    y = jnp.asarray(rng.normal(size=6), jnp.float32)
    ens = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
    mean, std = ens.mean(axis=0), ens.std(axis=0) + 0.1
    levels = jnp.array([0.5, 0.9])
    cases = [
        (m.rmse, (y, mean)),
        (m.gaussian_nll, (y, ens, 0.5)),
        (m.gaussian_nll_moment, (y, mean, std)),
        (m.crps, (y, ens)),
        (m.crps_gaussian, (y, mean, std)),
        (m.interval_coverage, (y, mean - std, mean + std)),
        (m.central_interval, (ens, 0.8)),
        (m.gaussian_interval, (mean, std, 0.8)),
        (m.calibration_curve_regression, (y, mean, std, levels)),
        (m.accuracy, (LABELS, PROBS)),
        (m.categorical_nll, (LABELS, PROBS)),
        (m.brier_score, (LABELS, PROBS)),
        (functools.partial(m.expected_calibration_error, num_bins=10), (LABELS, PROBS)),
        (functools.partial(m.reliability_diagram, num_bins=10), (LABELS, PROBS)),
    ]
    for fn, args in cases:
        eager = fn(*args)
        jitted = jax.jit(fn)(*args)
        jax.tree_util.tree_map(lambda a, b: assert_close(a, b, rtol=1e-6), eager, jitted)
    # num_bins as a static argument
    ece = jax.jit(m.expected_calibration_error, static_argnames="num_bins")
    assert_close(ece(LABELS, PROBS, num_bins=5), m.expected_calibration_error(LABELS, PROBS, 5))


def test_reports_equal_the_metrics_they_bundle():
    rng = np.random.default_rng(3)
    y, mean = rng.normal(size=50), rng.normal(size=50)
    std = rng.uniform(0.5, 2.0, size=50)
    report = m.regression_report(y, mean, std)
    lo, hi = m.gaussian_interval(mean, std, 0.95)
    levels, observed = m.calibration_curve_regression(y, mean, std, np.linspace(0.05, 0.95, 19))
    expected = {
        "rmse": m.rmse(y, mean),
        "nll": m.gaussian_nll_moment(y, mean, std),
        "crps": m.crps_gaussian(y, mean, std),
        "coverage_95": m.interval_coverage(y, lo, hi),
        "calibration_levels": levels,
        "calibration_observed": observed,
    }
    assert set(report) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(report[name], value, rtol=1e-6, err_msg=name)
    labels = rng.integers(0, 3, size=40)
    probs = rng.dirichlet(np.ones(3), size=40)
    report = m.classification_report(labels, probs)
    conf, acc, count = m.reliability_diagram(labels, probs, num_bins=10)
    expected = {
        "accuracy": m.accuracy(labels, probs),
        "nll": m.categorical_nll(labels, probs),
        "brier": m.brier_score(labels, probs),
        "ece": m.expected_calibration_error(labels, probs, num_bins=10),
        "bin_confidence": conf,
        "bin_accuracy": acc,
        "bin_count": count,
    }
    assert set(report) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(report[name], value, rtol=1e-6, err_msg=name)
    with pytest.raises(InputError):
        m.regression_report(y, mean[:10], std)
