"""Control requests about the cluster: clustering on and off, joins and leaves, membership subscribers, monitors, links and topics across nodes."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol, cast

from gorilix.control.actors import publish_here, topic_of
from gorilix.control.base import DEFER, peer_node, show_id
from gorilix.node_core import NodeCore
from gorilix.node_events import Request
from gorilix.transport.describe import shown
from gorilix.transport.errors import ClusterError
from gorilix.transport.frames import ID_MAX
from gorilix.workers.ref import MAX_TIMEOUT

log = logging.getLogger("gorilix.cluster")

#: How often the node loop looks at a join or a leave in progress.
JOIN_POLL = 0.01


def _h_enable_cluster(core: NodeCore, req: Request, config_fields: Any) -> dict[str, Any]:
    """Bind the router's TCP port, start the gossip and announce us; answers this node's member row.

    Only the program's own clients turn clustering on: the request carries
    the cluster secret, and a worker or a peer has no business sending it.
    """
    if not req.source.startswith(b"c") or core.host.from_peer_link(req.source):
        raise core.refuse("enable_cluster", f"only the program's clients turn clustering on, not {req.source!r}")
    if core.host.clustered:
        raise ClusterError("clustering is already enabled on this node")
    return core.host.enable_cluster(config_fields)


def _h_cluster_join(core: NodeCore, req: Request, seeds: Any, timeout: Any) -> Any:
    """Contact more seeds; answers how many did, once the join is over (the loop never waits for it)."""
    service = _service(core)
    if type(seeds) is not list or not all(type(seed) is str for seed in seeds):
        raise core.invalid(f"cluster_join: seeds={shown(seeds)} must be a list of 'host:port' strs")
    if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT):
        raise core.invalid(f"cluster_join: timeout={shown(timeout)} must be None or seconds > 0")
    job = service.begin_join(seeds, timeout)

    def check() -> None:
        try:
            answered = job.poll(time.monotonic())  # (the join's own deadline, on the gossip's clock)
        except ClusterError as exc:
            core.fail(req, exc)
            return
        if answered is None:
            core.schedule(JOIN_POLL, check)
        else:
            core.reply(req, answered)

    check()
    return DEFER


def _h_cluster_leave(core: NodeCore, req: Request, timeout: Any) -> Any:
    """Announce a graceful leave, let it spread, close the links; answers when done (bounded)."""
    service = _service(core)
    if type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT:
        raise core.invalid(f"cluster_leave: timeout={shown(timeout)} must be seconds > 0")
    service.begin_leave(timeout)
    deadline = core.now() + min(timeout, service.linger()) + timeout

    def check() -> None:
        if not service.gossip_stopped() and core.now() < deadline:
            core.schedule(JOIN_POLL, check)
            return
        if not service.gossip_stopped():
            log.warning("gossip thread of %s still running %.1f s after its leave; stopping it", core.name, timeout)
        core.host.disable_cluster()
        core.reply(req, True)

    check()
    return DEFER


def _h_cluster_subscribe(core: NodeCore, req: Request, subscriber: Any) -> None:
    """Tell ``subscriber`` (an actor or a client of this node) every membership change as a ClusterEvent."""
    if type(subscriber) is not int or core.table.lookup(subscriber) is None and subscriber not in core.registry.actors:
        raise core.invalid(f"cluster_subscribe: {show_id(subscriber)} is no actor or client of node {core.name}")
    core.cluster_subscribers.add(subscriber)


def _h_cluster_unsubscribe(core: NodeCore, req: Request, subscriber: Any) -> bool:
    if subscriber not in core.cluster_subscribers:
        return False
    core.cluster_subscribers.discard(subscriber)
    return True


class JoinPoll(Protocol):
    def poll(self, now: float) -> int | None: ...


class GossipService(Protocol):
    """What these handlers use of the node's gossip service (:class:`gorilix.cluster.service.ClusterService`)."""

    def begin_join(self, seeds: list[str], timeout: float | None) -> JoinPoll: ...
    def begin_leave(self, limit: float) -> None: ...
    def gossip_stopped(self) -> bool: ...
    def linger(self) -> float: ...


def _service(core: NodeCore) -> GossipService:
    service = core.host.cluster_service()
    if service is None:
        raise ClusterError("clustering not enabled")
    return cast(GossipService, service)


# Monitors, links and exit signals across nodes: each names the peer it comes from only by the
# envelope, which anyone may write, so peer_node checks it came over that peer's own link. What it
# names is checked before anything is applied: a link or a monitor kept with an id no ref can have
# raised later, when the Down or the exit signal was built (cutting short a peer's node_down).

def _ids(core: NodeCore, op: str, *values: object) -> None:
    for value in values:
        if type(value) is not int or not 0 <= value <= ID_MAX:
            raise core.invalid(f"{op}: {show_id(value)} is not an actor id (an int in 0..2**64-1)")


def _name(core: NodeCore, op: str, name: object) -> None:
    if name is not None and type(name) is not str:
        raise core.invalid(f"{op}: name={shown(name)} must be a str or None")


def _h_rmonitor(core: NodeCore, req: Request, watcher: int, watched: int) -> None:
    node = peer_node(core, req, "rmonitor")
    _ids(core, "rmonitor", watcher, watched)
    core.lifecycle.remote_monitor(node, watcher, watched)


def _h_rdown(core: NodeCore, req: Request, watched: int, name: str | None,
             reason: str, watcher: int) -> None:
    node = peer_node(core, req, "rdown")
    _ids(core, "rdown", watched, watcher)
    _name(core, "rdown", name)
    core.lifecycle.remote_down(node, watched, name, str(reason), watcher)


def _h_rlink(core: NodeCore, req: Request, local: int, remote: int) -> None:
    node = peer_node(core, req, "rlink")
    _ids(core, "rlink", local, remote)
    core.lifecycle.remote_link(node, local, remote)


def _h_runlink(core: NodeCore, req: Request, local: int, remote: int) -> None:
    core.lifecycle.remote_unlink(peer_node(core, req, "runlink"), local, remote)


def _h_rexit(core: NodeCore, req: Request, local: int, remote: int, name: str | None,
             reason: str) -> None:
    node = peer_node(core, req, "rexit")
    _ids(core, "rexit", local, remote)
    _name(core, "rexit", name)
    core.lifecycle.remote_exit(node, local, remote, name, str(reason))


def _h_publish_local(core: NodeCore, req: Request, topic: str, payload: bytes) -> int:
    """A peer's publish, for this node's subscribers only (the peer sends it to every node)."""
    topic = topic_of(core, "publish_local", topic)
    if type(payload) is not bytes:
        raise core.invalid("publish_local: payload must be codec bytes")
    return publish_here(core, topic, payload)


def _h_peer_read(core: NodeCore, req: Request, more: Any) -> None:
    """A peer node read ``more`` bytes of what we sent it: they no longer count against max_queued for it."""
    if not core.host.from_peer_link(req.source) or not req.source.startswith(b"n:"):
        raise core.refuse("peer_read", f"only a peer node says what it read, not {req.source!r}")
    if type(more) is not int or not 0 <= more <= ID_MAX:
        raise core.invalid(f"peer_read: {shown(more)} is not a count of bytes")
    peer = core.ledger.peers.get(req.source[2:].decode(errors="replace"))
    if peer is not None:
        peer.has_read(more)


HANDLERS: dict[str, Any] = {
    "enable_cluster": _h_enable_cluster,
    "cluster_join": _h_cluster_join,
    "cluster_leave": _h_cluster_leave,
    "cluster_subscribe": _h_cluster_subscribe,
    "cluster_unsubscribe": _h_cluster_unsubscribe,
    "rmonitor": _h_rmonitor,
    "rdown": _h_rdown,
    "rlink": _h_rlink,
    "runlink": _h_runlink,
    "rexit": _h_rexit,
    "publish_local": _h_publish_local,
    "peer_read": _h_peer_read,
}
