"""Fixtures that start real nodes and always reap what they start."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

import gorilix.system
from gorilix import ActorSystem
from gorilix.launcher import NodeProcess as LaunchedNode
from gorilix.launcher import free_port
from gorilix.ledger import DEFAULT_MAX_QUEUED
from gorilix.node import Node
from gorilix.workers.boot import describe_program


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout:g} s (last value: {value!r})")
        time.sleep(0.01)


def process_running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reap_nodes(procs: list[subprocess.Popen[Any]]) -> None:
    """Stop node processes in stages: SIGTERM (a graceful leave), then SIGKILL; then check their workers gone."""
    workers: list[int] = []
    for proc in procs:
        try:
            workers += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            pass
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    wait_for(lambda: not any(process_running(p) for p in workers), 10, "every node's workers gone")


def _is_ours(proc: psutil.Process) -> bool:
    # multiprocessing's resource tracker lives as long as this process and
    # exits with it; it is not something a test started.
    try:
        return proc.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _children() -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process().children(recursive=True) if _is_ours(p)]
    except psutil.Error:
        return []


def assert_no_children(timeout: float = 5.0) -> None:
    wait_for(lambda: not _children(), timeout, "all child processes gone")


@dataclass
class NodeProcess:
    """A `gorilix node` started by a test: its process and the files its output goes to."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite's own runtime directory (ipc sockets, the per-user secret): never the real user's.

    Set in the environment, so every node and CLI process a test starts uses it
    too. The per-user secret is made at once, so no test depends on whether a
    node made it before.
    """
    from gorilix.cluster.keyfile import default_secret
    from gorilix.transport.runtime import RUNTIME_ENV

    folder = tmp_path_factory.mktemp("rt", numbered=True)
    folder.chmod(0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RUNTIME_ENV, str(folder))
        default_secret(create=True)
        yield folder


@pytest.fixture
def gorilix_node() -> Iterator[Callable[..., LaunchedNode]]:
    """`gorilix node` processes on free ports (``args`` appended to the command); all reaped at the end."""
    started: list[LaunchedNode] = []

    def start(*args: str, workers: int = 2) -> LaunchedNode:
        node = LaunchedNode(f"n-{uuid.uuid4().hex[:6]}", free_port(), workers=workers, args=args)
        started.append(node)
        node.wait_ready(30.0)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.reap()


@pytest.fixture
def make_system() -> Iterator[Callable[..., ActorSystem]]:
    """Start systems on demand; every one is stopped and its workers checked gone."""
    started: list[ActorSystem] = []

    def make(workers: int = 2, **kwargs: Any) -> ActorSystem:
        system = ActorSystem(f"test-{uuid.uuid4().hex[:8]}", workers=workers, **kwargs)
        started.append(system)
        return system

    try:
        yield make
    finally:
        for system in started:
            system.stop()
        assert_no_children()


@pytest.fixture
def system(make_system: Callable[..., ActorSystem]) -> ActorSystem:
    return make_system(2)


class ThreadNodeHandle:
    """A node run as a thread of the test process, where a test can reach into it (monkeypatch, counters).

    It stands in for :class:`gorilix.node_handle.NodeHandle` (same attributes);
    the product always runs the node as a process of its own.
    """

    def __init__(self, name: str, workers: int, *, log_level: int, max_parked: int, start_timeout: float,
                 max_worker_memory: int | None = None, hang_timeout: float | None = None,
                 max_queued: int | None = DEFAULT_MAX_QUEUED) -> None:
        self.node = Node(name, workers, log_level=log_level, max_parked=max_parked, program=describe_program(),
                         max_worker_memory=max_worker_memory, hang_timeout=hang_timeout, max_queued=max_queued)
        try:
            self.node.start(start_timeout)
        except BaseException:
            if self.node.join(0):
                self.node.ended.close()
                self.node.zctx.destroy(linger=0)
            raise
        self.name = name
        self.endpoint = self.node.endpoint
        self.size = self.node.pool.size
        self.pid = os.getpid()
        self.zctx = self.node.zctx
        self.ended = self.node.ended
        self.configure = None
        self.clustered = False

    @property
    def failure(self) -> BaseException | None:
        return self.node.failure

    def request_stop(self) -> None:
        self.node.request_stop()

    def join(self, timeout: float) -> bool:
        return self.node.join(timeout)

    def kill(self) -> None:
        self.node.request_stop()
        self.node.join(10.0)

    def close(self) -> None:
        if self.node.join(0):
            self.node.ended.close()
        self.zctx.destroy(linger=0)


@pytest.fixture
def make_thread_system(make_system: Callable[..., ActorSystem],
                       monkeypatch: pytest.MonkeyPatch) -> Callable[..., ActorSystem]:
    """Systems whose node is a thread of this process: ``system._node.node`` is the Node itself."""
    monkeypatch.setattr(gorilix.system, "NodeHandle", ThreadNodeHandle)
    return make_system


@pytest.fixture
def thread_system(make_thread_system: Callable[..., ActorSystem]) -> ActorSystem:
    return make_thread_system(2)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftover = _children()
    if leftover:
        names = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in leftover]
        for proc in leftover:
            proc.kill()
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: the test run left processes behind (killed now): {names}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

