"""The checkpointed run of tests/test_checkpoint.py's fault test, and a fork server for it.

``python checkpointed_run.py CACHE_DIR`` imports ekibnn once (no JAX backend is started by the
import), turns on JAX's persistent compilation cache in CACHE_DIR (only the first child compiles
the loop; the compiled program, hence the numbers, is the same; the test sets
``EQX_ON_ERROR=nan`` because JAX does not cache programs with the host callback of Equinox's
runtime checks) and then reads commands from stdin, one per line: ``run PATH OUT`` forks a fresh
process that runs :func:`run_once` (its JAX backend starts in the child), prints ``pid N``,
waits for it and prints ``exit CODE`` (negative: killed by that signal). The test SIGKILLs the
pid at random points. Forking saves the ~5-10 s import of ekibnn per start on a loaded 2-core
machine; each child is still a new process that knows nothing of the killed one but the
checkpoint file.
"""

from __future__ import annotations

import os
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

import ekibnn as ek

NUM_STEPS = 120


def build():
    """A tiny linear problem, stochastic EKI with inflation (every step uses its key)."""
    rng = np.random.default_rng(0)
    H = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    obs = ek.Observation(jnp.asarray(rng.normal(size=6), jnp.float32), 0.3)
    prior = ek.GaussianPrior(jnp.zeros(3), 1.0)
    algo = ek.eki(
        lambda th: H @ th,
        obs,
        prior=prior,
        scheduler=ek.schedulers.constant(0.05),
        inflation=0.01,
    )
    return jax.random.key(7), algo, prior.sample(jax.random.key(8), 16)


def run_once(path: str, out: str | None = None) -> ek.RunResult:
    """The run, one step per chunk and a checkpoint after every step; resumes from ``path``."""
    key, algo, x0 = build()
    result = ek.run(
        key,
        algo,
        x0,
        NUM_STEPS,
        progress=False,
        checkpoint_path=path,
        checkpoint_every=1,
        chunk_size=1,
    )
    if out is not None:
        history = {f"history_{k}": v for k, v in result.history._asdict().items()}
        np.savez(out, particles=np.asarray(result.particles), steps=result.num_steps, **history)
    return result


def serve(cache_dir: str) -> None:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    for line in sys.stdin:
        _, path, out = line.split()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: run, then leave without running the parent's exit handlers
            code = 0
            try:
                run_once(path, out)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        print("pid", pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print("exit", os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1])
