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


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbfa,b,y\r\n1,2,3\r\n4,5,6\r\n",  # UTF-8 BOM, CRLF
        b"a;b;y\n1;2;3\n\n4;5;6\n",  # ';' detected, a blank line
        b"a\tb\ty\r1\t2\t3\r4\t5\t6\r",  # tab detected, CR line endings
        b'"a","b","y"\n"1","2","3"\n4,5,6\n',  # quoted
    ],
)
def test_load_csv_bom_line_endings_and_delimiters(tmp_path, raw):
    path = tmp_path / "data.csv"
    path.write_bytes(raw)
    X, y, _ = datasets.load_csv(path, "y", task="regression")
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(y, [3, 6])


def test_load_csv_delimiter_and_encoding_options(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("caf\xe9|y\n1|2.5\n2|3.5\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"byte 0xe9 on line 1.*--encoding latin-1"):
        datasets.load_csv(path, "y", delimiter="|")
    X, _, task = datasets.load_csv(path, "y", delimiter="|", encoding="latin-1")
    assert X.tolist() == [[1.0], [2.0]] and task == "regression"
    with pytest.raises(InputError, match="encoding"):
        datasets.load_csv(path, "y", encoding="klingon")
    with pytest.raises(InputError, match="one character"):
        datasets.load_csv(path, "y", delimiter="||")


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("a,b,a,y\n1,2,3,4\n", {}, r"'a' twice \(columns 1 and 3\)"),
        ("a,,y\n1,2,3\n", {}, "column 2 without a name"),
        ("a,y\n1,2\n2,3\n3,\n", {}, r"line 4, target 'y' \(data row 3\).*missing value"),
        ("a,y\n1,2.5\n2,NaN\n", {}, r"line 3, target 'y'.*'NaN'"),
        ("a,y\n1,2\n2,inf\n", {"task": "classification"}, r"line 3, target 'y'.*'inf'"),
        ("a,y\n1,2\n2,x\n", {}, r"line 3, target 'y'.*'x' among numbers"),
        ("a,y\n1,0.5\n2,1\n", {"task": "classification"}, r"line 2.*'0.5', a continuous value"),
        ("a,b,c,y\n1,x,z,1\n", {}, r"column 'b'.*non-numeric columns: 'b', 'c'"),
        ("a,y\n1,5\n1,5\n", {"features": ["y"]}, "the target 'y' among them"),
        ('a,y\n"1,2\n', {}, "line"),
    ],
)
def test_load_csv_refuses_with_row_and_column(tmp_path, text, kwargs, message):
    with pytest.raises(InputError, match=message):
        datasets.load_csv(_write(tmp_path, text), "y", **kwargs)


def test_load_csv_huge_integers_are_not_labels(tmp_path):
    _, y, task = datasets.load_csv(_write(tmp_path, "a,y\n1,1e300\n2,1e300\n"), "y")
    assert task == "regression" and y.dtype == np.float64


def test_jax_only_imported_for_the_sine_problem():
    import subprocess
    import sys

    code = "import sys, ekibnn.datasets; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
