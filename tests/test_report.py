"""Strict JSON reports and output folders checked up front."""

import json
import math

import numpy as np
import pytest

from ekibnn.errors import InputError
from ekibnn.report import prepare_out_dir, strict, write_json


def test_strict_json_nulls_with_reasons():
    report = {
        "r2": -2.8e27,
        "nll": np.float32(np.inf),
        "crps": math.nan,
        "coverage_95": np.float64(0.95),
        "n": np.int64(3),
        "hidden": (8, 8),
        "nested": {"std": [1.0, math.nan], "mean": -math.inf},
        "nll_undefined": "zero predictive std",  # a reason given by the caller wins
    }
    out = strict(report)
    json.dumps(out, allow_nan=False)
    assert out["nll"] is None and out["nll_undefined"] == "zero predictive std"
    assert out["crps"] is None and out["crps_undefined"] == "not a number (NaN)"
    assert out["nested"] == {"std": [1.0, None], "mean": None, "mean_undefined": "infinite (-inf)"}
    assert out["coverage_95"] == 0.95 and out["n"] == 3 and out["hidden"] == [8, 8]
    with pytest.raises(TypeError, match="strict JSON"):
        strict({"f": print})


def test_write_json_is_strict_and_replaces(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    write_json(path, {"x": math.inf})
    assert json.loads(path.read_text()) == {"x": None, "x_undefined": "infinite (inf)"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_prepare_out_dir(tmp_path):
    out = prepare_out_dir(tmp_path / "a" / "b", ["metrics.json"], what="--out")
    assert out.is_dir()
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(InputError, match=r"--out: expected a folder.*got a file"):
        prepare_out_dir(taken, what="--out")
    with pytest.raises(InputError, match="got a path under a file"):
        prepare_out_dir(taken / "x" / "y")
    (out / "metrics.json").mkdir()
    with pytest.raises(InputError, match=r"metrics\.json can be written; got a folder"):
        prepare_out_dir(out, ["metrics.json"])


def test_preload_plotting_loads_it_in_another_thread(monkeypatch):
    # the CLI's commands start importing matplotlib before their fit; a later import in the
    # caller's thread gets the same module, and a failing import stays quiet in the thread
    import sys
    import threading

    from ekibnn import report

    started = []
    real_thread = threading.Thread

    def spy(*args, **kwargs):
        thread = real_thread(*args, **kwargs)
        started.append(thread)
        return thread

    monkeypatch.delitem(sys.modules, "ekibnn.plotting", raising=False)
    monkeypatch.setattr(report.threading, "Thread", spy)
    report.preload_plotting()
    assert len(started) == 1 and started[0].daemon
    started[0].join(timeout=60)
    assert "ekibnn.plotting" in sys.modules
    from ekibnn import plotting

    assert plotting is sys.modules["ekibnn.plotting"]
    report.preload_plotting()  # already loaded: no second thread
    assert len(started) == 1
    report._import_quietly("ekibnn._no_such_module")  # no exception escapes the thread
