"""A deterministic walk over everything an algorithm (or any value) holds.

Pytrees only see their leaves; an algorithm built from closures (``KalmanAlgorithm(init,
step)``) holds its observations and prior in the closures' cells, and an Equinox module keeps
functions and settings in static fields. :func:`walk` visits all of it: arrays, scalars,
containers (tuples, lists, dicts, NamedTuples), dataclasses and Equinox modules (every field,
static ones included), registered pytree nodes, ``functools.partial`` objects, bound methods,
wrapped callables (``jax.jit``) and the closure cells and defaults of Python functions.

The module globals a Python function reads (``H`` in ``lambda th: H @ th`` written at the top
of a script) count as part of it, except for ekibnn's own functions (their globals are ekibnn's
code, identified by its version). Deliberately NOT walked: the closures and globals of functions
defined in the numerical libraries (JAX, NumPy, Equinox, ...), which hold library internals such
as caches that differ between processes; those are described by their ``module.qualname``
only. Other objects (e.g. a host-data reader) are
described by their type only. Every description is free of memory addresses, so it is the same
in every process.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["Node", "first_instance", "walk"]

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
# Functions from these packages are described by name, never walked into.
_LIBRARIES = frozenset(
    "jax jaxlib numpy scipy equinox lineax optimistix optax jaxtyping ml_dtypes typing "
    "functools builtins threadpoolctl tqdm sklearn".split()
)
_MAX_DEPTH = 64


class Node(NamedTuple):
    """One visited value.

    Attributes:
        path: where it was found, e.g. ``.step.predict.obs.y`` (fields and closure variables
            with ``.``, items with ``[...]``).
        kind: ``"array"`` (a JAX or NumPy array, ``value`` is it), ``"value"`` (a terminal
            non-array value, described by ``text``), ``"node"`` (a container or function whose
            children follow) or ``"ref"`` (an object already visited at another path).
        value: the object itself.
        text: its description (type, ``module.qualname`` or ``repr`` of a scalar).
        owner: the object holding it (``None`` at the root).
        name: its field, attribute or closure-variable name in ``owner`` (``""`` for items).
    """

    path: str
    kind: str
    value: Any
    text: str
    owner: Any
    name: str


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{module}.{name}" if name else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _is_library(fn: Any) -> bool:
    module = getattr(fn, "__module__", None) or ""
    return module.split(".")[0] in _LIBRARIES


def _global_names(fn: types.FunctionType) -> list[str]:
    """The module globals ``fn``'s code (nested lambdas and comprehensions included) reads,
    sorted (attribute names that are not globals are dropped)."""
    names: set[str] = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return sorted(n for n in names if n in fn.__globals__)


def is_array(obj: Any) -> bool:
    """Whether ``obj`` is a JAX array (traced or not) or a NumPy array / scalar."""
    return isinstance(obj, jax.Array | np.ndarray | np.generic)


def _children(obj: Any) -> tuple[str, list[tuple[str, str, Any]]]:
    """``(description, [(path suffix, name, child), ...])`` of a non-terminal object."""
    if dataclasses.is_dataclass(obj):
        fields = [
            (f".{f.name}", f.name, getattr(obj, f.name, None)) for f in dataclasses.fields(obj)
        ]
        return _qualname(type(obj)), fields
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return _qualname(type(obj)), [(f".{n}", n, getattr(obj, n)) for n in obj._fields]
    if isinstance(obj, list | tuple):
        return f"{type(obj).__name__} of {len(obj)}", [(f"[{i}]", "", x) for i, x in enumerate(obj)]
    if isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: repr(kv[0]))
        return f"dict of {len(obj)}", [(f"[{k!r}]", str(k), v) for k, v in items]
    if isinstance(obj, functools.partial):
        parts = [(".func", "func", obj.func)]
        parts += [(f".args[{i}]", "", a) for i, a in enumerate(obj.args)]
        parts += [(f".keywords[{k!r}]", k, v) for k, v in sorted(obj.keywords.items())]
        return f"partial {_qualname(type(obj))}", parts
    if isinstance(obj, types.FunctionType):
        text = f"function {_qualname(obj)}"
        if _is_library(obj):
            return text, []
        cells = zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True)
        parts = []
        for name, cell in cells:
            try:
                parts.append((f".{name}", name, cell.cell_contents))
            except ValueError:  # an empty cell (a variable not yet assigned)
                parts.append((f".{name}", name, "<empty cell>"))
        if (obj.__module__ or "").split(".")[0] != "ekibnn":  # ekibnn's globals are its code
            parts += [(f".<global {n}>", n, obj.__globals__[n]) for n in _global_names(obj)]
        parts += [(f".<default {i}>", "", d) for i, d in enumerate(obj.__defaults__ or ())]
        parts += [(f".<default {k}>", k, v) for k, v in sorted((obj.__kwdefaults__ or {}).items())]
        return text, parts
    if isinstance(obj, types.MethodType):
        return f"method {_qualname(obj)}", [
            (".__self__", "__self__", obj.__self__),
            (".__func__", "__func__", obj.__func__),
        ]
    if callable(obj) and hasattr(obj, "__wrapped__"):
        text = f"{type(obj).__name__} {_qualname(obj)}"
        return text, [] if _is_library(obj) else [(".__wrapped__", "", obj.__wrapped__)]
    try:
        flat, _ = jax.tree_util.tree_flatten_with_path(obj, is_leaf=lambda x: x is not obj)
    except Exception:  # a pytree node that cannot be flattened: describe by type
        flat = [((), obj)]
    if not (len(flat) == 1 and flat[0][1] is obj):
        return _qualname(type(obj)), [(jax.tree_util.keystr(p), "", x) for p, x in flat]
    if callable(obj):
        return f"{type(obj).__name__} {_qualname(obj)}", []
    return f"object of type {_qualname(type(obj))}", []


def _terminal(obj: Any) -> str | None:
    """The description of a value that has no children and may be shared (scalars, types,
    modules, dtypes, enum members), else ``None``."""
    if isinstance(obj, enum.Enum):
        return f"{_qualname(type(obj))}.{obj.name}"
    if isinstance(obj, _SCALARS):
        return repr(obj)
    if isinstance(obj, type):
        return f"class {_qualname(obj)}"
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    if isinstance(obj, np.dtype):
        return f"dtype {obj}"
    return None


def walk(obj: Any, path: str = "") -> Iterator[Node]:
    """Visit ``obj`` and everything it holds, depth first, in a deterministic order.

    An object reached twice (by identity) is visited once; later paths yield a ``"ref"`` node
    naming the first path. The walk keeps every visited object alive while it runs, so
    identities are never reused.

    Args:
        obj: any value (an algorithm, an ensemble, a state).
        path: the root's path prefix.

    Yields:
        :class:`Node` s: containers and functions (``"node"``) before their children.

    Example:
        >>> import jax.numpy as jnp
        >>> def shifted(x):
        ...     return lambda t: t + x
        >>> [(n.path, n.kind) for n in walk({"f": shifted(jnp.zeros(2)), "n": 3})]
        [('', 'node'), ("['f']", 'node'), ("['f'].x", 'array'), ("['n']", 'value')]
    """
    seen: dict[int, str] = {}
    alive: list[Any] = []

    def visit(obj: Any, path: str, owner: Any, name: str, depth: int) -> Iterator[Node]:
        text = _terminal(obj)
        if text is not None:
            yield Node(path, "value", obj, text, owner, name)
            return
        if id(obj) in seen:
            yield Node(path, "ref", obj, f"same as {seen[id(obj)] or '<root>'}", owner, name)
            return
        seen[id(obj)] = path
        alive.append(obj)
        if is_array(obj):
            yield Node(path, "array", obj, "", owner, name)
            return
        if depth > _MAX_DEPTH:
            yield Node(path, "value", obj, "<nested too deeply>", owner, name)
            return
        text, children = _children(obj)
        yield Node(path, "node" if children else "value", obj, text, owner, name)
        for suffix, child_name, child in children:
            yield from visit(child, path + suffix, obj, child_name, depth + 1)

    yield from visit(obj, path, None, "", 0)


def first_instance(obj: Any, cls: type) -> Any:
    """The first object of type ``cls`` that :func:`walk` meets in ``obj``, else ``None``.

    Example:
        >>> first_instance({"a": [1, (2.5, "x")]}, float)
        2.5
    """
    for node in walk(obj):
        if isinstance(node.value, cls):
            return node.value
    return None
