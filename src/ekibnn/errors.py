"""Errors raised for bad input, laid out as *expected / got / what to do*."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = [
    "ComputationError",
    "ConvergenceWarning",
    "FidelityWarning",
    "InputError",
    "OutOfMemoryError",
    "convergence_recorded",
    "explain_out_of_memory",
    "input_error",
]


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


class OutOfMemoryError(InputError, MemoryError):
    """A run that needs more device memory than there is (an :class:`InputError` and a
    ``MemoryError``): raised by :func:`explain_out_of_memory` in place of XLA's
    ``RESOURCE_EXHAUSTED`` error, naming the sizes that set the memory."""


def explain_out_of_memory_error(
    err: BaseException, *, J: int, p: int, m: int | None = None
) -> OutOfMemoryError:
    """Build the :class:`OutOfMemoryError` that replaces XLA's ``RESOURCE_EXHAUSTED`` error
    ``err``: what failed, the sizes J, p, m, and the levers that lower the memory.

    Args:
        err: the original error (its first line is quoted).
        J: ensemble size.
        p: parameters per member.
        m: observations (before minibatching), if known.

    Returns:
        The error (to ``raise ... from None``).

    Example:
        >>> err = RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8000000000 bytes.")
        >>> msg = str(explain_out_of_memory_error(err, J=1000, p=10**6, m=500))
        >>> "(J = 1000 members, p = 1000000 parameters, m = 500 observations)" in msg
        True
    """
    first = (str(err).strip().splitlines() or ["RESOURCE_EXHAUSTED"])[0][:300]
    sizes = f"J = {J} members, p = {p} parameters" + (
        "" if m is None else f", m = {m} observations"
    )
    return OutOfMemoryError(
        f"device memory: expected a run that fits in the device's memory; got {first} "
        f"({sizes}); fix: lower the memory of one step, O(J (m + p) + min(m, J)^2) plus the "
        "forward pass: fewer members J, forward_batch_size= (the forward map on that many "
        "members at a time), batch_size= (minibatches: fewer observations per step), a smaller "
        "model (p), or ekibnn.streaming for inputs that need not live on the device; "
        "docs/scaling.md gives the memory formula"
    )


@contextlib.contextmanager
def explain_out_of_memory(*, J: int, p: int, m: int | None = None) -> Iterator[None]:
    """Inside this block, XLA's out-of-memory error (a ``jax.errors.JaxRuntimeError`` whose
    message starts ``RESOURCE_EXHAUSTED``, raised when compiling or running) becomes ONE
    :class:`OutOfMemoryError` naming J, p, m and the levers (see
    :func:`explain_out_of_memory_error`). The original is dropped (``raise ... from None``), so
    the traceback shows one error, not XLA's followed by "During handling of the above
    exception". Other errors pass through unchanged.

    Args:
        J: ensemble size.
        p: parameters per member.
        m: observations (before minibatching), if known.

    Raises:
        OutOfMemoryError: in place of a ``RESOURCE_EXHAUSTED`` error.

    Example:
        >>> with explain_out_of_memory(J=4, p=3, m=2):
        ...     pass
    """
    import jax  # here, not at the top: the CLI imports this module without JAX

    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise explain_out_of_memory_error(err, J=J, p=p, m=m) from None


class ComputationError(RuntimeError):
    """A compiled run stopped because its numbers failed a check (e.g. every start's objective
    became non-finite): raised by :func:`ekibnn.run` after the failing step, with a message
    laid out as expected / fix. Nothing after the last checkpoint is saved."""


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at its step budget before its convergence test passed (the
    result is returned, but it is not the converged answer): raise the budget the message
    names, or check the model."""


class FidelityWarning(UserWarning):
    """A fidelity self-check failed (:func:`ekibnn.inversion.self_check`,
    ``EKIRegressor.self_check``, :func:`ekibnn.pinn.self_check`): the MAP did not converge, or
    the linearised-Laplace spread disagrees with a nonlinear RML ensemble's by more than the
    Monte-Carlo error allows. The Laplace posterior is returned as it is; its message says
    what was measured and what to do."""


@contextlib.contextmanager
def convergence_recorded() -> Iterator[list[str]]:
    """Collect the :class:`ConvergenceWarning` messages raised inside the block into the
    yielded list (filled when the block ends) instead of emitting them, whatever the warning
    filters say (e.g. ``-W error``); every other warning is emitted as usual. For reports
    (``metrics.json``) that state a fit did not converge rather than die of it."""
    import warnings

    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield messages
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            messages.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
