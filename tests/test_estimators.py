"""Tests for ekibnn.estimators: behaviour on small problems and scikit-learn conformance."""

import os

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from ekibnn.datasets import sine_truth, tutorial_sine
from ekibnn.estimators import EKIClassifier, EKIRegressor

# Tiny settings of the default recipe ("laplace"): every fit compiles in seconds and runs in
# milliseconds; ensemble_size is the number of output samples sample_predictions returns.
SMALL = dict(hidden=(8,), ensemble_size=16)
# ... and of an ensemble recipe (TEKI with the noise by EM).
SMALL_ENSEMBLE = dict(hidden=(8,), ensemble_size=16, num_steps=30, method="teki")


def small_regressor(**kw):
    return EKIRegressor(**{**SMALL, **kw})


def small_classifier(**kw):
    return EKIClassifier(**{**SMALL, **kw})


@pytest.fixture(scope="module")
def sine():
    X, y = tutorial_sine(seed=0, n=200)
    Xt, yt = tutorial_sine(seed=1, n=200)
    inner = np.abs(Xt[:, 0]) < 1.5
    return X, y, Xt[inner], yt[inner]


@pytest.fixture(scope="module")
def fitted_sine(sine):
    X, y, _, _ = sine
    return EKIRegressor(hidden=(16,), ensemble_size=32).fit(X, y)


def test_regressor_fits_sine_far_better_than_prior(sine, fitted_sine):
    _, _, Xt, yt = sine
    # the N(0, 1) prior's predictive mean is the zero function (odd activation, zero-mean prior)
    rmse_prior = np.sqrt(np.mean(sine_truth(Xt) ** 2))
    rmse = np.sqrt(np.mean((fitted_sine.predict(Xt) - sine_truth(Xt)) ** 2))
    assert rmse < 0.2 * rmse_prior and rmse < 0.1
    assert fitted_sine.score(Xt, yt) > 0.9
    assert 0.05 < fitted_sine.noise_ < 0.2  # true noise std 0.1


def test_regressor_return_std_and_samples(sine, fitted_sine):
    _, _, Xt, yt = sine
    mean, std = fitted_sine.predict(Xt, return_std=True)
    assert mean.shape == std.shape == (Xt.shape[0],)
    assert np.all(std > 0) and np.all(std >= fitted_sine.noise_ - 1e-12)  # includes noise
    samples = fitted_sine.sample_predictions(Xt)
    assert samples.shape == (32, Xt.shape[0])
    # samples of the linearised outputs: their mean within Monte-Carlo error of the exact one
    epistemic = np.sqrt(np.maximum(std**2 - fitted_sine.noise_**2, 0))
    assert np.all(np.abs(samples.mean(0) - mean) <= 5 * epistemic / np.sqrt(32) + 1e-6)
    np.testing.assert_array_equal(fitted_sine.sample_predictions(Xt), samples)  # fixed draws
    coverage = np.mean(np.abs(yt - mean) <= 1.96 * std)
    assert coverage > 0.85
    np.testing.assert_array_equal(fitted_sine.predict(Xt), mean)
    assert fitted_sine.converged_ and not hasattr(fitted_sine, "ensemble_")


def test_ensemble_recipe_predictions_are_the_members_moments(sine):
    X, y, Xt, _ = sine
    reg = EKIRegressor(**SMALL_ENSEMBLE).fit(X, y)
    mean, std = reg.predict(Xt, return_std=True)
    samples = reg.sample_predictions(Xt)
    assert samples.shape == (16, Xt.shape[0]) and reg.ensemble_ is not None
    np.testing.assert_allclose(samples.mean(0), mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(samples.var(0) + reg.noise_**2), std, rtol=1e-6)


def test_regressor_known_noise_and_holdout_noise(sine):
    X, y, _, _ = sine
    assert small_regressor(noise=0.3).fit(X, y).noise_ == pytest.approx(0.3)
    reg = EKIRegressor(**SMALL_ENSEMBLE, validation_fraction=0.25).fit(X, y)  # 150 rows
    assert reg.noise_ > 0 and reg.n_iter_ == 30
    assert reg.history_.shape == (30,)


def test_regressor_undoes_target_scaling(sine):
    X, y, Xt, _ = sine
    a = small_regressor().fit(X, y)
    b = small_regressor().fit(X, 100.0 * y + 5.0)
    # identical up to float32 rounding of the standardised targets (amplified by the run)
    atol = 0.03 * 100.0 * y.std()
    np.testing.assert_allclose(b.predict(Xt), 100.0 * a.predict(Xt) + 5.0, atol=atol)
    assert b.noise_ == pytest.approx(100.0 * a.noise_, rel=0.05)


def test_classifier_separable_problem():
    X, y = make_blobs(n_samples=120, centers=[[-3, -3], [3, 3], [3, -3]], random_state=0)
    labels = np.array(["a", "b", "c"])[y]
    clf = small_classifier().fit(X, labels)
    assert list(clf.classes_) == ["a", "b", "c"]
    assert clf.score(X, labels) > 0.95
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(1)])
    assert clf.sample_predictions(X[:5]).shape == (16, 5, 3)


def test_classifier_needs_two_classes():
    with pytest.raises(ValueError, match="1 class"):
        small_classifier().fit(np.zeros((4, 2)), np.ones(4))


def test_clone_get_set_params_round_trip():
    reg = EKIRegressor(hidden=(7, 3), noise=0.2, random_state=5)
    params = reg.get_params()
    assert params["hidden"] == (7, 3) and params["noise"] == 0.2
    twin = clone(reg)
    assert twin.get_params() == params and twin is not reg
    assert twin.set_params(ensemble_size=12, inflation=0.0) is twin
    assert twin.get_params()["ensemble_size"] == 12
    assert reg.get_params()["ensemble_size"] == 100
    clf = EKIClassifier(pseudo_noise=0.2)
    assert clone(clf).get_params() == clf.get_params()


def test_nan_input_and_unfitted_errors(sine):
    X, y, _, _ = sine
    reg = small_regressor()
    with pytest.raises(NotFittedError):
        reg.predict(X)
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reg.fit(bad, y)
    ybad = y.copy()
    ybad[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reg.fit(X, ybad)
    reg.fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        reg.predict(bad)
    with pytest.raises(ValueError, match="features"):
        reg.predict(np.ones((3, 2)))
    with pytest.raises(NotFittedError):
        small_classifier().predict_proba(X)


def test_bad_hyperparameters_raise_at_fit(sine):
    X, y, _, _ = sine
    for kw, match in [
        (dict(ensemble_size=1), "ensemble_size"),
        (dict(hidden=(0,)), "hidden"),
        (dict(activation="swish"), "activation"),
        (dict(method="nope"), "method"),
        (dict(sampler_time=0.0), "sampler_time"),
        (dict(noise=-1.0), "noise"),
        (dict(batch_size=0), "batch_size"),
        (dict(validation_fraction=1.5), "validation_fraction"),
    ]:
        with pytest.raises(ValueError, match=match):
            small_regressor(**kw).fit(X, y)


def test_same_random_state_same_predictions(sine):
    X, y, Xt, _ = sine
    a = small_regressor(random_state=3).fit(X, y).predict(Xt)
    b = small_regressor(random_state=3).fit(X, y).predict(Xt)
    c = small_regressor(random_state=4).fit(X, y).predict(Xt)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_minibatch_tutorial_configuration(sine):
    X, y, Xt, _ = sine
    reg = small_regressor(
        method="eki", batch_size=50, inflation=0.02, ensemble_size=32, num_steps=100
    )
    reg.fit(X, y)
    assert np.sqrt(np.mean((reg.predict(Xt) - sine_truth(Xt)) ** 2)) < 0.3


def test_prediction_rows_do_not_depend_on_batch(sine, fitted_sine):
    _, _, Xt, _ = sine
    full = fitted_sine.predict(Xt)
    np.testing.assert_array_equal(fitted_sine.predict(Xt[7:9]), full[7:9])


# --------------------------------------------------------------------------------------
# scikit-learn's own estimator checks
#
# Every fit on a new data shape compiles the EKI loop (about 1-4 s on 2 cores), so the full
# suite (about 115 checks, all passing) takes minutes. By default we run every check that needs
# no fit or fails fast on bad input, plus the fitting checks that matter most for users
# (train quality, idempotence, pickling, row-subset invariance, no mutation of the estimator's
# dict or parameters, 1-D and 2-D y, NaN/inf input). EKIBNN_FULL_SKLEARN_CHECKS=1 runs the
# full suite via ``parametrize_with_checks``.
# --------------------------------------------------------------------------------------

_NO_FIT_CHECKS = [
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_mixin_order",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimators_unfitted",
    "check_fit1d",
    "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
    "check_complex_data",
    "check_estimators_empty_data_messages",
    "check_requires_y_none",
    "check_supervised_y_no_nan",
]
_FIT_CHECKS = [
    "check_fit2d_predict1d",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_methods_subset_invariance",
    "check_fit_idempotent",
    "check_estimators_pickle",
    "check_supervised_y_2d",
]
_REGRESSOR_CHECKS = ["check_regressors_train"]
_CLASSIFIER_CHECKS = [
    "check_classifiers_regression_target",
    "check_classifiers_one_label",
    "check_classifiers_train",
]

# one start (one compiled loop per data shape): the checks are about the scikit-learn contract
_ESTIMATORS = [small_regressor(restarts=1), small_classifier(restarts=1)]

if os.environ.get("EKIBNN_FULL_SKLEARN_CHECKS") == "1":

    @parametrize_with_checks(_ESTIMATORS)
    def test_sklearn_estimator_checks(estimator, check):
        check(estimator)

else:
    _CASES = [
        (est, name)
        for est in _ESTIMATORS
        for name in _NO_FIT_CHECKS
        + _FIT_CHECKS
        + (_REGRESSOR_CHECKS if isinstance(est, EKIRegressor) else _CLASSIFIER_CHECKS)
    ]

    @pytest.mark.parametrize(
        "estimator, check_name", _CASES, ids=[f"{type(e).__name__}-{n}" for e, n in _CASES]
    )
    def test_sklearn_estimator_checks(estimator, check_name):
        check = getattr(estimator_checks, check_name)
        check(type(estimator).__name__, clone(estimator))


def test_etki_method_fits_and_differs_from_eki(sine, fitted_sine):
    X, y, Xt, _ = sine
    etki_fit = EKIRegressor(hidden=(16,), ensemble_size=32, num_steps=100, method="tetki")
    etki_fit.fit(X, y)
    rmse = np.sqrt(np.mean((etki_fit.predict(Xt) - sine_truth(Xt)) ** 2))
    assert rmse < 0.1
    assert not np.allclose(etki_fit.predict(Xt), fitted_sine.predict(Xt))
    _, std = etki_fit.predict(Xt, return_std=True)
    assert np.all(std > 0)


# --------------------------------------------------------------------------------------
# method= : every recipe at tiny size
# --------------------------------------------------------------------------------------

# hidden (8,) on one feature: p = 25 parameters, so ALDI needs J >= 27.
_TINY = dict(hidden=(8,), num_steps=20, noise=0.1, sampler_time=0.05)


@pytest.mark.parametrize("method", ["eki", "etki", "uki", "eks", "aldi"])
def test_each_method_reduces_training_error(sine, method):
    X, y, Xt, _ = sine
    reg = EKIRegressor(**_TINY, ensemble_size=32, method=method)
    reg.fit(X, y)
    # history_[0] is the prior ensemble's mean member misfit ||(y - f_j) / noise||^2 / n
    members = reg.sample_predictions(X)
    final = np.mean(((y[None, :] - members) / reg.noise_) ** 2)
    assert np.isfinite(final) and final < 0.2 * reg.history_[0]
    assert reg.n_iter_ == reg.history_.shape[0] >= 10
    mean, std = reg.predict(Xt, return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(std > reg.noise_)
    assert reg.sample_predictions(Xt).shape == (reg.ensemble_size, Xt.shape[0])


def test_sampler_methods_run_a_second_phase(sine):
    X, y, _, _ = sine
    reg = EKIRegressor(**_TINY, ensemble_size=16, method="eks").fit(X, y)
    assert reg.n_iter_ > 20  # EKI phase + EKS steps up to sampler_time


def test_unknown_method_error_names_expected_got_fix(sine):
    X, y, _, _ = sine
    with pytest.raises(ValueError, match="expected one of") as err:
        small_regressor(method="nope").fit(X, y)
    assert "got 'nope'" in str(err.value) and "fix:" in str(err.value)
    with pytest.raises(ValueError, match="expected one of"):
        small_classifier(method="EKS").fit(X, (y > 0).astype(int))


def test_uki_refuses_large_networks_and_aldi_small_ensembles(sine):
    X, y, _, _ = sine
    with pytest.raises(ValueError, match="at most 2000 parameters") as err:
        EKIRegressor(hidden=(100, 100), method="uki").fit(X, y)  # p = 10401
    assert "p = 10401" in str(err.value) and "fix:" in str(err.value)
    with pytest.raises(ValueError, match="ensemble_size >= p \\+ 2 = 27"):
        EKIRegressor(hidden=(8,), ensemble_size=16, method="aldi").fit(X, y)


def test_classifier_sampler_method():
    X, y = make_blobs(n_samples=60, centers=[[-3, -3], [3, 3]], random_state=0)
    clf = EKIClassifier(
        hidden=(4,), ensemble_size=16, num_steps=10, method="eks", sampler_time=0.05
    ).fit(X, y)
    assert clf.score(X, y) > 0.9


def test_noise_rounds_and_refits_reuse_the_compiled_loop(sine, compile_log):
    """An EKIRegressor fit with its EM noise rounds compiles the ensemble loop once, and a
    refit on other data of the same shape compiles nothing new."""
    X, y, _, _ = sine
    reg = EKIRegressor(**{**SMALL_ENSEMBLE, "num_steps": 25})  # 10 EM rounds of 2-3 steps
    reg.fit(X, y)
    assert compile_log.count("_run_chunk") == 1, compile_log.names
    reg.fit(X, -y)
    assert compile_log.count("_run_chunk") == 1, compile_log.names


def test_laplace_rounds_and_refits_reuse_the_compiled_loops(sine, compile_log):
    """The default recipe compiles two loops (the restarts, then the evidence rounds from the
    best start) whatever the number of rounds, and a refit on new data compiles nothing new."""
    X, y, _, _ = sine
    reg = small_regressor()
    reg.fit(X, y)
    assert compile_log.count("_run_chunk") == 2, compile_log.names
    reg.fit(X, -y)
    assert compile_log.count("_run_chunk") == 2, compile_log.names


def test_settings_a_recipe_would_ignore_are_refused(sine):
    X, y, _, _ = sine
    with pytest.raises(ValueError, match="batch_size with method='laplace'") as err:
        small_regressor(batch_size=50).fit(X, y)
    assert "fix:" in str(err.value)
    with pytest.raises(ValueError, match="restarts with method='teki'"):
        EKIRegressor(**SMALL_ENSEMBLE, restarts=2).fit(X, y)
    with pytest.raises(ValueError, match="rml"):
        small_regressor(method="rml").fit(X, y)  # needs a known noise and prior


def test_unconverged_fit_warns_and_says_so(sine):
    from ekibnn.errors import ConvergenceWarning

    X, y, _, _ = sine
    with pytest.warns(ConvergenceWarning, match="num_steps=2 "):
        reg = small_regressor(num_steps=2, noise=0.1, prior_std=1.0).fit(X, y)
    assert reg.converged_ is False


@pytest.mark.parametrize(
    "labels", [np.array([None, 1] * 10, dtype=object), np.array([None, "a"] * 10, dtype=object)]
)
def test_classifier_labels_with_none_get_a_clear_error(labels):
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=r"EKIClassifier\.fit y: expected class labels") as err:
        small_classifier().fit(X, labels)
    assert "fix:" in str(err.value)


def test_huge_float32_targets_predict_finite_values():
    """float32 targets near 1e20: their float32 variance overflows; the statistics are float64."""
    X = np.random.default_rng(0).normal(size=(30, 1))
    y = (1e20 * (1 + 0.1 * X[:, 0])).astype(np.float32)
    mean = small_regressor().fit(X, y).predict(X)
    assert np.all(np.isfinite(mean)) and np.allclose(mean, y, rtol=0.05)


@pytest.fixture(scope="module")
def tiny_fit():
    """A tiny Laplace fit with a known noise and prior (40 points, 4 hidden units)."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (40, 1))
    y = 3.0 * np.sin(X[:, 0]) + 0.3 * rng.normal(size=40)
    reg = EKIRegressor(hidden=(4,), restarts=1, noise=0.3, prior_std=1.0).fit(X, y)
    return X, y, reg


def test_regressor_self_check_passes_on_a_converged_fit(tiny_fit):
    """Laplace and RML agree on this mildly nonlinear fit (measured ratio 0.96 for J = 16):
    no FidelityWarning; the spreads are in the units of y."""
    import warnings

    import ekibnn as ek

    X, _, reg = tiny_fit
    with warnings.catch_warnings():
        warnings.simplefilter("error", ek.FidelityWarning)
        check = reg.self_check(num_members=16, seed=0)
    assert isinstance(check, ek.inversion.FidelityCheck) and check.trusted
    assert check.map_converged is True and check.rml_converged == 1.0
    _, std = reg._output_moments(X)
    assert check.laplace_std == pytest.approx(float(std.mean()) * reg.y_scale_, rel=1e-4)
    again = reg.self_check(X[:7], num_members=16, seed=0)  # other rows, same RML program
    assert again.rml_converged == 1.0 and again.laplace_std != check.laplace_std


def test_regressor_self_check_warns_on_an_unconverged_map(tiny_fit):
    import warnings

    import ekibnn as ek

    X, y, _ = tiny_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ek.errors.ConvergenceWarning)
        reg = EKIRegressor(hidden=(4,), restarts=1, noise=0.3, prior_std=1.0, num_steps=1)
        reg.fit(X, y)
    with pytest.warns(ek.FidelityWarning, match="MAP did not converge") as caught:
        check = reg.self_check(num_members=8, max_steps=20)
    assert not check.trusted and check.map_converged is False
    assert caught[0].filename == __file__  # points at the caller, past the wrappers


def test_self_check_errors(tiny_fit):
    import warnings

    import ekibnn as ek

    X, y, reg = tiny_fit
    with pytest.raises(ek.InputError, match="call fit"):
        EKIRegressor().self_check()
    with pytest.raises(ek.InputError, match="seed"):
        reg.self_check(seed=-1)
    with pytest.raises(ek.InputError, match="num_members"):
        reg.self_check(num_members=1)
    with pytest.raises(ValueError, match="features"):
        reg.self_check(np.zeros((3, 2)))
    teki = EKIRegressor(hidden=(4,), ensemble_size=8, num_steps=3, method="teki").fit(X, y)
    with pytest.raises(ek.InputError, match="method='laplace'"):
        teki.self_check()
    clf = EKIClassifier(hidden=(4,), restarts=1, num_steps=5, prior_std=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ek.errors.ConvergenceWarning)
        clf.fit(X, (y > 0).astype(int))
    with pytest.raises(ek.InputError, match="categorical"):
        clf.self_check()
