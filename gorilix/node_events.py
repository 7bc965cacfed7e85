"""What goes into the node's state machine and what comes out of it, as typed values.

:class:`gorilix.node_core.NodeCore` makes the node's decisions without
sockets, processes or a real clock: its driver (:mod:`gorilix.node`) feeds it
the events below and carries out the effects it returns, the way the SWIM
engine and its driver split gossip. The plain forward of a message is not an
event: the driver routes it from the core's forwarding table with no object
per message, and calls the core only when a message cannot be delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gorilix.ledger import TallySource
from gorilix.transport import codec
from gorilix.workers.health import Health
from gorilix.workers.protocol import WorkerOp

Frames = list[bytes]


@dataclass(frozen=True, slots=True)
class Request:
    """Who sent a control request: what its answer, and the check of who may ask, need later.

    ``source`` is the routing identity the request came in on (a worker, a
    client ``c<id>``, a peer node ``n:<name>``); ``node`` is the sender's node
    as its envelope says, which only a peer's own link vouches for.
    """

    source: bytes
    node: str
    src_id: int
    corr: int
    ask: bool


# -- events (driver -> core) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerStarted:
    """A worker process was started in ``slot``; it is not ready until it attaches."""

    slot: int
    identity: bytes
    pid: int | None
    id_prefix: int


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """The process of ``slot`` ended; ``how`` says how (an exit code or a signal, in words)."""

    slot: int
    how: str


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A request to the node's control endpoint, decoded: ``op`` is ``[name, *args]`` as sent (unchecked)."""

    request: Request
    op: Any


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """A membership change from the gossip engine (the node checks it again: defence in depth)."""

    kind: str
    name: str
    status: str
    meta: dict[str, Any]
    address: str
    port: int
    at: float

    @classmethod
    def from_wire(cls, value: object) -> MemberChanged | None:
        """The event the gossip thread sent, or None when it is not one (counted by the caller)."""
        if (type(value) is not list or len(value) != 7 or not all(type(f) is str for f in value[:3])
                or type(value[3]) is not dict or type(value[4]) is not str or type(value[5]) is not int
                or type(value[6]) is not float):
            return None
        return cls(*value)


NodeEvent = WorkerStarted | WorkerExited | ControlRequest | MemberChanged


# -- effects (core -> driver) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToWorker:
    """Send ``op`` to the worker process whose socket is ``identity`` (the worker of ``slot``)."""

    slot: int
    identity: bytes
    op: WorkerOp


@dataclass(frozen=True, slots=True)
class Tell:
    """A message from the node itself (Down, a ClusterEvent, a published message) to actor or client ``dst_id``."""

    dst_id: int
    payload: bytes

    @property
    def message(self) -> Any:
        return codec.decode(self.payload)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the ask ``corr`` of ``dst_id`` on ``node``: a value, or (``ok`` False) an error."""

    node: str
    dst_id: int
    corr: int
    value: Any
    ok: bool = True


@dataclass(frozen=True, slots=True)
class ToNode:
    """Tell another node's control endpoint something (one-way)."""

    node: str
    op: list[Any]


@dataclass(frozen=True, slots=True)
class Forward:
    """Route ``frames`` (identity slot first) as the router would: messages that were parked."""

    frames: Frames


@dataclass(frozen=True, slots=True)
class StartWorker:
    """Start a worker process in ``slot`` (answered by a WorkerStarted event)."""

    slot: int


@dataclass(frozen=True, slots=True)
class LinkPeer:
    """Open (or keep) a link to peer node ``name``, whose router listens at ``router``."""

    name: str
    router: str


@dataclass(frozen=True, slots=True)
class Ready:
    """Every worker attached for the first time: the node is up."""


@dataclass(frozen=True, slots=True)
class StopNode:
    """A stop was asked for (the node's control ``stop``)."""


@dataclass(frozen=True, slots=True)
class FailNode:
    """The node cannot go on (workers die before they are ready); ``error`` says why."""

    error: BaseException


Effect = ToWorker | Tell | Reply | ToNode | Forward | StartWorker | LinkPeer | Ready | StopNode | FailNode


class NodeHost(Protocol):
    """What the core asks its driver and needs answered at once: facts about sockets and processes.

    Everything the core only wants done is an :data:`Effect` instead.
    """

    @property
    def clustered(self) -> bool:
        """Clustering is on: there are peer links."""

    def linked(self, node: str) -> bool:
        """A link to peer ``node`` is open."""

    def from_peer_link(self, source: bytes) -> bool:
        """``source`` came in on the external router (a peer node or a remote client), not over ipc."""

    def forget_peer(self, node: str) -> tuple[bool, list[Frames]]:
        """Close the link to ``node``: (whether it was linked, the frames held for it, without identity slots)."""

    def kill_worker(self, slot: int, sig: int) -> int:
        """Send ``sig`` to the worker of ``slot``; its pid (LookupError: not running, OSError: refused)."""

    def worker_usage(self, slot: int) -> tuple[float, int]:
        """(cpu percent since the last call, rss bytes) of the worker of ``slot``."""

    def worker_health(self, slot: int) -> Health | None:
        """What the worker of ``slot`` runs now and since when (its board: gorilix.workers.health)."""

    def forwarded(self) -> int:
        """Messages the router forwarded (counted on its hot path, not by the core)."""

    def worker_tally(self, slot: int) -> TallySource | None:
        """The tally of the worker just started in ``slot`` (gorilix.workers.tally), or None if it has none."""

    # The cluster: its sockets and its gossip thread are the driver's.

    def peers(self) -> list[str]:
        """The peer nodes linked now."""

    def enable_cluster(self, config_fields: Any) -> dict[str, Any]:
        """Bind the router's TCP port and start the gossip (ClusterConfig.to_wire fields); this node's member row."""

    def cluster_service(self) -> Any:
        """The gossip service (:class:`gorilix.cluster.service.ClusterService`), or None when not clustered."""

    def disable_cluster(self) -> None:
        """Stop the gossip service and close the peer links (after a leave)."""

    def members(self) -> list[dict[str, Any]] | None:
        """The member table as rows (None: not clustered)."""

    def links_status(self) -> list[dict[str, Any]]:
        """Each peer link: endpoint, ready, messages waiting, refusals."""

    def gossip_stats(self) -> dict[str, Any] | None:
        """The gossip's own counters (None: not clustered)."""

    def gossip_bad_meta(self) -> int:
        """Members the gossip engine dropped for metadata no node can use."""
