"""Reports on disk: strict JSON, and output folders checked before any computation.

``metrics.json`` files are strict JSON (RFC 8259: no ``NaN`` or ``Infinity``), so any JSON reader
takes them. A figure that is not a finite number is written as ``null`` with a sibling
``"<name>_undefined"`` saying why; a caller that knows a better reason (``"r2": None,
"r2_undefined": "constant target"``) writes it itself.

Nothing here imports JAX or NumPy: NumPy and JAX scalars and arrays are converted through their
``tolist()``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ekibnn.errors import input_error

__all__ = ["preload_plotting", "prepare_out_dir", "strict", "write_json"]


def _undefined(value: Any) -> str | None:
    """Why a number cannot be written as strict JSON (None when it can)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "not a number (NaN)" if math.isnan(value) else f"infinite ({value})"
    return None


def _python(value: Any) -> Any:
    """NumPy / JAX scalars and arrays as Python numbers and lists."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value


def _plain(value: Any) -> Any:
    value = _python(value)
    if isinstance(value, Mapping):
        return strict(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if _undefined(value):
        return None
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"strict JSON: expected numbers, strings, lists or dicts; got {value!r}")


def strict(report: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``report`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NumPy / JAX scalars and arrays become Python numbers and lists, paths strings; a
    non-finite number becomes ``None``, and in a mapping gains a sibling ``"<key>_undefined"``
    with the reason (a reason already in ``report`` wins).

    Args:
        report: a mapping of names to numbers, strings, None, paths, sequences or mappings.

    Returns:
        A new dict of plain JSON values.

    Raises:
        TypeError: a value of another type (e.g. a function).

    Example:
        >>> strict({"nll": float("inf"), "r2": None, "r2_undefined": "constant"})
        {'nll': None, 'nll_undefined': 'infinite (inf)', 'r2': None, 'r2_undefined': 'constant'}
    """
    out: dict[str, Any] = {}
    for key, value in report.items():
        plain = _plain(value)
        out[str(key)] = plain
        reason = _undefined(_python(value))
        if reason is not None:
            out.setdefault(f"{key}_undefined", reason)
    return out


def write_json(path: str | os.PathLike, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as strict, indented JSON (see :func:`strict`), atomically: a reader sees
    the old file or the new one, never half of one.

    Args:
        path: the file to (over)write; its folder must exist.
        report: what to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the file cannot be written.

    Example:
        >>> import json, os, tempfile
        >>> path = write_json(os.path.join(tempfile.mkdtemp(), "m.json"), {"x": float("nan")})
        >>> json.loads(path.read_text())
        {'x': None, 'x_undefined': 'not a number (NaN)'}
    """
    path = Path(path)
    text = json.dumps(strict(report), indent=2, allow_nan=False) + "\n"
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as fh:
        fh.write(text)
    os.replace(fh.name, path)
    return path


def prepare_out_dir(
    out_dir: str | os.PathLike, names: Iterable[str] = (), what: str = "out_dir"
) -> Path:
    """Create an output folder now and check that it can take the files ``names``, so that a
    long computation never ends on a path it cannot write.

    Args:
        out_dir: the folder (created with its parents if missing).
        names: the files that will be written there.
        what: the argument named in the error message (e.g. ``"--out"``).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path` (the folder exists).

    Raises:
        InputError: ``out_dir`` is a file or lies under one, cannot be created or written, or
            one of ``names`` is a folder or a file this user cannot overwrite.

    Example:
        >>> import os, tempfile
        >>> file = os.path.join(tempfile.mkdtemp(), "taken")
        >>> open(file, "w").close()
        >>> try:
        ...     prepare_out_dir(os.path.join(file, "out"), what="--out")
        ... except ValueError as err:
        ...     print(str(err).split("; ")[1][:26])
        got a path under a file ('
    """
    out = Path(out_dir)
    expected = "a folder to write into (existing or new)"
    fix = "pass another folder"
    try:
        for level in (out, *out.parents):
            if level.exists():
                if not level.is_dir():
                    where = "a file" if level == out else "a path under a file"
                    raise input_error(what, expected, f"{where} ({str(level)!r})", fix)
                break
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
        for name in names:
            target = out / name
            if target.is_dir() or (target.exists() and not os.access(target, os.W_OK)):
                kind = "a folder" if target.is_dir() else "a read-only file"
                raise input_error(
                    what, f"a folder where {name} can be written", f"{kind} {str(target)!r}", fix
                )
    except OSError as err:
        raise input_error(what, expected, f"{str(out)!r}: {err.strerror}", fix) from None
    return out


def preload_plotting() -> None:
    """Start importing :mod:`ekibnn.plotting` (matplotlib: about 0.7 s) in a daemon thread, so
    that it loads while a fit runs (the compiled loop releases the GIL). A later
    ``from ekibnn import plotting`` waits for that import to finish (Python's module lock); an
    error in it surfaces there, in the caller's thread, not in the preloading one."""
    if "ekibnn.plotting" not in sys.modules:
        threading.Thread(
            target=_import_quietly, args=("ekibnn.plotting",), daemon=True, name="preload"
        ).start()


def _import_quietly(name: str) -> None:
    try:
        __import__(name)
    except Exception:  # the caller's own import raises it again, in its thread
        pass
