"""A node that fails, or is stopped from afar, goes away at once; one bad input never stops it.

Real `gorilix node` processes on 127.0.0.1, reaped by their fixture (their
workers checked gone), raw UDP for hostile gossip, and in-process systems for
the API's fail-fast behaviour. Nothing sleeps to synchronise: every wait
polls a condition with a deadline.

"Dies at start": a ``sitecustomize`` on the PYTHONPATH of a node makes every
worker process started while a flag file exists exit before it is ready,
which is what a worker with a broken environment does.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from actors import Echo, Sleeper
from conftest import NodeProcess, process_running, reap_nodes, wait_for

from gorilix import ActorSystem, GorilixError, NotRunning
from gorilix.cluster import bridge, wire
from gorilix.cluster.config import ClusterConfig
from gorilix.cluster.keyfile import default_secret
from gorilix.cluster.security import ClusterKeys
from gorilix.control import HANDLERS
from gorilix.launcher import EXIT_NODE_FAILED, free_port
from gorilix.remote import RemoteNode
from gorilix.transport import codec

TESTS = Path(__file__).parent
FAST = ["--probe-interval", "0.2", "--probe-timeout", "0.1", "--push-interval", "0.05",
        "--pull-interval", "2", "--suspicion-mult", "3", "--leave-timeout", "1"]

CRASH_HOOK = '''\
"""Test hook: a worker process started while the flag file exists exits before it is ready."""
import os
import sys

if "--multiprocessing-fork" in sys.argv and os.path.exists(os.environ.get("CRASH_WORKERS_FLAG", "")):
    os._exit(7)
'''


@dataclass
class CrashHook:
    path: Path  # a directory to put first on PYTHONPATH
    flag: Path  # workers started while this exists die at once

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join([str(self.path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "CRASH_WORKERS_FLAG": str(self.flag)}


@pytest.fixture
def crash_hook(tmp_path: Path) -> CrashHook:
    path = tmp_path / "hook"
    path.mkdir()
    (path / "sitecustomize.py").write_text(CRASH_HOOK)
    return CrashHook(path, tmp_path / "crash-workers")


def _env(hook: CrashHook | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GORILIX_") or k == "GORILIX_RUNTIME_DIR"}
    paths = [str(TESTS.parent), str(TESTS), env.get("PYTHONPATH", "")]
    if hook is not None:
        paths.insert(0, str(hook.path))
        env["CRASH_WORKERS_FLAG"] = str(hook.flag)
    env["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    return env


class Node(NodeProcess):
    def control(self, op: str, *args: Any, timeout: float = 5.0) -> Any:
        with RemoteNode(self.address, timeout=timeout) as remote:
            return remote.control(op, *args)

    def poll_control(self, op: str, *args: Any) -> Any:
        """The answer, or None when the node does not answer (within 1 s)."""
        try:
            return self.control(op, *args, timeout=1.0)
        except GorilixError:
            return None

    def members(self) -> dict[str, str]:
        return {row["name"]: row["status"] for row in self.poll_control("members") or []}

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.control("workers")]

    def exited(self) -> bool:
        return self.proc.poll() is not None


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start `gorilix node` processes; each is stopped, waited for and its workers checked gone."""
    nodes: list[Node] = []

    def start(seeds: tuple[str, ...] = (), workers: int = 1, app: str = "cli_app:setup",
              hook: CrashHook | None = None) -> Node:
        name = f"nf-{uuid.uuid4().hex[:6]}"
        port = free_port()
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        cmd = [sys.executable, "-m", "gorilix", "node", "--name", name, "--bind", f"127.0.0.1:{port}",
               "--workers", str(workers), "--app", app, *FAST]
        for seed in seeds:
            cmd += ["--seed", seed]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, cwd=TESTS, env=_env(hook))
        node = Node(name, port, proc, out, err)
        nodes.append(node)
        wait_for(lambda: "ready:" in node.out.read_text() or node.exited(), 30, f"node {name} ready")
        assert not node.exited(), f"node {name} exited {proc.returncode}: {node.output()}"
        return node

    try:
        yield start
    finally:
        reap_nodes([node.proc for node in nodes])


def _pair(start_node: Callable[..., Node], **kwargs: Any) -> tuple[Node, Node]:
    """A watcher node and a second one (started with ``kwargs``) joined to it."""
    watcher = start_node()
    other = start_node(seeds=(watcher.address,), **kwargs)
    wait_for(lambda: watcher.members().get(other.name) == "alive", 20, f"{other.name} alive at the watcher")
    return watcher, other


# -- one bad input never ends the node loop ----------------------------------------


def bad_alive(name: str, port: int, meta: dict[str, Any]) -> bytes:
    """One gossip datagram, no secret: member ``name`` is alive with ``meta``."""
    return wire.array_header(2) + wire.VERSION_BYTES + msgpack.packb([wire.ALIVE, name, 1, "127.0.0.1", port, meta])


@pytest.mark.slow
def test_one_bad_datagram_is_dropped_and_counted_and_the_node_keeps_routing(
        start_node: Callable[..., Node]) -> None:
    node = start_node()
    datagram = bad_alive("evil", 9, {"router": "tcp://a b:1"})
    assert len(datagram) == 41
    # Sealed with the per-user secret the node runs with: a member, not an outsider, sends the bad metadata.
    keys = ClusterKeys(default_secret(create=False) or b"")
    keys.gossip_as("evil", [("127.0.0.1", 9)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(keys.seal(datagram, ("127.0.0.1", node.port)), ("127.0.0.1", node.port))
    wait_for(lambda: (node.poll_control("stats") or {}).get("bad_meta", 0) >= 1, 10, "the bad metadata counted")
    with RemoteNode(node.address) as remote:
        assert remote.ask("echo", "still routing")["echo"] == "still routing"
    assert "evil" not in node.members()
    assert not node.exited()


def test_bad_membership_events_are_counted_not_fatal(make_thread_system: Callable[..., ActorSystem]) -> None:
    """Defence in depth: what reaches the node loop from the gossip thread is checked again."""
    system = make_thread_system(1)
    system.set_cluster_provider(bridge.ClusterProvider())
    system.enable_clustering(ClusterConfig(node_name=system.name, bind_port=free_port()))
    node = system._node.node
    push = node.zctx.socket(zmq.PUSH)
    try:
        push.connect(f"inproc://gorilix-events-{id(node):x}")
        for event in (["join", "ev", "alive", {"router": "tcp://a b:1"}, "127.0.0.1", 1, 0.0],
                      ["update", "ev", "alive", {"router": "tcp://10.0.0.1:0"}, "127.0.0.1", 1, 0.0],
                      ["join", "ev", "alive", "not a dict", "127.0.0.1", 1, 0.0], 42, ["join"],
                      ["join", "ev", "alive", {}]):
            push.send(codec.encode(event))
        wait_for(lambda: system.stats()["bad_meta"] >= 2 and system.stats()["malformed"] >= 4, 10,
                 "bad events counted")
    finally:
        push.close(linger=0)
    assert system.spawn(Echo).ask("still here") == "still here"


def test_a_handler_bug_is_answered_and_logged_and_the_node_keeps_running(
        thread_system: ActorSystem, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    system = thread_system
    def broken(*args: Any) -> Any:
        return 1 // 0

    monkeypatch.setitem(HANDLERS, "broken", broken)
    with pytest.raises(GorilixError, match="broken"):
        system._control("broken", timeout=5.0)
    assert system.spawn(Echo).ask("still here") == "still here"
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records), caplog.text


def test_a_request_with_an_endless_timeout_does_not_end_the_node_loop(system: ActorSystem) -> None:
    with pytest.raises(GorilixError, match="kill_worker_wait"):  # signal 0 kills nothing; an endless wait cannot be scheduled
        system._control("kill_worker_wait", None, 0, math.inf, timeout=5.0)
    assert system.spawn(Echo).ask("still here") == "still here"


# -- a node that stops or fails goes away -------------------------------------------


@pytest.mark.slow
def test_a_remote_stop_ends_the_process_with_0_and_it_leaves(start_node: Callable[..., Node]) -> None:
    watcher, node = _pair(start_node)
    pids = node.worker_pids()
    assert node.control("stop") is True
    wait_for(node.exited, 5, "the stopped node's process gone")
    assert node.proc.returncode == 0, node.output()
    wait_for(lambda: watcher.members().get(node.name) == "left", 10, "marked left, not dead")
    assert not any(process_running(pid) for pid in pids)
    assert "Traceback" not in node.err.read_text()


@pytest.mark.slow
def test_workers_dying_at_start_end_the_process_nonzero_and_it_leaves(
        start_node: Callable[..., Node], crash_hook: CrashHook) -> None:
    watcher, node = _pair(start_node, hook=crash_hook)
    [pid] = node.worker_pids()
    crash_hook.flag.touch()
    os.kill(pid, signal.SIGKILL)  # its replacements die before they are ready, three times
    wait_for(node.exited, 10, "the failed node's process gone")
    assert node.proc.returncode == EXIT_NODE_FAILED, node.output()
    assert "died 3 times before it was ready" in node.err.read_text()
    wait_for(lambda: watcher.members().get(node.name) == "left", 10, "marked left, not dead")


@pytest.mark.slow
def test_sigterm_with_a_stuck_worker_is_bounded_and_says_what_it_killed(
        start_node: Callable[..., Node]) -> None:
    node = start_node()
    with RemoteNode(node.address) as remote:
        hog = remote.spawn("gorilix.bench_actors:CpuWorker")
        remote.tell_ref(hog, 10**12)  # holds its worker's event loop: it cannot hear "shutdown"
    [pid] = node.worker_pids()
    node.proc.send_signal(signal.SIGTERM)
    wait_for(node.exited, 10, "the node gone after SIGTERM")  # ~3.5 s: 3 s of grace, then SIGTERM
    assert node.proc.returncode == 0, node.output()
    assert f"worker 0 (pid {pid}) did not stop" in node.err.read_text(), node.output()
    assert not process_running(pid)


# -- the API fails fast once its node is dead ---------------------------------------


def test_waiting_and_new_calls_fail_fast_once_the_node_died(
        make_system: Callable[..., ActorSystem], crash_hook: CrashHook, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in crash_hook.env().items():  # (workers get the node process's environment)
        monkeypatch.setenv(key, value)
    system = make_system(2)
    sleeper = system.spawn(Sleeper, worker=1)
    stuck = system.workers()[1].pid
    outcomes: dict[str, tuple[type[BaseException], float]] = {}

    def waiting(label: str, call: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            started = time.monotonic()
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcomes[label] = (type(exc), time.monotonic() - started)
            else:
                outcomes[label] = (type(None), time.monotonic() - started)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    threads = [waiting("ask", lambda: sleeper.ask(60, timeout=60.0)),
               waiting("ask_async", lambda: asyncio.run(sleeper.ask_async(60, timeout=60.0)))]
    assert system.kill_worker(1, signal.SIGSTOP) == stuck  # what is sent to worker 1 now waits
    threads.append(waiting("spawn", lambda: system.spawn(Echo, worker=1)))
    wait_for(lambda: system.stats()["actors"] == 2, 5, "the spawn on its way")
    crash_hook.flag.touch()
    system.kill_worker(0)  # worker 0's replacements die before they are ready: the node gives up
    for thread in threads:
        thread.join(10.0)
    assert outcomes.get("ask", (None,))[0] is NotRunning, outcomes
    assert outcomes.get("ask_async", (None,))[0] is NotRunning, outcomes
    assert outcomes.get("spawn", (None,))[0] is NotRunning, outcomes
    assert all(took < 10.0 for _, took in outcomes.values()), outcomes
    for call in (lambda: system.spawn(Echo), lambda: sleeper.tell(1), lambda: sleeper.ask(1, timeout=30.0),
                 system.workers):
        started = time.monotonic()
        with pytest.raises(NotRunning, match="died 3 times"):
            call()
        assert time.monotonic() - started < 1.0
    assert not system.running
