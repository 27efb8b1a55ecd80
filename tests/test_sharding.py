"""Ensemble sharding across 4 forced CPU devices, in a subprocess so the rest of the suite keeps
its single device."""

import subprocess
import sys
from pathlib import Path


def test_sharded_run_matches_single_device():
    script = Path(__file__).parent / "scripts" / "sharded_run.py"
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SHARDED-OK" in proc.stdout
