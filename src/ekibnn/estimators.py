"""Scikit-learn estimators: ``EKIRegressor`` and ``EKIClassifier``.

Both fit an ensemble of MLPs (:class:`ekibnn.bnn.MLP`) by ensemble Kalman inversion and follow
the scikit-learn conventions: every hyperparameter is stored unmodified in ``__init__`` (so
``get_params``/``set_params``/``clone`` work), fitted attributes end in ``_``, inputs are
validated with :mod:`sklearn.utils.validation`, and predicting before ``fit`` raises
``NotFittedError``. Inputs (and regression targets) are standardised inside the estimator and
the outputs mapped back (``standardize=False``: the prior and the noise act on the raw data,
e.g. to compare with a reference posterior defined on the raw scale).

Recipes (``method=``)
---------------------
Measured with ``benchmarks/posterior_fidelity.py`` (its table supersedes these numbers) on the
tutorial problem (500 points, [1, 20, 20, 1] tanh, raw ``N(0, 1)`` prior, noise 0.1 known:
``standardize=False, parameterization="standard", noise=0.1``), J = 500, ``num_steps=200``, seed
0, against BlackJAX NUTS on the same posterior (4 chains x 500 draws, R-hat of the predictions
1.003; RMSE 0.018 against the truth on |x| <= 2, mean epistemic std 0.019 on |x| <= 2 and 0.040
on 2 < |x| <= 2.5; NUTS took 400-600 s on 2 shared cores, the EKI-based fits 10-18 s, the
default EKS/ALDI ones about 80 s), and on diabetes (where NUTS took only 25-30 s, so the fits
below were 2-4x faster, not more):

* ``"eki"`` (default): Tikhonov-regularised EKI (TEKI; Chada, Stuart & Tong 2020), i.e.
  :func:`ekibnn.eki` with ``regularize=True``: every step observes ``[G(theta); theta]``
  against ``[y; prior mean]``, so repeated full-batch steps with ``dt = 1`` iterate towards the
  regularised least-squares fit *with the data and the prior each counted once*, plus a small
  random walk (``inflation=0.02``) that lets the ensemble leave the span of its initial members
  (without it, digits reaches 53 % accuracy; with it, 97 %). An optimiser with a spread, not a
  sampler: the spread is set by the random walk. Measured: RMSE 0.023, epistemic std 0.050 in /
  0.065 out (2.7x NUTS in the data region), 95 % coverage 0.966.
* ``"etki"``: the same with the deterministic square-root transform (:func:`ekibnn.etki`;
  no observation perturbations, cost linear in the number of observations). Measured: RMSE
  0.021, epistemic std 0.040 in / 0.058 out (2.1x NUTS in the data region), coverage 0.960.
* ``"eks"``: two phases. (1) TEKI *without* random walk (``inflation=None`` means 0 here) for
  ``num_steps``: the ensemble collapses onto one regularised fit (training misfit 1.04 per
  point). (2) :func:`ekibnn.eks` started from that ensemble, with the BNN prior as its prior,
  EKS-stable adaptive step (capped at 0.02), to algorithm time ``sampler_time`` (default 10, the
  sampler's own default: the covariance-preconditioned dynamics relax at rate about 1 in time;
  at most 1000 steps). The Langevin noise ``sqrt(2 dt C)`` re-inflates the collapsed ensemble
  while the derivative-free drift holds it to the data. On diabetes (``hidden=(20,)``, J = 300,
  noise estimated, NUTS with unknown noise as reference) it is a sampler: epistemic std 0.87x /
  0.84x NUTS's (in / out of the data) at ``sampler_time=5``, 1.04x / 0.96x at 10, 1.09x / 1.02x
  at 20 (stationary), RMSE within 1.01x of NUTS, coverage 0.964. On the tutorial problem it is
  not: the spread keeps growing (0.025 at ``sampler_time=0.5``, 1.3x NUTS; 0.062 at 1; 0.27 at 2
  with training misfit 8.7; in the NTK parameterisation 0.08 at 5, 4.7x NUTS on that posterior,
  misfit 1.9), because the ensemble's statistical linearisation of a strongly nonlinear network
  (exact for a linear forward map) misestimates the drift once the members spread in weight
  space. Started from the random-walk TEKI ensemble (``inflation=0.02``) it diverges at once.
* ``"aldi"``: as ``"eks"`` with :func:`ekibnn.aldi` (finite-ensemble correction; needs
  ``ensemble_size >= p + 2``). The correction spreads the ensemble faster and further: diabetes
  1.86x / 1.41x NUTS at ``sampler_time=5``, 2.18x / 1.46x at 10; tutorial problem 0.97x / 0.68x
  at 0.2 but 3.2x at 0.5 and growing.
* ``"uki"``: TEKI without random walk as above, then :func:`ekibnn.uki` (Bayesian configuration,
  ``2p + 1`` sigma points, a ``p x p`` covariance; networks with more than 5000 parameters are
  refused) started from the collapsed ensemble's mean and covariance (plus ``1e-6`` of the prior
  variance, as the ensemble covariance has rank ``J - 1``), for ``sampler_time`` iterations
  (default 10); predictions sample ``ensemble_size`` networks from the final Gaussian. It does
  not converge to a useful Gaussian: the mean stays put (misfit 1.03) but each iteration about
  doubles the covariance along the directions the sigma points see as uninformed (the Bayesian
  UKI contraction ``C^-1 <- C^-1 / 2 + (H^T Gamma^-1 H + C_0^-1) / 2`` heads for the prior
  there), and through the nonlinear network those directions are not uninformed, so the sampled
  predictive keeps widening: diabetes 0.13x NUTS after 3 iterations, 1.18x / 1.05x after 10,
  3.9x after 30; tutorial problem 1.26x / 0.88x after 1, 8x after 4 (float64 run). A converged
  UKI Gaussian would need the *linearised* network for its predictions (linearised Laplace), not
  samples through the network.

**What this means.** Only ``"eks"`` behaves like a sampler, and only where the network is close
to linear in its weights over the posterior's spread (diabetes). No default meets the issue's
targets on the tutorial problem: there the two-phase recipes match NUTS only as *early-stopped
transients* (``sampler_time`` 0.5 for EKS, 0.2 for ALDI, 1 UKI iteration: RMSE 0.99-1.16x,
epistemic std 0.94-1.34x in and 0.60-0.92x out, coverage 0.948-0.958 over three ensemble seeds),
and those times were chosen on that very problem; on diabetes they give 0.07-0.09x NUTS's
spread. ``"eki"`` / ``"etki"`` give 2.1-2.7x NUTS on the sine and 0.33x on diabetes. The
coverage of held-out data (about 0.95 everywhere) comes mostly from the noise term, so check the
epistemic part against a reference on your problem.

The tutorial recipe (plain EKI, ``dt = 1`` minibatches for hundreds of steps) re-assimilates
every observation once per pass, i.e. tempers the likelihood to ``T`` = number of passes: it
fits the sine equally well but over-fits small noisy data (diabetes test R^2 0.05–0.3 against
0.34–0.41 for TEKI; linear regression 0.36–0.44 on the same splits). Full batches are the
default because with minibatches of ``b`` of ``n`` observations the prior term is over-weighted
``n / b`` times. ``regularize=False, batch_size=100, inflation=0.02`` reproduces the tutorial.
A plain tempered EKI to T = 1 and EKS from the prior do not fit a BNN (issue #4), hence the
EKI phase in front of every sampler.

Noise (regression)
------------------
``noise=None`` estimates the noise std by Monte-Carlo EM (:func:`ekibnn.bnn.noise_em_update`):
the run is split into 10 rounds and after each one ``sigma^2 <- mean_{j,i} (y_i - f_j(x_i))^2``
over the training data. EM starts from a small value (0.1 of ``std(y)``): from a large one the
regularised fit and the noise estimate get stuck together at an under-fitting fixed point
(observed on the sine: ``sigma -> 0.7``, R^2 0.7). Training residuals are optimistic, so the
final estimate gets the degrees-of-freedom correction ``sigma^2 * n / (n - dof)`` with
``dof = min(J - 1, p, n / 2)`` (the fit lies in the affine span of the J members). With
``validation_fraction``, that fraction of the data is held out instead and the noise std is set
so that the predictive variance matches the held-out mean squared error. The second phase of
``"uki"``/``"eks"``/``"aldi"`` runs at the (corrected) EM estimate of the first.

The ensemble contracts towards the regularised fit, so its spread (epistemic) is small and does
NOT grow away from the data the way a full posterior's would: intervals are calibrated
in-distribution mainly through the noise term. ``predict(X, return_std=True)`` returns
``sqrt(ensemble variance + noise_^2)``. Measured (J = 100, 300 steps, 3 seeds): tutorial sine
(500 train / 2000 test points) R^2 0.956–0.972, 95 % coverage 0.963–0.971; diabetes (75/25
splits) R^2 0.34–0.41, coverage 0.946–0.955.

Compilation
-----------
The EKI loop is compiled once per (shapes, hyperparameters): data, noise level and ensemble are
arguments, not constants, and full-batch data are padded to a power-of-two row count (padding
rows get a 1e4-times larger noise std, so they carry no information), so refitting (``clone``,
cross-validation folds, the EM rounds) reuses the compiled code. This is why the estimators keep
their own loops (``_train_chunk``, ``_refine``) instead of :func:`ekibnn.run`: ``run`` compiles
once per *algorithm object*, and an algorithm closes over its data and noise, so every EM round
(new noise) and every refit would compile again (1-4 s each on 2 cores, 10 rounds per fit).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ekibnn import schedulers
from ekibnn.bnn.likelihoods import DEFAULT_PSEUDO_NOISE, classification, regression
from ekibnn.bnn.models import ACTIVATIONS, MLP, ensemble_apply, num_params
from ekibnn.ensemble import flatten, flatten_member, unflatten, unflatten_member
from ekibnn.errors import input_error
from ekibnn.inversion.eki import eki
from ekibnn.inversion.eks import aldi, eks
from ekibnn.inversion.etki import etki
from ekibnn.inversion.uki import uki
from ekibnn.priors import GaussianPrior

__all__ = ["METHODS", "EKIClassifier", "EKIRegressor"]

METHODS = ("eki", "etki", "uki", "eks", "aldi")  # the fitting recipes (see EKIRegressor)
_DEFAULT_INFLATION = 0.02  # EKI-phase random walk of eki/etki (see the module docstring)
_REFINED = ("uki", "eks", "aldi")  # methods with a second phase after the EKI phase
_UKI_MAX_PARAMS = 5000  # larger networks: a p x p covariance and 2p + 1 sigma points per step
_UKI_JITTER = 1e-6  # prior-variance fraction added to the phase-1 covariance for UKI
_SAMPLER_MAX_STEPS = 1000  # cap on EKS/ALDI steps (phase 2; T = 10 takes about 500)
# default sampler_time (measured: module docstring); for "uki" it counts iterations
_SAMPLER_TIME = {"eks": 10.0, "aldi": 10.0, "uki": 10}
_ROUNDS = 10  # EM noise re-estimations per fit (also the progress-bar updates)
_INITIAL_NOISE = 0.1  # EM starting noise std, in units of std(y)
_MIN_VALIDATION = 2  # fewer hold-out or training points than this: no hold-out
_MIN_PAD = 32  # full-batch training data are padded to max(_MIN_PAD, next power of two) rows
_PAD_NOISE = 1e4  # noise multiplier that switches a padding row off
_PREDICT_BLOCK = 256  # rows per compiled prediction call (fixed shape: compiled once)


class _FitConfig(NamedTuple):
    """Static (hashable) configuration of the compiled training chunk."""

    task: str
    num_classes: int
    dt: float
    inflation: float
    batch_size: int | None
    regularize: bool
    chunk_len: int
    method: str = "eki"


def _likelihood(X, y, mask, noise, cfg: _FitConfig):
    """The forward map and observation for (padded) data: rows with ``mask == 0`` get a noise
    std ``_PAD_NOISE`` times larger, so they carry no information."""
    point_noise = noise * jnp.where(mask > 0, 1.0, _PAD_NOISE).astype(X.dtype)
    if cfg.task == "regression":
        return regression(X, y, point_noise)
    return classification(X, y, cfg.num_classes, point_noise)


@eqx.filter_jit
def _train_chunk(key, particles, prior, X, y, mask, noise, start, limit, cfg: _FitConfig):
    """At most ``limit`` (<= ``cfg.chunk_len``) EKI steps from global step ``start`` (step ``k``
    uses ``fold_in(key, k)``); returns the particles and the per-step ensemble misfits.
    ``X``, ``y``, ``noise`` and the prior are traced, so one compilation serves every fit with
    the same shapes and hyperparameters. Rows with ``mask == 0`` are padding: their noise std
    is multiplied by ``_PAD_NOISE`` so they carry no information."""
    lik = _likelihood(X, y, mask, noise, cfg)
    batched = cfg.batch_size is not None
    # "etki": the deterministic square-root transform (same options, no observation
    # perturbations; cost linear in the number of observations); every other method starts
    # with perturbed-observation EKI ("eki").
    factory = etki if cfg.method == "etki" else partial(eki, stochastic=True)
    algo = factory(
        lik.indexed_forward_fn if batched else lik.forward_fn,
        lik.obs,
        prior=prior,
        scheduler=schedulers.constant(cfg.dt),
        inflation=cfg.inflation,
        batch_size=cfg.batch_size,
        regularize=cfg.regularize,
        indexed_forward=batched,
    )
    state = algo.init(particles)
    misfits = jnp.zeros((cfg.chunk_len,), X.dtype)

    def cond(carry):
        return carry[0] < limit

    def body(carry):
        i, state, misfits = carry
        state, info = algo.step(jax.random.fold_in(key, start + i), state)
        return i + 1, state, misfits.at[i].set(info.misfit.astype(misfits.dtype))

    _, state, misfits = jax.lax.while_loop(cond, body, (jnp.int32(0), state, misfits))
    return state.particles, misfits


class _RefineConfig(NamedTuple):
    """Static configuration of the second phase (sampler or UKI)."""

    task: str
    num_classes: int
    method: str  # "eks" | "aldi" | "uki"
    final_time: float  # EKS/ALDI algorithm time; UKI: unused (max_steps counts iterations)
    max_steps: int
    jitter: float  # UKI: prior-variance fraction added to the phase-1 covariance


@eqx.filter_jit
def _refine(key, particles, prior, X, y, mask, noise, cfg: _RefineConfig):
    """The second phase, started from the phase-1 ensemble ``particles``, in one compiled
    ``while_loop`` that stops on the algorithm's ``done`` or after ``cfg.max_steps`` steps.

    * ``"eks"`` / ``"aldi"``: :func:`ekibnn.eks` / :func:`ekibnn.aldi` (prior = the BNN prior)
      run to algorithm time ``cfg.final_time`` with the EKS-stable adaptive step.
    * ``"uki"``: :func:`ekibnn.uki` (Bayesian configuration) whose Gaussian starts at the
      phase-1 ensemble's mean and covariance plus ``jitter`` times the prior covariance (the
      ensemble covariance has rank J - 1 < p), run until converged or ``cfg.max_steps``.

    Returns ``(particles, mean, cov, misfits, taken)``: the final ensemble (EKS/ALDI; UKI: its
    ``2p + 1`` stencil), the UKI mean and covariance (zeros for EKS/ALDI) and the per-step
    misfits (``cfg.max_steps`` buffer, ``taken`` filled)."""
    lik = _likelihood(X, y, mask, noise, cfg)
    if cfg.method == "uki":
        algo = uki(lik.forward_fn, lik.obs, prior, max_steps=cfg.max_steps)
        x = flatten(particles)
        mean = jnp.mean(x, axis=0)
        anom = (x - mean) / jnp.sqrt(x.shape[0] - 1.0)
        cov = anom.T @ anom + cfg.jitter * jnp.diag(prior.flat_std() ** 2).astype(x.dtype)
        template = jax.tree_util.tree_map(lambda leaf: leaf[:1], particles)
        state = algo.init(template)._replace(
            mean=unflatten_member(mean, prior.mean), cov=cov.astype(x.dtype)
        )
    else:
        factory = aldi if cfg.method == "aldi" else eks
        algo = factory(lik.forward_fn, lik.obs, prior, final_time=cfg.final_time)
        state = algo.init(particles)
    dtype = flatten(particles).dtype
    misfits = jnp.zeros((cfg.max_steps,), dtype)

    def cond(carry):
        i, state, _ = carry
        return (i < cfg.max_steps) & ~state.done

    def body(carry):
        i, state, misfits = carry
        state, info = algo.step(jax.random.fold_in(key, i), state)
        return i + 1, state, misfits.at[i].set(info.misfit.astype(dtype))

    taken, state, misfits = jax.lax.while_loop(cond, body, (jnp.int32(0), state, misfits))
    if cfg.method == "uki":
        return state.particles, flatten_member(state.mean), state.cov, misfits, taken
    p = prior.num_params
    return state.particles, jnp.zeros((p,), dtype), jnp.zeros((p, p), dtype), misfits, taken


@eqx.filter_jit
def _em_noise(particles, X, y, mask):
    """EM noise std ``sqrt(mean_{j,i} (y_i - f_j(x_i))^2)`` over the rows with ``mask == 1``."""
    preds = ensemble_apply(particles, X)[..., 0]
    sq = jnp.mean((y[None, :] - preds) ** 2, axis=0)
    return jnp.sqrt(jnp.sum(mask * sq) / jnp.sum(mask))


@eqx.filter_jit
def _holdout_noise(particles, X, y):
    """Noise std that matches the predictive variance (spread^2 + noise^2) to the held-out mean
    squared error of the ensemble mean (floored at 1e-3 of std(y))."""
    preds = ensemble_apply(particles, X)[..., 0]
    mse = jnp.mean((y - preds.mean(axis=0)) ** 2)
    return jnp.sqrt(jnp.maximum(mse - jnp.mean(preds.var(axis=0)), 1e-6))


@eqx.filter_jit
def _members_block(particles, X):
    return ensemble_apply(particles, X)


def _members(particles, X: np.ndarray) -> np.ndarray:
    """``(J, n, out)`` member outputs, computed in fixed-size zero-padded blocks: compiled once,
    and a row's value does not depend on which other rows are predicted with it."""
    n = X.shape[0]
    pad = (-n) % _PREDICT_BLOCK
    Xp = np.concatenate([X, np.zeros((pad, X.shape[1]), X.dtype)]) if pad else X
    blocks = [
        np.asarray(_members_block(particles, jnp.asarray(Xp[s : s + _PREDICT_BLOCK])))
        for s in range(0, Xp.shape[0], _PREDICT_BLOCK)
    ]
    return np.concatenate(blocks, axis=1)[:, :n]


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


class _EKIBase(BaseEstimator):
    """Shared fitting machinery (not public)."""

    def _check_hyperparameters(self) -> tuple[int, ...]:
        for name in ("num_steps", "ensemble_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name}: expected a positive integer; got {value!r}")
        if self.ensemble_size < 2:
            raise ValueError(f"ensemble_size: expected >= 2 members; got {self.ensemble_size}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ValueError(
                f"batch_size: expected None or a positive integer; got {self.batch_size!r}"
            )
        for name, allow_zero in (("prior_std", False), ("inflation", True), ("dt", False)):
            value = getattr(self, name)
            if name == "inflation" and value is None:
                continue
            if not _is_real(value) or value < 0 or (value == 0 and not allow_zero):
                raise ValueError(
                    f"{name}: expected a finite number {'>=' if allow_zero else '>'} 0; "
                    f"got {value!r}"
                )
        hidden = (self.hidden,) if _is_int(self.hidden) else self.hidden
        if (
            not isinstance(hidden, Sequence)
            or isinstance(hidden, str)
            or not all(_is_int(h) and h >= 1 for h in hidden)
        ):
            raise ValueError(
                f"hidden: expected a tuple of positive layer widths, e.g. (50,); "
                f"got {self.hidden!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)}; got {self.activation!r}"
            )
        if self.parameterization not in ("standard", "ntk"):
            raise ValueError(
                f"parameterization: expected 'standard' or 'ntk'; got {self.parameterization!r}"
            )
        if self.method not in METHODS:
            raise input_error(
                "method",
                f"one of {list(METHODS)}",
                repr(self.method),
                "pick one of these (see the EKIRegressor docstring for what each does); "
                "'eki' is the default",
            )
        value = self.sampler_time
        if value is not None and (not _is_real(value) or value <= 0):
            raise ValueError(f"sampler_time: expected None or a finite number > 0; got {value!r}")
        return tuple(int(h) for h in hidden)

    def _inflation(self) -> float:
        """The EKI phase's random walk: ``inflation``, or for None 0.02 (``eki``/``etki``) or 0
        (``uki``/``eks``/``aldi``, whose second phase needs a collapsed ensemble)."""
        if self.inflation is not None:
            return float(self.inflation)
        return 0.0 if self.method in _REFINED else _DEFAULT_INFLATION

    def _check_method_size(self, p: int) -> None:
        """Clear errors for networks too large for ``uki`` or ensembles too small for
        ``aldi`` (p = number of network parameters)."""
        if self.method == "uki" and p > _UKI_MAX_PARAMS:
            raise input_error(
                "method='uki'",
                f"a network with at most {_UKI_MAX_PARAMS} parameters (UKI keeps a p x p "
                "covariance and evaluates 2p + 1 sigma points per step)",
                f"p = {p} parameters for hidden={self.hidden!r} and {self.n_features_in_} features",
                "use smaller hidden layers, or method='eki' / 'eks' (ensemble methods, cost "
                "linear in p)",
            )
        if self.method == "aldi" and self.ensemble_size < p + 2:
            raise input_error(
                "method='aldi'",
                f"ensemble_size >= p + 2 = {p + 2} (ALDI's finite-ensemble correction needs "
                "a non-degenerate ensemble covariance)",
                f"ensemble_size={self.ensemble_size} for a network with p = {p} parameters",
                f"set ensemble_size={p + 2} or more, use smaller hidden layers, or use "
                "method='eks' (no correction; works with J <= p)",
            )

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.default_rng().integers(2**31 - 1))
        if _is_int(rs):
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31 - 1))
        raise ValueError(f"random_state: expected None, an int or a RandomState; got {rs!r}")

    @threadpool_limits.wrap(limits=1, user_api="blas")  # as in ekibnn.run: see blas_threads
    def _fit_ensemble(self, seed, X, y, out_size, task, num_classes, noise, X_val=None, y_val=None):
        """Draw the prior ensemble and run EKI in rounds; returns
        ``(particles, noise_std, misfits)`` (noise in the units of ``y``, standardised)."""
        hidden = self._check_hyperparameters()
        key_model, key_prior, key_run = jax.random.split(jax.random.key(seed), 3)
        template = MLP(
            key_model,
            X.shape[1],
            out_size,
            hidden=hidden,
            activation=self.activation,
            parameterization=self.parameterization,
        )
        prior = GaussianPrior.like(template, std=float(self.prior_std))
        self._check_method_size(num_params(template))
        particles = prior.sample(key_prior, int(self.ensemble_size))
        per_point = num_classes if task == "classification" else 1
        m = y.shape[0] * per_point
        batch = None
        if self.batch_size is not None and int(self.batch_size) * per_point < m:
            batch = int(self.batch_size) * per_point
        num_steps = int(self.num_steps)
        chunk_len = math.ceil(num_steps / min(_ROUNDS, num_steps))
        cfg = _FitConfig(
            task,
            num_classes,
            float(self.dt),
            self._inflation(),
            batch,
            bool(self.regularize),
            chunk_len,
            "etki" if self.method == "etki" else "eki",  # phase 1 of uki/eks/aldi is EKI
        )
        # Full-batch runs pad the data to a power-of-two row count (padding rows carry no
        # information): fits on similar-sized data (cross-validation folds) share one compile.
        n = y.shape[0]
        n_pad = max(_MIN_PAD, 1 << (n - 1).bit_length()) if batch is None else n
        mask = np.zeros(n_pad, X.dtype)
        mask[:n] = 1.0
        Xj = jnp.asarray(np.concatenate([X, np.zeros((n_pad - n, X.shape[1]), X.dtype)]))
        yj = jnp.asarray(np.concatenate([y, np.zeros(n_pad - n, y.dtype)]))
        maskj = jnp.asarray(mask)
        estimate = noise is None
        noise_j = jnp.asarray(_INITIAL_NOISE if estimate else noise, Xj.dtype)
        misfits = []
        bar = tqdm(total=num_steps, disable=not self.progress, desc=type(self).__name__)
        try:
            for start in range(0, num_steps, chunk_len):
                limit = min(chunk_len, num_steps - start)
                particles, mis = _train_chunk(
                    key_run,
                    particles,
                    prior,
                    Xj,
                    yj,
                    maskj,
                    noise_j,
                    jnp.int32(start),
                    jnp.int32(limit),
                    cfg,
                )
                misfits.append(np.asarray(mis)[:limit] * (n_pad / n))
                if estimate:
                    noise_j = _em_noise(particles, Xj, yj, maskj)
                bar.update(limit)
        finally:
            bar.close()
        if estimate:
            # Degrees-of-freedom correction of the training-residual estimate: the fit lies in
            # the ensemble's affine span, so it spends up to J - 1 degrees of freedom.
            dof = min(int(self.ensemble_size) - 1, num_params(template), n // 2)
            noise_j = noise_j * math.sqrt(n / (n - dof))
        if self.method in _REFINED:
            particles, refine_misfits = self._refine(
                key_run, particles, prior, Xj, yj, maskj, noise_j, task, num_classes
            )
            misfits.append(refine_misfits * (n_pad / n))
        if estimate and X_val is not None:
            noise_j = _holdout_noise(particles, jnp.asarray(X_val), jnp.asarray(y_val))
        return particles, float(noise_j), np.concatenate(misfits)

    def _refine(self, key, particles, prior, Xj, yj, maskj, noise_j, task, num_classes):
        """Phase 2 of the ``eks``/``aldi``/``uki`` recipes (see the module docstring)."""
        method = self.method
        time = float(self.sampler_time or _SAMPLER_TIME[method])
        cfg = _RefineConfig(
            task,
            num_classes,
            method,
            time,
            max(1, round(time)) if method == "uki" else _SAMPLER_MAX_STEPS,
            _UKI_JITTER,
        )
        key = jax.random.fold_in(key, 1 << 30)  # phase-2 keys, disjoint from phase 1's
        out, mean, cov, mis, taken = _refine(key, particles, prior, Xj, yj, maskj, noise_j, cfg)
        mis = np.asarray(mis)[: int(taken)]
        if method != "uki":
            return out, mis
        # Predictions from the Gaussian: J draws mean + R z with R R^T = cov (symmetric root,
        # eigenvalues clipped at 0: the float32 covariance may be indefinite by round-off).
        values, vectors = np.linalg.eigh(np.asarray(cov, np.float64))
        root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        z = np.asarray(
            jax.random.normal(jax.random.fold_in(key, 1), (int(self.ensemble_size), len(mean)))
        )
        draws = np.asarray(mean, np.float64) + z.astype(np.float64) @ root
        return unflatten(jnp.asarray(draws, mean.dtype), particles), mis

    def _member_outputs(self, X) -> np.ndarray:
        Xs = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        return _members(self.ensemble_, Xs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class EKIRegressor(RegressorMixin, _EKIBase):
    """Bayesian MLP regression trained by ensemble Kalman inversion (scikit-learn API).

    Args:
        hidden: hidden-layer widths.
        activation: ``"tanh"``, ``"relu"``, ``"gelu"``, ``"silu"`` or ``"sin"``.
        parameterization: ``"ntk"`` (weights scaled by ``1/sqrt(fan_in)``: the prior scale does
            not depend on the width) or ``"standard"``.
        ensemble_size: number of members J.
        num_steps: EKI steps.
        prior_std: std of the ``N(0, prior_std^2)`` prior on every (raw) parameter.
        inflation: std of the additive random walk before each EKI step (raw-parameter units);
            None: 0.02 for ``"eki"``/``"etki"``, 0 for ``"uki"``/``"eks"``/``"aldi"`` (their
            second phase needs the collapsed ensemble; see the module docstring).
        dt: EKI step size (noise ``Gamma / dt`` per step).
        regularize: Tikhonov-regularised EKI (see the module docstring); False is the
            tutorial's plain EKI.
        method: the recipe (module docstring, with what was measured): ``"eki"``
            (regularised EKI, perturbed observations), ``"etki"`` (the same with the
            deterministic square-root transform), ``"eks"`` / ``"aldi"`` (the EKI phase, then
            the ensemble Kalman sampler / ALDI from its ensemble for ``sampler_time``),
            ``"uki"`` (the EKI phase, then unscented Kalman inversion from its mean and
            covariance; at most 5000 network parameters).
        sampler_time: algorithm time of the second phase: EKS/ALDI time, or the number of UKI
            iterations (rounded); None: 10. Only EKS reaches a stationary spread, and only on
            mildly nonlinear problems; see the module docstring for what was measured.
        standardize: standardise inputs (and regression targets) inside the estimator; False:
            the prior, ``noise`` and predictions act on the raw data.
        random_state: seed (int), a ``RandomState``, or None (fresh randomness every fit).
        progress: show a progress bar.
        batch_size: observations per step; None: all (recommended with ``regularize``).
        noise: observation-noise std in the units of ``y``; None: estimated (EM, or from a
            hold-out set with ``validation_fraction``).
        validation_fraction: with ``noise=None``, the fraction of the data held out of training
            to calibrate the noise std on; None: EM on the training data.

    Attributes:
        ensemble_: the fitted ensemble (:class:`ekibnn.bnn.MLP` with a leading axis J) acting on
            standardised inputs and returning standardised outputs.
        noise_: observation-noise std in the units of ``y`` (given or estimated).
        history_: per-step mean member misfit ``||(y - G_j) / noise||^2 / m`` (the EKI phase,
            then for ``"uki"``/``"eks"``/``"aldi"`` the second phase; UKI: over sigma points).
        n_iter_: steps taken (both phases).
        n_features_in_: number of features seen in ``fit``.

    Example:
        >>> from ekibnn.datasets import tutorial_sine
        >>> X, y = tutorial_sine(n=200)
        >>> reg = EKIRegressor(ensemble_size=32, num_steps=100).fit(X, y)
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
        num_steps: int = 300,
        batch_size: int | None = None,
        noise: float | None = None,
        prior_std: float = 1.0,
        inflation: float | None = None,
        dt: float = 1.0,
        regularize: bool = True,
        validation_fraction: float | None = None,
        method: str = "eki",
        sampler_time: float | None = None,
        standardize: bool = True,
        random_state: int | np.random.RandomState | None = 0,
        progress: bool = False,
    ):
        self.hidden = hidden
        self.activation = activation
        self.parameterization = parameterization
        self.ensemble_size = ensemble_size
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.noise = noise
        self.prior_std = prior_std
        self.inflation = inflation
        self.dt = dt
        self.regularize = regularize
        self.validation_fraction = validation_fraction
        self.method = method
        self.sampler_time = sampler_time
        self.standardize = standardize
        self.random_state = random_state
        self.progress = progress

    def fit(self, X, y) -> EKIRegressor:
        """Fit the ensemble to ``X`` ``(n, d)`` and ``y`` ``(n,)``; returns ``self``."""
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        if self.noise is not None and not (_is_real(self.noise) and self.noise > 0):
            raise ValueError(f"noise: expected None or a positive std; got {self.noise!r}")
        frac = self.validation_fraction
        if frac is not None and not (_is_real(frac) and 0 <= frac < 1):
            raise ValueError(
                f"validation_fraction: expected None or a number in [0, 1); got {frac!r}"
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
        noise = None if self.noise is None else float(self.noise) / float(self.y_scale_)
        particles, noise_s, misfits = self._fit_ensemble(
            seed, Xs, ys, 1, "regression", 0, noise, X_val, y_val
        )
        self.ensemble_ = particles
        self.noise_ = noise_s * float(self.y_scale_)
        self.history_ = misfits
        self.n_iter_ = int(misfits.shape[0])
        return self

    def sample_predictions(self, X) -> np.ndarray:
        """Member predictions ``f_j(x)`` in the units of ``y`` (no observation noise):
        ``(J, n)``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self._member_outputs(X)[..., 0].astype(np.float64)
        return out * self.y_scale_ + self.y_mean_

    def predict(self, X, return_std: bool = False):
        """Predictive mean ``(n,)``; with ``return_std`` also the predictive std
        ``sqrt(ensemble variance + noise_^2)``, which includes the observation noise."""
        members = self.sample_predictions(X)
        mean = members.mean(axis=0)
        if not return_std:
            return mean
        return mean, np.sqrt(members.var(axis=0) + self.noise_**2)


class EKIClassifier(ClassifierMixin, _EKIBase):
    """Bayesian MLP classification trained by ensemble Kalman inversion (scikit-learn
    API).

    One-hot labels are observed against the softmax probabilities with pseudo-noise std
    ``pseudo_noise`` (Kovachki & Stuart 2019; see :mod:`ekibnn.bnn.likelihoods`).
    ``predict_proba`` averages the members' probabilities.

    Args:
        hidden: hidden-layer widths.
        activation: ``"tanh"``, ``"relu"``, ``"gelu"``, ``"silu"`` or ``"sin"``.
        parameterization: ``"ntk"`` (weights scaled by ``1/sqrt(fan_in)``: the prior scale does
            not depend on the width) or ``"standard"``.
        ensemble_size: number of members J.
        num_steps: EKI steps.
        prior_std: std of the ``N(0, prior_std^2)`` prior on every (raw) parameter.
        inflation: std of the additive random walk before each EKI step (raw-parameter units);
            None: 0.02 for ``"eki"``/``"etki"``, 0 for ``"uki"``/``"eks"``/``"aldi"`` (their
            second phase needs the collapsed ensemble; see the module docstring).
        dt: EKI step size (noise ``Gamma / dt`` per step).
        regularize: Tikhonov-regularised EKI (see the module docstring); False is the
            tutorial's plain EKI.
        method: the recipe (module docstring, with what was measured): ``"eki"``
            (regularised EKI, perturbed observations), ``"etki"`` (the same with the
            deterministic square-root transform), ``"eks"`` / ``"aldi"`` (the EKI phase, then
            the ensemble Kalman sampler / ALDI from its ensemble for ``sampler_time``),
            ``"uki"`` (the EKI phase, then unscented Kalman inversion from its mean and
            covariance; at most 5000 network parameters).
        sampler_time: algorithm time of the second phase: EKS/ALDI time, or the number of UKI
            iterations (rounded); None: 10. Only EKS reaches a stationary spread, and only on
            mildly nonlinear problems; see the module docstring for what was measured.
        standardize: standardise inputs (and regression targets) inside the estimator; False:
            the prior, ``noise`` and predictions act on the raw data.
        random_state: seed (int), a ``RandomState``, or None (fresh randomness every fit).
        progress: show a progress bar.
        batch_size: data points per step (each brings its K one-hot entries; drawn as
            ``batch_size * K`` random entries); None: all.
        pseudo_noise: std of the pseudo-noise on the one-hot targets.

    Attributes:
        classes_: the class labels.
        ensemble_: the fitted ensemble (logits for standardised inputs).
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
        num_steps: int = 300,
        batch_size: int | None = None,
        pseudo_noise: float = DEFAULT_PSEUDO_NOISE,
        prior_std: float = 1.0,
        inflation: float | None = None,
        dt: float = 1.0,
        regularize: bool = True,
        method: str = "eki",
        sampler_time: float | None = None,
        standardize: bool = True,
        random_state: int | np.random.RandomState | None = 0,
        progress: bool = False,
    ):
        self.hidden = hidden
        self.activation = activation
        self.parameterization = parameterization
        self.ensemble_size = ensemble_size
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.pseudo_noise = pseudo_noise
        self.prior_std = prior_std
        self.inflation = inflation
        self.dt = dt
        self.regularize = regularize
        self.method = method
        self.sampler_time = sampler_time
        self.standardize = standardize
        self.random_state = random_state
        self.progress = progress

    def fit(self, X, y) -> EKIClassifier:
        """Fit the ensemble to ``X`` ``(n, d)`` and class labels ``y`` ``(n,)``."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if not (_is_real(self.pseudo_noise) and self.pseudo_noise > 0):
            raise ValueError(f"pseudo_noise: expected a positive std; got {self.pseudo_noise!r}")
        encoder = LabelEncoder().fit(y)
        classes = encoder.classes_
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__}: expected at least 2 classes in y; got 1 class "
                f"({classes[0]!r}); fix: pass labelled data from two or more classes"
            )
        self.classes_ = classes
        k = len(classes)
        seed = self._seed()
        self.x_mean_, self.x_scale_ = _standardise(X, self.standardize)
        Xs = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        labels = encoder.transform(y).astype(np.int32)
        particles, _, misfits = self._fit_ensemble(
            seed, Xs, labels, k, "classification", k, float(self.pseudo_noise)
        )
        self.ensemble_ = particles
        self.history_ = misfits
        self.n_iter_ = int(misfits.shape[0])
        return self

    def sample_predictions(self, X) -> np.ndarray:
        """Member class probabilities ``(J, n, K)`` (columns ordered as ``classes_``)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        logits = self._member_outputs(X).astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=-1, keepdims=True)

    def predict_proba(self, X) -> np.ndarray:
        """Ensemble-averaged class probabilities ``(n, K)`` (columns ordered as ``classes_``)."""
        return self.sample_predictions(X).mean(axis=0)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class under the ensemble-averaged probabilities."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
