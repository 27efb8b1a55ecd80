"""Data sets: the tutorial sine problem, scikit-learn's bundled sets and CSV files.

Everything here is local: nothing is downloaded. Arrays are returned as NumPy arrays (ready for
scikit-learn-style estimators and for ``jnp.asarray``). Only the sine problem imports JAX, and
only when called, so the command line checks a CSV file before it pays for JAX.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from ekibnn.errors import input_error

if TYPE_CHECKING:
    from jaxtyping import Array, ArrayLike

__all__ = ["BUNDLED", "Dataset", "load_csv", "load_sklearn", "sine_truth", "tutorial_sine"]

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
    import jax
    import jax.numpy as jnp

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
    import jax
    import jax.numpy as jnp

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
BUNDLED = tuple(_SKLEARN)  # the names load_sklearn takes


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
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})  # cells read as missing
_DELIMITERS = (",", ";", "\t")  # tried in this order when the delimiter is not given
_SNIFF_RECORDS = 50


def _number(cell: str) -> float | None:
    """``cell`` as a float (NaN and inf included), or None for text."""
    try:
        return float(cell)
    except ValueError:
        return None


def _shown(cell: str) -> str:
    """How a bad cell is quoted in a message."""
    if cell.lower() in _MISSING:
        return f"a missing value ({cell!r})" if cell else "a missing value"
    return repr(cell)


def _decode(path: str, raw: bytes, encoding: str) -> str:
    """The file's text (a UTF-8 byte-order mark dropped), or an InputError for bad bytes."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise input_error(
            "load_csv encoding",
            "a text encoding Python knows, such as 'utf-8', 'latin-1' or 'cp1252'",
            repr(encoding),
            "pass the file's encoding",
        ) from None
    try:
        text = raw.decode("utf-8-sig" if codec.name == "utf-8" else encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        guess = "utf-16" if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "latin-1"
        raise input_error(
            f"load_csv {path!r}",
            f"text in the encoding {encoding!r}",
            f"byte {raw[err.start]:#04x} on line {line}, which is not valid {encoding}",
            f"pass the file's encoding (e.g. --encoding {guess} on the command line, "
            f"encoding={guess!r} in Python) or save the file as UTF-8",
        ) from None
    return text.removeprefix("\ufeff")


def _sniff(text: str) -> str:
    """The first of ``,`` ``;`` tab that splits the first records into equal widths > 1 (``,``
    when none does: a one-column file, or ragged rows that the caller reports)."""
    for delimiter in _DELIMITERS:
        records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            widths = {len(row) for row in itertools.islice(records, _SNIFF_RECORDS) if any(row)}
        except csv.Error:
            continue
        if len(widths) == 1 and widths.pop() > 1:
            return delimiter
    return ","


def _records(path: str, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """The non-blank records with the file line each starts on (1-based)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, line = [], 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                records.append((line, [cell.strip() for cell in row]))
            line = reader.line_num + 1
    except csv.Error as err:
        raise input_error(
            f"load_csv {path!r} line {reader.line_num}",
            "well-formed CSV",
            str(err),
            "fix that line (an unclosed quote runs to the end of the file)",
        ) from None
    return records


def _check_header(path: str, header: list[str]) -> None:
    first: dict[str, int] = {}
    for column, name in enumerate(header, start=1):
        if not name:
            raise input_error(
                f"load_csv {path!r} header",
                "a name for every column",
                f"column {column} without a name",
                "name it, or remove a trailing delimiter",
            )
        if name in first:
            raise input_error(
                f"load_csv {path!r} header",
                "unique column names",
                f"{name!r} twice (columns {first[name]} and {column})",
                "rename one of them",
            )
        first[name] = column


def load_csv(
    path: str | os.PathLike,
    target: str,
    features: Sequence[str] | None = None,
    task: Literal["auto", "regression", "classification"] = "auto",
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """Read a CSV file with a header row into ``(X, y, task)``.

    The file may start with a UTF-8 byte-order mark and use any line endings (LF, CRLF, CR);
    blank lines are skipped and cells are stripped of surrounding spaces. Cells that are empty
    or read ``NA``, ``N/A``, ``NaN``, ``null``, ``None`` or ``?`` are missing values; a missing
    or non-finite value is refused (never imputed, never taken as a class label). Errors name
    the file line (1-based, the header is line 1) and the data row (1-based, header and blank
    lines not counted).

    Args:
        path: the CSV file (first row: column names, unique and non-empty).
        target: name of the target column.
        features: names of the feature columns (default: every other column).
        task: ``"regression"``, ``"classification"`` or ``"auto"``: classification when every
            target value is text, or when the values are at most 20 distinct integers;
            regression for other numbers; a mix of numbers and text is refused.
        delimiter: field separator; None: the first of ``,`` ``;`` tab that splits the first
            50 records into equal numbers (> 1) of fields, else ``,``.
        encoding: the file's text encoding (``"utf-8"``, ``"latin-1"``, ``"cp1252"``, ...).

    Returns:
        :class:`Dataset` with ``X`` float64 ``(n, d)``; ``y`` float64 for regression, the labels
        (int64 for integers, else strings) for classification.

    Raises:
        InputError: missing file, unknown encoding or bytes that are not in it, malformed CSV,
            empty file, missing, duplicate or unnamed columns, ragged rows, non-numeric feature
            columns (named), missing or non-finite values (line, row and column named), a target
            that mixes numbers and text (``task="auto"``), text targets for regression,
            non-integer numbers for classification.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "data.csv")
        >>> with open(path, "w") as fh:
        ...     _ = fh.write("a;b;y\\n1;2;0.5\\n3;4;1.5\\n5;6;2.5\\n")
        >>> X, y, task = load_csv(path, target="y")
        >>> X.tolist(), y.tolist(), task
        ([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [0.5, 1.5, 2.5], 'regression')
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        got = "a folder" if os.path.isdir(path) else "no such file"
        raise input_error(
            f"load_csv path {path!r}",
            "an existing CSV file",
            got,
            "check the path (relative paths start from the current working directory)",
        )
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise input_error(
            "load_csv delimiter",
            "one character other than a quote or a line break, e.g. ',' ';' or a tab",
            repr(delimiter),
            "pass the separator the file uses, or None to detect , ; or tab",
        )
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise input_error(
            f"load_csv {path!r}", "a readable file", err.strerror, "check its permissions"
        ) from None
    text = _decode(path, raw, encoding)
    delimiter = _sniff(text) if delimiter is None else delimiter
    records = _records(path, text, delimiter)
    if not records:
        raise input_error(f"load_csv {path!r}", "a header row", "an empty file", "add data")
    header, body = records[0][1], records[1:]
    _check_header(path, header)
    if not body:
        raise input_error(
            f"load_csv {path!r}", "at least one data row", "only a header", "add data rows"
        )
    if target not in header:
        hint = f" (fields split at {delimiter!r}: pass the file's delimiter)"
        raise input_error(
            f"load_csv target {target!r}",
            f"a column of {path!r}",
            f"columns {header}" + (hint if len(header) == 1 else ""),
            "pass one of the listed column names as target",
        )
    if features is None:
        features = [name for name in header if name != target]
    else:
        features = list(features)
        missing = [name for name in features if name not in header]
        if missing or target in features:
            raise input_error(
                f"load_csv features {features}",
                "columns of the file other than the target",
                f"missing {missing}" if missing else f"the target {target!r} among them",
                f"pick feature names from the columns {header}",
            )
    if not features:
        raise input_error(
            f"load_csv {path!r}", "at least one feature column", "only the target", "add features"
        )
    for line, row in body:
        if len(row) != len(header):
            raise input_error(
                f"load_csv {path!r} line {line}",
                f"{len(header)} fields like the header",
                f"{len(row)} fields",
                f"fix the row (or an unclosed quote above it) or the delimiter (now {delimiter!r})",
            )

    def where(i: int, column: str, role: str = "column") -> str:
        return f"load_csv {path!r} line {body[i][0]}, {role} {column!r} (data row {i + 1})"

    columns = {name: i for i, name in enumerate(header)}
    y, task = _target(where, [row[columns[target]] for _, row in body], target, task)
    X = np.empty((len(body), len(features)), dtype=np.float64)
    text_cells: dict[str, tuple[int, str]] = {}  # non-numeric column -> its first text cell
    gap: tuple[int, str, str] | None = None  # the first missing or non-finite cell
    for i, (_, row) in enumerate(body):
        for c, name in enumerate(features):
            cell = row[columns[name]]
            value = _number(cell)
            if value is not None and math.isfinite(value):
                X[i, c] = value
            elif value is None and cell.lower() not in _MISSING:
                text_cells.setdefault(name, (i, cell))
            elif gap is None:
                gap = (i, name, cell)
    if text_cells:
        name, (i, cell) = next(iter(text_cells.items()))
        comma = (
            " (decimal commas: write 1.5, not 1,5)" if re.fullmatch(r"[-+]?\d+,\d+", cell) else ""
        )
        raise input_error(
            where(i, name),
            "numeric feature columns",
            f"text {cell!r} (non-numeric columns: {', '.join(map(repr, text_cells))})",
            f"encode categorical features as numbers or leave those columns out{comma}",
        )
    if gap is not None:
        i, name, cell = gap
        raise input_error(
            where(i, name),
            "a finite number",
            _shown(cell),
            "impute or drop missing values and replace infinite ones",
        )
    return Dataset(X, y, task)


def _target(
    where: Callable[[int, str, str], str], cells: list[str], name: str, task: str
) -> tuple[np.ndarray, Task]:
    """The target column as ``(y, task)`` (see :func:`load_csv` for the rules)."""
    if task not in ("auto", "regression", "classification"):
        raise input_error(
            "load_csv task", "'auto', 'regression' or 'classification'", repr(task), "pick one"
        )
    numbers = [_number(cell) for cell in cells]
    for i, (cell, value) in enumerate(zip(cells, numbers, strict=True)):
        if cell.lower() in _MISSING or (value is not None and not math.isfinite(value)):
            raise input_error(
                where(i, name, "target"),
                "a finite number or a class label",
                _shown(cell),
                "drop the rows without a valid target",
            )
    text = [i for i, value in enumerate(numbers) if value is None]
    if task == "auto" and text and len(text) < len(cells):
        i = text[0]
        raise input_error(
            where(i, name, "target"),
            "only numbers (regression, or integer labels) or only labels",
            f"{cells[i]!r} among numbers",
            "fix the value, or pass task='classification' (--task classification) to read "
            "every value as a label",
        )
    if task == "regression" and text:
        i = text[0]
        raise input_error(
            where(i, name, "target"),
            "a finite number (regression target)",
            repr(cells[i]),
            "fix the value, or pass task='classification' for labels",
        )
    if text:
        return np.asarray(cells), "classification"
    values = np.asarray(numbers, dtype=np.float64)
    integral = (values == np.round(values)) & (np.abs(values) <= 2**53)  # exact integers
    if task == "auto":
        few = integral.all() and np.unique(values).size <= _MAX_AUTO_CLASSES
        task = "classification" if few else "regression"
    if task == "regression":
        return values, task
    if not integral.all():
        i = int(np.argmin(integral))
        raise input_error(
            where(i, name, "target"),
            "class labels (text or integers) for classification",
            f"{cells[i]!r}, a continuous value",
            "pass task='regression' (--task regression), or let the task be guessed",
        )
    return values.astype(np.int64), task
