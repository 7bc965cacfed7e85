"""The dashboard's pollers: one thread per member node, a client of it, and the tick that feeds the tracker.

A node that stops answering holds up only its own poller (each waits at
most one interval), so a SIGKILLed node never freezes the page. Nodes are
found through the member table: alive and suspect members are polled at the
address they gossip, at most :data:`MAX_POLLED` of them, and a member that
is dead or gone has its poller (thread and connection) ended.
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
#: The most nodes polled at once, the home node included. Each costs a thread and a connection (a
#: few file descriptors), and a member table may list 10,000 (SwimConfig.max_members): without a
#: bound such a table, made up or not, would exhaust the dashboard's threads and descriptors.
MAX_POLLED = 64
#: How long stopping waits for the pollers' polls under way (a connect may take the whole connect timeout).
STOP_WAIT = 1.0


@dataclass(frozen=True)
class Access:
    """How the dashboard reaches nodes: the secret as :class:`RemoteNode` takes it."""

    secret_file: str | None = None
    insecure: bool = False
    timeout: float = 5.0  # to connect; each poll waits at most one interval

    def connect(self, address: str) -> RemoteNode:
        return RemoteNode(address, timeout=self.timeout, secret_file=self.secret_file, insecure=self.insecure)


def _shaped(value: Any, kind: type, what: str) -> Any:
    """``value`` if it is a ``kind`` (a list may come as a tuple), else GorilixError: a node of another version,
    or one that lies, shows as failing to answer instead of breaking its poller."""
    if kind is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, kind):
        raise GorilixError(f"the node answered {what!r} with a {type(value).__name__}, not a {kind.__name__}")
    return value


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
        self._moved = False  # (the address changed: the client is replaced at the next poll)
        self._remote_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gorilix-dashboard-{name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def retire(self) -> None:
        """Stop polling without waiting: the thread closes the connection as it ends (after a poll under way)."""
        self._stopped.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end (after :meth:`retire`); True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self.retire()
        self.join(self._access.timeout + 2.0)

    def move(self, address: str) -> None:
        """The node now gossips another address: the next poll connects there (and closes the old client
        then, in the thread that polls, so no poll under way finds it closed under it)."""
        with self._remote_lock:
            self.address = address
            self._moved = True

    def remote(self) -> RemoteNode:
        """This node's client, connected first if need be (raises GorilixError if it cannot be, or if
        another node now answers at the address)."""
        with self._remote_lock:
            if self._stopped.is_set():
                raise GorilixError(f"node {self.name} is no longer polled by this dashboard")
            if self._moved:
                self._moved = False
                if self._remote is not None:
                    self._remote.close()
                    self._remote = None
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
            status = _shaped(remote.control("status", timeout=limit), dict, "status")
            try:
                supervisors = _shaped(remote.control("supervision", timeout=limit), list, "supervision")
            except NodeUnreachable:
                raise
            except GorilixError as exc:  # (a node of an older version: its workers are still worth showing)
                log.debug("%s lists no supervisors: %s", self.name, exc)
                supervisors = []
            try:
                members: list[dict[str, Any]] | None = _shaped(remote.control("members", timeout=limit), list,
                                                                "members")
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
        try:
            while not self._stopped.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._stopped.is_set():
                    return
                try:
                    self.poll()
                except Exception:  # a bug must not end the poller: say it, poll again next tick
                    log.exception("polling %s failed", self.name)
        finally:  # (only this thread closes the client: a poll never finds it closed under it)
            with self._remote_lock:
                remote, self._remote = self._remote, None
            if remote is not None:
                remote.close()


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
        """Stop ticking and every poller, all at once, waiting STOP_WAIT at most: a poller still connecting
        to a node that does not answer finishes on its own (it closes its client as it ends)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        pollers = list(self.pollers.values())
        for poller in pollers:
            poller.retire()
        deadline = time.monotonic() + STOP_WAIT
        for poller in pollers:
            poller.join(max(0.0, deadline - time.monotonic()))

    def current_interval(self) -> float:
        return HURRIED if time.monotonic() < self._hurry_until else self.interval

    def hurry(self) -> None:
        """Tick fast for a few seconds (after a drill)."""
        self._hurry_until = time.monotonic() + HURRY_FOR

    def tick(self) -> None:
        """Close a tick with what the pollers brought, start pollers for new members (up to MAX_POLLED),
        end those of members no longer alive or suspect, and wake the rest."""
        with self.lock:
            self.tracker.tick(time.time())
            members = list(self.tracker.members)
        home = self.tracker.home
        live = {str(row.get("name")): f"{row.get('address')}:{row.get('port')}" for row in members
                if row.get("status") in ("alive", "suspect")}
        if members:  # (no member table yet, or clustering off there: keep polling whoever is polled)
            for name in [n for n in self.pollers if n != home and n not in live]:
                self.pollers.pop(name).retire()  # (dead, left or gone: its thread and connection end)
        for name, address in sorted(live.items()):
            if name == home:
                continue
            poller = self.pollers.get(name)
            if poller is None:
                if len(self.pollers) < MAX_POLLED:
                    self.pollers[name] = Poller(name, address, self.access, self.current_interval, self.tracker,
                                                self.lock)
            elif poller.address != address:  # it came back at another address: connect there
                poller.move(address)
        with self.lock:
            left_out = sum(1 for name in live if name != home and name not in self.pollers)
            self.tracker.left_out(time.time(), left_out, MAX_POLLED)
            self.tracker.forget(set(self.pollers))
        for poller in self.pollers.values():
            poller.wake()

    def kill_worker(self, node: str, worker: int) -> int:
        """A drill: SIGKILL worker ``worker`` of ``node``; returns its pid once the node handled the death.

        The node is polled again at once, so the answer the page gets shows the worker dead.
        """
        poller = self.pollers.get(node)
        if poller is None:
            raise LookupError(f"no node {node!r} known to this dashboard")
        with self.lock:  # (a worker the node never listed is the caller's mistake: 404, not the node's error)
            view = self.tracker.nodes.get(node)
            workers = sorted(w["id"] for w in view.answer.status.get("workers", [])) if view and view.answer else []
        if worker not in workers:
            have = f"its workers are {', '.join(map(str, workers))}" if workers else "it has not answered yet"
            raise LookupError(f"node {node} has no worker {worker}: {have}")
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
