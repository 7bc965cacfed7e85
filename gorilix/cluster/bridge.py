"""The program's side of clustering: the provider, and the Cluster it hands back.

``actor_system.set_cluster_provider(bridge.ClusterProvider())`` then
``enable_clustering(ClusterConfig(...))`` has the node process bind the
router's TCP port and the gossip UDP port, start gossiping and join the
seeds. The gossip engine runs in the node process
(:mod:`gorilix.cluster.service`), so a program that holds its GIL for a
minute is never suspected by its peers. :class:`Cluster` asks the node over
the control channel; membership changes reach ``on_event`` callbacks
through a client of their own, on a thread of their own.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gorilix.cluster.config import ClusterConfig
from gorilix.cluster.swim import Member, MemberStatus
from gorilix.transport.describe import shown
from gorilix.transport.errors import (
    ClusterError,
    GorilixError,
    InsecureWarning,
    InvalidArgument,
    NotRunning,
)
from gorilix.workers.messages import ClusterEvent
from gorilix.workers.ref import ActorRef

if TYPE_CHECKING:
    from gorilix.workers.client import ClientPort

log = logging.getLogger("gorilix.cluster")

#: How often the event thread looks up from its socket (to see whether it should stop).
EVENTS_WAKE = 0.1
#: Extra seconds a control request about a join or a leave may take beyond its own limit.
CONTROL_MARGIN = 5.0


class ClusterSystem(Protocol):
    """What a Cluster uses of the ActorSystem it belongs to (an ActorSystem is one).

    Its name, whether it runs or attached to a node, its control channel and
    a port for the event thread. A Protocol rather than ActorSystem, which
    imports this module: this module does not import it back, even for
    annotations.
    """

    @property
    def name(self) -> str: ...
    @property
    def running(self) -> bool: ...
    @property
    def _attached(self) -> bool: ...
    def _control(self, op: str, *args: Any, timeout: float = ...) -> Any: ...
    def _new_port(self) -> ClientPort: ...


def member_from_row(row: dict[str, Any]) -> Member:
    """A member row, as the node process answers ``members``, as the gossip engine's Member."""
    return Member(name=row["name"], address=row["address"], port=row["port"], incarnation=row["incarnation"],
                  status=MemberStatus(row["status"]), meta=dict(row["meta"]), status_since=row.get("since", 0.0))


class Cluster:
    """This node's view of the cluster (Go: the Cluster returned by the provider)."""

    def __init__(self, system: ClusterSystem, config: ClusterConfig, local: dict[str, Any]) -> None:
        self.system = system
        self.config = config
        self.router_endpoint: str = local["meta"]["router"]
        self._local = member_from_row(local)
        self._callbacks: list[Callable[[ClusterEvent], None]] = []
        self._listener: _EventListener | None = None
        self._lock = threading.Lock()
        self._left = False

    # -- the Go guide's operations -----------------------------------------

    def members(self) -> list[Member]:
        """Every known member (self included); dead and left ones stay listed a while."""
        return [member_from_row(row) for row in self.member_rows()]

    def local_member(self) -> Member:
        for member in self.members():
            if member.name == self._local.name:
                return member
        return self._local

    def member_rows(self) -> list[dict[str, Any]]:
        """The member table as plain data (what `gorilix members --json` prints)."""
        return [dict(row) for row in self.system._control("members")]

    def member(self, name: str) -> Member:
        for member in self.members():
            if member.name == name:
                return member
        raise ClusterError(f"node not found: {name}")

    def join(self, seeds: list[str], timeout: float | None = None) -> int:
        """Contact ``seeds`` ("host:port" gossip addresses); returns how many answered."""
        if self._left:
            raise ClusterError("this node left the cluster; start a new system to join again")
        self.config.seed_addresses(list(seeds))  # a bad seed fails here, with the program's stack
        limit = self.config.join_timeout if timeout is None else timeout
        return int(self.system._control("cluster_join", list(seeds), timeout, timeout=limit + CONTROL_MARGIN))

    def leave(self, timeout: float | None = None) -> None:
        """Announce a graceful leave, let it spread, then stop gossiping (bounded in time); safe twice."""
        if self.system._attached:
            raise ClusterError(
                f"node {self.system.name} leaves the cluster from its own program (or `gorilix node`, on "
                "SIGTERM): a leave closes the TCP port this program reaches it by"
            )
        limit = self.config.leave_timeout if timeout is None else timeout
        with self._lock:
            if self._left:
                return
            self._left = True
        self.close()
        if self.system.running:  # a node that ended has left already
            try:
                self.system._control("cluster_leave", limit, timeout=2 * limit + CONTROL_MARGIN)
            except NotRunning:
                pass
            except GorilixError as exc:
                log.warning("leaving the cluster: %s", exc)

    # -- events -------------------------------------------------------------

    def on_event(self, callback: Callable[[ClusterEvent], None]) -> None:
        """Call ``callback(event)`` on every membership change, from a thread of its own."""
        self._callbacks.append(callback)
        with self._lock:
            if self._listener is None and not self._left:
                self._listener = _EventListener(self.system, self._callbacks)

    def subscribe(self, ref: ActorRef) -> None:
        """Send every membership change to ``ref`` (an actor of this node) as a ClusterEvent message."""
        self.system._control("cluster_subscribe", self._local_id(ref))

    def unsubscribe(self, ref: ActorRef) -> None:
        self.system._control("cluster_unsubscribe", self._local_id(ref))

    def _local_id(self, ref: ActorRef) -> int:
        if not isinstance(ref, ActorRef):
            raise InvalidArgument(f"expected an ActorRef, got {shown(ref)}")
        if ref.node != self.system.name:
            raise InvalidArgument(f"{ref} lives on node {ref.node}; subscribe it to its own node's cluster")
        return ref.id

    def close(self) -> None:
        """Stop delivering to ``on_event`` callbacks (leave() does it too)."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()


class _EventListener:
    """A thread with a client socket of its own, subscribed to the node's membership changes."""

    def __init__(self, system: ClusterSystem, callbacks: list[Callable[[ClusterEvent], None]]) -> None:
        self._system = system
        self._callbacks = callbacks
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"gorilix-cluster-events-{system.name}",
                                        daemon=True)
        self._thread.start()
        self._subscribed.wait(10.0)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            port: ClientPort = self._system._new_port()
        except BaseException as exc:
            self._error = exc
            self._subscribed.set()
            return
        try:
            try:
                port.control("cluster_subscribe", port.id)
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._subscribed.set()
            while not self._stopping.is_set():
                try:
                    values = port.receive_tells(EVENTS_WAKE)
                except NotRunning:
                    return
                for value in values:
                    if isinstance(value, ClusterEvent):
                        self._call(value)
        finally:
            port.close()

    def _call(self, event: ClusterEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("cluster event callback failed")

    def stop(self) -> None:
        self._stopping.set()
        if threading.current_thread() is not self._thread:  # (a callback may leave the cluster)
            self._thread.join(2.0)


class ClusterProvider:
    """Clustering over SWIM gossip (the default and only provider)."""

    def start(self, system: ClusterSystem, config: ClusterConfig) -> Cluster:
        if config.node_name != system.name:
            raise ClusterError(
                f"ClusterConfig.node_name {config.node_name!r} must match the ActorSystem's name "
                f"{system.name!r}: refs carry the system's name as their node"
            )
        if config.secret_key is None and config.insecure:
            warnings.warn(InsecureWarning(
                f"node {config.node_name} runs with no secret (insecure=True): any process that can reach "
                f"{config.bind_addr}:{config.bind_port} can stop it, kill its workers and run code in them; "
                "drop insecure=True to use the per-user secret, or give it a secret_key"), stacklevel=3)
        config = config.with_secret()  # (no secret given: the per-user one, made on first use)
        local = system._control("enable_cluster", config.to_wire(), timeout=10.0)
        return Cluster(system, config, local)


__all__ = ["Cluster", "ClusterEvent", "ClusterProvider", "MemberStatus", "member_from_row"]
