"""``run``: the compiled driver for any ``init``/``step`` algorithm.

The iteration runs inside ``jax.lax.while_loop`` in chunks of steps; the host only sees chunk
boundaries, where it advances the progress bar, appends the history and writes checkpoints.
The loop stops early when the algorithm's state says ``done`` (a scheduler reached its final
time or a stopping rule fired). Step ``n`` always uses the key ``fold_in(key, n)``, so the result
does not depend on how the steps are chunked, and a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray, PyTree
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ekibnn import checkpoint as ckpt
from ekibnn._checks import check_key, deferred_checks, failure_code, positive_int
from ekibnn._walk import first_instance
from ekibnn.ensemble import ensemble_size
from ekibnn.errors import ComputationError, explain_out_of_memory, input_error
from ekibnn.inversion.kernel import KalmanAlgorithm
from ekibnn.observations import Observation

__all__ = ["RunResult", "blas_limits", "run", "shard_ensemble", "with_blas_limits"]


class RunResult(NamedTuple):
    """What :func:`run` returns.

    Attributes:
        state: the algorithm's final state (e.g. :class:`ekibnn.EnsembleState`).
        history: the per-step info NamedTuple with every field a NumPy array of length
            ``num_steps`` (the steps actually taken).
        num_steps: steps taken (fewer than asked when the algorithm stopped itself).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.eki(lambda th: th, ek.Observation(jnp.ones(2), 0.5), prior=prior)
        >>> res = ek.run(jax.random.key(0), algo, prior.sample(jax.random.key(1), 50), 100,
        ...              progress=False)
        >>> res.particles.shape, res.history.misfit.shape == (res.num_steps,)
        ((50, 2), True)
        >>> bool(res.state.done), round(float(res.history.time[-1]), 6)  # stopped at T = 1
        (True, 1.0)
    """

    state: Any
    history: Any
    num_steps: int

    @property
    def particles(self) -> PyTree:
        """The final state's members (``state.particles``): the ensemble (pytree, leading axis
        J), or for UKI the ``2p + 1`` points that reproduce its mean and covariance."""
        return self.state.particles


def shard_ensemble(tree: Any, mesh: jax.sharding.Mesh, num_members: int) -> Any:
    """Place every array leaf whose leading axis has size ``num_members`` sharded along the
    mesh's first axis, and every other array leaf replicated.

    Args:
        tree: any pytree (an algorithm state, an ensemble).
        mesh: a ``jax.sharding.Mesh``; its first axis shards the ensemble.
        num_members: the ensemble size J (must be divisible by the size of that axis).

    Returns:
        The pytree with its array leaves placed with ``NamedSharding``.

    Raises:
        InputError: if J is not divisible by the number of devices on the axis.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpy as np
        >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("ensemble",))
        >>> placed = shard_ensemble({"x": jnp.zeros((4, 3)), "t": jnp.zeros(())}, mesh, 4)
        >>> placed["x"].sharding.spec == jax.sharding.PartitionSpec("ensemble")
        True
    """
    axis = mesh.axis_names[0]
    devices = mesh.shape[axis]
    if num_members % devices:
        raise input_error(
            "mesh",
            f"an ensemble size divisible by the {devices} devices on mesh axis {axis!r}",
            f"J = {num_members}",
            f"use J = {devices * max(1, round(num_members / devices))} or a smaller mesh",
        )
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def place(leaf):
        if not eqx.is_array(leaf):
            return leaf
        target = sharded if leaf.ndim and leaf.shape[0] == num_members else replicated
        return jax.device_put(leaf, target)

    return jax.tree_util.tree_map(place, tree)


@eqx.filter_jit
def _run_chunk(algo: KalmanAlgorithm, chunk_len: int, key, state, start, limit):
    """At most ``limit`` (<= chunk_len) steps inside one ``while_loop``, stopping early on
    ``state.done`` or a failed run-time check; returns ``(state, infos, taken, failure,
    messages)`` with infos in ``(chunk_len, ...)`` buffers, ``failure`` the failed check's code
    (0: none; :func:`ekibnn._checks.failure_code`) and its ``messages`` (static). Jitted once
    per (algorithm, chunk length, state shapes): new keys and new starting points reuse the
    compiled loop."""
    dynamic, static = eqx.partition(state, eqx.is_array)
    algo_dynamic, algo_static = eqx.partition(algo, eqx.is_array)
    messages: list = []

    def checked_step(algo_dynamic, key, dynamic):
        with deferred_checks() as checks:
            state, info = eqx.combine(algo_dynamic, algo_static).step(
                key, eqx.combine(dynamic, static)
            )
        failure, messages[:] = failure_code(checks)
        return eqx.filter(state, eqx.is_array), info, failure

    # the step is traced ONCE: its jaxpr gives the info buffers' shapes and is replayed in the
    # loop body (tracing a network's step costs about as much as compiling a small program)
    step_jaxpr, (_, info_shape, _) = jax.make_jaxpr(checked_step, return_shape=True)(
        algo_dynamic, key, dynamic
    )
    step_out = jax.tree_util.tree_structure((dynamic, info_shape, jnp.int32(0)))
    buffers = jax.tree_util.tree_map(
        lambda x: jnp.zeros((chunk_len, *x.shape), x.dtype), info_shape
    )

    def cond(carry):
        i, dynamic, _, failure = carry
        return (i < limit) & ~eqx.combine(dynamic, static).done & (failure == 0)

    def body(carry):
        i, dynamic, buffers, _ = carry
        flat_in = jax.tree_util.tree_leaves(
            (algo_dynamic, jax.random.fold_in(key, start + i), dynamic)
        )
        dynamic, info, failure = jax.tree_util.tree_unflatten(
            step_out, jax.core.eval_jaxpr(step_jaxpr.jaxpr, step_jaxpr.consts, *flat_in)
        )
        buffers = jax.tree_util.tree_map(lambda b, v: b.at[i].set(v), buffers, info)
        return i + 1, dynamic, buffers, failure

    taken, dynamic, buffers, failure = jax.lax.while_loop(
        cond, body, (jnp.int32(0), dynamic, buffers, jnp.int32(0))
    )
    return eqx.combine(dynamic, static), buffers, taken, failure, tuple(messages)


def _host_array(leaf: jax.Array) -> np.ndarray:
    if getattr(leaf, "is_fully_addressable", True):
        return np.asarray(leaf)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def _sizes(algo: Any, particles: PyTree) -> dict[str, int | None]:
    """J, p and m (the first :class:`~ekibnn.Observation` the algorithm holds), for the
    out-of-memory message."""
    members = ensemble_size(particles)
    leaves = jax.tree_util.tree_leaves(eqx.filter(particles, eqx.is_inexact_array))
    obs = first_instance(algo, Observation)
    return {
        "J": members,
        "p": sum(x.size for x in leaves) // members,
        "m": None if obs is None else obs.size,
    }


def _save_checkpoint(path: Path, fingerprint: dict, state: Any, history: list, steps: int):
    # In a multi-process run each process holds only its shards: gather them (a collective,
    # so every process takes part) and let process 0 write the file.
    leaves = [_host_array(leaf) for leaf in ckpt.state_leaves(state)]
    if jax.process_index() != 0:
        return
    merged = {
        name: np.concatenate([getattr(h, name) for h in history])
        for name in (history[0]._fields if history else ())
    }
    ckpt.save(path, fingerprint, leaves, merged, steps)


def blas_limits(threads: int = 1) -> threadpool_limits:
    """Limit the BLAS/LAPACK libraries to ``threads`` threads until the returned
    ``threadpoolctl`` limiter is restored (``with blas_limits(): ...`` or
    ``.restore_original_limits()``).

    XLA's CPU backend sends its linear algebra (Cholesky, triangular solves, eigh, SVD) to
    SciPy's LAPACK, whose OpenBLAS runs its own thread pool beside XLA's. Its idle threads
    spin, so on few cores the two pools compete for the same cores. SciPy's library is loaded
    here first: JAX loads it only when a program with such a call is lowered, and
    ``threadpoolctl`` limits only the libraries already loaded.
    """
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, which XLA's LAPACK calls use)

    return threadpool_limits(threads, user_api="blas")


def with_blas_limits(fn: Callable) -> Callable:
    """``fn`` run inside :func:`blas_limits` (one thread), as :func:`run` runs its loop."""

    @functools.wraps(fn)
    def limited(*args: Any, **kwargs: Any) -> Any:
        with blas_limits(1):
            return fn(*args, **kwargs)

    return limited


def run(
    key: PRNGKeyArray,
    algo: KalmanAlgorithm,
    particles: PyTree,
    num_steps: int,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    chunk_size: int | None = None,
    blas_threads: int | None = 1,
    mesh: jax.sharding.Mesh | None = None,
) -> RunResult:
    """Run ``algo`` from ``particles`` for at most ``num_steps`` steps, compiled.

    Args:
        key: a JAX PRNG key; step ``n`` uses ``fold_in(key, n)``.
        algo: an ``init``/``step`` pair, e.g. from :func:`ekibnn.eki`.
        particles: the initial ensemble (leading axis J on every parameter leaf). When resuming
            from a checkpoint, pass the same initial ensemble again: it is part of the run's
            fingerprint.
        num_steps: the maximum number of steps; fewer are taken when the algorithm stops itself
            (e.g. the data-misfit scheduler reaching T = 1).
        progress: show a progress bar (updated at chunk boundaries, from the host).
        checkpoint_path: if given, the state and history are saved there (atomically and
            durably, see :mod:`ekibnn.checkpoint`) every ``checkpoint_every`` steps and at the
            end; if the file exists, the run resumes from it and the result is bit-identical to
            an uninterrupted run. The file records a fingerprint of the run (algorithm and its
            settings, observations, noise, prior, initial particles, key, state layout, ekibnn
            version): a checkpoint of another run is refused, saying what differs. A checkpoint
            holding fewer steps than ``num_steps`` continues to ``num_steps``; one holding more
            is refused (its state at ``num_steps`` is not in the file). The path is checked
            before the first step (a file in an existing, writable folder).
        checkpoint_every: steps between checkpoints (default: ``max(1, num_steps // 10)``).
        chunk_size: steps per compiled chunk (default: ``checkpoint_every`` if checkpointing,
            else about 1/20 of the run when ``progress`` else the whole run). The compiled
            loop depends on it: runs of different lengths that pass the same ``chunk_size``
            share one compilation.
        blas_threads: threads the BLAS/LAPACK library behind XLA's linear-algebra calls
            (Cholesky, triangular solves) may use while the loop runs; ``None`` leaves it alone.
            The default 1 stops those calls from competing with XLA's own thread pool for the
            same cores (measured on 2 cores: the tutorial demo 22-26 s -> 15-16 s).
        mesh: a ``jax.sharding.Mesh`` (axis type Auto) whose first axis shards the ensemble:
            every state leaf with a leading axis of size J is placed with
            ``NamedSharding(mesh, P(axis))`` and the rest is replicated. The forward passes run
            where the members live and XLA turns the ensemble reductions into collectives;
            results equal the single-device run to round-off (amplified by the conditioning of
            the Kalman solve in float32). Works across hosts after
            ``jax.distributed.initialize()``.

    Returns:
        :class:`RunResult` with the final particles, final state and per-step history.

    Raises:
        InputError: for a key that is not a PRNG key (e.g. an integer seed), a non-positive or
            non-integer ``num_steps``, ``checkpoint_every`` or ``chunk_size`` (NumPy integers
            are fine), an unusable ``checkpoint_path``, a damaged checkpoint, one written by
            another run, or one holding more than ``num_steps`` steps.
        OutOfMemoryError: (an ``InputError`` and a ``MemoryError``) when XLA runs out of device
            memory, naming J, p, m and what lowers the memory.

    Example:
        Stochastic EKI on a linear-Gaussian problem, tempered to T = 1 by the default
        scheduler (Iglesias, Law & Stuart 2013; Iglesias & Yang 2021), checkpointed:

        >>> import os, tempfile
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> H = jnp.array([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
        >>> obs = ek.Observation(jnp.array([1.2, 0.4, 0.9]), 0.1)
        >>> prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
        >>> algo = ek.eki(lambda th: H @ th, obs, prior=prior)
        >>> ckpt = os.path.join(tempfile.mkdtemp(), "run.ckpt.npz")
        >>> key = jax.random.key(0)
        >>> res = ek.run(key, algo, prior.sample(key, 100), num_steps=100, progress=False,
        ...              checkpoint_path=ckpt)
        >>> res.num_steps < 100, os.path.exists(ckpt)   # stopped itself at T = 1
        (True, True)
        >>> again = ek.run(key, algo, prior.sample(key, 100), num_steps=100, progress=False,
        ...                checkpoint_path=ckpt)   # resumes from the finished checkpoint
        >>> bool(jnp.all(again.particles == res.particles))
        True
    """
    check_key(key)
    if not isinstance(algo, KalmanAlgorithm):
        raise input_error(
            "algo",
            "an algorithm with init(particles) and step(key, state) (e.g. ek.eki(...))",
            type(algo).__name__,
            "build one with ek.eki, ek.etki, ek.eks, ek.aldi or ek.uki",
        )
    num_steps = positive_int(num_steps, "num_steps", "pass e.g. num_steps=500")
    if checkpoint_every is not None:
        checkpoint_every = positive_int(
            checkpoint_every,
            "checkpoint_every",
            "pass the steps between checkpoints, e.g. checkpoint_every=10, or None (the "
            "default: every num_steps // 10 steps when checkpoint_path is given)",
        )
    if chunk_size is not None:
        chunk_size = positive_int(
            chunk_size,
            "chunk_size",
            "pass the steps per compiled chunk, e.g. chunk_size=50, or None (the default: "
            "checkpoint_every, else about 1/20 of the run)",
        )
    path = ckpt.check_path(checkpoint_path) if checkpoint_path is not None else None
    state = algo.init(particles)
    # the per-step info's structure: traced here only where it is needed before the first
    # chunk (a checkpoint's fingerprint) or no chunk runs; else the first chunk's infos give it
    # (tracing the step costs about as much as compiling a small program)
    info_template = None
    if path is not None:
        info_template = eqx.filter_eval_shape(algo.step, key, state)[1]
        fingerprint = ckpt.fingerprint(
            algo, particles, key, state, info_template, to_host=_host_array
        )
        if checkpoint_every is None:
            checkpoint_every = max(1, num_steps // 10)
    if chunk_size is None:  # a given chunk size is kept (it fixes the compiled loop's shape)
        if checkpoint_every is not None:
            chunk_size = checkpoint_every
        elif progress:
            chunk_size = max(1, math.ceil(num_steps / 20))
        else:
            chunk_size = num_steps
        chunk_size = min(chunk_size, num_steps)

    history: list = []
    steps = 0
    if path is not None and path.exists():
        loaded = ckpt.load(path, fingerprint, state, max_steps=num_steps)
        state, steps = loaded.state, loaded.steps
        if steps:
            history.append(type(info_template)(*(loaded.history[f] for f in info_template._fields)))
    if mesh is not None:
        state = shard_ensemble(state, mesh, ensemble_size(particles))

    bar = tqdm(total=num_steps, initial=steps, disable=not progress, desc="ekibnn", unit="step")
    last_saved = steps
    limits = blas_limits(blas_threads) if blas_threads else None
    try:
        with explain_out_of_memory(**_sizes(algo, particles)):
            while steps < num_steps and not bool(state.done):
                limit = min(chunk_size, num_steps - steps)
                state, infos, taken, failure, messages = _run_chunk(
                    algo, chunk_size, key, state, jnp.int32(steps), jnp.int32(limit)
                )
                if int(failure):
                    raise ComputationError(messages[int(failure) - 1])
                taken = int(taken)
                history.append(jax.tree_util.tree_map(lambda b, n=taken: np.asarray(b)[:n], infos))
                steps += taken
                bar.update(taken)
                if history and progress:
                    bar.set_postfix(misfit=f"{float(history[-1].misfit[-1]):.3g}", refresh=False)
                if path is not None and (steps - last_saved >= checkpoint_every or state.done):
                    _save_checkpoint(path, fingerprint, state, history, steps)
                    last_saved = steps
    finally:
        bar.close()
        if limits is not None:
            limits.restore_original_limits()
    if path is not None and last_saved != steps:
        _save_checkpoint(path, fingerprint, state, history, steps)

    if history:
        merged = type(history[0])(
            *(np.concatenate([getattr(h, f) for h in history]) for f in history[0]._fields)
        )
    else:
        if info_template is None:
            info_template = eqx.filter_eval_shape(algo.step, key, state)[1]
        merged = type(info_template)(*(np.zeros((0, *x.shape), x.dtype) for x in info_template))
    return RunResult(state=state, history=merged, num_steps=steps)
