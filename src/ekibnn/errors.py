"""Errors raised for bad input, laid out as *expected / got / what to do*."""

from __future__ import annotations

__all__ = ["InputError", "input_error"]


class InputError(ValueError):
    """Bad input to an ekibnn function (a ``ValueError`` subclass).

    Its message says what was expected, what was given and what to do (see
    :func:`input_error`); it is raised when an object is built or an algorithm initialised,
    before anything is compiled.

    Example:
        >>> import jax.numpy as jnp, ekibnn as ek
        >>> try:
        ...     ek.Observation(jnp.zeros((3, 2)), noise=0.1)
        ... except ek.InputError as err:
        ...     print(*str(err).split("; "), sep=";\\n")
        Observation y: expected a 1-D array of shape (m,);
        got shape (3, 2);
        fix: flatten your data, e.g. y.reshape(-1), and make forward_fn return the same order
    """


def input_error(what: str, expected: str, got: str, fix: str) -> InputError:
    """Build an :class:`InputError` whose message says what was expected, what was given and
    what to do.

    Args:
        what: the argument or object at fault.
        expected: what was expected.
        got: what was given.
        fix: what to do about it.

    Returns:
        The :class:`InputError` (to ``raise``).

    Example:
        >>> str(input_error("y", "a finite array", "NaN at index 3", "drop or impute it"))
        'y: expected a finite array; got NaN at index 3; fix: drop or impute it'
    """
    return InputError(f"{what}: expected {expected}; got {got}; fix: {fix}")
