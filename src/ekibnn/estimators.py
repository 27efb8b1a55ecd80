"""Scikit-learn estimators: ``EKIRegressor`` and ``EKIClassifier``.

Both are thin: they standardise the data, build an MLP (:class:`ekibnn.bnn.MLP`), its prior and
likelihood, and hand them to a recipe of :mod:`ekibnn.recipes` (``method=``; what each recipe
does and what was measured against NUTS: ``docs/recipes.md``). The default, ``"laplace"``,
finds the MAP by Levenberg–Marquardt in Kalman form from a few prior draws and returns the
linearised-Laplace posterior there (predictions by Jacobian-vector products of the network);
a noise and a prior scale left unset are tuned by the Laplace evidence. Classification then
uses the categorical likelihood on the logits; the ensemble recipes observe one-hot labels
against softmax probabilities with a pseudo-noise instead. They follow the scikit-learn
conventions: every hyperparameter is stored unmodified in ``__init__`` (so
``get_params``/``set_params``/``clone`` work), fitted attributes end in ``_``, inputs are
validated with :mod:`sklearn.utils.validation`, and predicting before ``fit`` raises
``NotFittedError``. Bad hyperparameters raise :class:`ekibnn.InputError` (a ``ValueError``)
laid out as expected / got / what to do. Inputs (and regression targets) are standardised
inside the estimator and the outputs mapped back (``standardize=False``: the prior and the
noise act on the raw data).

An unknown regression noise (``noise=None``) is estimated by the recipe (the Laplace evidence,
or Monte-Carlo EM over an ensemble stage), or with ``validation_fraction`` from a held-out
part of the data: the noise std is then set so that the predictive variance matches the
held-out mean squared error.

The compiled loop is shared: the data are arrays inside the forward map (an Equinox module),
not constants, so the noise rounds of a fit and refits on data of the same shape reuse one
compiled program.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ekibnn import recipes
from ekibnn.bnn.likelihoods import (
    DEFAULT_PSEUDO_NOISE,
    Likelihood,
    RegressionForward,
    classification,
    regression,
)
from ekibnn.bnn.models import ACTIVATIONS, MLP
from ekibnn.errors import InputError, input_error
from ekibnn.inversion.gauss_newton import Categorical
from ekibnn.observations import Observation
from ekibnn.posterior import EnsemblePosterior, LinearisedPosterior
from ekibnn.priors import GaussianPrior
from ekibnn.run import with_blas_limits

__all__ = ["EKIClassifier", "EKIRegressor"]

_INITIAL_NOISE = 0.1  # EM starting noise std, in units of std(y) (see ekibnn.recipes)
_MIN_VALIDATION = 2  # fewer hold-out or training points than this: no hold-out
_PREDICT_BLOCK = 256  # rows per compiled prediction call (fixed shape: compiled once)
_LARGE_TARGET = 1e15  # raw float32 targets beyond this overflow when squared


class _Outputs(eqx.Module):
    """``model(X)`` for ONE member: an output function whose inputs are data (traced), so every
    block of the same shape reuses one compiled prediction."""

    X: Array

    def __call__(self, model: PyTree) -> Array:
        return model(self.X)


@eqx.filter_jit
def _holdout_noise(outputs: Array, y: Array) -> Array:
    """Noise std matching the predictive variance (spread^2 + noise^2) to the held-out mean
    squared error of the ensemble mean (floored at 1e-3 of std(y)); ``outputs`` is
    ``(J, n)``."""
    mse = jnp.mean((y - outputs.mean(axis=0)) ** 2)
    return jnp.sqrt(jnp.maximum(mse - jnp.mean(outputs.var(axis=0)), 1e-6))


def _standardise(values: np.ndarray, on: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if not on:  # identity map
        return np.zeros(values.shape[1:]), np.ones(values.shape[1:])
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
    return mean, scale


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _store_params(estimator: BaseEstimator, arguments: dict[str, Any]) -> None:
    """Store every ``__init__`` argument unmodified under its own name (the scikit-learn
    convention ``get_params`` / ``set_params`` / ``clone`` rely on)."""
    for name in inspect.signature(type(estimator).__init__).parameters:
        if name != "self":
            setattr(estimator, name, arguments[name])


def _bad(name: str, expected: str, value: Any, fix: str) -> InputError:
    return input_error(name, expected, repr(value), fix)


class _EKIBase(BaseEstimator):
    """Shared fitting machinery (not public)."""

    def _check_hyperparameters(self) -> tuple[int, ...]:
        for name in ("num_steps", "ensemble_size", "restarts"):
            value = getattr(self, name)
            if name != "ensemble_size" and value is None:
                continue
            if not _is_int(value) or value < 1:
                raise _bad(name, "a positive integer", value, f"pass e.g. {name}=100")
        if self.ensemble_size < 2:
            raise _bad("ensemble_size", ">= 2 members", self.ensemble_size, "pass e.g. 100")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise _bad("batch_size", "None or a positive integer", self.batch_size, "pass e.g. 100")
        for name, allow_zero in (("prior_std", False), ("inflation", True), ("dt", False)):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_real(value) or value < 0 or (value == 0 and not allow_zero):
                bound = ">= 0" if allow_zero else "> 0"
                raise _bad(name, f"a finite number {bound}", value, f"pass a value {bound}")
        hidden = (self.hidden,) if _is_int(self.hidden) else self.hidden
        if (
            not isinstance(hidden, Sequence)
            or isinstance(hidden, str)
            or not all(_is_int(h) and h >= 1 for h in hidden)
        ):
            raise _bad("hidden", "a tuple of positive layer widths", self.hidden, "e.g. (50,)")
        if self.activation not in ACTIVATIONS:
            raise _bad(
                "activation", f"one of {sorted(ACTIVATIONS)}", self.activation, "pick one of them"
            )
        if self.parameterization not in ("standard", "ntk"):
            raise _bad("parameterization", "'standard' or 'ntk'", self.parameterization, "pick one")
        if self.method not in recipes.NAMES:
            raise _bad(
                "method",
                f"one of {list(recipes.NAMES)}",
                self.method,
                f"pick one of these (docs/algorithms.md says what each does); "
                f"{recipes.DEFAULT!r} is the default",
            )
        value = self.sampler_time
        if value is not None and (not _is_real(value) or value <= 0):
            raise _bad("sampler_time", "None or a finite number > 0", value, "e.g. 10.0")
        return tuple(int(h) for h in hidden)

    def _method(self) -> str:
        """The recipe name, after checking every hyperparameter."""
        self._check_hyperparameters()
        return self.method

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.default_rng().integers(2**31 - 1))
        if _is_int(rs):
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31 - 1))
        raise _bad(
            "random_state", "None, an int or a numpy RandomState", rs, "pass e.g. random_state=0"
        )

    @with_blas_limits  # as ekibnn.run runs its loop: see its blas_threads
    def _fit_recipe(
        self, seed, X, likelihood: Likelihood, out_size, estimate_noise, gn_likelihood=None
    ) -> recipes.Fit:
        """Build the network and its prior and run the recipe on ``likelihood`` (a prior scale
        left unset is tuned by the Jacobian recipes' evidence, and is 1 for the others)."""
        hidden = self._check_hyperparameters()
        key_model, key_fit = jax.random.split(jax.random.key(seed))
        template = eqx.filter_eval_shape(  # shapes only: the prior is centred at zero
            MLP,
            key_model,
            X.shape[1],
            out_size,
            hidden=hidden,
            activation=self.activation,
            parameterization=self.parameterization,
        )
        jacobian = recipes.get(self.method).jacobian
        prior_std = 1.0 if self.prior_std is None else float(self.prior_std)
        prior = GaussianPrior.like(template, std=prior_std)
        recipes.check_sizes(self.method, prior.num_params, int(self.ensemble_size))
        per_point = likelihood.obs.size // X.shape[0]
        batch = None if self.batch_size is None else int(self.batch_size) * per_point
        problem = recipes.Problem(
            likelihood.forward_fn,
            likelihood.obs,
            prior,
            estimate_noise=estimate_noise,
            indexed_forward_fn=likelihood.indexed_forward_fn,
            likelihood=gn_likelihood,
            estimate_prior=jacobian and self.prior_std is None,
        )
        return recipes.fit(
            self.method,
            problem,
            key_fit,
            ensemble_size=int(self.ensemble_size),
            num_steps=None if self.num_steps is None else int(self.num_steps),
            restarts=self.restarts,
            inflation=self.inflation,
            dt=self.dt,
            batch_size=batch,
            sampler_time=self.sampler_time,
            progress=bool(self.progress),
        )

    def _store(self, fit: recipes.Fit, seed: int) -> None:
        """The fitted attributes: the posterior, parameter samples for a sampled posterior
        (``ensemble_``), the history and the fitted prior scale."""
        self.posterior_ = fit.posterior
        self._predict_key = jax.random.fold_in(jax.random.key(seed), 1)
        if isinstance(fit.posterior, EnsemblePosterior):
            self.ensemble_ = fit.posterior.particles
        elif not isinstance(fit.posterior, LinearisedPosterior):  # UKI's Gaussian: J draws
            self.ensemble_ = fit.posterior.sample(self._predict_key, int(self.ensemble_size))
        self.prior_std_ = (1.0 if self.prior_std is None else float(self.prior_std)) * (
            1.0 if fit.prior_scale is None else fit.prior_scale
        )
        self.history_ = np.asarray(fit.history.misfit, np.float64)
        self.n_iter_ = int(fit.num_steps)
        self.converged_ = fit.converged
        self._problem = fit.problem  # the fitted inverse problem (Jacobian recipes): self_check
        self._train_Xs = None  # set by fit: the standardised inputs trained on

    @property
    def _linearised(self) -> bool:
        return isinstance(self.posterior_, LinearisedPosterior)

    @with_blas_limits
    def self_check(
        self, X=None, *, num_members: int = 32, max_steps: int = 100, seed: int | None = None
    ) -> Any:
        """The fidelity self-check of a ``"laplace"`` fit: the linearised predictive std of the
        network's outputs at ``X`` against that of a small randomized-maximum-likelihood
        ensemble (``num_members`` MAP problems with perturbed data and prior draws, started at
        the MAP, through the *nonlinear* network) on the same fitted problem, with the MAP's
        convergence (:func:`ekibnn.inversion.self_check`; the threshold is explained at
        :class:`ekibnn.inversion.FidelityCheck`). Costs about ``num_members`` short refits.

        Args:
            X: inputs ``(n, d)`` to compare the predictions at; None: the training inputs.
            num_members: RML members J (the pass band is ``3 / sqrt(2 (J - 1)) + 0.1`` in
                ``|log std_ratio|``: J = 32 accepts ratios in about [0.62, 1.62]).
            max_steps: Levenberg-Marquardt steps of each member.
            seed: seed of the members' draws; None: derived from the fit's seed.

        Returns:
            The :class:`ekibnn.inversion.FidelityCheck` (``laplace_std`` and ``rml_std`` in the
            units of ``y`` for a regressor, of the logits for a classifier).

        Raises:
            InputError: before ``fit``; for a recipe other than ``"laplace"`` (the ensemble
                recipes and ``"rml"`` already go through the nonlinear network, so there is
                nothing to check); for a classifier (RML perturbs Gaussian data: there is no
                RML counterpart of the categorical likelihood here); for bad arguments.

        Warns:
            FidelityWarning: when the check fails (its message says why and what to do).
        """
        if not hasattr(self, "posterior_"):
            raise input_error(
                f"{type(self).__name__}.self_check",
                "a fitted estimator",
                "an estimator that was not fitted",
                "call fit(X, y) first",
            )
        if not self._linearised or getattr(self, "_problem", None) is None:
            raise input_error(
                f"{type(self).__name__}.self_check",
                "an estimator fitted with method='laplace' (a linearised posterior to check)",
                f"method={self.method!r}",
                "the check compares the linearised Laplace posterior with an RML ensemble; an "
                "ensemble recipe's members already go through the nonlinear network, so there "
                "is nothing to check: refit with method='laplace' to use it",
            )
        if seed is not None and not (_is_int(seed) and 0 <= seed < 2**32):
            raise _bad("seed", "None or an integer in [0, 2**32)", seed, "pass e.g. seed=0")
        if X is None:
            Xs = self._train_Xs
        else:
            X = validate_data(self, X, reset=False, dtype=np.float64)
            Xs = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        if seed is None:
            key = jax.random.fold_in(self._predict_key, 2)
        else:
            key = jax.random.key(int(seed))
        fit = recipes.Fit(self.posterior_, None, 0, None, None, problem=self._problem)
        check = recipes.self_check(
            fit,
            _Outputs(jnp.asarray(Xs)),
            key,
            num_members=num_members,
            max_steps=max_steps,
            warn=False,
        )
        if isinstance(self, RegressorMixin):  # standardised units -> units of y
            unit = float(self.y_scale_)
            check = check._replace(
                laplace_std=check.laplace_std * unit, rml_std=check.rml_std * unit
            )
        check.warn(stacklevel=3)  # past the with_blas_limits wrapper, to the caller
        return check

    def _blocks(self, X, per_block) -> list:
        """``per_block(fn)`` on fixed-size zero-padded blocks of the standardised inputs, ``fn``
        the network on the block (compiled once; a row's value does not depend on the other
        rows); results trimmed to the rows of ``X``."""
        Xs = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        n = Xs.shape[0]
        pad = (-n) % _PREDICT_BLOCK
        Xp = np.concatenate([Xs, np.zeros((pad, Xs.shape[1]), Xs.dtype)]) if pad else Xs
        blocks = [
            per_block(_Outputs(jnp.asarray(Xp[s : s + _PREDICT_BLOCK])))
            for s in range(0, Xp.shape[0], _PREDICT_BLOCK)
        ]
        return blocks, n

    def _member_outputs(self, X) -> np.ndarray:
        """``(S, n, out)`` posterior samples of the network's outputs on ``X``: the members of
        an ensemble, or ``ensemble_size`` samples of the linearised outputs of a Laplace
        posterior (the same samples on every call)."""
        if self._linearised:
            post, key, num = self.posterior_, self._predict_key, int(self.ensemble_size)
            blocks, n = self._blocks(X, lambda fn: np.asarray(post.sample_outputs(fn, key, num)))
        else:
            members = EnsemblePosterior(self.ensemble_)
            blocks, n = self._blocks(X, lambda fn: np.asarray(members.sample_outputs(fn)))
        return np.concatenate(blocks, axis=1)[:, :n]

    def _output_moments(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std ``(n, out)`` of the network's outputs (exact linearised
        moments for a Laplace posterior, the members' mean and std for an ensemble)."""
        if not self._linearised:
            members = self._member_outputs(X).astype(np.float64)
            return members.mean(axis=0), members.std(axis=0)
        blocks, n = self._blocks(X, lambda fn: [np.asarray(a) for a in self.posterior_.predict(fn)])
        mean = np.concatenate([b[0] for b in blocks])[:n].astype(np.float64)
        std = np.concatenate([b[1] for b in blocks])[:n].astype(np.float64)
        return mean, std

    def to_inference_data(self, X) -> Any:
        """Posterior samples of the network's outputs on ``X`` (in the units of ``y`` for a
        regressor, logits for a classifier) as an :class:`arviz.InferenceData` (``posterior``
        group ``"f"``, dims ``chain, draw, point[, output]``)."""
        from ekibnn.posterior import _import_arviz

        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        samples = self._member_outputs(X).astype(np.float64)
        if isinstance(self, RegressorMixin):
            samples = samples[..., 0] * self.y_scale_ + self.y_mean_
        return _import_arviz().from_dict(posterior={"f": samples[None]})

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class EKIRegressor(RegressorMixin, _EKIBase):
    """Bayesian MLP regression by a Kalman-family recipe (scikit-learn API).

    Args:
        hidden: hidden-layer widths.
        activation: ``"tanh"``, ``"relu"``, ``"gelu"``, ``"silu"`` or ``"sin"``.
        parameterization: ``"ntk"`` (weights scaled by ``1/sqrt(fan_in)``: the prior scale does
            not depend on the width) or ``"standard"``.
        ensemble_size: members J of the ensemble recipes; for ``"laplace"`` the number of
            samples of the linearised outputs that ``sample_predictions`` returns.
        num_steps: Levenberg–Marquardt steps per evidence round (``"laplace"``, ``"rml"``) or
            steps of the ensemble stage; None: the recipe's default.
        batch_size: data points per step of the ensemble stage (random minibatches); None: all.
        noise: observation-noise std in the units of ``y``; None: estimated (EM, or from a
            hold-out set with ``validation_fraction``).
        prior_std: std of the ``N(0, prior_std^2)`` prior on every (raw) parameter; None:
            tuned by the Laplace evidence for ``"laplace"`` (from 1), 1 for the others.
        inflation: std of the random walk of the ensemble stage (raw-parameter units); None:
            the recipe's default (:data:`ekibnn.recipes.RECIPES`).
        dt: the ensemble stage's step (noise ``Gamma / dt``); None: the recipe's default (1).
        validation_fraction: with ``noise=None``, the fraction of the data held out of training
            to calibrate the noise std on; None: EM on the training data.
        method: the recipe, a name of :data:`ekibnn.recipes.NAMES` (``docs/recipes.md`` says
            what each does and what was measured).
        restarts: prior draws ``"laplace"`` starts Levenberg–Marquardt from (the lowest
            objective wins); None: the recipe's default (4).
        sampler_time: algorithm time of the ``"eks"``/``"aldi"`` stage, or the number of
            ``"uki"`` iterations; None: the recipe's default (10).
        standardize: standardise inputs (and regression targets) inside the estimator; False:
            the prior, ``noise`` and predictions act on the raw data.
        random_state: seed (int), a ``RandomState``, or None (fresh randomness every fit).
        progress: show a progress bar.

    Attributes:
        posterior_: the recipe's posterior (:mod:`ekibnn.posterior`) over the network acting on
            standardised inputs and returning standardised outputs; for ``"laplace"`` a
            :class:`ekibnn.posterior.LinearisedPosterior` (its predictions are linearised).
        ensemble_: J parameter samples of a sampled posterior (:class:`ekibnn.bnn.MLP` with a
            leading axis J; absent for ``"laplace"``, whose weight draws are not samples of
            the network's posterior).
        prior_std_: the prior std used (given, or tuned by the evidence).
        converged_: whether the Jacobian recipe converged (None for the ensemble recipes).
        noise_: observation-noise std in the units of ``y`` (given or estimated).
        history_: per-step mean member misfit ``||(y - G_j) / noise||^2 / m`` over the stages.
        n_iter_: steps taken (all stages).
        n_features_in_: number of features seen in ``fit``.

    Example:
        >>> from ekibnn.datasets import tutorial_sine
        >>> X, y = tutorial_sine(n=200)
        >>> reg = EKIRegressor(ensemble_size=32, random_state=0).fit(X, y)
        >>> mean, std = reg.predict(X[:5], return_std=True)
        >>> mean.shape, bool((std > 0).all())
        ((5,), True)
    """

    def __init__(
        self,
        hidden: Sequence[int] = (50,),
        activation: str = "tanh",
        parameterization: str = "ntk",
        ensemble_size: int = 100,
        num_steps: int | None = None,
        batch_size: int | None = None,
        noise: float | None = None,
        prior_std: float | None = None,
        inflation: float | None = None,
        dt: float | None = None,
        validation_fraction: float | None = None,
        method: str = recipes.DEFAULT,
        restarts: int | None = None,
        sampler_time: float | None = None,
        standardize: bool = True,
        random_state: int | np.random.RandomState | None = 0,
        progress: bool = False,
    ):
        _store_params(self, locals())

    def fit(self, X, y) -> EKIRegressor:
        """Fit to ``X`` ``(n, d)`` and ``y`` ``(n,)``; returns ``self``."""
        try:
            X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
            if np.asarray(y).dtype.kind not in "biuf":
                raise TypeError(f"targets of dtype {np.asarray(y).dtype}")
            # float64 statistics: float32 targets near 1e20 overflow their own variance
            y = np.asarray(y, np.float64)
        except TypeError as err:  # e.g. string targets
            raise input_error(
                "EKIRegressor.fit y",
                "numeric targets",
                f"{err}",
                "pass numbers (encode categories, or use EKIClassifier for class labels)",
            ) from None
        if self.noise is not None and not (_is_real(self.noise) and self.noise > 0):
            raise _bad("noise", "None or a positive finite std", self.noise, "e.g. noise=0.1")
        frac = self.validation_fraction
        if frac is not None and not (_is_real(frac) and 0 <= frac < 1):
            raise _bad("validation_fraction", "None or a number in [0, 1)", frac, "e.g. 0.2")
        if not self.standardize and np.max(np.abs(y)) > _LARGE_TARGET:
            raise _bad(
                "y with standardize=False",
                f"targets below {_LARGE_TARGET:g} in magnitude (float32 squares overflow)",
                f"max |y| = {np.max(np.abs(y)):.3g}",
                "keep standardize=True, or rescale y",
            )
        seed = self._seed()
        self.x_mean_, self.x_scale_ = _standardise(X, self.standardize)
        self.y_mean_, self.y_scale_ = _standardise(y, self.standardize)
        Xs = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        ys = ((y - self.y_mean_) / self.y_scale_).astype(np.float32)
        X_val = y_val = None
        n_val = math.floor((frac or 0) * X.shape[0])
        if self.noise is None and min(n_val, X.shape[0] - n_val) >= _MIN_VALIDATION:
            Xs, X_val, ys, y_val = train_test_split(
                Xs, ys, test_size=n_val, random_state=seed % (2**32)
            )
        estimate = self.noise is None
        # an unknown noise starts small for EM over an ensemble (from a large one the fit and
        # the estimate stall together), at std(y) for the evidence (from a small one the MAP
        # over-fits and the evidence follows it)
        initial = 1.0 if recipes.get(self._method()).jacobian else _INITIAL_NOISE
        start = initial if estimate else float(self.noise) / float(self.y_scale_)
        likelihood = regression(jnp.asarray(Xs), jnp.asarray(ys), start)
        fit = self._fit_recipe(seed, Xs, likelihood, 1, estimate)
        self._store(fit, seed)
        self._train_Xs = Xs  # the rows trained on (not the hold-out)
        noise = start if fit.noise is None else fit.noise
        if estimate and X_val is not None:
            outputs = self._member_outputs(X_val * self.x_scale_ + self.x_mean_)[..., 0]
            noise = float(_holdout_noise(jnp.asarray(outputs), jnp.asarray(y_val)))
        self.noise_ = float(noise) * float(self.y_scale_)
        return self

    def sample_predictions(self, X) -> np.ndarray:
        """Posterior samples of the regression function ``f(x)`` in the units of ``y`` (no
        observation noise), ``(S, n)``: the members, or for ``"laplace"`` ``ensemble_size``
        samples of the linearised outputs."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self._member_outputs(X)[..., 0].astype(np.float64)
        return out * self.y_scale_ + self.y_mean_

    def predict(self, X, return_std: bool = False):
        """Predictive mean ``(n,)``; with ``return_std`` also the predictive std
        ``sqrt(epistemic variance + noise_^2)``, which includes the observation noise (the
        epistemic part is the linearised posterior's for ``"laplace"``, the ensemble's
        spread otherwise)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        mean, std = self._output_moments(X)
        mean = mean[:, 0] * self.y_scale_ + self.y_mean_
        if not return_std:
            return mean
        return mean, np.sqrt((std[:, 0] * self.y_scale_) ** 2 + self.noise_**2)


class EKIClassifier(ClassifierMixin, _EKIBase):
    """Bayesian MLP classification by a Kalman-family recipe (scikit-learn API).

    One-hot labels are observed against the softmax probabilities with pseudo-noise std
    ``pseudo_noise`` (Kovachki & Stuart 2019; see :mod:`ekibnn.bnn.likelihoods`).
    ``predict_proba`` averages the members' probabilities.

    Args:
        hidden: hidden-layer widths.
        activation: ``"tanh"``, ``"relu"``, ``"gelu"``, ``"silu"`` or ``"sin"``.
        parameterization: ``"ntk"`` (weights scaled by ``1/sqrt(fan_in)``: the prior scale does
            not depend on the width) or ``"standard"``.
        ensemble_size: members J of the ensemble recipes; for ``"laplace"`` the number of
            samples of the linearised outputs that ``sample_predictions`` returns.
        num_steps: Levenberg–Marquardt steps per evidence round (``"laplace"``, ``"rml"``) or
            steps of the ensemble stage; None: the recipe's default.
        batch_size: data points per step (each brings its K one-hot entries); None: all.
        pseudo_noise: std of the pseudo-noise on the one-hot targets (ensemble recipes only;
            the Jacobian recipes use the categorical likelihood).
        prior_std: std of the ``N(0, prior_std^2)`` prior on every (raw) parameter; None:
            tuned by the Laplace evidence for ``"laplace"`` (from 1), 1 for the others.
        inflation: std of the random walk of the ensemble stage (raw-parameter units); None:
            the recipe's default (:data:`ekibnn.recipes.RECIPES`).
        dt: the ensemble stage's step (noise ``Gamma / dt``); None: the recipe's default (1).
        method: the recipe, a name of :data:`ekibnn.recipes.NAMES`.
        restarts: prior draws ``"laplace"`` starts Levenberg–Marquardt from; None: 4.
        sampler_time: algorithm time of the ``"eks"``/``"aldi"`` stage, or the number of
            ``"uki"`` iterations; None: the recipe's default (10).
        standardize: standardise the inputs inside the estimator.
        random_state: seed (int), a ``RandomState``, or None (fresh randomness every fit).
        progress: show a progress bar.

    Attributes:
        classes_: the class labels.
        posterior_: the recipe's posterior over the logit network (standardised inputs).
        ensemble_: J parameter samples of a sampled posterior (absent for ``"laplace"``).
        prior_std_, converged_: as in :class:`EKIRegressor`.
        history_, n_iter_, n_features_in_: as in :class:`EKIRegressor`.

    Example:
        >>> from sklearn.datasets import make_blobs
        >>> X, y = make_blobs(60, centers=2, random_state=0)
        >>> clf = EKIClassifier(ensemble_size=16, num_steps=20).fit(X, y)
        >>> clf.predict_proba(X[:3]).shape
        (3, 2)
    """

    def __init__(
        self,
        hidden: Sequence[int] = (50,),
        activation: str = "tanh",
        parameterization: str = "ntk",
        ensemble_size: int = 100,
        num_steps: int | None = None,
        batch_size: int | None = None,
        pseudo_noise: float = DEFAULT_PSEUDO_NOISE,
        prior_std: float | None = None,
        inflation: float | None = None,
        dt: float | None = None,
        method: str = recipes.DEFAULT,
        restarts: int | None = None,
        sampler_time: float | None = None,
        standardize: bool = True,
        random_state: int | np.random.RandomState | None = 0,
        progress: bool = False,
    ):
        _store_params(self, locals())

    def fit(self, X, y) -> EKIClassifier:
        """Fit to ``X`` ``(n, d)`` and class labels ``y`` ``(n,)``; returns ``self``."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        if not (_is_real(self.pseudo_noise) and self.pseudo_noise > 0):
            raise _bad("pseudo_noise", "a positive finite std", self.pseudo_noise, "e.g. 0.1")
        try:
            check_classification_targets(y)
            encoder = LabelEncoder().fit(y)
        except (TypeError, ValueError) as err:  # None among labels, continuous targets, ...
            raise input_error(
                "EKIClassifier.fit y",
                "class labels of one type (all strings or all integers)",
                f"{type(err).__name__}: {err}",
                "clean the labels (no None / NaN among them); for a continuous target use "
                "EKIRegressor",
            ) from None
        classes = encoder.classes_
        if len(classes) < 2:
            raise input_error(
                type(self).__name__,
                "at least 2 classes in y",
                f"1 class ({classes[0]!r})",
                "pass labelled data from two or more classes",
            )
        self.classes_ = classes
        k = len(classes)
        seed = self._seed()
        self.x_mean_, self.x_scale_ = _standardise(X, self.standardize)
        Xs = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        labels = encoder.transform(y).astype(np.int32)
        if recipes.get(self._method()).jacobian:  # the categorical likelihood on the logits
            logits = RegressionForward(jnp.asarray(Xs), k)
            obs = Observation(labels.astype(np.float32), 1.0)
            likelihood = Likelihood(logits, logits.points, obs)
            fit = self._fit_recipe(seed, Xs, likelihood, k, False, Categorical(k))
        else:
            likelihood = classification(jnp.asarray(Xs), labels, k, float(self.pseudo_noise))
            fit = self._fit_recipe(seed, Xs, likelihood, k, False)
        self._store(fit, seed)
        self._train_Xs = Xs
        return self

    def sample_predictions(self, X) -> np.ndarray:
        """Class probabilities of ``ensemble_size`` posterior samples ``(S, n, K)`` (columns
        ordered as ``classes_``): the members, or for ``"laplace"`` the softmax of samples of
        the linearised logits."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        logits = self._member_outputs(X).astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=-1, keepdims=True)

    def predict_proba(self, X) -> np.ndarray:
        """Posterior predictive class probabilities ``(n, K)`` (columns ordered as
        ``classes_``): for ``"laplace"`` the linearised predictive by the pairwise probit
        approximation, otherwise the members' probabilities averaged."""
        check_is_fitted(self)
        if not self._linearised:
            return self.sample_predictions(X).mean(axis=0)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        post = self.posterior_
        blocks, n = self._blocks(X, lambda fn: np.asarray(post.predict_proba(fn)))
        return np.concatenate(blocks)[:n].astype(np.float64)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class under the ensemble-averaged probabilities."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
