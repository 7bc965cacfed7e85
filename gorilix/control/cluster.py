"""Control requests between nodes: clustering on and off, monitors, links and topics across nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zmq

from gorilix.cluster.links import PeerLinks
from gorilix.control.actors import publish_here, topic_of
from gorilix.control.base import invalid, peer_node
from gorilix.transport.errors import ClusterError

if TYPE_CHECKING:
    from gorilix.node import Node


def _h_enable_cluster(node: Node, source: bytes, src_id: int, corr: int, endpoint: str) -> list[str]:
    if node.links is not None:
        raise ClusterError("clustering is already enabled on this node")
    node.links = PeerLinks(node.name, node.zctx, endpoint, node.cluster_keys)
    node._poller.register(node.links.external, zmq.POLLIN)
    node._events = node.zctx.socket(zmq.PULL)
    node._events.setsockopt(zmq.LINGER, 0)
    events_endpoint = f"inproc://gorilix-events-{id(node):x}"
    node._events.bind(events_endpoint)
    node._poller.register(node._events, zmq.POLLIN)
    if not node._repair_armed:
        node._repair_armed = True
        node.schedule(0, node.repair_links)
    return [node.links.endpoint, events_endpoint]


def _h_disable_cluster(node: Node, source: bytes, src_id: int, corr: int) -> bool:
    return node._disable_cluster()


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
    "disable_cluster": _h_disable_cluster,
    "rmonitor": _h_rmonitor,
    "rdown": _h_rdown,
    "rlink": _h_rlink,
    "runlink": _h_runlink,
    "rexit": _h_rexit,
    "publish_local": _h_publish_local,
}
