"""Warnings reach stderr by default from every process of a system, in one format (gorilix.logs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = """
import logging
{configure}
from gorilix import Actor, ActorSystem

class Echo(Actor):
    def receive(self, message):
        return message

if __name__ == "__main__":
    with ActorSystem("logs", workers=1, log_level={level!r}) as system:
        system.spawn(Echo).ask("hi")
        logging.getLogger("gorilix.system").warning("a warning in the program")
        logging.getLogger("gorilix.system").info("some news in the program")
        system.kill_worker(0)
"""


def _run(tmp_path: Path, configure: str = "", level: str = "WARNING") -> str:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(PROGRAM.format(configure=configure, level=level)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_a_library_program_sees_warnings_from_itself_and_from_its_node(tmp_path: Path) -> None:
    # The docs promised a warning when a worker dies; a library program saw none, as only the CLI
    # set logging up.
    stderr = _run(tmp_path)
    assert " program WARNING gorilix.system: a warning in the program" in stderr
    assert " node logs WARNING gorilix.node: worker 0 (pid " in stderr and "died" in stderr
    assert "some news" not in stderr


def test_log_level_lets_info_through_in_the_program_too(tmp_path: Path) -> None:
    assert " program INFO gorilix.system: some news in the program" in _run(tmp_path, level="INFO")


@pytest.mark.parametrize("configure", ['logging.basicConfig(format="MINE %(name)s %(message)s")'])
def test_a_program_that_configures_logging_gets_each_record_once_its_way(tmp_path: Path, configure: str) -> None:
    stderr = _run(tmp_path, configure=configure)
    assert stderr.count("a warning in the program") == 1
    assert "MINE gorilix.system a warning in the program" in stderr
