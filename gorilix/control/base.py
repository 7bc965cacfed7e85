"""What every control handler shares: the answer-later marker, and the checks of who is asking.

A control request names ids, slots and names chosen by whoever sent it, and
anything that can reach the node's router can send one: a worker, a client
(any thread of any program that reaches the socket), a peer node, or a tool.
So a handler first checks that the sender may act on what it names, with
the helpers here, and refuses otherwise: the refusal is counted in the
node's ``refused``, logged, and answers an ask as a :class:`GorilixError`.
An argument the handler cannot use (a topic that is not a str, a signal
this system does not have) is bad input rather than a trespass: it is
counted in ``malformed`` and answered with an :class:`InvalidArgument`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gorilix.transport.errors import GorilixError, InvalidArgument

if TYPE_CHECKING:
    from gorilix.node import Node

log = logging.getLogger("gorilix.node")


class _Defer:
    """A control handler's marker: the answer comes later."""


#: Returned by a handler that answers the ask later itself.
DEFER = _Defer()


def refuse(node: Node, op: str, why: str) -> GorilixError:
    """Count and log a refused request; returns the error to raise (the node answers an ask with it)."""
    node.refused += 1
    log.warning("control %s refused: %s", op, why)
    return GorilixError(f"{op} refused: {why}")


def invalid(node: Node, message: str) -> InvalidArgument:
    """Count a request with a bad argument (bad input from a socket, in ``malformed``); returns the error to raise.

    The facade refuses such arguments before sending; this is what a client
    speaking the protocol itself gets: an InvalidArgument naming the mistake.
    """
    node.malformed += 1
    return InvalidArgument(message)


def show_id(value: object) -> str:
    """An id as messages show it: hex like refs, or the repr of whatever else was sent."""
    return f"{value:#x}" if type(value) is int else repr(value)


def worker_slot(node: Node, source: bytes, op: str) -> int:
    """The slot of the worker that sent ``op``; refused when the sender is not one of this node's workers."""
    slot = node._identity_slot.get(source)
    if slot is None:
        raise refuse(node, op, f"only this node's workers send it, and {source!r} is not one of them")
    return slot


def hosted_by(node: Node, source: bytes, op: str, actor_id: object) -> int:
    """Check that ``actor_id`` is placed on the worker that sent ``op`` (a report about it, or on its behalf)."""
    slot = worker_slot(node, source, op)
    record = node.registry.actors.get(actor_id) if type(actor_id) is int else None
    if record is None or record.slot != slot:
        raise refuse(node, op, f"actor {show_id(actor_id)} is not on worker {slot}, which sent it")
    return slot


def peer_node(node: Node, source: bytes, op: str) -> str:
    """The peer node that sent ``op``: refused unless it came over that node's own link.

    The envelope's node name is the sender's to write; the link's identity
    (``n:NAME``, on the external router) is what says which peer it is.
    """
    asker = node._asker_node
    links = node.links
    if links is None or source not in links.identities or source != b"n:" + asker.encode():
        raise refuse(node, op, f"only peer nodes send it, over their own link; {source!r} is not node {asker!r}'s")
    return asker
