"""Property-based tests (Hypothesis) of the CSV loader and of the command line's checks.

Small and fast: a few dozen examples each, no deadline (the machine may be loaded), files in one
folder per test module.
"""

import codecs
import csv
import io
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ekibnn import cli
from ekibnn.datasets import load_csv
from ekibnn.errors import InputError

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

UNICODE = st.characters(exclude_categories=("Cs",), exclude_characters="\x00\ufeff")
LATIN1 = st.characters(codec="latin-1", exclude_characters="\x00")
CODECS = {"utf-8": UNICODE, "utf-8-sig": UNICODE, "utf-16": UNICODE, "latin-1": LATIN1}
numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def tables(draw, alphabet=UNICODE):
    """``(header, rows)``: 2-4 unique stripped names (the last one the target; quotes,
    delimiters and line breaks allowed) over 1-6 rows of finite floats."""
    name = st.text(alphabet, min_size=1, max_size=8).map(str.strip).filter(bool)
    header = draw(st.lists(name, min_size=2, max_size=4, unique=True))
    width = len(header)
    rows = draw(st.lists(st.lists(numbers, min_size=width, max_size=width), min_size=1, max_size=6))
    return header, rows


def _text(header, rows, delimiter=",", newline="\n", cells=None) -> str:
    """CSV text; ``cells`` maps ``(row, column)`` to a cell that replaces the number there."""
    buffer = io.StringIO()
    broken = any(c in name for name in header for c in "\r\n")  # csv quotes only `newline`
    quoting = csv.QUOTE_ALL if broken else csv.QUOTE_MINIMAL
    csv.writer(buffer, delimiter=delimiter, lineterminator=newline, quoting=quoting).writerow(
        header
    )
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    for i, row in enumerate(rows):
        writer.writerow([(cells or {}).get((i, j), repr(v)) for j, v in enumerate(row)])
    return buffer.getvalue()


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tmp_path_factory.mktemp("csv") / "data.csv"


@SETTINGS
@given(
    data=st.data(),
    encoding=st.sampled_from(sorted(CODECS)),
    delimiter=st.sampled_from([",", ";", "\t"]),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    given_delimiter=st.booleans(),
    blank_lines=st.booleans(),
)
def test_csv_round_trip(path, data, encoding, delimiter, newline, given_delimiter, blank_lines):
    """Whatever the names (quotes, delimiters, line breaks inside), delimiter (given or
    detected), line endings, blank lines, BOM and encoding, the loader reads back exactly what
    was written."""
    header, rows = data.draw(tables(CODECS[encoding]))
    text = _text(header, rows, delimiter, newline)
    if blank_lines:
        text = newline + text + newline
    path.write_bytes(text.encode(encoding))
    X, y, task = load_csv(
        path,
        header[-1],
        task="regression",
        delimiter=delimiter if given_delimiter else None,
        encoding="utf-8" if encoding == "utf-8-sig" else encoding,
    )
    assert task == "regression"
    np.testing.assert_array_equal(X, np.array([row[:-1] for row in rows]).reshape(len(rows), -1))
    np.testing.assert_array_equal(y, [row[-1] for row in rows])


@SETTINGS
@given(table=tables(), data=st.data())
def test_csv_duplicate_header_refused(path, table, data):
    header, rows = table
    copy = data.draw(st.sampled_from(header))
    at = data.draw(st.integers(0, len(header)))
    header = [*header[:at], copy, *header[at:]]
    path.write_text(_text(header, [[*row, 0.0] for row in rows]), encoding="utf-8")
    with pytest.raises(InputError, match=f"{re.escape(repr(copy))} twice"):
        load_csv(path, header[-1])


@SETTINGS
@given(
    table=tables(),
    data=st.data(),
    cell=st.sampled_from(["", "NA", "n/a", "nan", "NaN", "null", "None", "?", "inf", "-inf"]),
    task=st.sampled_from(["auto", "regression", "classification"]),
)
def test_csv_missing_or_non_finite_cell_named_by_row_and_column(path, table, data, cell, task):
    """A missing or non-finite value anywhere is refused with its file line, data row and column,
    whatever the task: the task is never guessed from it."""
    header, rows = table
    if task == "classification":  # valid labels, so that only the bad cell is wrong
        rows = [[*row[:-1], float(j % 3)] for j, row in enumerate(rows)]
    i = data.draw(st.integers(0, len(rows) - 1))
    j = data.draw(st.integers(0, len(header) - 1))
    path.write_text(_text(header, rows, cells={(i, j): cell}), encoding="utf-8")
    role = "target" if j == len(header) - 1 else "column"
    line = i + 2 + len(re.findall(r"\r\n|\r|\n", ",".join(header)))  # quoted line breaks
    where = f"line {line}, {role} {header[j]!r} (data row {i + 1})"
    with pytest.raises(InputError, match=re.escape(where)):
        load_csv(path, header[-1], task=task)


@SETTINGS
@given(table=tables(LATIN1), char=st.characters(min_codepoint=0xA1, max_codepoint=0xFF))
def test_csv_wrong_encoding_is_explained(path, table, char):
    """Latin-1 bytes read as UTF-8: a message naming the encoding; with it, the file reads."""
    header, rows = table
    header = [f"{char}x{header[0]}", *header[1:]]  # a byte > 0xA0 then ASCII: never UTF-8
    path.write_bytes(_text(header, rows).encode("latin-1"))
    with pytest.raises(InputError, match="--encoding latin-1"):
        load_csv(path, header[-1])
    X, _, _ = load_csv(path, header[-1], encoding="latin-1", task="regression")
    assert X.shape == (len(rows), len(header) - 1)


runner = CliRunner()


@pytest.fixture(scope="module")
def taken(tmp_path_factory):
    """A file where the commands want a folder: a valid command line ends on the --out check,
    so no example computes anything."""
    file = tmp_path_factory.mktemp("out") / "taken"
    file.write_text("")
    return str(file)


def _refused_option(args: list[str]) -> str:
    result = runner.invoke(cli.app, args, env={"EKIBNN_NO_COMPILE_CACHE": "1"})
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return re.match(r"error: (\S+):", lines[0]).group(1)


@SETTINGS
@given(
    noise=st.floats() | st.sampled_from([0.0, -0.0, math.inf, math.nan]),
    scale=st.floats() | st.sampled_from([1.0, 0.5, 1e-300]),
    seed=st.integers(-(2**40), 2**40),
)
def test_pinn_numbers_refused_by_name(taken, noise, scale, seed):
    """Each bad number is refused by name (the first bad one, in the order checked); a command
    line with none ends at --out."""
    numbers = ["--noise", repr(noise), "--scale", repr(scale), "--seed", str(seed)]
    refused = _refused_option(["pinn", "poisson1d", *numbers, "--out", taken])
    checks = [
        ("--noise", 0 < noise < math.inf),
        ("--seed", 0 <= seed < 2**32),
        ("--scale", 0 < scale <= 1),
        ("--out", True),
    ]
    assert refused == next(name for name, ok in checks if not ok or name == "--out")


@SETTINGS
@given(n=st.integers(1, 30), test_size=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True))
def test_split_refused_exactly_when_scikit_learn_would_fail(n, test_size):
    from sklearn.model_selection import train_test_split

    y = np.arange(n, dtype=float)
    try:
        cli._check_split(y, "regression", test_size)
        refused = False
    except cli._Refused:
        refused = True
    try:
        train_test_split(y, test_size=test_size, random_state=0)
        fails = False
    except ValueError:
        fails = True
    assert refused == fails


@SETTINGS
@given(
    counts=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    test_size=st.floats(0.05, 0.95),
)
def test_stratified_split_refused_exactly_when_scikit_learn_fails(counts, test_size):
    from sklearn.model_selection import train_test_split

    y = np.repeat(np.arange(len(counts)), counts)
    try:
        cli._check_split(y, "classification", test_size)
        refused = False
    except cli._Refused:
        refused = True
    try:
        train_test_split(y, test_size=test_size, random_state=0, stratify=y)
        fails = len(counts) < 2  # one class: nothing to classify
    except ValueError:
        fails = True
    assert refused == fails


def test_sniffer_prefers_the_consistent_delimiter(path):
    """A ';' file whose decimal commas would fool a frequency count."""
    path.write_bytes(codecs.BOM_UTF8 + b"a;b;y\r\n1,5;2;3\r\n2,5;3;4\r\n")
    with pytest.raises(InputError, match=r"decimal commas"):
        load_csv(path, "y")
