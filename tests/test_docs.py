"""The documentation site builds with ``mkdocs build --strict`` (every warning is an error).

The build renders the jupytext notebooks without executing them (``tests/test_notebooks.py``
executes them) and generates the API reference from the docstrings with mkdocstrings, so a
broken cross-reference, a missing page in the nav or a docstring Griffe cannot parse fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra is part of the test extra")


def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    site = tmp_path / "site"
    for page in [
        "index.html",
        "getting-started/index.html",
        "algorithms/index.html",
        "troubleshooting/index.html",
        "api/inversion/index.html",
        "notebooks/bnn_with_eki/index.html",
    ]:
        assert (site / page).is_file(), f"missing page {page}"
    # the API reference was generated from the docstrings
    assert "kalman_increment" in (site / "api/ensemble-linalg/index.html").read_text()
