"""Every example in examples/ runs as its own program and says what it showed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: A line each example prints only when it did its job.
EXPECTED = {
    "chaos_drill.py": "children answer through their original refs",
    "cpu_pool.py": "speedup",
    "dashboard_tour.py": "tour over",
    "failover.py": "refs answered again",
    "supervision_tree.py": "api restarted with fresh state",
}


#: Arguments an example needs to end by itself.
ARGS = {"dashboard_tour.py": ["--seconds", "4", "--port", "0"]}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path) -> None:
    # subprocess.run waits for the child (and kills it at the timeout), so
    # nothing is left running whatever happens.
    result = subprocess.run(
        [sys.executable, str(script), *ARGS.get(script.name, [])], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"{script.name} exited with {result.returncode}\n{output}"
    assert EXPECTED[script.name] in result.stdout, output
