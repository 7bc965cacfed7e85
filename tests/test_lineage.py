"""What an actor starts ends with its worker and its node: a process forked by an actor outlived stop()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from actors import Starter
from conftest import process_running, wait_for

from gorilix import ActorSystem


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids a test saw actors start: killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if process_running(pid):
            os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_what_an_actor_starts_ends_with_stop(make_system: Callable[..., ActorSystem], started: list[int]) -> None:
    system = make_system(1)
    starter = system.spawn(Starter)
    in_group = starter.ask(False, timeout=10.0)
    own_session = starter.ask(True, timeout=10.0)  # left the worker's group: the node adopts it
    started += [in_group, own_session]
    assert not _gone(in_group) and not _gone(own_session)
    system.stop()
    wait_for(lambda: _gone(in_group) and _gone(own_session), 5, "the actor's processes ended with the system")


def test_what_an_actor_starts_ends_with_its_worker(make_system: Callable[..., ActorSystem],
                                                   started: list[int]) -> None:
    system = make_system(1, log_level="CRITICAL")
    starter = system.spawn(Starter)
    child = starter.ask(False, timeout=10.0)
    started.append(child)
    system.kill_worker(0)
    wait_for(lambda: _gone(child), 5, "the actor's process ended with its worker")
    assert isinstance(starter.ask(False, timeout=10.0), int)  # (the actor came back)


def test_what_an_actor_starts_ends_when_the_program_is_killed(tmp_path: Path, started: list[int]) -> None:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from actors import Starter
        from gorilix import ActorSystem

        if __name__ == "__main__":
            system = ActorSystem("lineage", workers=1)
            starter = system.spawn(Starter)
            print(json.dumps([starter.ask(False), starter.ask(True), system._node.pid]), flush=True)
            time.sleep(60)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the program did not start (exit {proc.wait(10)})"
        in_group, own_session, node = json.loads(line)
        started += [in_group, own_session, node]
        proc.kill()
        proc.wait(10)
        wait_for(lambda: _gone(in_group) and _gone(own_session) and _gone(node), 10,
                 "the node and what the actor started ended with the program")
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_what_an_actor_starts_ends_when_its_node_is_killed(make_system: Callable[..., ActorSystem],
                                                          started: list[int]) -> None:
    # The kernel kills the workers of a node killed by SIGKILL; each worker's guard then kills its group.
    system = make_system(1)
    child = system.spawn(Starter).ask(False, timeout=10.0)
    started.append(child)
    os.kill(system._node.pid, signal.SIGKILL)
    wait_for(lambda: _gone(child), 5, "the actor's process ended with its node")


def test_a_reaped_worker_has_no_pid_rather_than_an_error() -> None:
    # The node's reaping of adopted processes read every worker's pid: one reaped (closed) and not yet
    # replaced raised ValueError, which ended the node.
    import multiprocessing

    from gorilix.workers.config import WorkerConfig
    from gorilix.workers.pool import WorkerProcess

    process = multiprocessing.get_context("fork").Process(target=int)
    process.start()
    process.join()
    process.close()
    worker = WorkerProcess(WorkerConfig("n", 0, 1, 1, "ipc://unused"), process, 0.0)
    assert worker.pid is None and not worker.alive
