"""Argument checks shared by the public entry points (``run``, ``GaussianPrior.sample``, the
algorithms): each raises an :class:`ekibnn.InputError` laid out as expected / got / fix, before
anything is compiled. They only look at shapes and dtypes, so they also accept traced values.
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ekibnn.errors import input_error

__all__ = ["check_key", "positive_int"]


def _legacy_key_shape() -> tuple[int, ...]:
    """Shape of a raw ``jax.random.PRNGKey`` under the configured default implementation
    (``(2,)`` for threefry; traced only, nothing is computed)."""
    return tuple(jax.eval_shape(jax.random.PRNGKey, 0).shape)


def check_key(key: Any, what: str = "key") -> None:
    """Raise unless ``key`` is ONE JAX PRNG key.

    Accepted: a new-style typed key (``jax.random.key(seed)``, dtype ``key<impl>``, shape
    ``()``) or a legacy raw key (``jax.random.PRNGKey(seed)``, ``uint32`` of shape ``(2,)`` for
    the default threefry implementation). Refused: a Python or NumPy integer seed, a batch of
    keys, any other array.

    Args:
        key: the value to check (concrete or traced).
        what: the argument's name in the message.

    Raises:
        InputError: if ``key`` is not a single PRNG key.

    Example:
        >>> import jax
        >>> check_key(jax.random.key(0)); check_key(jax.random.PRNGKey(0))
        >>> try:
        ...     check_key(0)
        ... except ValueError as err:
        ...     print(str(err).split("; ")[1])
        got the int 0
    """
    expected = "a JAX PRNG key, jax.random.key(seed) (or a legacy jax.random.PRNGKey(seed))"
    fix = "pass jax.random.key(seed), e.g. jax.random.key(0), instead of the seed itself"
    if not isinstance(key, jax.Array | np.ndarray):
        shown = str(key) if isinstance(key, int | float | np.number) else repr(key)
        raise input_error(what, expected, f"the {type(key).__name__} {shown}"[:200], fix)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise input_error(
                what,
                "one PRNG key (shape ())",
                f"a batch of keys of shape {tuple(key.shape)}",
                "pass a single key, e.g. keys[0], or jax.random.key(seed)",
            )
        return
    legacy = _legacy_key_shape()
    if np.dtype(key.dtype) != np.uint32 or tuple(key.shape) != legacy:
        raise input_error(
            what,
            expected + f" (a raw key is uint32 of shape {legacy})",
            f"an array of dtype {key.dtype} and shape {tuple(key.shape)}",
            fix,
        )


def positive_int(value: Any, what: str, example: str) -> int:
    """Return ``value`` as a Python ``int`` if it is a positive integer (``int``, a NumPy
    integer such as ``np.int64(5)``, or a concrete integer 0-d array), else raise.

    Args:
        value: the value to check.
        what: the argument's name in the message.
        example: what to pass instead (completes "fix: ...").

    Returns:
        ``int(value)``.

    Raises:
        InputError: for booleans, floats, non-positive integers and anything else.

    Example:
        >>> import numpy as np
        >>> positive_int(np.int64(5), "num_steps", "pass e.g. 500")
        5
        >>> positive_int(0, "num_steps", "pass e.g. 500")
        Traceback (most recent call last):
        ...
        ekibnn.errors.InputError: num_steps: expected a positive integer; got 0; fix: pass e.g. 500
    """
    is_bool = isinstance(value, bool | np.bool_) or getattr(value, "dtype", None) == np.bool_
    try:
        number = None if is_bool else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        raise input_error(what, "a positive integer", repr(value)[:200], example)
    return int(number)


# ------------------------------------------------------------------------ run-time checks
_DEFERRED: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "ekibnn_deferred_checks", default=None
)


def runtime_check(x: Any, failed: Any, message: str) -> Any:
    """Return ``x``; fail with ``message`` at run time where ``failed`` (a boolean array) has a
    True entry.

    Inside :func:`ekibnn.run`'s compiled loop (:func:`deferred_checks`) the failure is carried
    as a value: the loop stops after the failing step and ``run`` raises
    :class:`ekibnn.errors.ComputationError`. No host callback is compiled in, so the loop
    stays in JAX's persistent compilation cache (XLA does not cache programs with host
    callbacks). Elsewhere (a step traced by the user) it is ``eqx.error_if``. Call it where
    the step itself is traced, not inside a ``vmap``, ``cond`` or ``scan`` of its own (the
    deferred flag would leak from that inner trace: JAX then refuses at trace time)."""
    checks = _DEFERRED.get()
    if checks is None:
        import equinox as eqx

        return eqx.error_if(x, failed, message)
    checks.append((jnp.any(failed), message))
    return x


@contextlib.contextmanager
def deferred_checks() -> Iterator[list]:
    """Collect the :func:`runtime_check` calls traced inside the block as
    ``(failed, message)`` pairs (see :func:`failure_code`)."""
    checks: list = []
    token = _DEFERRED.set(checks)
    try:
        yield checks
    finally:
        _DEFERRED.reset(token)


def failure_code(checks: list) -> tuple[Any, tuple[str, ...]]:
    """The first failing check of :func:`deferred_checks`' pairs as an int32 code (0: none
    failed, ``k + 1``: the k-th message) and the messages (static)."""
    code = jnp.int32(0)
    for k in reversed(range(len(checks))):
        code = jnp.where(checks[k][0], jnp.int32(k + 1), code)
    return code, tuple(message for _, message in checks)
