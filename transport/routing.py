"""The router's forwarding table, as pure data (no sockets).

It maps actor ids to the endpoint (a ZeroMQ identity) that hosts them, parks
messages for actors that are being (re)created, and remembers which asks are
in flight at which endpoint so that a dead endpoint's askers hear at once.

Clients (the sockets of user threads and of tools such as the CLI) host no
actor but need a route for their answers. Their ids come from a range of
their own, which actor ids never reach (a node counts its ids up from below
2**39; a worker's are its prefix << 40, prefixes counting up from below
2**21), and a client's socket is named after its id (:func:`client_identity`).
So a node can tell that an id a client claims is a client id, and that it is
the caller's own.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

Frames = list[bytes]

#: Actor ids are ``prefix << ID_SHIFT | counter``: the node hands each worker
#: incarnation its own prefix, so workers create ids without asking anyone.
ID_SHIFT = 40

#: Client ids are in [CLIENT_ID_MIN, CLIENT_ID_END); no actor id is.
CLIENT_ID_MIN = 1 << 62
CLIENT_ID_END = 1 << 63


def is_client_id(value: object) -> bool:
    """Whether ``value`` is an id a client may hold (an int in the client range, never an actor's)."""
    return type(value) is int and CLIENT_ID_MIN <= value < CLIENT_ID_END


def client_identity(client_id: int) -> bytes:
    """The routing id of a client's socket: named after its client id, so one socket holds one id."""
    return b"c%d" % client_id


def client_ids() -> Iterator[int]:
    """Fresh client ids, counting from a random point in the lower half of the range.

    Random, so two programs (or a restarted one) attached to a node do not pick
    the same ids; the lower half, so counting never leaves the range.
    """
    return itertools.count(random.randrange(CLIENT_ID_MIN, CLIENT_ID_MIN + (CLIENT_ID_END - CLIENT_ID_MIN) // 2))


@dataclass(slots=True)
class ParkResult:
    parked: bool
    overflow: Frames | None = None  # the frames that did not fit, when not parked


#: What a held actor with nothing parked yet has in :attr:`ForwardingTable.parked`: a queue is made at its
#: first message. (A deque per actor costs some 600 bytes and a microsecond or more: the death of a worker
#: of 500,000 actors held them all in one step of 1.8 s, and 300 MB.)
NOTHING_PARKED: tuple[Frames, ...] = ()


@dataclass
class ForwardingTable:
    """Actor id -> endpoint, with bounded parking for actors in transit."""

    max_parked_per_actor: int = 10_000
    #: Asks remembered as in flight at one endpoint (to fail them at once if it dies). The route's ask
    #: flag and corr are the sender's to write, and one that lies is never answered: past this bound
    #: the oldest is forgotten (a real asker among them falls back on its own timeout).
    max_inflight_per_endpoint: int = 100_000
    routes: dict[int, bytes] = field(default_factory=dict)
    parked: dict[int, deque[Frames] | tuple[Frames, ...]] = field(default_factory=dict)  # (see NOTHING_PARKED)
    by_endpoint: dict[bytes, set[int]] = field(default_factory=dict)
    #: endpoint -> {(asker id, corr): asker's node, or None for this node}
    inflight: dict[bytes, dict[tuple[int, int], str | None]] = field(default_factory=dict)

    def bind(self, actor_id: int, endpoint: bytes) -> list[Frames]:
        """Route ``actor_id`` to ``endpoint``; returns parked frames to deliver now."""
        old = self.routes.get(actor_id)
        if old is not None and old != endpoint:
            self.by_endpoint.get(old, set()).discard(actor_id)
        self.routes[actor_id] = endpoint
        self.by_endpoint.setdefault(endpoint, set()).add(actor_id)
        waiting = self.parked.pop(actor_id, None)
        return list(waiting) if waiting else []

    def hold(self, actor_id: int) -> None:
        """The actor is in transit: park its messages until :meth:`bind`."""
        endpoint = self.routes.pop(actor_id, None)
        if endpoint is not None:
            self.by_endpoint.get(endpoint, set()).discard(actor_id)
        self.parked.setdefault(actor_id, NOTHING_PARKED)

    def unbind(self, actor_id: int) -> list[Frames]:
        """Forget the actor; returns the frames that were parked for it."""
        endpoint = self.routes.pop(actor_id, None)
        if endpoint is not None:
            self.by_endpoint.get(endpoint, set()).discard(actor_id)
        waiting = self.parked.pop(actor_id, None)
        return list(waiting) if waiting else []

    def lookup(self, actor_id: int) -> bytes | None:
        return self.routes.get(actor_id)

    def is_held(self, actor_id: int) -> bool:
        return actor_id in self.parked

    def park(self, actor_id: int, frames: Frames) -> ParkResult:
        queue = self.parked.get(actor_id)
        if queue is None:
            return ParkResult(False, frames)
        if not isinstance(queue, deque):  # (NOTHING_PARKED: its first)
            queue = deque()
            self.parked[actor_id] = queue
        if len(queue) >= self.max_parked_per_actor:
            return ParkResult(False, frames)
        queue.append(frames)
        return ParkResult(True)

    def ask_forwarded(self, endpoint: bytes, src_id: int, corr: int, origin: str | None = None) -> None:
        asks = self.inflight.get(endpoint)
        if asks is None:
            asks = self.inflight[endpoint] = {}
        asks[(src_id, corr)] = origin
        if len(asks) > self.max_inflight_per_endpoint:  # a sender that lies about asks: forget the oldest
            del asks[next(iter(asks))]

    def reply_forwarded(self, endpoint: bytes, dst_id: int, corr: int) -> None:
        asks = self.inflight.get(endpoint)
        if asks:
            asks.pop((dst_id, corr), None)

    def endpoint_lost(self, endpoint: bytes) -> tuple[set[int], list[tuple[int, int, str | None]]]:
        """Drop an endpoint: its actors are held, its in-flight asks returned
        as ``(asker id, corr, asker node or None)``."""
        actors = self.by_endpoint.pop(endpoint, set())
        routes, parked = self.routes, self.parked
        for actor_id in actors:
            routes.pop(actor_id, None)
            parked.setdefault(actor_id, NOTHING_PARKED)
        asks = [(src, corr, origin) for (src, corr), origin in self.inflight.pop(endpoint, {}).items()]
        return actors, asks

    def actors_at(self, endpoint: bytes) -> int:
        return len(self.by_endpoint.get(endpoint, ()))
