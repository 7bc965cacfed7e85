"""examples/cluster/run.py runs three real nodes and says what it showed.

tests/test_examples.py only collects examples/*.py; this example lives in its
own directory (run.py, node.py and the shared services.py), so it is checked
here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "cluster" / "run.py"


@pytest.mark.slow
def test_cluster_example_runs() -> None:
    # subprocess.run kills the example at the timeout; the example itself
    # reaps its two node processes, and they exit when its pipes close.
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"run.py exited with {result.returncode}\n{output}"
    assert "the cluster saw billing leave, failed its in-flight request and fired the monitor" in result.stdout, output
    assert "NodeDown" in result.stdout and "'left'" in result.stdout, output
    assert "[inventory] sees billing: leave (left)" in result.stdout, output
