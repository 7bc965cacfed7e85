"""What every control handler shares: the checks of who is asking.

A control request names ids, slots and names chosen by whoever sent it, and
anything that can reach the node's router can send one: a worker, a client
(any thread of any program that reaches the socket), a peer node, or a tool.
So a handler first checks that the sender may act on what it names, with
the helpers here, and refuses otherwise (:meth:`NodeCore.refuse`: counted in
``refused``, logged, and an ask is answered with a :class:`GorilixError`).
An argument the handler cannot use (a topic that is not a str, a signal
this system does not have) is bad input rather than a trespass
(:meth:`NodeCore.invalid`: counted in ``malformed`` and answered with an
:class:`InvalidArgument`).

Every handler is ``handler(core, request, *args)``: the node's core
(:class:`gorilix.node_core.NodeCore`, its public methods are the whole
interface) and who asked (:class:`gorilix.node_events.Request`). What it
returns answers an ask, unless it returns :data:`DEFER` and answers later.
"""

from __future__ import annotations

import logging

from gorilix.node_core import DEFER, NodeCore
from gorilix.node_events import Request

log = logging.getLogger("gorilix.node")

__all__ = ["DEFER", "hosted_by", "log", "peer_node", "show_id", "worker_slot"]


def show_id(value: object) -> str:
    """An id as messages show it: hex like refs, or the repr of whatever else was sent."""
    return f"{value:#x}" if type(value) is int else repr(value)


def worker_slot(core: NodeCore, req: Request, op: str) -> int:
    """The slot of the worker that sent ``op``; refused when the sender is not one of this node's workers."""
    slot = core.slot_of(req.source)
    if slot is None:
        raise core.refuse(op, f"only this node's workers send it, and {req.source!r} is not one of them")
    return slot


def hosted_by(core: NodeCore, req: Request, op: str, actor_id: object) -> int:
    """Check that ``actor_id`` is placed on the worker that sent ``op`` (a report about it, or on its behalf)."""
    slot = worker_slot(core, req, op)
    record = core.registry.actors.get(actor_id) if type(actor_id) is int else None
    if record is None or record.slot != slot:
        raise core.refuse(op, f"actor {show_id(actor_id)} is not on worker {slot}, which sent it")
    return slot


def peer_node(core: NodeCore, req: Request, op: str) -> str:
    """The peer node that sent ``op``: refused unless it came over that node's own link.

    The envelope's node name is the sender's to write; the link's identity
    (``n:NAME``, on the external router) is what says which peer it is.
    """
    if not core.host.from_peer_link(req.source) or req.source != b"n:" + req.node.encode():
        raise core.refuse(op, f"only peer nodes send it, over their own link; {req.source!r} is not node "
                              f"{req.node!r}'s")
    return req.node
