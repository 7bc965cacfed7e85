"""Control requests about the cluster: clustering on and off, joins and leaves, membership subscribers, monitors, links and topics across nodes."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

import zmq

from gorilix.control.actors import publish_here, topic_of
from gorilix.control.base import DEFER, invalid, peer_node, refuse, show_id
from gorilix.transport.describe import shown
from gorilix.transport.errors import ClusterError
from gorilix.workers.ref import MAX_TIMEOUT

if TYPE_CHECKING:
    from gorilix.cluster.service import ClusterService
    from gorilix.node import Node

log = logging.getLogger("gorilix.cluster")

#: How often the node loop looks at a join or a leave in progress.
JOIN_POLL = 0.01


def _h_enable_cluster(node: Node, source: bytes, src_id: int, corr: int, config_fields: Any) -> dict[str, Any]:
    """Bind the router's TCP port, start the gossip and announce us; answers this node's member row.

    Only the program's own clients turn clustering on: the request carries
    the cluster secret, and a worker or a peer has no business sending it.
    """
    if not source.startswith(b"c") or (node.links is not None and source in node.links.identities):
        raise refuse(node, "enable_cluster", f"only the program's clients turn clustering on, not {source!r}")
    if node.links is not None:
        raise ClusterError("clustering is already enabled on this node")
    # Loaded here, not at the top: a node that never clusters starts without them (cryptography and all).
    from gorilix.cluster.config import ClusterConfig
    from gorilix.cluster.links import PeerLinks
    from gorilix.cluster.security import ClusterKeys
    from gorilix.cluster.service import ClusterService, member_row

    config = ClusterConfig.from_wire(config_fields)
    if config.node_name != node.name:
        raise ClusterError(
            f"ClusterConfig.node_name {config.node_name!r} must match the ActorSystem's name "
            f"{node.name!r}: refs carry the system's name as their node"
        )
    keys = ClusterKeys(config.secret_key) if config.secret_key is not None else None
    node.cluster_keys = keys
    node.links = PeerLinks(node.name, node.zctx, f"tcp://{config.bind_addr}:{config.bind_port}", keys)
    node._poller.register(node.links.external, zmq.POLLIN)
    node._events = node.zctx.socket(zmq.PULL)
    node._events.setsockopt(zmq.LINGER, 0)
    events_endpoint = f"inproc://gorilix-events-{id(node):x}"
    node._events.bind(events_endpoint)
    node._poller.register(node._events, zmq.POLLIN)
    try:
        service = ClusterService(config, node.zctx, events_endpoint, node.links.endpoint, node.pool.size, keys)
    except BaseException:
        node._disable_cluster()
        raise
    node.cluster = service
    node.members_view = service.member_rows
    node.gossip_bad_meta = lambda: service.bad_meta
    node.add_exit_hook(service.node_ended)
    node.links.follow_members(service.live_names)
    node.links.follow_directory(service.router_of)
    service.start()
    if not node._repair_armed:
        node._repair_armed = True
        node.schedule(0, node.repair_links)
    return member_row(service.driver.local_member())


def _h_cluster_join(node: Node, source: bytes, src_id: int, corr: int, seeds: Any, timeout: Any) -> Any:
    """Contact more seeds; answers how many did, once the join is over (the loop never waits for it)."""
    service = _service(node)
    if type(seeds) is not list or not all(type(seed) is str for seed in seeds):
        raise invalid(node, f"cluster_join: seeds={shown(seeds)} must be a list of 'host:port' strs")
    if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT):
        raise invalid(node, f"cluster_join: timeout={shown(timeout)} must be None or seconds > 0")
    job = service.begin_join(seeds, timeout)
    asker = (src_id, corr, node._asker_node)

    def check() -> None:
        try:
            answered = job.poll(time.monotonic())
        except ClusterError as exc:
            node._reply(asker[0], asker[1], exc, ok=False, dst_node=asker[2])
            return
        if answered is None:
            node.schedule(JOIN_POLL, check)
        else:
            node._reply(asker[0], asker[1], answered, dst_node=asker[2])

    check()
    return DEFER


def _h_cluster_leave(node: Node, source: bytes, src_id: int, corr: int, timeout: Any) -> Any:
    """Announce a graceful leave, let it spread, close the links; answers when done (bounded)."""
    service = _service(node)
    if type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT:
        raise invalid(node, f"cluster_leave: timeout={shown(timeout)} must be seconds > 0")
    service.begin_leave(timeout)
    asker = (src_id, corr, node._asker_node)
    deadline = time.monotonic() + min(timeout, service.linger()) + timeout

    def check() -> None:
        if not service.driver.join(0) and time.monotonic() < deadline:
            node.schedule(JOIN_POLL, check)
            return
        if not service.driver.join(0):
            log.warning("gossip thread of %s still running %.1f s after its leave; stopping it", node.name, timeout)
        service.wait_stopped(0)
        node.remove_exit_hook(service.node_ended)
        if node.cluster is service:
            node.cluster = None
            node.members_view = None
        node._disable_cluster()
        node._reply(asker[0], asker[1], True, dst_node=asker[2])

    check()
    return DEFER


def _h_cluster_subscribe(node: Node, source: bytes, src_id: int, corr: int, subscriber: Any) -> None:
    """Tell ``subscriber`` (an actor or a client of this node) every membership change as a ClusterEvent."""
    if type(subscriber) is not int or node.table.lookup(subscriber) is None and subscriber not in node.registry.actors:
        raise invalid(node, f"cluster_subscribe: {show_id(subscriber)} is no actor or client of node {node.name}")
    node.cluster_subscribers.add(subscriber)


def _h_cluster_unsubscribe(node: Node, source: bytes, src_id: int, corr: int, subscriber: Any) -> bool:
    if subscriber not in node.cluster_subscribers:
        return False
    node.cluster_subscribers.discard(subscriber)
    return True


def _service(node: Node) -> ClusterService:
    if node.cluster is None:
        raise ClusterError("clustering not enabled")
    return cast("ClusterService", node.cluster)


# Monitors, links and exit signals across nodes: each names the peer it comes from only by the
# envelope, which anyone may write, so peer_node checks it came over that peer's own link.

def _h_rmonitor(node: Node, source: bytes, src_id: int, corr: int, watcher: int, watched: int) -> None:
    node.lifecycle.remote_monitor(peer_node(node, source, "rmonitor"), watcher, watched)


def _h_rdown(node: Node, source: bytes, src_id: int, corr: int, watched: int, name: str | None,
             reason: str, watcher: int) -> None:
    node.lifecycle.remote_down(peer_node(node, source, "rdown"), watched, name, str(reason), watcher)


def _h_rlink(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int) -> None:
    node.lifecycle.remote_link(peer_node(node, source, "rlink"), local, remote)


def _h_runlink(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int) -> None:
    node.lifecycle.remote_unlink(peer_node(node, source, "runlink"), local, remote)


def _h_rexit(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int, name: str | None,
             reason: str) -> None:
    node.lifecycle.remote_exit(peer_node(node, source, "rexit"), local, remote, name, str(reason))


def _h_publish_local(node: Node, source: bytes, src_id: int, corr: int, topic: str, payload: bytes) -> int:
    """A peer's publish, for this node's subscribers only (the peer sends it to every node)."""
    topic = topic_of(node, "publish_local", topic)
    if type(payload) is not bytes:
        raise invalid(node, "publish_local: payload must be codec bytes")
    return publish_here(node, topic, payload)


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
}
