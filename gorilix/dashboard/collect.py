"""The dashboard's pollers: one thread per member node, a client of it, and the tick that feeds the tracker.

A node that stops answering holds up only its own poller (each waits at
most one interval), so a SIGKILLed node never freezes the page. Nodes are
found through the member table: every alive or suspect member is polled at
the address it gossips.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gorilix.dashboard.tracker import NodeAnswer, Tracker
from gorilix.remote import RemoteNode
from gorilix.transport.errors import GorilixError, NodeUnreachable

log = logging.getLogger(__name__)

#: Seconds between ticks after a drill, for a few seconds: the page shows the worker die and come back.
HURRIED = 0.2
#: How long a drill hurries the ticks.
HURRY_FOR = 3.0


@dataclass(frozen=True)
class Access:
    """How the dashboard reaches nodes: the secret as :class:`RemoteNode` takes it."""

    secret_file: str | None = None
    insecure: bool = False
    timeout: float = 5.0  # to connect; each poll waits at most one interval

    def connect(self, address: str) -> RemoteNode:
        return RemoteNode(address, timeout=self.timeout, secret_file=self.secret_file, insecure=self.insecure)


class Poller:
    """Polls one node when told to, in a thread of its own; connects (again) as needed."""

    def __init__(self, name: str, address: str, access: Access, interval: Callable[[], float],
                 tracker: Tracker, lock: threading.Lock) -> None:
        self.name = name
        self.address = address
        self._access = access
        self._interval = interval
        self._tracker = tracker
        self._lock = lock
        self._remote: RemoteNode | None = None
        self._remote_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gorilix-dashboard-{name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=self._access.timeout + 2.0)
        with self._remote_lock:
            if self._remote is not None:
                self._remote.close()
                self._remote = None

    def move(self, address: str) -> None:
        """The node now gossips another address: the next poll connects there."""
        with self._remote_lock:
            self.address = address
            old, self._remote = self._remote, None
        if old is not None:
            old.close()

    def remote(self) -> RemoteNode:
        """This node's client, connected first if need be (raises GorilixError if it cannot be, or if
        another node now answers at the address)."""
        with self._remote_lock:
            if self._remote is None:
                remote = self._access.connect(self.address)
                if remote.name != self.name:
                    remote.close()
                    raise GorilixError(f"node {remote.name} answers at {self.address} now, not {self.name}")
                self._remote = remote
            return self._remote

    def _drop(self, remote: RemoteNode) -> None:
        """Forget a client whose poll failed: one that saw its node stop or restart has ended for good,
        so the next poll connects afresh (and finds the node again once it is back at its address)."""
        with self._remote_lock:
            if self._remote is not remote:
                return  # (moved, or dropped already)
            self._remote = None
        remote.close()

    def poll(self) -> None:
        """Ask the node for its status, supervision and member table; hand the answer (or the failure) on."""
        limit = max(0.5, self._interval() * 0.9)
        remote: RemoteNode | None = None
        try:
            remote = self.remote()
            status = dict(remote.control("status", timeout=limit))
            try:
                supervisors = list(remote.control("supervision", timeout=limit))
            except NodeUnreachable:
                raise
            except GorilixError as exc:  # (a node of an older version: its workers are still worth showing)
                log.debug("%s lists no supervisors: %s", self.name, exc)
                supervisors = []
            try:
                members: list[dict[str, Any]] | None = list(remote.control("members", timeout=limit))
            except NodeUnreachable:
                raise
            except GorilixError:  # clustering is off there: a node on its own
                members = None
        except GorilixError as exc:
            if remote is not None:
                self._drop(remote)
            with self._lock:
                self._tracker.failed(self.name, time.time(), " ".join(str(exc).split()))
            return
        with self._lock:
            self._tracker.answered(NodeAnswer(self.name, time.time(), status, supervisors, members))

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.poll()
            except Exception:  # a bug must not end the poller: say it, poll again next tick
                log.exception("polling %s failed", self.name)


class Collector:
    """Ticks every ``interval`` seconds: closes the tracker's tick, then wakes every member's poller.

    ``home`` is the address given to ``--node``; the others come from the member table.
    """

    def __init__(self, home: str, access: Access, tracker: Tracker, interval: float = 1.0) -> None:
        self.access = access
        self.tracker = tracker
        self.lock = threading.Lock()
        self.interval = interval
        self._hurry_until = 0.0
        self._stopped = threading.Event()
        self._home_address = home
        self.pollers: dict[str, Poller] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Connect to the home node (raises GorilixError if it cannot be reached), then tick in a thread."""
        remote = self.access.connect(self._home_address)
        self.tracker.home = remote.name
        home = Poller(remote.name, self._home_address, self.access, self.current_interval, self.tracker, self.lock)
        home._remote = remote
        self.pollers[remote.name] = home
        with self.lock:
            self.tracker.event(time.time(), "dashboard", remote.name,
                               f"dashboard started, watching {remote.name} at {self._home_address}")
        home.poll()
        self._thread = threading.Thread(target=self._run, name="gorilix-dashboard-tick", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for poller in list(self.pollers.values()):
            poller.stop()

    def current_interval(self) -> float:
        return HURRIED if time.monotonic() < self._hurry_until else self.interval

    def hurry(self) -> None:
        """Tick fast for a few seconds (after a drill)."""
        self._hurry_until = time.monotonic() + HURRY_FOR

    def tick(self) -> None:
        """Close a tick with what the pollers brought, start pollers for new members, and wake them all."""
        with self.lock:
            self.tracker.tick(time.time())
            members = list(self.tracker.members)
        for row in members:
            name = str(row.get("name"))
            if row.get("status") not in ("alive", "suspect") or name == self.tracker.home:
                continue
            address = f"{row.get('address')}:{row.get('port')}"
            poller = self.pollers.get(name)
            if poller is None:
                self.pollers[name] = Poller(name, address, self.access, self.current_interval, self.tracker,
                                            self.lock)
            elif poller.address != address:  # it came back at another address: connect there
                poller.move(address)
        polled = {str(r.get("name")) for r in members if r.get("status") in ("alive", "suspect")}
        for name, poller in self.pollers.items():
            if name == self.tracker.home or name in polled or not members:
                poller.wake()

    def kill_worker(self, node: str, worker: int) -> int:
        """A drill: SIGKILL worker ``worker`` of ``node``; returns its pid once the node handled the death.

        The node is polled again at once, so the answer the page gets shows the worker dead.
        """
        poller = self.pollers.get(node)
        if poller is None:
            raise LookupError(f"no node {node!r} known to this dashboard")
        pid = int(poller.remote().control("kill_worker", worker, int(signal.SIGKILL), timeout=10.0))
        with self.lock:
            self.tracker.drilled(time.time(), node, worker, pid)
        poller.poll()
        with self.lock:
            self.tracker.tick(time.time())
        self.hurry()
        return pid

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stopped.is_set():
            next_at += self.current_interval()
            delay = next_at - time.monotonic()
            if delay < 0:  # (late: a suspended machine) start counting from now
                next_at, delay = time.monotonic(), 0.0
            if self._stopped.wait(delay):
                return
            try:
                self.tick()
            except Exception:  # a bug must not stop the page's updates: say it, tick again
                log.exception("dashboard tick failed")
