"""Multi-host EKI: one ensemble sharded over the devices of several JAX processes.

JAX is multi-controller: every process (one per host, typically) runs this same script, calls
``jax.distributed.initialize`` before any computation, builds the same data and the same initial
ensemble (same keys), and calls ``ek.run(..., mesh=mesh)`` with one mesh over the *global*
devices. Each process then holds the members that live on its own devices; the ensemble means and
covariances of the Kalman update become cross-process collectives (Gloo over TCP on CPU, the
default of ``jax_cpu_collectives_implementation``; NCCL on GPU). ``multihost_utils.
process_allgather`` brings the final ensemble to every process.

On a real cluster, start on every host (``HOST0`` is the coordinator, process 0)::

    python examples/multihost.py --role worker --coordinator HOST0:1234 \
        --num-processes N --process-id i

On one machine (what this script does by default): two processes, each with two forced CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``), talk over loopback; a third
process runs the same problem on four forced devices in one process, and the two final ensembles
are compared::

    python examples/multihost.py            # float64, prints the max difference
    python examples/multihost.py --f32      # float32

Result (measured, 2 x 2 CPU devices vs 1 x 4, J = 32): equal to round-off, not bit for bit:
float64 max |difference| of the final particles 7.9e-13 after 5 steps and 1.1e-11 after 10;
float32 5.6e-5 after 1 step and 3.0e-2 after 10 (the Kalman solve amplifies float32 round-off,
see docs/scaling.md). The partitioned program is the same; the all-reduces that cross the process
boundary are summed by Gloo in another order than XLA's in-process all-reduce.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--role",
        choices=("launch", "worker", "single"),
        default="launch",
        help="launch: spawn the workers and a single-process reference on this machine and "
        "compare; worker: one process of a multi-process run; single: one process, all devices",
    )
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (worker)")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument(
        "--devices-per-process", type=int, default=2, help="forced CPU devices per process"
    )
    parser.add_argument("--ensemble", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--data", type=int, default=64, help="training points")
    parser.add_argument("--batch", type=int, default=16, help="minibatch size")
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--f32", action="store_true", help="float32 (default: float64)")
    parser.add_argument("--out", default=None, help="folder for the .npz results")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (launch)")
    return parser


def fit(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The problem every process runs: a minibatch EKI BNN on the tutorial sine data, the
    ensemble sharded over all (global) devices. Returns the final flat ensemble ``(J, p)`` and
    the misfit history as NumPy arrays on every process."""
    import equinox as eqx
    import jax
    from jax.experimental import multihost_utils

    import ekibnn as ek
    from ekibnn import bnn
    from ekibnn.ensemble import flatten

    # Same data and same initial ensemble on every process (same seeds). Built in NumPy and
    # one jitted sampler: every eager JAX op is a small compilation, which adds up per process.
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(args.data, 1))
    y = np.sin(x[:, 0]) + 0.1 * rng.normal(size=args.data)
    model = bnn.MLP(jax.random.key(0), 1, 1, (args.hidden, args.hidden), parameterization="ntk")
    prior = ek.GaussianPrior.like(model)
    lik = bnn.regression(x, y, 0.1)
    particles = eqx.filter_jit(lambda key: prior.sample(key, args.ensemble))(jax.random.key(1))
    algo = ek.eki(
        lik.indexed_forward_fn,
        lik.obs,
        prior=prior,
        scheduler=ek.schedulers.constant(1.0),
        minibatch=ek.minibatch.random(args.batch),
        indexed_forward=True,
        inflation=0.01,
    )
    mesh = jax.make_mesh(
        (jax.device_count(),), ("ensemble",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    # With --out, a checkpoint at the end: every process gathers its shards, process 0 writes.
    checkpoint = None if args.out is None else Path(args.out) / f"{args.role}_checkpoint.npz"
    result = ek.run(
        jax.random.key(2),
        algo,
        particles,
        args.steps,
        progress=False,
        mesh=mesh,
        checkpoint_path=checkpoint,
    )
    flat = jax.jit(flatten)(result.particles)  # (J, p), still sharded over the global devices
    if jax.process_count() > 1:
        flat = multihost_utils.process_allgather(flat, tiled=True)
    return {
        "particles": np.asarray(flat),
        "misfit": np.asarray(result.history.misfit),
        "num_devices": np.asarray(jax.device_count()),
        "num_processes": np.asarray(jax.process_count()),
    }


def worker(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """One process of a multi-process run (``--role worker``) or the one-process reference
    (``--role single``); process 0 writes ``<out>/<role>.npz``."""
    import jax

    if not args.f32:
        jax.config.update("jax_enable_x64", True)
    if args.role == "worker":
        # Before any computation. On CPU the cross-process collectives are Gloo over TCP (the
        # default jax_cpu_collectives_implementation; "mpi" is the alternative).
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=int(args.timeout),
        )
    out = fit(args)
    if args.out is not None and jax.process_index() == 0:
        np.savez(Path(args.out) / f"{args.role}.npz", **out)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(num_devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={num_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def launch(args: argparse.Namespace, argv: list[str]) -> dict:
    """Spawn ``num_processes`` workers over loopback and one single-process reference with the
    same total number of devices, wait (``--timeout``), and compare their final ensembles."""
    out = Path(args.out) if args.out is not None else Path(tempfile.mkdtemp(prefix="ekibnn-mh-"))
    out.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).resolve())
    common = [a for a in argv if a not in ("--role", "launch")]
    common += ["--out", str(out), "--timeout", str(args.timeout)]
    coordinator = f"127.0.0.1:{_free_port()}"
    total = args.num_processes * args.devices_per_process
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                script,
                "--role",
                "worker",
                "--coordinator",
                coordinator,
                "--num-processes",
                str(args.num_processes),
                "--process-id",
                str(i),
                *common,
            ],
            env=_env(args.devices_per_process),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(args.num_processes)
    ]
    procs.append(
        subprocess.Popen(
            [sys.executable, script, "--role", "single", *common],
            env=_env(total),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    start = time.perf_counter()
    logs = []
    try:
        for proc in procs:
            remaining = max(1.0, args.timeout - (time.perf_counter() - start))
            logs.append(proc.communicate(timeout=remaining)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        raise RuntimeError(f"multihost run did not finish within {args.timeout} s") from None
    failed = [
        (i, log) for i, (proc, log) in enumerate(zip(procs, logs, strict=True)) if proc.returncode
    ]
    if failed:
        raise RuntimeError("\n".join(f"process {i} failed:\n{log}" for i, log in failed))
    wall = time.perf_counter() - start
    multi, single = np.load(out / "worker.npz"), np.load(out / "single.npz")
    a, b = multi["particles"], single["particles"]
    report = {
        "dtype": str(a.dtype),
        "processes": int(multi["num_processes"]),
        "devices": int(multi["num_devices"]),
        "bit_identical": bool(
            np.array_equal(a, b) and np.array_equal(multi["misfit"], single["misfit"])
        ),
        "max_abs_diff": float(np.max(np.abs(a - b))),
        "max_rel_diff": float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))),
        "final_misfit": float(multi["misfit"][-1]),
        "wall_s": wall,
    }
    print(
        f"{report['processes']} processes x {args.devices_per_process} devices vs 1 process x "
        f"{report['devices']} devices ({report['dtype']}): bit-identical {report['bit_identical']}"
        f", max |diff| {report['max_abs_diff']:.3g}, final misfit {report['final_misfit']:.4g}, "
        f"wall {wall:.1f} s"
    )
    return report


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.role == "launch":
        return launch(args, argv)
    out = worker(args)
    return {"final_misfit": float(out["misfit"][-1])}


if __name__ == "__main__":
    main()
