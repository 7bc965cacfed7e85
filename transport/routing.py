"""The router's forwarding table, as pure data (no sockets).

It maps actor ids to the endpoint (a ZeroMQ identity) that hosts them, parks
messages for actors that are being (re)created, and remembers which asks are
in flight at which endpoint so that a dead endpoint's askers hear at once.
It also counts the asks and replies it is told of, and times a sample of
the asks (:class:`LatencyHistogram`): the node's ``stats`` report both.

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
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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


#: One ask in this many forwarded is timed: a counter picks them, so the others cost no clock call.
ASK_SAMPLE_EVERY = 16
#: Upper bounds (seconds) of the ask latency buckets: a dashboard's and Prometheus' fixed buckets.
ASK_LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                      0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Timed asks waiting for their reply, at most: one whose reply never passes (a sender that
#: lies about asks, an answer lost with its worker) must not keep its start time for ever.
MAX_TIMED_ASKS = 4096


class LatencyHistogram:
    """Durations counted in fixed buckets, as pure data: what a Prometheus histogram exposes.

    ``counts[i]`` holds the durations ``<= bounds[i]`` and above the bound
    before it (a bucket each, not cumulative); the last holds those above
    every bound (+Inf).
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = ASK_LATENCY_BOUNDS) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"a histogram needs increasing bucket bounds, got {bounds!r}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # (a bound is its bucket's upper edge: le)
        self.sum += seconds
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        """A copy to send: bounds, per-bucket counts (the last is +Inf), sum (seconds), count."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum, "count": self.count}


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
    #: Times the sampled asks (see :data:`ASK_SAMPLE_EVERY`); None: no ask is timed.
    clock: Callable[[], float] | None = None
    sample_every: int = ASK_SAMPLE_EVERY
    asks: int = 0  # asks forwarded, to a worker or a peer node
    replies: int = 0  # replies forwarded to their askers
    #: (asker id, corr) -> when the node forwarded it: the sampled asks to a worker, not answered yet.
    timed: dict[tuple[int, int], float] = field(default_factory=dict)
    ask_latency: LatencyHistogram = field(default_factory=LatencyHistogram)

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

    def ask_forwarded(self, endpoint: bytes, src_id: int, corr: int, origin: str | None = None,
                      timed: bool = True) -> None:
        """An ask went to ``endpoint``: remembered until its reply, counted, and one in
        :attr:`sample_every` timed (``timed``: it went to a worker of this node, not a peer)."""
        asks = self.inflight.get(endpoint)
        if asks is None:
            asks = self.inflight[endpoint] = {}
        key = (src_id, corr)
        asks[key] = origin
        if len(asks) > self.max_inflight_per_endpoint:  # a sender that lies about asks: forget the oldest
            del asks[next(iter(asks))]
        self.asks += 1
        if not self.asks % self.sample_every and timed and self.clock is not None:
            self.timed[key] = self.clock()
            if len(self.timed) > MAX_TIMED_ASKS:  # (never answered through us: forget the oldest)
                del self.timed[next(iter(self.timed))]

    def reply_forwarded(self, endpoint: bytes, dst_id: int, corr: int) -> None:
        """A reply from ``endpoint`` went on to its asker: the ask is answered (and timed, if sampled)."""
        self.replies += 1
        asks = self.inflight.get(endpoint)
        if asks:
            key = (dst_id, corr)
            asks.pop(key, None)
            timed = self.timed
            if timed:  # (under load, nearly always: one dict lookup per reply is the sampling's cost)
                started = timed.pop(key, None)
                if started is not None and self.clock is not None:
                    self.ask_latency.observe(self.clock() - started)

    def reply_held(self, endpoint: bytes, dst_id: int, corr: int) -> None:
        """A reply from ``endpoint`` to an asker not routed now: the ask is answered, but the reply
        is not forwarded (it parks, and is counted when it goes on, or it is a dead letter)."""
        asks = self.inflight.get(endpoint)
        if asks:
            key = (dst_id, corr)
            asks.pop(key, None)
            if self.timed:
                self.timed.pop(key, None)

    def hold_endpoint(self, endpoint: bytes) -> set[int]:
        """Park what comes for the actors at ``endpoint`` from now on (its process is being killed); returns them.

        Its in-flight asks stay until :meth:`endpoint_lost`: they are answered, or fail, as the death decides.
        """
        actors = self.by_endpoint.pop(endpoint, set())
        routes, parked = self.routes, self.parked
        for actor_id in actors:
            routes.pop(actor_id, None)
            parked.setdefault(actor_id, NOTHING_PARKED)
        return actors

    def endpoint_lost(self, endpoint: bytes) -> tuple[set[int], list[tuple[int, int, str | None]]]:
        """Drop an endpoint: its actors are held, its in-flight asks returned
        as ``(asker id, corr, asker node or None)``."""
        actors = self.hold_endpoint(endpoint)
        asks = [(src, corr, origin) for (src, corr), origin in self.inflight.pop(endpoint, {}).items()]
        if self.timed:  # (they fail now: no reply will time them)
            for src, corr, _ in asks:
                self.timed.pop((src, corr), None)
        return actors, asks

    def actors_at(self, endpoint: bytes) -> int:
        return len(self.by_endpoint.get(endpoint, ()))
