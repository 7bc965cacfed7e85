"""Control requests between nodes: clustering on and off, monitors, links and topics across nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zmq

from gorilix.cluster.links import PeerLinks
from gorilix.control.actors import publish_here
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


def _h_rmonitor(node: Node, source: bytes, src_id: int, corr: int, watcher: int, watched: int) -> None:
    node.lifecycle.remote_monitor(node._asker_node, watcher, watched)


def _h_rdown(node: Node, source: bytes, src_id: int, corr: int, watched: int, name: str | None,
             reason: str, watcher: int) -> None:
    node.lifecycle.remote_down(node._asker_node, watched, name, str(reason), watcher)


def _h_rlink(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int) -> None:
    node.lifecycle.remote_link(node._asker_node, local, remote)


def _h_runlink(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int) -> None:
    node.lifecycle.remote_unlink(node._asker_node, local, remote)


def _h_rexit(node: Node, source: bytes, src_id: int, corr: int, local: int, remote: int, name: str | None,
             reason: str) -> None:
    node.lifecycle.remote_exit(node._asker_node, local, remote, name, str(reason))


def _h_publish_local(node: Node, source: bytes, src_id: int, corr: int, topic: str, payload: bytes) -> int:
    return publish_here(node, str(topic), payload)


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
