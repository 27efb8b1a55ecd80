"""Tests for ekibnn.datasets."""

import numpy as np
import pytest

from ekibnn import datasets
from ekibnn.errors import InputError


def test_tutorial_sine_shapes_and_reproducibility():
    x, y = datasets.tutorial_sine(seed=3, n=500, noise=0.1)
    assert x.shape == (500, 1) and y.shape == (500,)
    x2, y2 = datasets.tutorial_sine(seed=3, n=500, noise=0.1)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.allclose(datasets.tutorial_sine(seed=4, n=500)[0], x)
    resid = y - datasets.sine_truth(x)
    assert 0.08 < resid.std() < 0.12 and abs(x.mean()) < 0.15 and 0.9 < x.std() < 1.1
    x0, y0 = datasets.tutorial_sine(n=50, noise=0.0)
    np.testing.assert_allclose(y0, np.sin(np.pi * x0[:, 0]), atol=1e-6)


def test_sine_truth_shapes():
    assert datasets.sine_truth(np.zeros((4, 1))).shape == (4,)
    np.testing.assert_allclose(datasets.sine_truth(np.array([0.5, 1.0])), [1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    "name, shape, task, classes",
    [
        ("diabetes", (442, 10), "regression", None),
        ("breast_cancer", (569, 30), "classification", 2),
        ("digits", (1797, 64), "classification", 10),
        ("wine", (178, 13), "classification", 3),
    ],
)
def test_load_sklearn(name, shape, task, classes):
    X, y, got_task = datasets.load_sklearn(name)
    assert X.shape == shape and y.shape == (shape[0],) and got_task == task
    if classes is not None:
        assert np.unique(y).size == classes and y.dtype.kind == "i"


def test_load_sklearn_unknown():
    with pytest.raises(InputError, match="one of"):
        datasets.load_sklearn("mnist")


def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_csv_regression(tmp_path):
    path = _write(tmp_path, "a,b,y\n1,2,0.5\n3,4,1.5\n5,6,2.25\n")
    X, y, task = datasets.load_csv(path, "y")
    np.testing.assert_allclose(X, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_allclose(y, [0.5, 1.5, 2.25])
    assert task == "regression"
    X, _, _ = datasets.load_csv(path, "y", features=["b"])
    np.testing.assert_allclose(X, [[2], [4], [6]])


def test_load_csv_classification(tmp_path):
    path = _write(tmp_path, "x1,x2,label\n0.1,1,cat\n0.2,2,dog\n0.3,3,cat\n")
    _, y, task = datasets.load_csv(path, "label")
    assert task == "classification" and list(y) == ["cat", "dog", "cat"]
    path = _write(tmp_path, "x,c\n1,0\n2,1\n3,1\n", "ints.csv")
    _, y, task = datasets.load_csv(path, "c")
    assert task == "classification" and y.dtype.kind == "i"
    _, y, task = datasets.load_csv(path, "c", task="regression")
    assert task == "regression" and y.dtype == np.float64


def test_load_csv_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        datasets.load_csv(tmp_path / "nope.csv", "y")


def test_load_csv_missing_columns(tmp_path):
    path = _write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(InputError, match=r"target 'y'.*columns \['a', 'b'\]"):
        datasets.load_csv(path, "y")
    with pytest.raises(InputError, match="features"):
        datasets.load_csv(path, "b", features=["a", "zz"])


def test_load_csv_non_numeric_and_missing_values(tmp_path):
    path = _write(tmp_path, "a,b,y\n1,2,3\n4,oops,6\n")
    with pytest.raises(InputError, match=r"line 3, column 'b'.*'oops'"):
        datasets.load_csv(path, "y")
    path = _write(tmp_path, "a,y\n1,2\n,3\n", "gap.csv")
    with pytest.raises(InputError, match="missing value"):
        datasets.load_csv(path, "y")
    path = _write(tmp_path, "a,y\n1,2\n2,x\n", "target.csv")
    with pytest.raises(InputError, match="target 'y'"):
        datasets.load_csv(path, "y", task="regression")


def test_load_csv_structure_errors(tmp_path):
    with pytest.raises(InputError, match="empty file"):
        datasets.load_csv(_write(tmp_path, ""), "y")
    with pytest.raises(InputError, match="data row"):
        datasets.load_csv(_write(tmp_path, "a,y\n", "h.csv"), "y")
    with pytest.raises(InputError, match="fields"):
        datasets.load_csv(_write(tmp_path, "a,y\n1,2,3\n", "r.csv"), "y")
    with pytest.raises(InputError, match="feature column"):
        datasets.load_csv(_write(tmp_path, "y\n1\n", "t.csv"), "y")
