"""Data sets: the tutorial sine problem, scikit-learn's bundled sets and CSV files.

Everything here is local: nothing is downloaded. Arrays are returned as NumPy arrays (ready for
scikit-learn-style estimators and for ``jnp.asarray``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ekibnn.errors import input_error

__all__ = ["Dataset", "load_csv", "load_sklearn", "sine_truth", "tutorial_sine"]

Task = Literal["regression", "classification"]


class Dataset(NamedTuple):
    """A supervised data set; unpacks as ``X, y, task = dataset``.

    Attributes:
        X: ``(n, d)`` float features.
        y: ``(n,)`` targets (floats for regression, class labels for classification).
        task: ``"regression"`` or ``"classification"``.

    Example:
        >>> import numpy as np
        >>> X, y, task = Dataset(np.zeros((3, 2)), np.zeros(3), "regression")
        >>> X.shape, task
        ((3, 2), 'regression')
    """

    X: np.ndarray
    y: np.ndarray
    task: Task


def sine_truth(x: ArrayLike) -> np.ndarray | Array:
    """The tutorial's noise-free function ``sin(pi x)``.

    Args:
        x: inputs, shape ``(n,)`` or ``(n, 1)`` (a JAX array gives a JAX array back).

    Returns:
        ``(n,)`` values (an ``(n, 1)`` input is flattened).

    Example:
        >>> import numpy as np
        >>> sine_truth(np.array([0.0, 0.5])).round(6).tolist()
        [0.0, 1.0]
    """
    xp = jnp if isinstance(x, jax.Array) else np
    x = xp.asarray(x)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    return xp.sin(math.pi * x)


def tutorial_sine(seed: int = 0, n: int = 500, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's regression problem: ``x ~ N(0, 1)``, ``y = sin(pi x) + noise * N(0, 1)``.

    The inputs and the noise are drawn with separate keys split from ``jax.random.key(seed)``,
    so the data are the same on every platform.

    Args:
        seed: random seed.
        n: number of points (500 in the tutorial).
        noise: observation-noise std (0.1 in the tutorial).

    Returns:
        ``(x, y)`` with ``x`` of shape ``(n, 1)`` and ``y`` of shape ``(n,)`` (float32).

    Example:
        >>> x, y = tutorial_sine(n=10)
        >>> x.shape, y.shape
        ((10, 1), (10,))
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise input_error("tutorial_sine n", "a positive integer", repr(n), "pass e.g. n=500")
    if not noise >= 0:
        raise input_error("tutorial_sine noise", "a std >= 0", repr(noise), "pass e.g. 0.1")
    key_x, key_noise = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(key_x, (int(n), 1), jnp.float32)
    eps = jax.random.normal(key_noise, (int(n),), jnp.float32)
    y = jnp.sin(jnp.pi * x[:, 0]) + noise * eps
    return np.asarray(x), np.asarray(y)


_SKLEARN: dict[str, tuple[str, Task]] = {
    "diabetes": ("load_diabetes", "regression"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "digits": ("load_digits", "classification"),
    "wine": ("load_wine", "classification"),
}


def load_sklearn(name: str) -> Dataset:
    """One of scikit-learn's bundled data sets (shipped with scikit-learn, no download).

    Args:
        name: ``"diabetes"`` (regression, 442 x 10), ``"breast_cancer"`` (2 classes, 569 x 30),
            ``"digits"`` (10 classes, 1797 x 64) or ``"wine"`` (3 classes, 178 x 13).

    Returns:
        :class:`Dataset` ``(X, y, task)``; ``X`` float64, ``y`` float64 for regression and
        int64 class indices for classification.

    Example:
        >>> X, y, task = load_sklearn("breast_cancer")
        >>> X.shape, task, sorted(set(y.tolist()))
        ((569, 30), 'classification', [0, 1])
    """
    if name not in _SKLEARN:
        raise input_error(
            "load_sklearn name",
            f"one of {sorted(_SKLEARN)}",
            repr(name),
            "use load_csv(path, target) for your own data",
        )
    import sklearn.datasets

    loader, task = _SKLEARN[name]
    X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    y = np.asarray(y, dtype=np.float64 if task == "regression" else np.int64)
    return Dataset(np.asarray(X, dtype=np.float64), y, task)


_MAX_AUTO_CLASSES = 20


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def load_csv(
    path: str | os.PathLike,
    target: str,
    features: Sequence[str] | None = None,
    task: Literal["auto", "regression", "classification"] = "auto",
    delimiter: str = ",",
) -> Dataset:
    """Read a CSV file with a header row into ``(X, y, task)``.

    Args:
        path: the CSV file (first row: column names).
        target: name of the target column.
        features: names of the feature columns (default: every other column).
        task: ``"regression"``, ``"classification"`` or ``"auto"``: classification when the
            target is non-numeric or holds at most 20 distinct integer values, else regression.
        delimiter: field separator.

    Returns:
        :class:`Dataset` with ``X`` float64 ``(n, d)``; ``y`` float64 for regression, the raw
        labels (numbers or strings) for classification.

    Raises:
        InputError: missing file, empty file, missing columns, ragged rows, missing or
            non-numeric feature values, non-numeric regression targets.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "data.csv")
        >>> with open(path, "w") as fh:
        ...     _ = fh.write("a,b,y\\n1,2,0.5\\n3,4,1.5\\n5,6,2.5\\n")
        >>> X, y, task = load_csv(path, target="y")
        >>> X.tolist(), y.tolist(), task
        ([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [0.5, 1.5, 2.5], 'regression')
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise input_error(
            f"load_csv path {path!r}",
            "an existing CSV file",
            "no such file",
            "check the path (relative paths start from the current working directory)",
        )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise input_error(f"load_csv {path!r}", "a header row", "an empty file", "add data")
    header = [name.strip() for name in rows[0]]
    body = rows[1:]
    if not body:
        raise input_error(
            f"load_csv {path!r}", "at least one data row", "only a header", "add data rows"
        )
    if target not in header:
        raise input_error(
            f"load_csv target {target!r}",
            f"a column of {path!r}",
            f"columns {header}",
            "pass one of the listed column names as target",
        )
    if features is None:
        features = [name for name in header if name != target]
    else:
        features = list(features)
        missing = [name for name in features if name not in header]
        if missing:
            raise input_error(
                f"load_csv features {missing}",
                f"columns of {path!r}",
                f"columns {header}",
                "pass feature names from the listed columns",
            )
    if not features:
        raise input_error(
            f"load_csv {path!r}", "at least one feature column", "only the target", "add features"
        )
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise input_error(
                f"load_csv {path!r} line {line}",
                f"{len(header)} fields like the header",
                f"{len(row)} fields",
                f"fix the row or the delimiter (now {delimiter!r})",
            )
    columns = {name: i for i, name in enumerate(header)}
    X = np.empty((len(body), len(features)), dtype=np.float64)
    for line, row in enumerate(body, start=2):
        for c, name in enumerate(features):
            cell = row[columns[name]].strip()
            value = _parse_float(cell) if cell else None
            if value is None or not math.isfinite(value):
                raise input_error(
                    f"load_csv {path!r} line {line}, column {name!r}",
                    "a finite number",
                    "a missing value" if not cell else repr(cell),
                    "impute or drop missing values; encode categorical features as numbers",
                )
            X[line - 2, c] = value

    raw = [row[columns[target]].strip() for row in body]
    numbers = [_parse_float(cell) if cell else None for cell in raw]
    numeric = all(v is not None and math.isfinite(v) for v in numbers)
    if task == "auto":
        if not numeric:
            task = "classification"
        else:
            values = np.asarray(numbers, dtype=np.float64)
            few_ints = np.all(values == np.round(values)) and np.unique(values).size <= (
                _MAX_AUTO_CLASSES
            )
            task = "classification" if few_ints else "regression"
    if task == "regression":
        if not numeric:
            line = next(i for i, v in enumerate(numbers) if v is None or not math.isfinite(v))
            raise input_error(
                f"load_csv {path!r} line {line + 2}, target {target!r}",
                "a finite number (regression target)",
                "a missing value" if not raw[line] else repr(raw[line]),
                "fix the value, or pass task='classification' for labels",
            )
        y = np.asarray(numbers, dtype=np.float64)
    elif task == "classification":
        if any(not cell for cell in raw):
            line = raw.index("")
            raise input_error(
                f"load_csv {path!r} line {line + 2}, target {target!r}",
                "a class label",
                "a missing value",
                "drop unlabelled rows",
            )
        y = np.asarray(numbers, dtype=np.float64) if numeric else np.asarray(raw)
        if numeric and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    else:
        raise input_error(
            "load_csv task",
            "'auto', 'regression' or 'classification'",
            repr(task),
            "pick one of them",
        )
    return Dataset(X, y, task)
