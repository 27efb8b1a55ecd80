"""The package namespace: lazy (PEP 562) but with every public name of the eager one."""

import subprocess
import sys

import pytest

import ekibnn as ek

PUBLIC = sorted([  # every public name of the package
    "ALDI", "Categorical", "ComputationError", "ConvergenceWarning", "EKI", "EKIClassifier",
    "EKIRegressor", "EKS", "EKSInfo", "ETKI",
    "EnsembleInfo", "EnsembleKalman", "EnsembleState", "Evidence", "EvidenceInfo",
    "EvidenceState", "FidelityWarning", "GaussNewton", "GaussNewtonInfo", "GaussNewtonState",
    "GaussianPrior",
    "InputError", "KalmanAlgorithm", "LinearisedPosterior", "Observation", "RML", "RMLState",
    "RunResult", "UKI", "UKIInfo", "UKIState", "aldi", "bnn", "datasets", "eki", "eks",
    "ensemble", "etki", "evidence", "gauss_newton", "inversion", "laplace", "linalg", "metrics",
    "minibatch", "pinn", "posterior", "recipes", "rml", "run", "schedulers", "streaming", "uki",
])  # fmt: skip


def test_every_public_name_resolves_to_its_home():
    import importlib

    assert ek.__all__ == PUBLIC
    assert set(PUBLIC) <= set(dir(ek))
    for name in PUBLIC:
        value = getattr(ek, name)
        if name in ek._HOMES:
            home = importlib.import_module(f"ekibnn.{ek._HOMES[name]}")
            assert value is getattr(home, name), name
        else:
            assert value is importlib.import_module(f"ekibnn.{name}"), name


def test_lazy_import_and_run_stays_the_function():
    """``import ekibnn`` imports no JAX; importing the submodule ``ekibnn.run`` first (as
    ``ek.pinn`` does) leaves ``ek.run`` the function, as the eager package had it."""
    code = (
        "import sys, ekibnn as ek\n"
        "assert 'jax' not in sys.modules and ek.__version__\n"
        "import ekibnn.run\n"
        "ek.pinn\n"
        "assert callable(ek.run) and ek.run.__module__ == 'ekibnn.run', ek.run\n"
        "from ekibnn.run import run\n"
        "assert run is ek.run\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ek.nope  # noqa: B018
