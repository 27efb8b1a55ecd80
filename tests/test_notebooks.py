"""Every documentation notebook runs top to bottom at a small size.

Each ``docs/notebooks/*.md`` (a jupytext Markdown notebook) is converted with jupytext and
executed with nbclient by ``docs/run_notebooks.py`` in a subprocess (so the Jupyter machinery's
sockets and warnings stay out of this process, where warnings are errors). The kernel runs this
interpreter through a temporary kernelspec (nothing has to be registered with Jupyter) with
``EKIBNN_DOCS_SIZE=small``. A failing cell fails the test with the cell's traceback; a cell
running longer than ``CELL_TIMEOUT`` seconds fails it too. ``python docs/run_notebooks.py
--full`` runs the same notebooks at full size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# the docs extra is part of the test extra: a missing package is an error, not a skip
import ipykernel  # noqa: F401
import jupytext  # noqa: F401
import nbclient  # noqa: F401
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.md"))
CELL_TIMEOUT = 300  # seconds per cell at small size (generous: CI machines are shared)


def test_notebooks_found():
    names = {p.stem for p in NOTEBOOKS}
    assert {"bnn_with_eki", "bpinn_poisson", "choosing_a_method", "classification"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs" / "run_notebooks.py"),
            path.stem,
            "--timeout",
            str(CELL_TIMEOUT),
            "--out-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout}\n{proc.stderr[-20000:]}"
    nb = json.loads((tmp_path / f"{path.stem}.ipynb").read_text())
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code_cells, f"{path.name} has no code cells"
    assert all(c.get("execution_count") for c in code_cells), "some cells did not run"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
