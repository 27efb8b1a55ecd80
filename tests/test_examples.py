"""Every example script runs at a tiny size (NumPyro style: scripts with size flags)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = {
    "linear_gaussian.py": ["--ensemble", "500", "--dim", "3", "--obs", "6"],
    "tutorial_bnn.py": ["--ensemble", "32", "--steps", "20", "--batch", "50"],
    "classification_digits.py": [
        "--ensemble",
        "16",
        "--steps",
        "20",
        "--samples",
        "200",
        "--hidden",
        "16",
    ],
}


def _load(name):
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# run by tests/test_multihost.py (it spawns its own processes)
ELSEWHERE = {"multihost.py"}


def test_every_example_is_covered():
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(TINY) | ELSEWHERE


@pytest.mark.parametrize("name", sorted(TINY))
def test_example_runs_tiny(name, tmp_path):
    args = TINY[name] + (["--out", str(tmp_path)] if name == "tutorial_bnn.py" else [])
    report = _load(name).main(args)
    assert report
    if name == "linear_gaussian.py":
        assert report["mean_error"] < 0.5 and report["cov_error"] < 0.5
    if name == "tutorial_bnn.py":
        assert (tmp_path / "predictive.png").exists() and report["rmse"] < 1.0
