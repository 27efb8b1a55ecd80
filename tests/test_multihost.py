"""Multi-process EKI over loopback: two JAX processes x two forced CPU devices (Gloo
collectives) give the same ensemble as one process with four devices."""

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "multihost.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("multihost", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_processes_match_one_process_with_four_devices(tmp_path):
    # launch(): free loopback port, 2 workers + 1 single-process reference, timeout, kill on hang
    report = _load_example().main(
        ["--steps", "5", "--ensemble", "16", "--out", str(tmp_path), "--timeout", "240"]
    )
    assert report["processes"] == 2 and report["devices"] == 4
    multi, single = np.load(tmp_path / "worker.npz"), np.load(tmp_path / "single.npz")
    assert multi["particles"].dtype == np.float64 and multi["particles"].shape[0] == 16
    assert int(single["num_processes"]) == 1 and int(single["num_devices"]) == 4
    # float64: equal to round-off (the all-reduce over Gloo sums in another order)
    np.testing.assert_allclose(multi["particles"], single["particles"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(multi["misfit"], single["misfit"], rtol=1e-10)
    assert np.all(np.isfinite(multi["particles"]))
    # the multi-process checkpoint: shards gathered from both processes, written once
    with np.load(tmp_path / "worker_checkpoint.npz") as ckpt:
        assert int(ckpt["steps"]) == 5
        leaves = [ckpt[f"state_{i}"] for i in range(int(ckpt["num_leaves"]))]
    members = [leaf.reshape(16, -1) for leaf in leaves if leaf.shape[:1] == (16,)]
    np.testing.assert_array_equal(np.concatenate(members, axis=1), multi["particles"])
