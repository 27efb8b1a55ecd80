"""Checkpoints of :func:`ekibnn.run` that know which run they belong to.

A checkpoint is one ``.npz`` file (NumPy's zip of ``.npy`` arrays, read without pickle) holding
the algorithm state's array leaves ``state_0 .. state_{n-1}``, the history so far
``history_<field>``, the number of steps ``steps``, a format ``version``, the run's
**fingerprint** (JSON) and a SHA-256 **checksum** of all of it.

The fingerprint (:func:`fingerprint`) describes the run: the algorithm's type and static
settings (functions by ``module.qualname``, scalars by value, everything found by
:func:`ekibnn._walk.walk`, closures and Equinox static fields included), a digest of every array
the algorithm holds (observations, noise, prior, data closed over by the forward map), a digest
of the initial particles and of the key, the layout (paths, shapes, dtypes) of the state and of
the per-step info, and ``ekibnn.__version__``. Nothing in it depends on memory addresses, so a
run started again in a new process recognises its own checkpoint (module globals that the
user's functions read, such as ``H`` in ``lambda th: H @ th``, are included). On resume
(:func:`load`) a checkpoint whose fingerprint differs is refused with an
:class:`ekibnn.InputError` naming what differs, and a damaged file is named and explained. Not
covered: the *code* of a function (two versions of ``forward_fn`` with the same name look the
same), and host objects that are not pytrees (e.g. :class:`ekibnn.streaming.HostRows`,
described by type only); ``np.memmap`` arrays are identified by file name, offset, shape and
dtype, not by content, so that a large file is not read at every start.

Writes (:func:`save`) are atomic and durable: the file is written to ``<name>.tmp`` in the same
folder, flushed and ``fsync``-ed, moved over the old one with ``os.replace`` (atomic on POSIX
and Windows), and the folder is ``fsync``-ed so that the rename survives a power loss. A
``kill -9`` at any moment leaves either the previous checkpoint or the new one.
:func:`check_path` checks the path before the first step (not a folder, the folder exists and a
file can be created there), so a bad path fails at once instead of after the first chunk.

Why not Orbax (``orbax-checkpoint`` 0.12.8, checked with ``pip download``): it would add 12
packages to ekibnn's install (tensorstore, a 22 MB wheel / 68 MB unpacked, plus protobuf,
msgpack, uvloop, etils, fsspec, aiofiles, humanize, simplejson, prometheus-client, zipp; 29 MB
of wheels in all) and writes a folder of files per step. What it offers beyond this module --
asynchronous saves, retention of several steps, and each host writing its own shards without a
gather -- is not needed here: the state is one ensemble of ``J x p`` numbers plus scalars, a
chunk boundary is a natural synchronous save point, a run resumes from its latest step only, and
process 0 gathering the ensemble is cheap next to the run for the sizes ekibnn targets (the
gather is the one piece to revisit if a ``J x p`` state stops fitting in one host's memory).
What we do need and Orbax does not do -- refusing a checkpoint of another run, explaining a
damaged file -- is the bulk of this module either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ekibnn._walk import walk
from ekibnn.errors import input_error
from ekibnn.observations import Observation
from ekibnn.priors import GaussianPrior

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "check_path",
    "fingerprint",
    "load",
    "restore",
    "save",
    "state_leaves",
]

FORMAT_VERSION = 2
_START_AFRESH = "delete the file to start afresh, or pass another checkpoint_path"


class Checkpoint(NamedTuple):
    """What :func:`load` returns.

    Attributes:
        state: the saved state, rebuilt on the template's structure (JAX arrays).
        history: ``{info field: array of shape (steps, ...)}``; empty when ``steps == 0``.
        steps: steps taken by the run that wrote it.
    """

    state: Any
    history: dict[str, np.ndarray]
    steps: int


# ----------------------------------------------------------------------------- fingerprint


def _host_bytes(arr: Any, to_host: Callable[[Any], np.ndarray]) -> tuple[np.ndarray, str]:
    """A C-contiguous host copy of ``arr`` and its dtype's name (typed PRNG keys become their
    key data, named ``key<impl>``)."""
    name = str(arr.dtype)
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        arr = jax.random.key_data(arr)
    return np.ascontiguousarray(to_host(arr)), name


def _digest(arr: Any, to_host: Callable[[Any], np.ndarray]) -> dict[str, Any]:
    """``{"digest", "shape", "dtype"}`` of an array: SHA-256 over dtype, shape and bytes."""
    shape = [int(d) for d in np.shape(arr)]
    if isinstance(arr, np.memmap) and arr.filename is not None:
        ident = f"memmap {os.path.abspath(arr.filename)} offset {arr.offset}"
        text = f"{ident} {arr.dtype} {shape}"
        return {
            "digest": hashlib.sha256(text.encode()).hexdigest(),
            "shape": shape,
            "dtype": str(arr.dtype),
        }
    host, dtype = _host_bytes(arr, to_host)
    h = hashlib.sha256(f"{dtype} {shape}".encode())
    if host.dtype.hasobject:
        h.update(b"object array: content not digested")
    else:
        h.update(host.reshape(-1).view(np.uint8))
    return {"digest": h.hexdigest(), "shape": shape, "dtype": dtype}


def _describe(obj: Any, to_host: Callable[[Any], np.ndarray]):
    """``(settings, arrays)``: ``{path: text}`` of everything that is not an array and
    ``{path: digest and label}`` of every array. The label says in words what an array is: part
    of an :class:`~ekibnn.Observation` (its ``y``, or its noise) or a
    :class:`~ekibnn.GaussianPrior` found at any depth, or another array."""
    settings: dict[str, str] = {}
    arrays: dict[str, dict[str, Any]] = {}
    owners: dict[str, Any] = {}  # path -> the Observation or GaussianPrior there
    for node in walk(obj):
        if isinstance(node.value, Observation | GaussianPrior):
            owners[node.path] = node.value
        if node.kind != "array":
            settings[node.path] = node.text
            continue
        label = "other arrays the algorithm holds"
        for prefix, owner in owners.items():
            rest = node.path[len(prefix) :]
            if node.path.startswith(prefix) and rest[:1] in (".", "["):
                if isinstance(owner, GaussianPrior):
                    label = "prior"
                else:
                    label = "observations (y)" if rest == ".y" else "observation noise"
        arrays[node.path] = {**_digest(node.value, to_host), "label": label}
    return settings, arrays


def _algorithm_name(algo: Any) -> str:
    """``eki (ekibnn.inversion.eki)`` for a factory's ``init``/``step`` NamedTuple of closures,
    ``EKI (ekibnn.inversion.eki)`` for a class (e.g. an Equinox module)."""
    step = getattr(algo, "step", None)
    if isinstance(algo, tuple) and hasattr(step, "__code__"):
        return f"{step.__qualname__.split('.<locals>')[0]} ({step.__module__})"
    return f"{type(algo).__qualname__} ({type(algo).__module__})"


def _layout(tree: Any) -> list[list[Any]]:
    """``[[path, shape, dtype], ...]`` of a pytree's array (or ShapeDtypeStruct) leaves."""
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct)
    )[0]
    return [
        [jax.tree_util.keystr(path), [int(d) for d in leaf.shape], str(leaf.dtype)]
        for path, leaf in leaves
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype")
    ]


def fingerprint(
    algo: Any,
    particles: Any,
    key: Any,
    state: Any,
    info: Any = None,
    *,
    to_host: Callable[[Any], np.ndarray] = np.asarray,
) -> dict[str, Any]:
    """Describe a run so that its checkpoint can be recognised in another process.

    Args:
        algo: the algorithm (a NamedTuple of functions, an Equinox module, any value): its type
            and every non-array value it holds are described, every array it holds digested.
        particles: the initial ensemble (digested, structure included).
        key: the run's PRNG key (its key data digested).
        state: the initial state (only its array leaves' paths, shapes and dtypes are used).
        info: the per-step info, or its shapes (``eqx.filter_eval_shape(algo.step, ...)[1]``);
            its layout is recorded.
        to_host: brings an array to the host as NumPy; in a multi-process run pass a gather
            (every process must call this function then, as it is a collective).

    Returns:
        A JSON-serialisable ``dict`` (keys ``ekibnn``, ``algorithm``, ``settings``, ``arrays``,
        ``particles``, ``key``, ``state``, ``info``).

    Example:
        >>> import jax, jax.numpy as jnp, ekibnn as ek
        >>> obs = ek.Observation(jnp.ones(2), 0.5)
        >>> algo = ek.eki(lambda th: th, obs, prior=ek.GaussianPrior(jnp.zeros(2)))
        >>> x0 = jnp.arange(8.0).reshape(4, 2)
        >>> fp = fingerprint(algo, x0, jax.random.key(0), algo.init(x0))
        >>> fp["algorithm"], sorted({a["label"] for a in fp["arrays"].values()})[:2]
        ('EKI (ekibnn.inversion.eki)', ['observation noise', 'observations (y)'])
    """
    import ekibnn  # at call time: ekibnn/__init__ imports this module

    settings, arrays = _describe(algo, to_host)
    p_settings, p_arrays = _describe(particles, to_host)
    summary = json.dumps([p_settings, [a["digest"] for a in p_arrays.values()]])
    key_data, _ = _host_bytes(jnp.asarray(key), to_host)  # typed or raw: the same key data
    fp = {
        "ekibnn": ekibnn.__version__,
        "algorithm": _algorithm_name(algo),
        "settings": settings,
        "arrays": arrays,
        "particles": {
            "digest": hashlib.sha256(summary.encode()).hexdigest(),
            "shapes": [a["shape"] for a in p_arrays.values()],
        },
        "key": _digest(key_data, np.asarray)["digest"],
        "state": _layout(eqx.filter(state, eqx.is_array)),
        "info": _layout(info),
    }
    return json.loads(json.dumps(fp))  # tuples -> lists, as read back from the file


def _differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(noun, detail), ...]`` of what differs between two fingerprints."""
    diffs: list[tuple[str, str]] = []
    if stored.get("ekibnn") != current["ekibnn"]:
        diffs.append(
            (
                "ekibnn version",
                f"written by ekibnn {stored.get('ekibnn')}, this is {current['ekibnn']}",
            )
        )
    if stored.get("algorithm") != current["algorithm"]:
        diffs.append(
            (
                "algorithm",
                f"written by {stored.get('algorithm')}, this run is {current['algorithm']}",
            )
        )
    else:
        old, new = stored.get("settings", {}), current["settings"]
        changed = [p for p in dict.fromkeys([*old, *new]) if old.get(p) != new.get(p)]
        if changed:
            shown = ", ".join(
                f"{p or '<root>'}: {old.get(p, '<absent>')} in the file, {new.get(p, '<absent>')}"
                " here"
                for p in changed[:3]
            )
            more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
            diffs.append(("algorithm settings", f"the algorithm's settings differ ({shown}{more})"))
        old, new = stored.get("arrays", {}), current["arrays"]
        labels: dict[str, list[str]] = {}
        for p in dict.fromkeys([*old, *new]):
            if (old.get(p) or {}).get("digest") != (new.get(p) or {}).get("digest"):
                labels.setdefault((new.get(p) or old[p])["label"], []).append(p)
        for label, paths in labels.items():
            verb = "differs" if label in ("observation noise", "prior") else "differ"
            where = f" ({', '.join(paths[:3])})" if label.startswith("other") else ""
            diffs.append((label, f"the {label}{where} {verb} from the run that wrote it"))
    old, new = stored.get("particles", {}), current["particles"]
    if old.get("digest") != new["digest"]:
        shapes = (
            ""
            if old.get("shapes") == new["shapes"]
            else (f" (shapes {old.get('shapes')} in the file, {new['shapes']} here)")
        )
        diffs.append(("initial particles", f"the initial particles differ{shapes}"))
    if stored.get("key") != current["key"]:
        diffs.append(("key", "the key differs"))
    for part, noun in (("state", "state layout"), ("info", "history layout")):
        old, new = stored.get(part), current[part]
        if old != new:
            pairs = [(a, b) for a, b in zip(old or [], new, strict=False) if a != b]
            a, b = pairs[0] if pairs else (f"{len(old or [])} leaves", f"{len(new)} leaves")
            diffs.append(
                (noun, f"the {noun} differs ([path, shape, dtype] {a} in the file, {b} here)")
            )
    return diffs


# ----------------------------------------------------------------------------------- files


def check_path(path: str | os.PathLike) -> Path:
    """Check, before the first step, that a checkpoint can be read from and written to ``path``.

    Args:
        path: the checkpoint file (it need not exist yet).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: if the path is a folder, its folder does not exist (or is a file), or no file
            can be created in its folder (checked by creating and removing a probe file).

    Example:
        >>> import tempfile, os
        >>> check_path(os.path.join(tempfile.mkdtemp(), "run.ckpt.npz")).name
        'run.ckpt.npz'
    """
    path = Path(path)
    what = f"checkpoint_path {str(path)!r}"
    if path.is_dir():
        raise input_error(
            what,
            "a file path",
            "a folder",
            f"pass a file inside it, e.g. {str(path / 'run.ckpt.npz')!r}",
        )
    folder = path.parent
    if not folder.is_dir():
        got = "a folder that is a file" if folder.exists() else "a folder that does not exist"
        got += f" ({str(folder)!r})"
        raise input_error(
            what,
            "a file in an existing folder",
            got,
            f"create the folder first (os.makedirs({str(folder)!r})) or pick another path",
        )
    if path.exists() and not path.is_file():
        raise input_error(
            what,
            "a regular file",
            "something else (a socket, a device?)",
            "pass a path to a regular file",
        )
    tmp = _tmp_path(path)
    if tmp.exists() and not tmp.is_file():
        raise input_error(
            what,
            f"a writable temporary file {tmp.name!r} beside it",
            "a folder or something else of that name",
            f"remove {str(tmp)!r} or pick another path",
        )
    try:  # a probe file of a unique name: processes of a multi-process run probe at once
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise input_error(
            what,
            "a folder where files can be created",
            f"{type(err).__name__}: {err.strerror or err}",
            "pick a writable folder or fix its permissions",
        ) from None
    return path


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every member except ``checksum``: name, shape and bytes, in name order
    (the dtype is left out: NumPy stores extension dtypes such as bfloat16 as raw ``V2``)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == "checksum":
            continue
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {list(arr.shape)}".encode())
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(
    path: str | os.PathLike,
    fingerprint: Mapping[str, Any],
    leaves: Sequence[np.ndarray],
    history: Mapping[str, np.ndarray],
    steps: int,
) -> None:
    """Write a checkpoint atomically and durably (temp file in the same folder, ``fsync``,
    ``os.replace``, ``fsync`` of the folder).

    In a multi-process run only process 0 calls this, with the gathered leaves.

    Args:
        path: the checkpoint file.
        fingerprint: the run's :func:`fingerprint`.
        leaves: the state's array leaves on the host (:func:`state_leaves`, gathered), in order.
        history: ``{info field: (steps, ...) array}`` of the steps taken so far.
        steps: steps taken.

    Example:
        >>> import os, tempfile, numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "c.npz")
        >>> save(path, {"key": "k"}, [np.zeros(3)], {"misfit": np.ones(2)}, 2)
        >>> print(*sorted(np.load(path).files)[:3])
        checksum fingerprint history_misfit
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "version": np.asarray(FORMAT_VERSION),
        "steps": np.asarray(int(steps)),
        "num_leaves": np.asarray(len(leaves)),
        "fingerprint": np.asarray(json.dumps(fingerprint)),
    }
    arrays.update({f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
    arrays.update({f"history_{name}": np.asarray(v) for name, v in history.items()})
    arrays["checksum"] = np.asarray(_checksum(arrays))
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _corrupt(path: Path, got: str) -> Exception:
    return input_error(
        f"checkpoint {str(path)!r}",
        "a complete ekibnn checkpoint (.npz)",
        got,
        f"{_START_AFRESH} (ekibnn writes checkpoints atomically, so a killed run does not leave"
        " such a file: it was damaged or replaced afterwards)",
    )


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every member of the file, checked: a real .npz, complete, checksum matching."""
    what = f"checkpoint {str(path)!r}"
    if path.is_dir():
        raise input_error(what, "a file", "a folder", "pass the path of a checkpoint file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise input_error(
            what,
            "a readable file",
            f"{type(err).__name__}: {err.strerror}",
            "fix the file's permissions, or pass another checkpoint_path",
        ) from None
    if not head:
        raise _corrupt(path, "an empty file (0 bytes)")
    if head != b"PK\x03\x04":
        raise _corrupt(
            path, "a file that is not a checkpoint (it does not start like a .npz archive)"
        )
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as err:  # any failure to parse the archive means a damaged file
        reason = "it holds pickled Python objects" if "pickle" in str(err) else str(err)[:200]
        size = path.stat().st_size
        raise _corrupt(path, f"a corrupt or truncated archive of {size} bytes ({reason})") from None
    if "checksum" not in arrays:
        if "version" in arrays and "num_leaves" in arrays:
            raise input_error(
                what,
                f"a checkpoint of format {FORMAT_VERSION} (with a fingerprint)",
                f"format {int(arrays['version'])}, written by an older ekibnn",
                _START_AFRESH,
            )
        raise _corrupt(path, f"a .npz archive without ekibnn's members ({sorted(arrays)[:5]})")
    if str(arrays["checksum"]) != _checksum(arrays):
        raise _corrupt(
            path,
            "a corrupt file: the checksum of its contents does not match (it "
            "was modified or damaged after it was written)",
        )
    return arrays


def load(
    path: str | os.PathLike,
    fingerprint: Mapping[str, Any],
    template: Any,
    *,
    max_steps: int | None = None,
) -> Checkpoint:
    """Read a checkpoint written by :func:`save` for the run described by ``fingerprint``.

    Args:
        path: the checkpoint file (it must exist).
        fingerprint: this run's :func:`fingerprint`.
        template: a state of this run (e.g. ``algo.init(particles)``): the saved leaves are put
            into its structure.
        max_steps: refuse a checkpoint that already holds more steps than this (the run's
            ``num_steps``): its state at ``max_steps`` is not in the file.

    Returns:
        The :class:`Checkpoint` (state, history, steps).

    Raises:
        InputError: for a damaged file (empty, truncated, not a checkpoint, checksum mismatch),
            a checkpoint of another run (saying what differs: algorithm, settings, observations,
            noise, prior, initial particles, key, layout, version), or too many steps.

    Example:
        >>> import os, tempfile, jax, jax.numpy as jnp, ekibnn as ek
        >>> algo = ek.eki(lambda th: th, ek.Observation(jnp.ones(2), 0.5),
        ...               prior=ek.GaussianPrior(jnp.zeros(2)))
        >>> x0, key = jnp.arange(8.0).reshape(4, 2), jax.random.key(0)
        >>> state = algo.init(x0)
        >>> fp = fingerprint(algo, x0, key, state)
        >>> path = os.path.join(tempfile.mkdtemp(), "c.npz")
        >>> save(path, fp, [np.asarray(x) for x in state_leaves(state)], {}, 0)
        >>> load(path, fp, state).steps
        0
        >>> other = fingerprint(algo, x0, jax.random.key(1), state)
        >>> load(path, other, state)
        Traceback (most recent call last):
        ...
        ekibnn.errors.InputError: checkpoint ...: expected the same key as the run that wrote it; \
got the key differs; fix: ...
    """
    path = Path(path)
    arrays = _read(path)
    what = f"checkpoint {str(path)!r}"
    try:
        stored = json.loads(str(arrays["fingerprint"]))
        steps = int(arrays["steps"])
        num_leaves = int(arrays["num_leaves"])
    except (KeyError, ValueError, TypeError) as err:
        raise _corrupt(path, f"unreadable metadata ({type(err).__name__}: {err})") from None
    diffs = _differences(stored, fingerprint)
    if diffs:
        nouns = [noun for noun, _ in diffs]
        listed = ", ".join(nouns[:-1]) + (" and " if len(nouns) > 1 else "") + nouns[-1]
        raise input_error(
            what,
            f"the same {listed} as the run that wrote it",
            ", ".join(detail for _, detail in diffs).replace("; ", ", "),
            "resume with the inputs of the run that wrote it (same algorithm and settings, data,"
            f" prior, initial particles and key), or {_START_AFRESH}",
        )
    if max_steps is not None and steps > max_steps:
        raise input_error(
            what,
            f"at most num_steps = {max_steps} steps",
            f"a checkpoint that already holds {steps} steps (its state after step {max_steps} "
            "is not in the file)",
            f"pass num_steps >= {steps} to use it (the run continues to num_steps, or returns "
            f"at once if it is finished), or {_START_AFRESH}",
        )
    leaves = [arrays.get(f"state_{i}") for i in range(num_leaves)]
    if any(leaf is None for leaf in leaves):
        raise _corrupt(path, "a checkpoint with state leaves missing")
    history = {
        name[len("history_") :]: arr for name, arr in arrays.items() if name.startswith("history_")
    }
    return Checkpoint(state=restore(template, leaves, what=what), history=history, steps=steps)


# ----------------------------------------------------------------------------------- state


def state_leaves(state: Any) -> list[Any]:
    """The state's array leaves in pytree order, typed PRNG keys as their key data (what
    :func:`save` writes, after bringing them to the host).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> print(*[x.shape for x in state_leaves((jnp.zeros(3), jax.random.key(0), "static"))])
        (3,) (2,)
    """
    leaves = jax.tree_util.tree_leaves(eqx.filter(state, eqx.is_array))
    return [
        jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        for x in leaves
    ]


def restore(template: Any, leaves: Sequence[np.ndarray], *, what: str = "checkpoint") -> Any:
    """Put saved leaves (from :func:`state_leaves`) back into ``template``'s structure.

    Args:
        template: a state with the same structure (its array values are ignored).
        leaves: host arrays in :func:`state_leaves` order.
        what: names the source in error messages.

    Returns:
        The state, with JAX arrays (typed keys rewrapped with the template's implementation).

    Raises:
        InputError: if the number, shapes or dtypes of the leaves do not match the template.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> restore({"a": jnp.zeros(2), "n": 3}, [np.ones(2, np.float32)])
        {'a': Array([1., 1.], dtype=float32), 'n': 3}
    """
    dynamic, static = eqx.partition(template, eqx.is_array)
    refs, treedef = jax.tree_util.tree_flatten(dynamic)
    if len(refs) != len(leaves):
        raise input_error(
            what,
            f"{len(refs)} state leaves",
            f"{len(leaves)}",
            f"resume with the same algorithm, or {_START_AFRESH}",
        )
    restored = []
    for i, (ref, arr) in enumerate(zip(refs, leaves, strict=True)):
        is_key = jnp.issubdtype(ref.dtype, jax.dtypes.prng_key)
        want = jax.random.key_data(ref) if is_key else ref
        arr = np.asarray(arr)
        if arr.dtype.kind == "V" and arr.dtype.itemsize == np.dtype(want.dtype).itemsize:
            arr = arr.view(want.dtype)  # extension dtypes (bfloat16) come back as raw bytes
        if arr.shape != want.shape or arr.dtype != want.dtype:
            raise input_error(
                what,
                f"state leaf {i} of shape {want.shape} and dtype {want.dtype}",
                f"shape {arr.shape}, dtype {arr.dtype}",
                f"resume with the same ensemble size, model and precision, or {_START_AFRESH}",
            )
        value = jnp.asarray(arr)
        restored.append(
            jax.random.wrap_key_data(value, impl=jax.random.key_impl(ref)) if is_key else value
        )
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, restored), static)
