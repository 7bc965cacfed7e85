"""The node is a process of its own: the program's GIL cannot stall it, and it dies with the program."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from actors import Echo
from conftest import process_running, wait_for

from gorilix import Actor, ActorSystem, NotRunning
from gorilix.bench import hold_the_gil
from gorilix.cluster import bridge
from gorilix.launcher import free_port
from gorilix.system import ClusterConfig


class PingLoop(Actor):
    """Asks a target in a loop, in a task of its own, and keeps the wall-clock time of each answer."""

    def __init__(self) -> None:
        self.answered: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def receive(self, msg: Any) -> Any:
        if msg == "get":
            return self.answered
        self.task = asyncio.get_running_loop().create_task(self.ping(msg))
        return None

    async def ping(self, target: Any) -> None:
        while True:
            await target.ask_async("ping", timeout=30.0)
            self.answered.append(time.time())


def test_the_node_is_a_process_of_its_own_and_its_workers_are_its_children(system: ActorSystem) -> None:
    node = psutil.Process(system._node.pid)
    assert system._node.pid != os.getpid()
    assert node.ppid() == os.getpid()
    children = {c.pid for c in node.children() if "resource_tracker" not in " ".join(c.cmdline())}
    assert {w.pid for w in system.workers()} == children


def test_asks_between_workers_go_on_while_the_program_holds_its_gil(system: ActorSystem) -> None:
    # With the node a thread of the program, every ask between two workers waited for the
    # program's C call: none was answered while it ran (2.9 s for one, measured).
    echo = system.spawn(Echo, worker=1)
    pinger = system.spawn(PingLoop, worker=0)
    pinger.tell(echo)
    wait_for(lambda: len(pinger.ask("get")) > 100, 10, "the ping loop running")
    started, ended = hold_the_gil(1.5)
    answered = pinger.ask("get", timeout=10.0)
    during = [t for t in answered if started + 0.1 < t < ended - 0.1]
    assert ended - started > 0.5, "the GIL was not held long enough to tell"
    assert len(during) > 50, f"only {len(during)} asks answered in {ended - started:.1f} s of a held GIL"


PROGRAM = textwrap.dedent("""
    import json, os, sys, time
    from gorilix import Actor, ActorSystem

    MARKS = sys.argv[1]
    with open(MARKS, "a") as marks:  # every process that imports this program says so
        marks.write(f"{os.getpid()}\\n")

    class Echo(Actor):
        def receive(self, msg):
            return msg

    if __name__ == "__main__":
        system = ActorSystem("prog", workers=2)
        ref = system.spawn(Echo)  # a class of the program's __main__: workers import the program
        assert ref.ask("hi") == "hi"
        print(json.dumps({"node": system._node.pid, "workers": [w.pid for w in system.workers()],
                          "node_loop_here": "gorilix.node" in sys.modules}), flush=True)
        time.sleep(60)
""")


@pytest.fixture
def program(tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[str], dict[str, Any], Path]]]:
    """Run PROGRAM as a script; everything it started is killed at the end."""
    procs: list[subprocess.Popen[str]] = []
    pids: list[int] = []

    def start() -> tuple[subprocess.Popen[str], dict[str, Any], Path]:
        script = tmp_path / "prog.py"
        script.write_text(PROGRAM)
        marks = tmp_path / f"marks-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=subprocess.PIPE, text=True,
                                cwd=tmp_path)
        procs.append(proc)
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the program did not start (exit {proc.wait(10)})"
        info = json.loads(line)
        pids.extend([info["node"], *info["workers"]])
        return proc, info, marks

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
        for pid in pids:
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_node_process_imports_no_user_module(program: Callable[..., Any]) -> None:
    proc, info, marks = program()
    imported = {int(line) for line in marks.read_text().split()}
    assert imported == {proc.pid, *info["workers"]}  # the program and its workers; never the node
    assert info["node"] not in imported
    assert info["node_loop_here"] is False  # and the program holds only clients


def test_a_program_that_starts_its_system_unguarded_fails_clearly(tmp_path: Path) -> None:
    # Workers import the program to find its actor classes. Started by the node process, a worker
    # that ran an unguarded ActorSystem(...) would start a node of its own, whose workers would do
    # the same: a fork bomb. It fails at once instead, and says how to fix the program.
    script = tmp_path / "unguarded.py"
    script.write_text("from gorilix import ActorSystem\nActorSystem('unguarded', workers=1).stop()\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert 'create the system under `if __name__ == "__main__":`' in result.stderr
    assert "died 3 times before it was ready" in result.stderr


def test_sigkill_of_the_program_takes_the_node_and_its_workers_within_a_second(
        program: Callable[..., Any]) -> None:
    proc, info, _ = program()
    pids = [info["node"], *info["workers"]]
    assert all(process_running(pid) for pid in pids)
    proc.kill()
    proc.wait(10)
    killed = time.monotonic()
    wait_for(lambda: not any(process_running(pid) for pid in pids), 5, "the node and its workers gone")
    assert time.monotonic() - killed < 1.0


def test_a_client_whose_node_process_died_fails_at_once(make_system: Callable[..., ActorSystem]) -> None:
    system = make_system(1)
    ref = system.spawn(Echo)
    assert ref.ask("hi") == "hi"
    failed: list[BaseException] = []

    def wait_long() -> None:
        try:
            system.spawn(Echo, worker=0).ask(["never"], timeout=60.0)  # an answer to come, or the node's end
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            failed.append(exc)

    os.kill(system._node.pid, signal.SIGKILL)
    started = time.monotonic()
    waiter = threading.Thread(target=wait_long, daemon=True)
    waiter.start()
    waiter.join(10.0)
    assert failed and isinstance(failed[0], NotRunning), failed
    assert "signal SIGKILL" in str(failed[0]) and "start a new ActorSystem" in str(failed[0])
    assert time.monotonic() - started < 5.0
    with pytest.raises(NotRunning):
        ref.tell("x")
    assert not system.running
    assert isinstance(system.failure, NotRunning)
    system.stop()  # still safe: nothing to stop


def test_stop_when_the_node_already_ended_is_quick_and_clean(system: ActorSystem) -> None:
    system._node.request_stop()
    wait_for(lambda: not system.running, 5, "the node ended")
    with pytest.raises(NotRunning, match="was stopped"):
        system.spawn(Echo)
    assert system.failure is None
    system.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_clustered_program_holding_its_gil_for_30_s_is_never_suspected(tmp_path: Path) -> None:
    # With gossip on a thread of the program, a healthy peer marked such a node suspect
    # after 5 s and dead after 9 s, and its actors' monitors fired.
    port, peer_port = free_port(), free_port()
    script = tmp_path / "busy.py"
    script.write_text(textwrap.dedent(f"""
        from gorilix import ActorSystem
        from gorilix.bench import hold_the_gil
        from gorilix.cluster import bridge
        from gorilix.system import ClusterConfig

        if __name__ == "__main__":
            with ActorSystem("busy", workers=1) as system:
                system.set_cluster_provider(bridge.ClusterProvider())
                system.enable_clustering(ClusterConfig(node_name="busy", bind_port={port},
                                                       seeds=["127.0.0.1:{peer_port}"]))
                print("joined", flush=True)
                hold_the_gil(30.0)
                print("done", flush=True)
    """))
    events: list[tuple[str, str]] = []
    with ActorSystem(f"peer-{uuid.uuid4().hex[:6]}", workers=1) as peer:
        peer.set_cluster_provider(bridge.ClusterProvider())
        cluster = peer.enable_clustering(ClusterConfig(node_name=peer.name, bind_port=peer_port))
        cluster.on_event(lambda e: events.append((e.name, e.status)))
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "joined"  # type: ignore[union-attr]
            wait_for(lambda: ("busy", "alive") in events, 10, "busy seen alive")
            assert proc.stdout.readline().strip() == "done"  # type: ignore[union-attr]
            assert proc.wait(30) == 0
            wait_for(lambda: ("busy", "left") in events, 10, "busy's graceful leave at its stop")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
    seen = [status for name, status in events if name == "busy"]
    assert "suspect" not in seen and "dead" not in seen, seen
    assert seen[-1] == "left", seen
