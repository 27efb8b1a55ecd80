"""Errors raised for bad input, laid out as *expected / got / what to do*."""

from __future__ import annotations

__all__ = ["InputError", "input_error"]


class InputError(ValueError):
    """Bad input to an ekibnn function (a ``ValueError`` subclass)."""


def input_error(what: str, expected: str, got: str, fix: str) -> InputError:
    """Build an :class:`InputError` whose message says what was expected, what was given and
    what to do.

    Example:
        >>> str(input_error("y", "a finite array", "NaN at index 3", "drop or impute it"))
        'y: expected a finite array; got NaN at index 3; fix: drop or impute it'
    """
    return InputError(f"{what}: expected {expected}; got {got}; fix: {fix}")
