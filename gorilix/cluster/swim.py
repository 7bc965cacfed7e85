"""SWIM membership with the Lifeguard refinements, as a sans-IO state machine.

Why sans-IO: the engine never touches a socket, a thread or the wall clock.
It is fed datagrams (:meth:`SwimEngine.receive`) and clock ticks
(:meth:`SwimEngine.tick`) and hands back datagrams to send
(:meth:`SwimEngine.take_outbox`) and membership events
(:meth:`SwimEngine.take_events`). The clock and the random source are
injected, so a test can run a thousand engines in one process on virtual
time and get the same run for the same seed, and the UDP driver stays a thin
loop that nothing else can delay.

The protocol follows SWIM as refined by memberlist and Lifeguard:

* failure detection: each probe period one member, picked in a shuffled
  round-robin order, is pinged; without an ack within the probe timeout,
  ``indirect_checks`` other members are asked to ping it for us (ping-req),
  and they send a nack when they cannot reach it either. Without any ack by
  the end of the period the member is suspected;
* suspicion: every member that hears a suspicion starts its own timer. The
  timer starts long (``suspicion_max_mult`` x the minimum) and shrinks
  logarithmically towards the minimum as independent members confirm the
  suspicion, so a real failure is declared quickly while a member that is
  only slow to answer one prober gets time to refute. A suspected member
  refutes by bumping its incarnation number and gossiping itself alive;
* dissemination: every state change is queued and piggybacked on the pings,
  acks and gossip packets that are sent anyway, each at most
  ``retransmit_mult * ceil(log10(n + 1))`` times, fewest-sent first;
* anti-entropy: now and then (and on join) two members swap their full state
  (push-pull), which repairs whatever gossip lost;
* local health (Lifeguard): missed acks and nacks raise a score that
  stretches our own probe timeout and interval, so a member that is itself
  slow (overloaded, paused) does not accuse healthy ones.

Wire format (constants and checks in :mod:`gorilix.cluster.wire`): msgpack only, never pickle. A datagram is an array
``[VERSION, message, message, ...]``; the first message is the reason for the
datagram, the rest are piggybacked updates. Each message is an array whose
first element is its type::

    PING      [1, seq, target_name]
    PING_REQ  [2, seq, target_name, target_address, target_port, want_nack]
    ACK       [3, seq]
    NACK      [4, seq]
    ALIVE     [5, name, incarnation, address, port, meta]
    SUSPECT   [6, name, incarnation, from_name]
    DEAD      [7, name, incarnation, from_name]
    LEAVE     [8, name, incarnation]
    PUSH_PULL [9, nonce, is_join, sender_name]              (asks for a STATE reply)
    STATE     [10, nonce, is_reply, sender_name, part, parts, [record, ...]]
              record = [name, address, port, incarnation, status_code, meta]

Full state is split over as many STATE datagrams as needed (``part`` of
``parts``), each at most ``max_packet`` bytes, so nothing ever relies on IP
fragmentation. A join counts a seed as answered only once every part of its
reply arrived, and asks again otherwise: over UDP a lost part would leave a
newcomer blind to some members until the next periodic exchange. Every
field of every message is type-checked before anything is applied; a
datagram with anything wrong is dropped whole and counted in
``stats.malformed``.

Members we have not met: news of an unknown member (gossip, or a state pushed
to us) does not add it. It waits as a candidate, at most ``max_candidates`` of
them; a token bucket (``join_rate``, ``join_burst``) lets one at a time be
pinged at the address the news gave, and only an ack from that address
admits it (a JOIN event, then it is probed and gossiped like any member).
Without an answer after ``VERIFY_ATTEMPTS`` pings it is dropped. Only the
answer to a push-pull of ours (it carries our random nonce) adds members at
once, which is how a newcomer learns a whole cluster. The table holds at most
``max_members``. Every member refused or dropped is counted in ``stats``
(``refused_rate``, ``refused_full``, ``unverified``). A flood of made-up
members (issue 11 planted 15,159 in a node without a secret) thus never
reaches the member table, the probe order, the size that scales the
timeouts, the health score, or anyone else.

What the metadata means is the user's business, not the engine's: it
carries any plain dict. A user that reads fields of it (the cluster provider
reads a node's router endpoint) passes ``meta_check``; an ALIVE message or a
state record whose metadata that check refuses is dropped on its own (the
rest of the datagram still applies), counted in ``stats.bad_meta``, and never
gossiped on, so one forged datagram cannot spread through the cluster.
"""

from __future__ import annotations

import enum
import heapq
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from gorilix.cluster.swim_state import (
    BroadcastQueue,
    Candidate,
    IndexedSet,
    Probe,
    ProbeOrder,
    Suspicion,
)
from gorilix.cluster.wire import (
    ACK,
    ALIVE,
    DEAD,
    ENVELOPE,
    LEAVE,
    MAX_DATAGRAM,
    META_MAX_BYTES,
    MIN_UPDATE,
    NACK,
    NAME_MAX,
    PING,
    PING_REQ,
    PROTOCOL_VERSION,
    PUSH_PULL,
    STATE,
    SUSPECT,
    U64,
    VALIDATORS,
    VERSION_BYTES,
    array_header,
    is_inc,
    is_name,
    is_port,
    valid_meta,
)
from gorilix.transport.describe import shown
from gorilix.transport.errors import ClusterError

__all__ = [
    "ACK",
    "ALIVE",
    "DEAD",
    "LEAVE",
    "META_MAX_BYTES",
    "NACK",
    "PING",
    "PING_REQ",
    "PROTOCOL_VERSION",
    "PUSH_PULL",
    "STATE",
    "SUSPECT",
    "EventKind",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "NameConflict",
    "SwimConfig",
    "SwimEngine",
    "SharedMembers",
    "SwimStats",
    "pull_interval_for",
    "retransmit_limit",
    "suspicion_timeout",
]

log = logging.getLogger(__name__)

class MemberStatus(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_ALIVE = MemberStatus.ALIVE
_SUSPECT = MemberStatus.SUSPECT
_DEAD = MemberStatus.DEAD
_LEFT = MemberStatus.LEFT
_STATUS_CODE = {_ALIVE: 0, _SUSPECT: 1, _DEAD: 2, _LEFT: 3}


#: Seconds between join attempts while no seed (or too few) answered.
JOIN_RETRY = 1.0


@dataclass(slots=True)
class Member:
    """One member as this engine sees it. Values handed out are copies."""

    name: str
    address: str  # gossip (UDP) address of the member
    port: int
    incarnation: int
    status: MemberStatus
    meta: dict[str, Any]  # msgpack-able dict (router endpoint, workers, load, curve key...)
    status_since: float  # clock time of the last status change

    def copy(self) -> Member:
        """A snapshot the caller may keep or change without touching the engine."""
        return Member(
            self.name, self.address, self.port, self.incarnation, self.status,
            dict(self.meta), self.status_since,
        )


class _SharedMember(Member):
    """A member record shared by many engines (:class:`SharedMembers`): it cannot change."""

    __slots__ = ("record",)
    record: bytes  # its state record, encoded once for every engine

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a shared member record cannot change ({name}); the engine copies it first")


def _shared_member(m: Member) -> _SharedMember:
    if not (is_name(m.name) and is_name(m.address) and is_port(m.port) and is_inc(m.incarnation)
            and isinstance(m.meta, dict)):
        raise ClusterError(f"cannot preload {shown(m, 200)}: bad name, address, port, incarnation or meta")
    shared = object.__new__(_SharedMember)
    values = (m.name, m.address, m.port, m.incarnation, _ALIVE, dict(m.meta), m.status_since)
    for field, value in zip(("name", "address", "port", "incarnation", "status", "meta", "status_since"), values,
                            strict=True):
        object.__setattr__(shared, field, value)
    object.__setattr__(shared, "record", msgpack.packb(
        [m.name, m.address, m.port, m.incarnation, _STATUS_CODE[_ALIVE], shared.meta], use_bin_type=True))
    return shared


class SharedMembers:
    """Members known out of band, as ALIVE, for many engines to :meth:`SwimEngine.preload_shared`."""

    __slots__ = ("members", "live")

    def __init__(self, members: Iterable[Member]) -> None:
        self.members: dict[str, Member] = {}
        for m in members:
            self.members.setdefault(m.name, _shared_member(m))
        self.live = IndexedSet()
        self.live.extend(list(self.members))


class EventKind(enum.Enum):
    JOIN = "join"
    UPDATE = "update"
    SUSPECT = "suspect"
    ALIVE = "alive"
    DEAD = "dead"
    LEAVE = "leave"


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member  # a snapshot copy


@dataclass(frozen=True, slots=True)
class NameConflict:
    """Our join was refused: a seed lists a live member under our name at another address."""

    name: str
    held_at: tuple[str, int]  # the gossip address of the member that holds the name
    seed: tuple[str, int]  # the seed whose answer said so

    def message(self, mine: tuple[str, int]) -> str:
        """What went wrong and what to do, for an error a user reads."""
        return (f"the name {self.name!r} is taken: seed {self.seed[0]}:{self.seed[1]} lists a live member "
                f"{self.name!r} at {self.held_at[0]}:{self.held_at[1]}, and this node is at {mine[0]}:{mine[1]}; "
                "node names must be unique in a cluster: pick another name, or, if that node is gone, "
                "wait until the cluster finds it dead (a few probe periods) and join again")


@dataclass(frozen=True, slots=True)
class SwimConfig:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    # Lifeguard: start at max_mult*base, shrink to base with confirmations
    suspicion_mult: int = 4
    suspicion_max_mult: int = 6
    retransmit_mult: int = 4
    gossip_nodes: int = 3
    gossip_interval: float = 0.2
    pull_interval: float = 30.0  # full state exchange (push-pull) with one random member
    awareness_max: int = 8  # Lifeguard local health: timeouts scale by (1 + score)
    forget_after: float = 30.0  # dead/left members stay listed at least this long, then are removed
    max_packet: int = 1400  # bytes; piggybacked gossip is packed up to this size
    join_retry: float = JOIN_RETRY  # retry seeds while fewer members are known than seeds given
    # Healing partitions: each interval, one state exchange with a member we declared dead (or a
    # seed we do not see alive). Both sides of a healed partition think the other dead and would
    # never talk again; the exchange makes each refute and the halves merge.
    reconnect_interval: float = 10.0
    reconnect_timeout: float = 24 * 3600.0  # stop trying a dead member after this long
    # Bounds against a flood of made-up members (see "Members we have not met" in the module docstring).
    max_members: int = 10_000  # the member table, this member and dead/left ones included
    join_rate: float = 50.0  # members heard of from untrusted news admitted per second (token bucket) ...
    join_burst: int = 200  # ... with this many at once
    max_candidates: int = 1024  # unknown members waiting for admission; news of more is dropped


@dataclass(slots=True)
class SwimStats:
    """Counters for operators and tests; datagrams, not messages, unless named otherwise."""

    sent: int = 0
    received: int = 0
    malformed: int = 0
    probes: int = 0  # direct probes started
    indirect_probes: int = 0  # ping-req messages sent for our own probes
    suspicions: int = 0  # members we moved from alive to suspect
    refutations: int = 0  # times we bumped our incarnation to deny a rumour about us
    pushpulls: int = 0  # full state exchanges started or answered
    bad_meta: int = 0  # members announced with metadata the meta check refused (dropped on their own)
    refused_full: int = 0  # new members refused because the member table held max_members
    refused_rate: int = 0  # news of unknown members dropped: max_candidates waited already (join_rate)
    unverified: int = 0  # members heard of that never answered our pings: dropped
    name_conflicts: int = 0  # announcements of a live member's name at another address: refused


# -- formulas (pure, so tests can check the engine against them) -------------


def retransmit_limit(mult: int, n: int) -> int:
    """How many times an update is sent: enough that it reaches everyone w.h.p., no more."""
    return mult * math.ceil(math.log10(n + 1))


def suspicion_timeout(
    mult: int, max_mult: int, n: int, interval: float, k: int, confirmations: int
) -> float:
    """The Lifeguard suspicion timeout after ``confirmations`` of ``k`` expected.

    The minimum grows with log10(n) because a rumour needs about log(n)
    rounds to reach everyone; the timeout starts at ``max_mult`` times that and
    falls logarithmically with each independent confirmation.
    """
    low = mult * max(1.0, math.log10(max(1, n))) * interval
    high = max_mult * low
    if k < 1:
        return low
    frac = math.log(min(confirmations, k) + 1) / math.log(k + 1)
    return max(low, high - frac * (high - low))


def pull_interval_for(interval: float, n: int) -> float:
    """Push-pull interval for a cluster of ``n``: doubles with every doubling past 32.

    A full state exchange costs O(n) bytes, so without scaling the total
    push-pull traffic would grow as n squared (as memberlist does).
    """
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


# -- validation of caller input ---------------------------------------------
#
# What a caller passes (a name, an address, metadata, a config) is checked
# when it is passed, and a mistake is a ClusterError naming it: the cluster
# layer's error, which users catch (never a bare ValueError or TypeError).


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > NAME_MAX:
        raise ClusterError(
            f"{what} must be a non-empty str of at most {NAME_MAX} characters, got {shown(value)}"
        )
    return value


def _check_port(value: object, what: str = "port") -> int:
    if type(value) is not int or not 0 < value < 65536:
        raise ClusterError(f"{what} must be an int in 1..65535, got {shown(value)}")
    return value


def _check_meta(meta: object) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ClusterError(f"meta must be a dict (or None), got {shown(meta)}")
    for key in meta:
        if not isinstance(key, str):
            raise ClusterError(f"meta keys must be str, got the key {shown(key)}")
    try:
        encoded = msgpack.packb(meta, use_bin_type=True)
    except Exception as exc:
        raise ClusterError(
            f"meta must hold only None, bool, int (64-bit), float, str, bytes, list and dict: {exc}"
        ) from None
    if len(encoded) > META_MAX_BYTES:
        raise ClusterError(
            f"meta encodes to {len(encoded)} bytes; the limit is {META_MAX_BYTES}: keep it to a few small fields"
        )
    # Decode our own encoding so what we hold is exactly what peers will see
    # (tuples become lists and so on).
    copy = msgpack.unpackb(encoded, raw=False, strict_map_key=False)
    if not valid_meta(copy):
        raise ClusterError("meta holds a value that does not travel (nested too deep or an extension type)")
    return copy


def _check_config(config: SwimConfig) -> None:
    if not isinstance(config, SwimConfig):
        raise ClusterError(f"config must be a SwimConfig, got {shown(config)}")
    positive = ("probe_interval", "probe_timeout", "gossip_interval", "pull_interval", "join_retry",
                "reconnect_interval", "reconnect_timeout", "join_rate")
    for field in positive:
        value = getattr(config, field)
        if not isinstance(value, int | float) or not value > 0 or math.isinf(value):
            raise ClusterError(f"SwimConfig.{field} must be a positive number, got {shown(value)}")
    if config.probe_timeout >= config.probe_interval:
        raise ClusterError("SwimConfig.probe_timeout must be shorter than probe_interval")
    if not isinstance(config.forget_after, int | float) or config.forget_after < 0:
        raise ClusterError(f"SwimConfig.forget_after must be a number >= 0, got {shown(config.forget_after)}")
    for field, low in (("indirect_checks", 0), ("suspicion_mult", 1), ("suspicion_max_mult", 1),
                       ("retransmit_mult", 1), ("gossip_nodes", 1), ("awareness_max", 1), ("max_members", 2),
                       ("join_burst", 1), ("max_candidates", 1)):
        value = getattr(config, field)
        if type(value) is not int or value < low:
            raise ClusterError(f"SwimConfig.{field} must be an int >= {low}, got {shown(value)}")
    if type(config.max_packet) is not int or not 576 <= config.max_packet <= MAX_DATAGRAM:
        raise ClusterError(f"SwimConfig.max_packet must be an int in 576..{MAX_DATAGRAM}, got {shown(config.max_packet)}")


# timer kinds
(_T_PROBE, _T_PROBE_TIMEOUT, _T_GOSSIP, _T_PULL, _T_JOIN, _T_SUSPICION, _T_FORGET, _T_RELAY, _T_RECONNECT,
 _T_VERIFY, _T_ADMIT) = range(11)

#: Dead members remembered for reconnection (the oldest are dropped first).
MAX_RECONNECT = 1024
#: At most one warning this often about refused metadata (each one is logged at debug).
BAD_META_WARN_EVERY = 60.0
#: Pings sent to a member we heard of before it is dropped as unverified.
VERIFY_ATTEMPTS = 3
#: How long the answer to one of our push-pulls is trusted to carry members (seconds).
ASKED_FOR = 10.0
#: At most one warning this often about refused members (each one is counted).
REFUSED_WARN_EVERY = 60.0
#: At most one warning this often about a name announced at two addresses (each one is counted).
CONFLICT_WARN_EVERY = 60.0


class SwimEngine:
    """The membership state machine of one member; see the module docstring.

    Not thread-safe: the driver calls it from one thread (or under a lock).
    Every input method reads the clock once, so time does not move inside
    one step.
    """

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        meta: dict[str, Any] | None = None,
        config: SwimConfig = SwimConfig(),  # noqa: B008 - frozen, so sharing the default is safe
        *,
        clock: Callable[[], float],
        rng: random.Random,
        meta_check: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        """``meta_check(meta)`` says why a member's metadata is unusable (None: it is fine)."""
        _check_name(name, "name")
        _check_name(address, "address")
        _check_port(port)
        _check_config(config)
        self.name = name
        self.config = config
        self._clock = clock
        self._rng = rng
        self._meta_check = meta_check
        self._bad_meta_warned_at = -math.inf
        self._pack = msgpack.Packer(use_bin_type=True).pack
        now = self._now = clock()
        self._me = Member(name, address, port, 0, _ALIVE, self._own_meta(meta), now)
        self._members: dict[str, Member] = {name: self._me}
        self._check_record_size(self._me)
        self._live = IndexedSet()  # other members, alive or suspect: probe, ping-req, push-pull
        self._gossip_set = IndexedSet()  # other members not left: dead ones may need to refute
        self._probe_order = ProbeOrder([])
        self._probe: Probe | None = None
        self._suspicions: dict[str, Suspicion] = {}
        self._relays: dict[int, tuple[tuple[str, int], int, bool]] = {}
        self._records: dict[str, bytes] = {}  # encoded state records, dropped on change
        self._queue = BroadcastQueue()
        self._outbox: list[tuple[tuple[str, int], bytes]] = []
        self._events: list[MemberEvent] = []
        self._timers: list[tuple[float, int, int, Any]] = []
        self._timer_seq = 0
        self._seq = 0
        self._score = 0
        self._leaving = False
        self._join_seeds: list[tuple[str, int]] = []
        self._join_answered: set[tuple[str, int]] = set()
        self._join_nonces: dict[int, tuple[tuple[str, int], int]] = {}
        self._join_parts: dict[int, set[int]] = {}  # parts of each join reply received so far
        self._join_round = 0
        self._join_gen = 0
        self._pull_gen = 0
        #: Members we declared dead: name -> (gossip address, since); tried again to heal partitions.
        self._failed: dict[str, tuple[tuple[str, int], float]] = {}
        self._gossip_armed = False
        # Members we have not met: heard of, waiting for a token of the join rate and (second-hand
        # news) an answer to our ping. Not in the member table, so not probed, not gossiped, no event.
        self._candidates: dict[str, Candidate] = {}
        self._waiting: deque[str] = deque()  # candidates without a ping in flight, first come first
        self._verifying: dict[int, str] = {}  # seq of a verification ping -> candidate
        self._tokens = float(config.join_burst)
        self._tokens_at = now
        self._admit_armed = False
        self._asked: dict[int, float] = {}  # nonce of our push-pulls -> until when its answer is trusted
        self._refused_warned_at = -math.inf
        self._conflict_warned_at = -math.inf
        #: Set when a seed's answer to our join lists our name at another address (the join stops).
        self.name_conflict: NameConflict | None = None
        self.stats = SwimStats()
        self._recompute_sizes()
        # Random phases: members started together must not probe, gossip and
        # pull in lockstep.
        self._gossip_phase = now + rng.random() * config.gossip_interval
        self._schedule(now + rng.random() * config.probe_interval, _T_PROBE, None)
        self._schedule(now + rng.random() * config.pull_interval, _T_PULL, self._pull_gen)
        self._schedule(now + rng.random() * config.reconnect_interval, _T_RECONNECT, None)
        self._emit(EventKind.JOIN, self._me)

    # ------------------------------------------------------------------ inputs

    def join(self, seeds: list[tuple[str, int]]) -> None:
        """Swap full state with every seed; retried every ``join_retry`` until enough are known."""
        self._now = self._clock()
        if self._leaving:
            raise RuntimeError("this member has left the cluster; start a new engine to join again")
        checked: list[tuple[str, int]] = []
        for seed in seeds:
            if not (isinstance(seed, tuple | list) and len(seed) == 2):
                raise ClusterError(f"a seed must be an (address, port) pair, got {shown(seed)}")
            address = _check_name(seed[0], "seed address")
            port = _check_port(seed[1], "seed port")
            if (address, port) != (self._me.address, self._me.port):
                checked.append((address, port))
        self._join_seeds = list(dict.fromkeys(checked))
        self.name_conflict = None
        self._join_answered = set()
        self._join_nonces = {}
        self._join_parts = {}
        self._join_gen += 1
        if not self._join_seeds:
            return
        # Announce ourselves by gossip too, as memberlist does: a state exchange is
        # several datagrams, and if the one carrying our record is lost, the seed
        # answers without learning us and nobody else ever would.
        me = self._me
        self._broadcast(me.name, self._alive_message(me))
        self._send_join()
        self._schedule(self._now + self.config.join_retry, _T_JOIN, self._join_gen)

    def receive(self, data: bytes, source: tuple[str, int]) -> None:
        """Handle one datagram. Malformed input is dropped and counted, never raised."""
        self.stats.received += 1
        messages = self._decode(data, source)
        if messages is None:
            self.stats.malformed += 1
            return
        self._now = self._clock()
        try:
            for message in messages:
                self._dispatch(message, source)
        except Exception:  # pragma: no cover - a bug; a datagram must still not take the node down
            log.exception("SWIM engine %s failed on a datagram from %s", self.name, source)
            self.stats.malformed += 1

    def tick(self) -> None:
        """Run every timer that is due at ``clock()``."""
        now = self._now = self._clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, arg = heapq.heappop(timers)
            if kind == _T_PROBE:
                self._probe_tick()
            elif kind == _T_GOSSIP:
                self._gossip_tick()
            elif kind == _T_PROBE_TIMEOUT:
                self._probe_timeout(arg)
            elif kind == _T_RELAY:
                self._relay_timeout(arg)
            elif kind == _T_SUSPICION:
                self._suspicion_timeout(arg)
            elif kind == _T_FORGET:
                self._forget(arg)
            elif kind == _T_PULL:
                self._pull_tick(arg)
            elif kind == _T_JOIN:
                self._join_tick(arg)
            elif kind == _T_RECONNECT:
                self._reconnect_tick()
            elif kind == _T_VERIFY:
                self._verify_timeout(arg)
            elif kind == _T_ADMIT:
                self._admit_armed = False
                self._admit_waiting()

    def leave(self) -> None:
        """Announce a graceful leave: others list us as LEFT, not DEAD. Probing stops."""
        self._now = self._clock()
        if self._leaving:
            return
        self._leaving = True
        me = self._me
        me.status = _LEFT
        me.status_since = self._now
        self._records.pop(me.name, None)
        self._probe = None
        self._join_seeds = []
        self._broadcast(me.name, self._pack([LEAVE, me.name, me.incarnation]))
        self._emit(EventKind.LEAVE, me)

    def update_meta(self, meta: dict[str, Any]) -> None:
        """Replace our metadata; the incarnation bump makes everyone take the new one."""
        self._now = self._clock()
        if self._leaving:
            raise RuntimeError("this member has left the cluster; its metadata can no longer change")
        new = self._own_meta(meta)
        me = self._me
        old = me.meta
        me.meta = new
        try:
            self._check_record_size(me)
        except ClusterError:
            me.meta = old
            raise
        me.incarnation += 1
        self._records.pop(me.name, None)
        self._broadcast(me.name, self._alive_message(me))
        self._emit(EventKind.UPDATE, me)

    def preload(self, members: Iterable[Member]) -> int:
        """Adopt members known out of band as ALIVE, silently; returns how many were new.

        For a bootstrap from a saved member list, and for the simulator,
        which starts a thousand members already acquainted: joining them
        one by one through the protocol costs O(n^2) gossip before the
        experiment even starts. No events are emitted and nothing is
        gossiped; names already known are left alone.
        """
        now = self._now = self._clock()
        known = self._members
        added: list[str] = []
        for m in members:
            name = m.name
            if name in known:
                continue
            if not (is_name(name) and is_name(m.address) and is_port(m.port) and is_inc(m.incarnation)
                    and isinstance(m.meta, dict)):
                raise ClusterError(f"cannot preload {shown(m, 200)}: bad name, address, port, incarnation or meta")
            known[name] = Member(name, m.address, m.port, m.incarnation, _ALIVE, dict(m.meta), now)
            added.append(name)
        self._live.extend(added)
        self._gossip_set.extend(added)
        return self._preloaded(len(added))

    def _preloaded(self, added: int) -> int:
        if added:
            self._probe_order = ProbeOrder(list(self._live.items))
            self._recompute_sizes()
            # The pull interval just grew with n; spread the first pulls over it.
            self._pull_gen += 1
            self._schedule(self._now + self._rng.random() * self._pull_every, _T_PULL, self._pull_gen)
        return added

    def preload_shared(self, shared: SharedMembers) -> int:
        """:meth:`preload` from a table shared with other engines, in O(1) memory per engine.

        For the simulator: 5,000 engines that each hold 5,000 members are 25 million members.
        Here an engine refers to the shared records (which cannot change) and copies one only
        when it changes what it knows of that member (copy on write). Only an engine that
        knows nobody yet can take a shared table; others use :meth:`preload`.
        """
        self._now = self._clock()
        if len(self._members) != 1:
            raise ClusterError("preload_shared needs an engine that knows only itself; use preload")
        members = dict(shared.members)
        members[self.name] = self._me
        self._members = members
        self._live = shared.live.copy()
        self._live.discard(self.name)
        self._gossip_set = self._live.copy()
        return self._preloaded(len(self._live))

    # ----------------------------------------------------------------- outputs

    def take_outbox(self) -> list[tuple[tuple[str, int], bytes]]:
        out = self._outbox
        self._outbox = []
        return out

    def take_events(self) -> list[MemberEvent]:
        events = self._events
        self._events = []
        return events

    def members(self) -> list[Member]:
        return [m.copy() for m in self._members.values()]

    def member(self, name: str) -> Member | None:
        """One member by name (a copy), or None if this engine has not heard of it."""
        m = self._members.get(name)
        return None if m is None else m.copy()

    def local_member(self) -> Member:
        return self._me.copy()

    def next_deadline(self) -> float:
        """When :meth:`tick` must run next (may be early, never late)."""
        return self._timers[0][0] if self._timers else math.inf

    @property
    def health(self) -> int:
        """Lifeguard awareness score: 0 is healthy; timeouts are scaled by 1 + health."""
        return self._score

    def candidates(self) -> int:
        """Members heard of but not admitted yet (waiting for the join rate, or for our ping's answer)."""
        return len(self._candidates)

    def joined_count(self) -> int:
        """How many seeds of the last :meth:`join` answered with their state."""
        return len(self._join_answered)

    # --------------------------------------------------------------- decoding

    def _decode(self, data: object, source: object) -> list[list[Any]] | None:
        if not isinstance(data, bytes | bytearray | memoryview):
            return None
        if not (type(source) is tuple and len(source) == 2 and type(source[0]) is str
                and type(source[1]) is int):
            return None
        size = len(data)
        if size < 3 or size > MAX_DATAGRAM:
            return None
        try:
            packet = msgpack.unpackb(
                data, raw=False, strict_map_key=False, use_list=True, max_str_len=size,
                max_bin_len=size, max_array_len=size, max_map_len=size, max_ext_len=0,
            )
        except Exception:
            return None
        if type(packet) is not list or len(packet) < 2 or type(packet[0]) is not int:
            return None
        if packet[0] != PROTOCOL_VERSION:
            return None
        messages = packet[1:]
        for message in messages:
            if type(message) is not list or not message:
                return None
            check = VALIDATORS.get(message[0]) if type(message[0]) is int else None
            if check is None or not check(message):
                return None
        return messages

    def _dispatch(self, m: list[Any], source: tuple[str, int]) -> None:
        kind = m[0]
        if kind == ALIVE:
            if not self._meta_refused(m[1], m[5], source):
                self._apply_alive(m[1], m[2], m[3], m[4], m[5], announce_new=True, source=source)
        elif kind == PING:
            if m[2] == self.name:  # a ping for someone who used to live at this address is not ours
                self._send(source, self._pack([ACK, m[1]]))
        elif kind == ACK:
            self._on_ack(m[1], source)
        elif kind == SUSPECT:
            self._apply_suspect(m[1], m[2], m[3])
        elif kind == DEAD:
            self._apply_dead(m[1], m[2], m[3])
        elif kind == LEAVE:
            self._apply_left(m[1], m[2])
        elif kind == PING_REQ:
            self._on_ping_req(m, source)
        elif kind == NACK:
            probe = self._probe
            if probe is not None and probe.seq == m[1] and not probe.acked:
                probe.nacks += 1
        elif kind == PUSH_PULL:
            if m[3] == self.name:
                if m[1] in self._asked:
                    return  # our own, to a seed list naming us: it must not count as an answer
                # Another node under our name: answer, so it finds our record and knows it is refused.
                self._conflict(self.name, (self._me.address, self._me.port), source)
            self.stats.pushpulls += 1
            self._send_state(source, m[1], is_reply=True)
        elif kind == STATE:
            self._on_state(m, source)

    # ------------------------------------------------------------------ probing

    def _probe_tick(self) -> None:
        self._finish_probe()
        if self._leaving:
            return
        now = self._now
        scale = 1 + self._score
        target = self._next_target()
        if target is not None:
            seq = self._next_seq()
            self._probe = Probe(seq, target.name)
            self.stats.probes += 1
            extra: tuple[bytes, ...] = ()
            if target.status is _SUSPECT:
                # Tell the member directly: it refutes sooner than gossip would reach it.
                extra = (self._pack([SUSPECT, target.name, target.incarnation, self.name]),)
            self._send((target.address, target.port), self._pack([PING, seq, target.name]), extra)
            self._schedule(now + self.config.probe_timeout * scale, _T_PROBE_TIMEOUT, seq)
        self._schedule(now + self.config.probe_interval * scale, _T_PROBE, None)

    def _next_target(self) -> Member | None:
        members = self._members
        for _ in range(len(self._probe_order) + len(self._live) + 1):
            if not self._probe_order:
                # A fresh random order each round: every member is probed once
                # per round (bounded detection time) without a pattern.
                self._probe_order = ProbeOrder(list(self._live.items))
                if not self._probe_order:
                    return None
            name = self._probe_order.draw(self._rng)
            m = members.get(name)
            if m is not None and (m.status is _ALIVE or m.status is _SUSPECT) and m is not self._me:
                return m
        return None

    def _probe_timeout(self, seq: int) -> None:
        probe = self._probe
        if probe is None or probe.seq != seq or probe.acked:
            return
        target = self._members.get(probe.target)
        if target is None:
            return
        members = self._members
        helpers = self._live.sample(
            self._rng, self.config.indirect_checks,
            lambda name: name != probe.target and members[name].status is _ALIVE,
        )
        # One more direct ping with the same seq as the helpers' (memberlist sends one over TCP here):
        # a probe now fails only if both direct tries and every indirect path lose a datagram. At 5%
        # loss that makes false suspicions, and the gossip of their refutations, about ten times rarer.
        self._send((target.address, target.port), self._pack([PING, seq, target.name]))
        message = self._pack([PING_REQ, seq, target.name, target.address, target.port, True])
        for name in helpers:
            helper = members[name]
            self._send((helper.address, helper.port), message)
        probe.expected_nacks = len(helpers)
        self.stats.indirect_probes += len(helpers)

    def _finish_probe(self) -> None:
        probe = self._probe
        self._probe = None
        if probe is None or probe.acked:
            return
        # Lifeguard: helpers that answered with nacks are alive and reachable,
        # so the target is the problem; helpers that stayed silent suggest we
        # are the problem, and we become more patient.
        if probe.expected_nacks:
            self._adjust_health(probe.expected_nacks - probe.nacks)
        else:
            self._adjust_health(1)
        target = self._members.get(probe.target)
        if target is not None and (target.status is _ALIVE or target.status is _SUSPECT):
            self._apply_suspect(target.name, target.incarnation, self.name)

    def _on_ack(self, seq: int, source: tuple[str, int]) -> None:
        if seq in self._verifying:
            self._on_verified(seq, source)
            return
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if not probe.acked:
                probe.acked = True
                self._adjust_health(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(relay[0], self._pack([ACK, relay[1]]))

    def _on_ping_req(self, m: list[Any], source: tuple[str, int]) -> None:
        if m[2] == self.name:  # asked to vouch for ourselves: we are clearly up
            self._send(source, self._pack([ACK, m[1]]))
            return
        seq = self._next_seq()
        self._relays[seq] = (source, m[1], m[5])
        self._send((m[3], m[4]), self._pack([PING, seq, m[2]]))
        self._schedule(self._now + self.config.probe_timeout, _T_RELAY, seq)

    def _relay_timeout(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay[2]:
            self._send(relay[0], self._pack([NACK, relay[1]]))

    def _adjust_health(self, delta: int) -> None:
        self._score = min(max(self._score + delta, 0), self.config.awareness_max - 1)

    # ------------------------------------------------------------ state changes

    def _apply_alive(
        self, name: str, inc: int, address: str, port: int, meta: dict[str, Any], *, announce_new: bool,
        source: tuple[str, int] | None = None,
    ) -> None:
        """News that ``name`` is alive. A name we do not know is admitted at once only when ``source``
        is None (news we trust: the answer to our own push-pull); otherwise it becomes a candidate,
        admitted at the join rate once it answered our ping."""
        if name == self.name:
            me = self._me
            if (address, port) != (me.address, me.port) and not self._leaving:
                self._conflict(name, (me.address, me.port), (address, port))
            if self._leaving or inc < me.incarnation:
                return
            if inc == me.incarnation and address == me.address and port == me.port and meta == me.meta:
                return  # our own news coming back
            self._refute(inc)  # someone speaks for an older or other life of ours
            return
        m = self._members.get(name)
        if m is None:
            if source is None:
                self._admit(name, inc, address, port, meta, announce=announce_new)
            else:
                self._candidate(name, inc, address, port, meta)
            return
        status = m.status
        if status is _DEAD or status is _LEFT:
            # A restart: a higher incarnation, or the same name at a new address.
            if inc > m.incarnation or address != m.address or port != m.port:
                m = self._writable(m)
                m.incarnation, m.address, m.port, m.meta = inc, address, port, meta
                self._set_status(m, _ALIVE)
                self._emit(EventKind.JOIN, m)
                self._broadcast(name, self._alive_message(m))
            return
        if address != m.address or port != m.port:
            # A live member's name announced at another address, at any incarnation: a second node
            # under the same name (or a restart elsewhere before the old one was found dead). The
            # member we have keeps its name; letting the newer incarnation win made the entry flip
            # between the two, each refuting the other (memberlist refuses it the same way).
            self._conflict(name, (m.address, m.port), (address, port))
            return
        if inc <= m.incarnation:
            return  # old news: keep what we have
        changed = meta != m.meta
        m = self._writable(m)
        m.incarnation, m.address, m.port, m.meta = inc, address, port, meta
        self._records.pop(name, None)
        if status is _SUSPECT:
            self._set_status(m, _ALIVE)
            self._emit(EventKind.ALIVE, m)
        if changed:
            self._emit(EventKind.UPDATE, m)
        self._broadcast(name, self._alive_message(m))

    # ------------------------------------------------------- members we have not met

    def _admit(self, name: str, inc: int, address: str, port: int, meta: dict[str, Any], *,
               announce: bool) -> None:
        """Add a member to the table (JOIN event; gossiped on if ``announce``), unless it is full."""
        self._drop_candidate(name)
        if len(self._members) >= self.config.max_members:
            self.stats.refused_full += 1
            self._warn_refused(name, f"the member table holds max_members={self.config.max_members}")
            return
        m = Member(name, address, port, inc, _ALIVE, meta, self._now)
        self._members[name] = m
        self._live.add(name)
        self._gossip_set.add(name)
        self._insert_probe(name)
        self._recompute_sizes()
        self._arm_gossip()
        self._failed.pop(name, None)  # forgotten while dead, and back: nothing left to heal
        self._emit(EventKind.JOIN, m)
        if announce:
            self._broadcast(name, self._alive_message(m))

    def _candidate(self, name: str, inc: int, address: str, port: int, meta: dict[str, Any]) -> None:
        """News of a member we do not know, from a source we cannot trust: wait for the join rate.

        Even news from the member's own address: without a seal anyone can send from anywhere, and
        one address could speak for any number of names. One ping, one round trip, settles it.
        """
        c = self._candidates.get(name)
        if c is not None:
            if inc > c.incarnation and c.seq is None:
                c.incarnation, c.address, c.port, c.meta = inc, address, port, meta
            return
        if len(self._candidates) >= self.config.max_candidates:
            self.stats.refused_rate += 1
            self._warn_refused(name, f"{self.config.max_candidates} unknown members wait already "
                               f"(join_rate={self.config.join_rate:g}/s)")
            return
        self._candidates[name] = Candidate(name, inc, address, port, meta)
        self._waiting.append(name)
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Spend the join rate's tokens on waiting candidates, one ping each; wake up when the next
        token is due."""
        waiting = self._waiting
        if not waiting:
            return
        cfg = self.config
        now = self._now
        self._tokens = min(float(cfg.join_burst), self._tokens + (now - self._tokens_at) * cfg.join_rate)
        self._tokens_at = now
        candidates = self._candidates
        while waiting and self._tokens >= 1.0 - 1e-9:  # (rounding must not leave a token just short)
            c = candidates.get(waiting.popleft())
            if c is None or c.seq is not None:
                continue  # dropped meanwhile
            self._tokens -= 1.0
            self._verify(c)
        if waiting and not self._admit_armed:
            self._admit_armed = True
            self._schedule(now + max(1.0 - self._tokens, 0.01) / cfg.join_rate, _T_ADMIT, None)

    def _verify(self, c: Candidate) -> None:
        """Ping a member we heard of, at the address we were told; only it can answer."""
        seq = c.seq = self._next_seq()
        c.attempts += 1
        self._verifying[seq] = c.name
        # No updates ride along: the address is only hearsay, perhaps made up.
        self._send((c.address, c.port), self._pack([PING, seq, c.name]), piggyback=False)
        self._schedule(self._now + self.config.probe_timeout, _T_VERIFY, seq)

    def _on_verified(self, seq: int, source: tuple[str, int]) -> None:
        c = self._candidates.get(self._verifying[seq])
        if c is None:
            del self._verifying[seq]
        elif (c.address, c.port) == source:  # from the member itself, not from whoever guessed the seq
            del self._verifying[seq]
            self._promote(c)

    def _verify_timeout(self, seq: int) -> None:
        name = self._verifying.pop(seq, None)
        c = self._candidates.get(name) if name is not None else None
        if c is None or c.seq != seq:
            return
        if c.attempts < VERIFY_ATTEMPTS:
            self._verify(c)  # (the same token: one lost datagram must not cost a real member its place)
        else:
            self.stats.unverified += 1
            self._drop_candidate(c.name)

    def _promote(self, c: Candidate) -> None:
        self._drop_candidate(c.name)
        if c.name in self._members:  # admitted meanwhile (the answer to our push-pull named it)
            return
        self._admit(c.name, c.incarnation, c.address, c.port, c.meta, announce=True)

    def _drop_candidate(self, name: str) -> None:
        c = self._candidates.pop(name, None)
        if c is not None and c.seq is not None:
            self._verifying.pop(c.seq, None)

    def _warn_refused(self, name: str, why: str) -> None:
        stats = self.stats
        if self._now >= self._refused_warned_at + REFUSED_WARN_EVERY:
            # A flood sends thousands of these: a warning now and then, each at debug.
            self._refused_warned_at = self._now
            log.warning("%s: refused new member %r: %s (%d refused for a full table, %d over the join rate, "
                        "%d unverified so far; more at debug level)", self.name, name, why, stats.refused_full,
                        stats.refused_rate, stats.unverified)
        else:
            log.debug("%s: refused new member %r: %s", self.name, name, why)

    def _apply_suspect(self, name: str, inc: int, source: str) -> None:
        if self._about_me(name, inc):
            return
        m = self._members.get(name)
        if m is None or inc < m.incarnation or m.status is _DEAD or m.status is _LEFT:
            return
        suspicion = self._suspicions.get(name)
        if suspicion is not None:
            if inc > m.incarnation:
                m = self._writable(m)
                m.incarnation = inc
                self._records.pop(name, None)
            if suspicion.confirm(source):
                self._schedule(suspicion.deadline, _T_SUSPICION, name)
                # Pass the confirmation on: others' timers shrink too.
                self._broadcast(name, self._pack([SUSPECT, name, m.incarnation, source]))
            return
        m = self._writable(m)
        m.incarnation = inc
        self._set_status(m, _SUSPECT)
        self.stats.suspicions += 1
        n_live = len(self._live) + 1
        k = max(0, min(self.config.indirect_checks, n_live - 2))
        low = self._suspicion_min
        suspicion = Suspicion(source, self._now, k, low, self.config.suspicion_max_mult * low)
        self._suspicions[name] = suspicion
        self._schedule(suspicion.deadline, _T_SUSPICION, name)
        self._emit(EventKind.SUSPECT, m)
        self._broadcast(name, self._pack([SUSPECT, name, inc, source]))

    def _suspicion_timeout(self, name: str) -> None:
        suspicion = self._suspicions.get(name)
        if suspicion is None or suspicion.deadline > self._now:
            return
        m = self._members[name]
        self._apply_dead(name, m.incarnation, self.name)

    def _apply_dead(self, name: str, inc: int, source: str) -> None:
        if self._about_me(name, inc):
            return
        m = self._members.get(name)
        if m is None or inc < m.incarnation or m.status is _DEAD or m.status is _LEFT:
            return
        m = self._writable(m)
        m.incarnation = inc
        self._set_status(m, _DEAD)
        self._emit(EventKind.DEAD, m)
        self._broadcast(name, self._pack([DEAD, name, inc, source]))

    def _apply_left(self, name: str, inc: int) -> None:
        if self._about_me(name, inc):
            return
        m = self._members.get(name)
        if m is None:
            c = self._candidates.get(name)
            if c is not None and inc >= c.incarnation:  # gone before we met it
                self._drop_candidate(name)
            return
        # A leave overrides a death at the same incarnation: the member said
        # goodbye, so it must not count as a failure.
        if inc < m.incarnation or m.status is _LEFT:
            return
        m = self._writable(m)
        m.incarnation = inc
        self._set_status(m, _LEFT)
        self._emit(EventKind.LEAVE, m)
        self._broadcast(name, self._pack([LEAVE, name, inc]))

    def _about_me(self, name: str, inc: int) -> bool:
        """A rumour that we are suspect, dead or gone: deny it (unless we are leaving)."""
        if name != self.name:
            return False
        if not self._leaving and inc >= self._me.incarnation:
            self._refute(inc)
        return True

    def _refute(self, inc: int) -> None:
        me = self._me
        me.incarnation = max(me.incarnation, inc) + 1
        self._records.pop(me.name, None)
        self.stats.refutations += 1
        # Lifeguard: being suspected hints that we are slow ourselves.
        self._adjust_health(1)
        self._broadcast(me.name, self._alive_message(me))

    def _writable(self, m: Member) -> Member:
        """``m`` itself, or this engine's own copy of it if it is shared with other engines."""
        if type(m) is not _SharedMember:
            return m
        own = self._members[m.name] = m.copy()
        return own

    def _set_status(self, m: Member, status: MemberStatus) -> None:
        m = self._writable(m)
        old = m.status
        m.status = status
        m.status_since = self._now
        name = m.name
        self._records.pop(name, None)
        was_live = old is _ALIVE or old is _SUSPECT
        is_live = status is _ALIVE or status is _SUSPECT
        if was_live and not is_live:
            self._live.discard(name)
        elif is_live and not was_live:
            self._live.add(name)
            self._insert_probe(name)
        if status is _LEFT:
            self._gossip_set.discard(name)
        else:
            self._gossip_set.add(name)
            self._arm_gossip()  # rumours queued while we knew nobody (our own alive, at join)
        if status is not _SUSPECT:
            self._suspicions.pop(name, None)
        if status is _DEAD:
            self._failed.pop(name, None)
            self._failed[name] = ((m.address, m.port), self._now)
            if len(self._failed) > MAX_RECONNECT:
                del self._failed[next(iter(self._failed))]
        else:
            self._failed.pop(name, None)  # alive again, or left on purpose: nothing to heal
        if status is _DEAD or status is _LEFT:
            self._schedule(self._now + self.config.forget_after, _T_FORGET, name)

    def _forget(self, name: str) -> None:
        m = self._members.get(name)
        if m is None or m is self._me or not (m.status is _DEAD or m.status is _LEFT):
            return
        if m.status_since + self.config.forget_after > self._now:
            return  # died again since; a later timer will come
        del self._members[name]
        self._live.discard(name)
        self._gossip_set.discard(name)
        self._records.pop(name, None)
        self._recompute_sizes()

    def _insert_probe(self, name: str) -> None:
        # Probed within this round, at a random place, without reshuffling the whole order.
        self._probe_order.add(name)

    def _recompute_sizes(self) -> None:
        n = len(self._members)
        cfg = self.config
        self._retransmit_limit = retransmit_limit(cfg.retransmit_mult, n)
        self._suspicion_min = suspicion_timeout(
            cfg.suspicion_mult, cfg.suspicion_max_mult, n, cfg.probe_interval, 0, 0
        )
        self._pull_every = pull_interval_for(cfg.pull_interval, n)

    # ------------------------------------------------------------ dissemination

    def _broadcast(self, name: str, data: bytes) -> None:
        self._queue.queue(name, data)
        self._arm_gossip()

    def _arm_gossip(self) -> None:
        """Gossip ticks only while there is fresh news and someone to tell, on a fixed cadence:
        idle members cost nothing and busy ones stay periodic.

        News is fresh until it went out ``gossip_nodes`` times (one gossip round) from here; its
        other transmissions, up to the retransmit limit, ride on the datagrams sent anyway
        (pings, acks, the gossip of fresher news). Gossiping until the limit instead made a
        member send a datagram to ``gossip_nodes`` members every ``gossip_interval`` whenever
        anything at all was queued, and the news of a cluster (a suspicion and its refutation
        at 5% loss, say) grows with its size: 6.0 datagrams per member per probe period at
        n=250, 17.1 at 2,000. Now the count stays flat (docs/clustering.md, "Measured").
        """
        if self._gossip_armed or not self._queue.fresh(self.config.gossip_nodes) or not self._gossip_set:
            return
        g = self.config.gossip_interval
        at = self._gossip_phase + (math.floor((self._now - self._gossip_phase) / g) + 1) * g
        if at <= self._now:  # rounding put the next slot on this instant
            at += g
        self._gossip_armed = True
        self._schedule(at, _T_GOSSIP, None)

    def _gossip_tick(self) -> None:
        self._gossip_armed = False
        queue = self._queue
        if not queue:
            return
        members = self._members
        targets = self._gossip_set.sample(self._rng, self.config.gossip_nodes)
        budget = self.config.max_packet - ENVELOPE
        limit = self._retransmit_limit
        fresh = self.config.gossip_nodes
        for name in targets:
            if not queue.fresh(fresh):
                break
            updates = queue.take(budget, limit)
            if not updates:
                break
            m = members[name]
            packet = array_header(1 + len(updates)) + VERSION_BYTES + b"".join(updates)
            self._outbox.append(((m.address, m.port), packet))
            self.stats.sent += 1
        self._arm_gossip()

    def _send(self, address: tuple[str, int], main: bytes, extra: tuple[bytes, ...] = (), *,
              piggyback: bool = True) -> None:
        """Send ``main`` with as many queued updates as fit in ``max_packet``."""
        budget = self.config.max_packet - ENVELOPE - len(main)
        for item in extra:
            budget -= len(item)
        updates = (self._queue.take(budget, self._retransmit_limit)
                   if piggyback and self._queue and budget >= MIN_UPDATE else [])
        parts = [array_header(2 + len(extra) + len(updates)), VERSION_BYTES, main, *extra, *updates]
        self._outbox.append((address, b"".join(parts)))
        self.stats.sent += 1

    def _alive_message(self, m: Member) -> bytes:
        return self._pack([ALIVE, m.name, m.incarnation, m.address, m.port, m.meta])

    def _emit(self, kind: EventKind, m: Member) -> None:
        self._events.append(MemberEvent(kind, m.copy()))

    # ---------------------------------------------------------------- push-pull

    def _pull_tick(self, gen: int) -> None:
        if gen != self._pull_gen or self._leaving:
            return
        members = self._members
        peers = self._live.sample(self._rng, 1, lambda name: members[name].status is _ALIVE)
        if peers:
            peer = members[peers[0]]
            self._push_pull((peer.address, peer.port), False, self._rng.getrandbits(32))
        self._schedule(self._now + self._pull_every, _T_PULL, gen)

    def _send_join(self) -> None:
        self._join_round += 1
        current = self._join_round
        self._join_nonces = {n: v for n, v in self._join_nonces.items() if v[1] >= current - 1}
        self._join_parts = {n: p for n, p in self._join_parts.items() if n in self._join_nonces}
        for seed in self._join_seeds:
            if seed in self._join_answered:
                continue
            nonce = self._rng.getrandbits(32)
            self._join_nonces[nonce] = (seed, current)
            self._push_pull(seed, True, nonce)

    def _join_tick(self, gen: int) -> None:
        if gen != self._join_gen or self._leaving or not self._join_seeds:
            return
        if all(seed in self._join_answered for seed in self._join_seeds):
            return  # every seed answered; the cluster is just small
        if self._join_answered and len(self._live) >= len(self._join_seeds):
            return  # one full answer, and as many members as seeds: joined (some seeds may be gone)
        self._send_join()
        self._schedule(self._now + self.config.join_retry, _T_JOIN, gen)

    def _reconnect_tick(self) -> None:
        """One state exchange with a member we declared dead, or a seed we do not see.

        After a partition heals, each side still lists the other as dead and
        never probes or gossips to it again. A push-pull carries each side's
        verdict to the other, which refutes it (a higher incarnation), and
        the halves merge. Also how a node keeps retrying its seeds while the
        cluster is smaller than its seed list.
        """
        cfg = self.config
        self._schedule(self._now + cfg.reconnect_interval, _T_RECONNECT, None)
        if self._leaving:
            return
        expired = [name for name, (_, since) in self._failed.items() if self._now - since > cfg.reconnect_timeout]
        for name in expired:
            del self._failed[name]
        candidates = [address for address, _ in self._failed.values()]
        if self._join_seeds and len(self._live) < len(self._join_seeds):
            members = self._members
            seen = {(members[n].address, members[n].port) for n in self._live.items}
            candidates += [seed for seed in self._join_seeds if seed not in seen]
        if candidates:
            self._push_pull(self._rng.choice(candidates), False, self._rng.getrandbits(32))

    def _push_pull(self, address: tuple[str, int], join: bool, nonce: int) -> None:
        asked = self._asked
        if len(asked) >= 64:  # (a handful are in flight at most: forget those past their time)
            for old in [n for n, until in asked.items() if until < self._now] or [next(iter(asked))]:
                del asked[old]
        asked[nonce] = self._now + ASKED_FOR
        self.stats.pushpulls += 1
        self._send(address, self._pack([PUSH_PULL, nonce, join, self.name]))
        self._send_state(address, nonce, is_reply=False)

    def _send_state(self, address: tuple[str, int], nonce: int, *, is_reply: bool) -> None:
        """Our whole member list, split into datagrams of at most ``max_packet`` bytes."""
        pack = self._pack
        head = b"\x97" + pack(STATE) + pack(nonce) + pack(is_reply) + pack(self.name)
        prefix = array_header(2) + VERSION_BYTES + head
        budget = self.config.max_packet - len(prefix) - 6 - 3  # 6: part and parts; 3: an array16 header
        records = self._records
        chunks: list[list[bytes]] = []
        chunk: list[bytes] = []
        size = 0
        for m in self._members.values():
            record = records.get(m.name)
            if record is None and type(m) is _SharedMember:
                record = m.record
            if record is None:
                record = pack([m.name, m.address, m.port, m.incarnation, _STATUS_CODE[m.status], m.meta])
                records[m.name] = record
            if size + len(record) > budget and chunk:
                chunks.append(chunk)
                chunk = []
                size = 0
            chunk.append(record)
            size += len(record)
        chunks.append(chunk)
        parts = pack(len(chunks))
        for part, records_of_part in enumerate(chunks):
            body = pack(part) + parts + array_header(len(records_of_part)) + b"".join(records_of_part)
            self._outbox.append((address, prefix + body))
            self.stats.sent += 1

    def _on_state(self, m: list[Any], source: tuple[str, int]) -> None:
        sender = m[3]
        if m[2] and m[1] in self._join_nonces and self._join_refused(m, source):
            return
        if sender == self.name:
            return
        if m[2]:
            pending = self._join_nonces.get(m[1])
            if pending is not None:
                got = self._join_parts.setdefault(m[1], set())
                got.add(m[4])
                if len(got) >= m[5]:  # every part of this seed's state arrived
                    self._join_answered.add(pending[0])
        members = self._members
        # The answer to a push-pull of ours (its nonce is a secret between us and the peer we asked)
        # adds members at once; any other state adds them as candidates, as gossip does.
        trusted = m[2] and self._asked.get(m[1], -math.inf) >= self._now
        for name, address, port, inc, code, meta in m[6]:
            if code <= 1 and self._meta_refused(name, meta, (address, port), sender):
                continue  # an alive or suspect record would adopt its metadata
            via = None if trusted else source
            if code == 0:
                # Newcomers learned from a full state are not re-gossiped (the
                # sender's own record excepted): the peer already knows them
                # and others learn them from their own exchanges. Re-gossiping
                # would make every join cost n broadcasts.
                self._apply_alive(name, inc, address, port, meta, announce_new=name == sender, source=via)
            elif code == 1:
                if name != self.name and name not in members:
                    self._apply_alive(name, inc, address, port, meta, announce_new=False, source=via)
                self._apply_suspect(name, inc, sender)
            elif code == 2:
                # Another member's verdict is only a suspicion here: we start
                # our own timer, which the member can still refute.
                self._apply_suspect(name, inc, sender)
            else:
                self._apply_left(name, inc)

    def _join_refused(self, m: list[Any], source: tuple[str, int]) -> bool:
        """A seed's answer to our join lists a live member under our name at another address: the
        name is taken. The join stops and says so (:attr:`name_conflict`); nothing of that answer is
        applied, and the seed keeps its member."""
        me = self._me
        for name, address, port, _, code, _ in m[6]:
            if name == self.name and code <= 1 and (address, port) != (me.address, me.port):
                break
        else:
            return False
        self.name_conflict = NameConflict(self.name, (address, port), self._join_nonces[m[1]][0])
        self.stats.name_conflicts += 1
        for nonce in self._join_nonces:  # answers still on their way from other seeds admit nobody
            self._asked.pop(nonce, None)
        self._join_seeds = []
        self._join_nonces = {}
        self._join_parts = {}
        self._join_gen += 1
        log.error("%s: %s", self.name, self.name_conflict.message((me.address, me.port)))
        return True

    def _conflict(self, name: str, held: tuple[str, int], other: tuple[str, int]) -> None:
        """A live member's name announced from another address: refused, counted, warned of now and then."""
        self.stats.name_conflicts += 1
        whose = "our own name" if name == self.name else "the name of a live member"
        args = (self.name, name, other[0], other[1], whose, held[0], held[1])
        if self._now >= self._conflict_warned_at + CONFLICT_WARN_EVERY:
            self._conflict_warned_at = self._now
            log.warning("%s: refused member %r at %s:%d: it is %s, at %s:%d; node names must be unique in a "
                        "cluster (%d refused so far; more at debug level)", *args, self.stats.name_conflicts)
        else:
            log.debug("%s: refused member %r at %s:%d: it is %s, at %s:%d", *args)

    # ----------------------------------------------------------------- helpers

    def _own_meta(self, meta: object) -> dict[str, Any]:
        """Our metadata, checked as peers will check it: what they would drop is refused here."""
        checked = _check_meta(meta)
        problem = self._meta_check(checked) if self._meta_check is not None else None
        if problem is not None:
            raise ClusterError(f"meta would be refused by every member: {problem}")
        return checked

    def _meta_refused(self, name: str, meta: dict[str, Any], address: tuple[str, int], via: str = "") -> bool:
        """True (counted and logged) when ``meta_check`` refuses the metadata announced for ``name``."""
        if self._meta_check is None:
            return False
        problem = self._meta_check(meta)
        if problem is None:
            return False
        self.stats.bad_meta += 1
        where = f"{address[0]}:{address[1]}" + (f" in the state of {via}" if via else "")
        if self._now >= self._bad_meta_warned_at + BAD_META_WARN_EVERY:
            # A hostile sender can send thousands of these: a warning now and then, each at debug.
            self._bad_meta_warned_at = self._now
            log.warning("%s: dropped member %r announced from %s: %s (%d dropped so far; more at debug level)",
                        self.name, name, where, problem, self.stats.bad_meta)
        else:
            log.debug("%s: dropped member %r announced from %s: %s", self.name, name, where, problem)
        return True

    def _check_record_size(self, m: Member) -> None:
        size = len(self._pack([ALIVE, m.name, U64 - 1, m.address, m.port, m.meta]))
        if size > self.config.max_packet // 2:
            raise ClusterError(
                f"member {m.name!r} with its meta encodes to {size} bytes; "
                f"it must fit in half a datagram ({self.config.max_packet // 2} bytes)"
            )

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % U64
        return self._seq

    def _schedule(self, when: float, kind: int, arg: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, arg))
