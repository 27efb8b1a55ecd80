"""Checkpoints: bit-identical resume after SIGKILL at random points, and a clear refusal for a
checkpoint of another run, a damaged file, a bad path or too many steps."""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_linear_problem

import ekibnn as ek
from ekibnn import checkpoint

SCRIPT = Path(__file__).parent / "scripts" / "checkpointed_run.py"
SRC = Path(__file__).resolve().parents[1] / "src"


def _script():
    spec = importlib.util.spec_from_file_location("checkpointed_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _steps_in(path: Path) -> int:
    """Steps recorded in the checkpoint, -1 while there is none (read while the run writes:
    the atomic replace means a reader sees the old file or the new one, never half of one)."""
    try:
        with np.load(path) as data:
            return int(data["steps"])
    except (OSError, ValueError, KeyError):
        return -1


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    script = _script()
    key, algo, x0 = script.build()
    # uninterrupted, in this process, in ONE compiled chunk (the children take 1-step chunks)
    reference = ek.run(key, algo, x0, script.NUM_STEPS, progress=False)
    path, out = tmp_path / "run.ckpt.npz", tmp_path / "out.npz"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "EQX_ON_ERROR": "nan",  # no host callback: the children share one compilation
    }
    server = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path / "jax_cache")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        bufsize=1,
    )

    def start() -> int:
        server.stdin.write(f"run {path} {out}\n")
        server.stdin.flush()
        word, pid = server.stdout.readline().split()
        assert word == "pid", word
        return int(pid)

    def exit_code() -> int:
        word, code = server.stdout.readline().split()
        assert word == "exit", word
        return int(code)

    rng = np.random.default_rng(14)
    targets = np.sort(rng.choice(np.arange(3, script.NUM_STEPS - 40), size=3, replace=False))
    with server:
        for target in targets:
            pid = start()
            deadline = time.monotonic() + 120
            while _steps_in(path) < target:
                assert time.monotonic() < deadline, "the child made no progress"
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.01))  # anywhere in a step, a write included
            os.kill(pid, signal.SIGKILL)
            assert exit_code() == -signal.SIGKILL  # killed mid-run, not finished
            assert 0 < _steps_in(path) < script.NUM_STEPS
        start()
        assert exit_code() == 0
        server.stdin.close()
    with np.load(out) as resumed:
        assert int(resumed["steps"]) == script.NUM_STEPS
        np.testing.assert_array_equal(resumed["particles"], reference.particles)
        for name in reference.history._fields:
            np.testing.assert_array_equal(
                resumed[f"history_{name}"], getattr(reference.history, name)
            )
    assert not (tmp_path / "run.ckpt.npz.tmp").exists()


# ------------------------------------------------------------------------- the shared run


@functools.cache
def _problem():
    problem = make_linear_problem(m=4, p=2, seed=3)
    H = jnp.asarray(problem.H, jnp.float32)
    obs = ek.Observation(jnp.asarray(problem.y, jnp.float32), 0.3)
    prior = ek.GaussianPrior(jnp.zeros(2), 1.0)
    return H, obs, prior


def _forward(H):
    return lambda th: H @ th


def _algo(obs=None, prior=None, method=ek.eki, **kwargs):
    H, obs0, prior0 = _problem()
    kwargs.setdefault("scheduler", ek.schedulers.constant(0.1))
    return method(_forward(H), obs or obs0, prior=prior or prior0, **kwargs)


@functools.cache
def _shared_algo():
    return _algo()


def _x0(j=8, seed=1):
    return jax.random.normal(jax.random.key(seed), (j, 2))


def _run(path, algo=None, x0=None, key=None, num_steps=6, **kwargs):
    return ek.run(
        jax.random.key(0) if key is None else key,
        _shared_algo() if algo is None else algo,
        _x0() if x0 is None else x0,
        num_steps,
        progress=False,
        checkpoint_path=path,
        **kwargs,
    )


@pytest.fixture
def ckpt(tmp_path):
    """A finished 6-step checkpoint of the shared run (chunks of 3 steps in every test of the
    shared run: one compilation)."""
    path = tmp_path / "run.ckpt.npz"
    _run(path, checkpoint_every=3)
    return path


def _refused(path, match, **kwargs):
    with pytest.raises(ek.InputError, match=match) as info:
        _run(path, **kwargs)
    message = str(info.value)
    assert "expected" in message and "; got " in message and "; fix: " in message
    return message


# ---------------------------------------------------------------- a checkpoint of another run


def test_resume_and_extend_is_bit_identical(ckpt):
    full = _run(None, num_steps=10, chunk_size=3)
    resumed = _run(ckpt, num_steps=10, checkpoint_every=3)
    assert resumed.num_steps == 10
    np.testing.assert_array_equal(resumed.particles, full.particles)
    np.testing.assert_array_equal(resumed.history.misfit, full.history.misfit)


def test_other_observations_are_refused(ckpt):
    _, obs, _ = _problem()
    stale = ek.Observation(obs.y + 1.0, 0.3)
    message = _refused(ckpt, r"observations \(y\) differ", algo=_algo(obs=stale))
    assert "delete the file" in message and "checkpoint_path" in message
    _refused(ckpt, "observation noise differs", algo=_algo(obs=ek.Observation(obs.y, 0.5)))


def test_other_prior_or_settings_are_refused(ckpt):
    _refused(ckpt, "prior differs", algo=_algo(prior=ek.GaussianPrior(jnp.zeros(2), 2.0)))
    _refused(
        ckpt, r"settings differ \(.*inflation: 0.0 in the file, 0.5 here", algo=_algo(inflation=0.5)
    )


def test_other_algorithm_is_refused(ckpt):
    message = _refused(ckpt, "written by EKI", algo=_algo(method=ek.etki))
    assert "this run is ETKI (ekibnn.inversion.etki)" in message
    assert "settings differ" not in message  # the algorithm's name says it all


def test_other_initial_particles_or_key_are_refused(ckpt):
    _refused(ckpt, "initial particles differ", x0=_x0(seed=2))
    _refused(ckpt, r"initial particles differ \(shapes \[\[8, 2\]\] in the file", x0=_x0(j=10))
    _refused(ckpt, "the same key as the run that wrote it", key=jax.random.key(1))


def test_new_data_in_the_forward_closure_is_refused(ckpt):
    H, obs, prior = _problem()
    algo = ek.eki(_forward(H + 1.0), obs, prior=prior, scheduler=ek.schedulers.constant(0.1))
    _refused(ckpt, r"other arrays the algorithm holds \(\.forward_fn\.H", algo=algo)


def test_too_many_steps_are_refused(ckpt):
    message = _refused(ckpt, "already holds 6 steps", num_steps=4)
    assert "num_steps >= 6" in message
    assert _run(ckpt, num_steps=6).num_steps == 6  # exactly as many: returned as it is


def test_old_format_is_refused(ckpt):
    np.savez(ckpt, version=1, steps=6, key=np.zeros(2, np.uint32), num_leaves=0)
    _refused(ckpt, "written by an older ekibnn")


# ------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b[: len(b) // 2], "corrupt or truncated archive"),
        (lambda b: b[:-1], "corrupt or truncated archive"),
        (lambda b: b"", "an empty file"),
        (lambda b: b"garbage, not a checkpoint" * 40, "not a checkpoint"),
        (lambda b: b"PK\x03\x04" + bytes(100), "corrupt or truncated archive"),
    ],
)
def test_damaged_file_is_named_and_explained(ckpt, damage, match):
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    message = _refused(ckpt, match)
    for leak in ("allow_pickle", "BadZipFile", "EOFError", "KeyError"):
        assert leak not in message
    assert str(ckpt) in message


def test_bit_flips_are_caught_or_harmless(ckpt):
    """A flipped bit anywhere either makes the file refused with an InputError, or (in zip
    metadata that does not affect the data, e.g. a timestamp) leaves the state unchanged."""
    key, algo, x0 = jax.random.key(0), _shared_algo(), _x0()
    state = algo.init(x0)
    info = eqx.filter_eval_shape(algo.step, key, state)[1]
    fp = checkpoint.fingerprint(algo, x0, key, state, info)
    good = checkpoint.load(ckpt, fp, state)
    data = ckpt.read_bytes()
    caught = 0
    for pos in np.random.default_rng(0).choice(len(data), size=60, replace=False):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(pos % 8)
        ckpt.write_bytes(bytes(flipped))
        try:
            loaded = checkpoint.load(ckpt, fp, state)
        except ek.InputError as err:
            assert "allow_pickle" not in str(err)
            caught += 1
            continue
        for a, b in zip(
            jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(good), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    assert caught > 25, caught
    print(f"{caught} of 60 bit flips refused, the others harmless")
    # a flip inside the particles' bytes: the zip CRC or our checksum says so
    ckpt.write_bytes(data)
    start = data.index(np.asarray(good.state.particles).tobytes())
    flipped = bytearray(data)
    flipped[start + 5] ^= 0x10
    ckpt.write_bytes(bytes(flipped))
    _refused(ckpt, "corrupt")


def test_checksum_mismatch_is_named(ckpt):
    with np.load(ckpt) as data:
        arrays = dict(data)
    arrays["state_0"] = arrays["state_0"] + 1  # a consistent archive with other contents
    np.savez(ckpt, **arrays)
    _refused(ckpt, "checksum of its contents does not match")


# ----------------------------------------------------------------- the path, before step 1


def _counting_algo():
    calls = []
    H, obs, prior = _problem()

    def forward(th):
        calls.append(1)
        return H @ th

    return ek.eki(forward, obs, prior=prior), calls


@pytest.mark.parametrize(
    ("make_path", "match"),
    [
        (lambda tmp: tmp, "got a folder"),
        (lambda tmp: tmp / "missing" / "run.npz", "folder that does not exist"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "run.npz", "is a file"),
    ],
)
def test_bad_path_is_refused_before_anything_runs(tmp_path, make_path, match):
    algo, calls = _counting_algo()
    path = make_path(tmp_path)
    _refused(path, match, algo=algo)
    assert not calls  # not even init's shape check ran: nothing was traced or compiled


def test_unwritable_folder_is_refused(tmp_path):
    # root can write anywhere on a normal file system, but not into /proc
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    _refused(Path("/proc/run.npz"), "a folder where files can be created")
    # a stale temporary of the wrong kind would fail the first write: refused up front
    (tmp_path / "run.npz.tmp").mkdir()
    _refused(tmp_path / "run.npz", "remove")


# ---------------------------------------------------------------------- integer arguments


def test_checkpoint_every_zero_says_what_to_pass(tmp_path):
    message = _refused(tmp_path / "c.npz", "checkpoint_every", checkpoint_every=0)
    assert "checkpoint_every=10" in message


@pytest.mark.parametrize("name", ["num_steps", "checkpoint_every", "chunk_size"])
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_integer_arguments(tmp_path, name, bad):
    kwargs = {"num_steps": 6, name: bad}
    with pytest.raises(ek.InputError, match=name):
        _run(tmp_path / "c.npz", **kwargs)


def test_numpy_integers_are_accepted(tmp_path):
    result = _run(
        tmp_path / "c.npz",
        num_steps=np.int64(6),
        checkpoint_every=np.int32(3),
        chunk_size=np.int64(3),
    )
    assert result.num_steps == 6
    reference = _run(None, num_steps=6, chunk_size=3)
    np.testing.assert_array_equal(result.particles, reference.particles)


# ------------------------------------------------------- an Equinox-module algorithm, too


class _RelaxState(NamedTuple):
    particles: jax.Array
    step: jax.Array
    done: jax.Array


class _RelaxInfo(NamedTuple):
    misfit: jax.Array


class _Relax(eqx.Module):
    """A toy algorithm as an Equinox module: arrays are data, the function is static."""

    obs: ek.Observation
    forward: object = eqx.field(static=True)
    rate: float = eqx.field(static=True, default=0.5)

    def init(self, particles):
        return _RelaxState(particles, jnp.int32(0), jnp.bool_(False))

    def step(self, key, state):
        noise = 0.01 * jax.random.normal(key, state.particles.shape)
        pull = jax.vmap(self.forward)(state.particles).mean(1, keepdims=True) - self.obs.y.mean()
        particles = state.particles - self.rate * pull + noise
        done = state.step + 1 >= 8
        return _RelaxState(particles, state.step + 1, done), _RelaxInfo(jnp.mean(pull**2))


def test_an_equinox_module_algorithm_is_fingerprinted(tmp_path):
    H, obs, _ = _problem()
    algo = _Relax(obs, _forward(H))
    path = tmp_path / "relax.npz"
    ek.run(jax.random.key(0), algo, _x0(), 4, progress=False, checkpoint_path=path)
    full = ek.run(jax.random.key(0), algo, _x0(), 8, progress=False)
    resumed = ek.run(jax.random.key(0), algo, _x0(), 8, progress=False, checkpoint_path=path)
    np.testing.assert_array_equal(resumed.particles, full.particles)
    stale = _Relax(ek.Observation(obs.y * 2, 0.3), _forward(H))
    with pytest.raises(ek.InputError, match=r"observations \(y\) differ"):
        ek.run(jax.random.key(0), stale, _x0(), 8, progress=False, checkpoint_path=path)
    with pytest.raises(ek.InputError, match=r"settings differ.*rate: 0.5 in the file, 0.25 here"):
        ek.run(
            jax.random.key(0),
            _Relax(obs, _forward(H), 0.25),
            _x0(),
            8,
            progress=False,
            checkpoint_path=path,
        )
    with pytest.raises(
        ek.InputError, match=r"written by _Relax \(test_checkpoint\), this run is EKI"
    ):
        _run(path, num_steps=8)


def test_fingerprint_is_free_of_addresses():
    key, algo, x0 = jax.random.key(0), _shared_algo(), _x0()
    fp = checkpoint.fingerprint(algo, x0, key, algo.init(x0))
    text = str(fp)
    assert " at 0x" not in text and "object at" not in text
    assert fp == checkpoint.fingerprint(_algo(), x0, key, algo.init(x0))  # a new, equal algo
