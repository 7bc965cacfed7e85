"""An in-process network of SWIM engines on virtual time, deterministic by seed.

Why a simulator: failure detection and dissemination are statistical
properties of a whole cluster (how fast everyone learns, how often a healthy
member is wrongly declared dead) that no two-member test can show, and real
sockets and clocks would make such a test slow and flaky. Here every engine
shares one virtual clock driven by a heap of packet deliveries and timer
deadlines; packets are lost with a fixed probability and delayed by a
uniformly drawn amount; one ``random.Random(seed)`` decides everything, so
the same seed gives the same run, event for event.

Importable by the tests; ``python tests/swim_sim.py`` prints the figures for
1,000 members at 5% loss (``--help`` for other sizes).
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

if importlib.util.find_spec("gorilix") is None:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gorilix.cluster.swim import (  # noqa: E402
    PROTOCOL_VERSION,
    EventKind,
    Member,
    MemberEvent,
    MemberStatus,
    SharedMembers,
    SwimConfig,
    SwimEngine,
)

_TICK = 0
_DELIVER = 1
GOSSIP_PORT = 7946


class SimEvent(NamedTuple):
    """A membership event as the simulator records it."""

    time: float
    observer: int  # index of the engine that emitted it
    kind: EventKind
    name: str  # the member it is about
    incarnation: int


def address_of(i: int) -> tuple[str, int]:
    return (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", GOSSIP_PORT)


def name_of(i: int) -> str:
    return f"node-{i:04d}"


def packet(messages: list[list[Any]]) -> bytes:
    """A datagram in the engine's wire format (as an outsider would make it, unsealed)."""
    return msgpack.packb([PROTOCOL_VERSION, *messages], use_bin_type=True)


class Simulation:
    """N engines, one virtual clock, a lossy delaying network."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.001, 0.010),
        config: SwimConfig | None = None,
        bootstrap: bool = True,
    ) -> None:
        """Build ``n`` engines; with ``bootstrap`` every one already knows every other.

        Bootstrapping through the protocol would cost O(n^2) gossip before
        the experiment starts; experiments about joining use ``bootstrap=False``
        and :meth:`add` plus ``join``.
        """
        self.config = config or SwimConfig()
        self.loss = loss
        self.delay = delay
        self.rng = random.Random(seed)
        self.now = 0.0
        self.engines: list[SwimEngine] = []
        self.addresses: list[tuple[str, int]] = []
        self._index: dict[tuple[str, int], int] = {}
        self.crashed: set[int] = set()
        self._heap: list[tuple[float, int, int, int, Any, Any]] = []
        self._seq = 0
        self._scheduled: list[float] = []
        self.events: list[SimEvent] = []
        self.watch: Callable[[SimEvent, MemberEvent], None] | None = None
        self.stopped = False
        self.sent = 0  # datagrams handed to the network
        self.sent_bytes = 0
        self.lost = 0  # dropped by the loss draw or addressed to nobody
        self.delivered = 0
        for _ in range(n):
            self.add(flush=False)
        if bootstrap:
            # One table shared by every engine, copied member by member only where an engine's
            # view changes: n full tables would be n^2 members (25 million at n = 5,000).
            everyone = SharedMembers(
                Member(name_of(i), *address_of(i), 0, MemberStatus.ALIVE, {}, 0.0) for i in range(n)
            )
            for engine in self.engines:
                engine.preload_shared(everyone)
        for i in range(n):
            self.flush(i)

    # ---------------------------------------------------------------- topology

    def add(self, name: str | None = None, *, flush: bool = True) -> int:
        """Start one more engine (knowing only itself); returns its index."""
        i = len(self.engines)
        address = address_of(i)
        engine = SwimEngine(
            name or name_of(i), address[0], address[1], None, self.config,
            clock=self._clock, rng=random.Random(self.rng.getrandbits(64)),
        )
        self.engines.append(engine)
        self.addresses.append(address)
        self._index[address] = i
        self._scheduled.append(math.inf)
        if flush:
            self.flush(i)
        return i

    def inject(self, i: int, data: bytes, source: tuple[str, int], at: float) -> None:
        """Deliver ``data`` to member ``i`` at time ``at``, from ``source`` (not a member: an outsider)."""
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, _DELIVER, i, data, source))

    def crash(self, i: int) -> None:
        """Stop member ``i`` dead: no more ticks, nothing delivered to or from it."""
        self.crashed.add(i)

    def live(self) -> list[int]:
        return [i for i in range(len(self.engines)) if i not in self.crashed]

    def do(self, i: int, action: Callable[[SwimEngine], Any]) -> Any:
        """Call an input method of engine ``i`` now, and let its output out."""
        result = action(self.engines[i])
        self.flush(i)
        return result

    # ---------------------------------------------------------------- the loop

    def _clock(self) -> float:
        return self.now

    def flush(self, i: int) -> None:
        """Move engine ``i``'s datagrams onto the network, record events, schedule its tick."""
        engine = self.engines[i]
        now = self.now
        out = engine.take_outbox()
        if out:
            rng = self.rng
            loss = self.loss
            low, high = self.delay
            span = high - low
            source = self.addresses[i]
            heap = self._heap
            index = self._index
            for destination, data in out:
                self.sent += 1
                self.sent_bytes += len(data)
                j = index.get(destination)
                if j is None or (loss and rng.random() < loss):
                    self.lost += 1
                    continue
                self._seq += 1
                heapq.heappush(heap, (now + low + span * rng.random(), self._seq, _DELIVER, j, data, source))
        events = engine.take_events()
        if events:
            for event in events:
                record = SimEvent(now, i, event.kind, event.member.name, event.member.incarnation)
                self.events.append(record)
                if self.watch is not None:
                    self.watch(record, event)
        deadline = engine.next_deadline()
        if deadline < self._scheduled[i]:
            deadline = max(deadline, now)
            self._scheduled[i] = deadline
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, _TICK, i, None, None))

    def run(self, duration: float) -> bool:
        """Advance virtual time by ``duration``; True if a watcher stopped it early."""
        return self.run_until(self.now + duration)

    def run_until(self, until: float) -> bool:
        heap = self._heap
        engines = self.engines
        crashed = self.crashed
        scheduled = self._scheduled
        self.stopped = False
        while heap and heap[0][0] <= until:
            when, _, kind, i, data, source = heapq.heappop(heap)
            if i in crashed:
                continue
            if kind == _TICK:
                if scheduled[i] != when:
                    continue  # superseded by an earlier deadline
                scheduled[i] = math.inf
                self.now = when
                engines[i].tick()
            else:
                self.now = when
                self.delivered += 1
                engines[i].receive(data, source)
            self.flush(i)
            if self.stopped:
                return True
        self.now = until
        return False

    # ------------------------------------------------------------------ views

    def status_of(self, observer: int, name: str) -> MemberStatus | None:
        for m in self.engines[observer].members():
            if m.name == name:
                return m.status
        return None


# ------------------------------------------------------------------ figures


@dataclass
class Detection:
    first: float | None  # seconds from the crash until the first member marked it dead
    all: float | None  # ... until every live member had (None: not within the limit)
    observers: int  # live members that marked it dead


def measure_detection(sim: Simulation, victim: int, limit: float = 120.0) -> Detection:
    """Crash ``victim`` now and run until every live member has marked it DEAD."""
    start = sim.now
    sim.crash(victim)
    name = sim.engines[victim].name
    expected = len(sim.engines) - len(sim.crashed)
    seen: set[int] = set()
    first: list[float] = []

    def watch(record: SimEvent, event: MemberEvent) -> None:
        if record.kind is EventKind.DEAD and record.name == name and record.observer not in sim.crashed:
            if not first:
                first.append(record.time)
            seen.add(record.observer)
            if len(seen) >= expected:
                sim.stopped = True

    sim.watch = watch
    try:
        done = sim.run_until(start + limit)
    finally:
        sim.watch = None
    return Detection(
        first[0] - start if first else None,
        sim.now - start if done else None,
        len(seen),
    )


@dataclass
class Dissemination:
    rounds: float | None  # gossip intervals until every live member had the update
    seconds: float | None
    reached: int  # live members other than the origin that got it
    curve: list[int]  # members reached by the end of each gossip round


def measure_dissemination(sim: Simulation, origin: int, limit: float = 60.0) -> Dissemination:
    """Change ``origin``'s metadata now; count gossip rounds until all live members have it."""
    start = sim.now
    interval = sim.config.gossip_interval
    meta = {"rev": sim.rng.getrandbits(32)}
    name = sim.engines[origin].name
    expected = len(sim.engines) - len(sim.crashed) - 1
    seen: set[int] = set()
    curve: list[int] = []

    def watch(record: SimEvent, event: MemberEvent) -> None:
        if record.kind is EventKind.UPDATE and record.name == name and event.member.meta == meta:
            if record.observer != origin and record.observer not in seen:
                seen.add(record.observer)
                round_index = int((record.time - start) / interval)
                while len(curve) <= round_index:
                    curve.append(curve[-1] if curve else 0)
                curve[round_index] += 1
                for later in range(round_index + 1, len(curve)):
                    curve[later] += 1
                if len(seen) >= expected:
                    sim.stopped = True

    sim.watch = watch
    try:
        sim.do(origin, lambda engine: engine.update_meta(meta))
        done = sim.run_until(start + limit)
    finally:
        sim.watch = None
    seconds = sim.now - start if done else None
    return Dissemination(seconds / interval if seconds is not None else None, seconds, len(seen), curve)


def measure_traffic(sim: Simulation, periods: float) -> tuple[float, float]:
    """Run ``periods`` probe periods; datagrams and bytes sent per live member per period."""
    sent, sent_bytes = sim.sent, sim.sent_bytes
    sim.run(periods * sim.config.probe_interval)
    members = len(sim.engines) - len(sim.crashed)
    per = members * periods
    return (sim.sent - sent) / per, (sim.sent_bytes - sent_bytes) / per


@dataclass
class Flood:
    fakes: int  # made-up members sent
    datagrams: int


def flood(sim: Simulation, victim: int, seconds: float, *, per_second: int = 100, per_datagram: int = 20,
          start: float | None = None) -> Flood:
    """Schedule datagrams from an outsider to ``victim``, each announcing made-up members alive.

    As the flood of issue 11 did: fresh names every time, at addresses where nobody answers
    (one in four at the outsider's own address, so it seems to speak for itself), and no seal.
    """
    begin = sim.now if start is None else start
    outsider = ("10.254.254.254", GOSSIP_PORT)
    count = int(seconds * per_second)
    fakes = 0
    for k in range(count):
        messages = []
        for _ in range(per_datagram):
            address = outsider if fakes % 4 == 0 else (f"10.253.{fakes % 250}.{fakes // 250 % 250}", GOSSIP_PORT)
            messages.append([5, f"fake-{fakes}", 0, address[0], address[1], {}])  # ALIVE
            fakes += 1
        sim.inject(victim, packet(messages), outsider, begin + k / per_second)
    return Flood(fakes, count)


def false_positives(sim: Simulation) -> int:
    """DEAD verdicts about members that never crashed (a graceful leave is not DEAD)."""
    crashed = {sim.engines[i].name for i in sim.crashed}
    return sum(1 for e in sim.events if e.kind is EventKind.DEAD and e.name not in crashed)


def false_suspicions(sim: Simulation) -> int:
    """Distinct (member, incarnation) suspicions of members that never crashed."""
    crashed = {sim.engines[i].name for i in sim.crashed}
    return len({(e.name, e.incarnation) for e in sim.events
                if e.kind is EventKind.SUSPECT and e.name not in crashed})


# ------------------------------------------------------------------- script


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--periods", type=float, default=30.0, help="probe periods of steady state")
    args = parser.parse_args(argv)

    wall = time.perf_counter()
    sim = Simulation(args.n, seed=args.seed, loss=args.loss, delay=(0.001, 0.020))
    print(f"SWIM simulation: n={args.n}, loss={args.loss:.0%}, delay 1-20 ms, seed={args.seed}")
    print(f"  bootstrap                     {time.perf_counter() - wall:6.2f} s wall")

    step = time.perf_counter()
    messages, size = measure_traffic(sim, args.periods)
    refutations = sum(e.stats.refutations for e in sim.engines)
    print(f"  steady state, {args.periods:g} periods       {time.perf_counter() - step:6.2f} s wall")
    print(f"  messages / member / period    {messages:6.2f}  ({size:.0f} bytes)")
    print(f"  false suspicions (refuted)    {false_suspicions(sim):6d}  ({refutations} refutations)")
    print(f"  false positives (DEAD)        {false_positives(sim):6d}")

    step = time.perf_counter()
    spread = measure_dissemination(sim, origin=1)
    rounds = f"{spread.rounds:.1f}" if spread.rounds is not None else "not reached"
    print(f"  dissemination                 {rounds} rounds ({spread.seconds or 0:.2f} s), "
          f"log2(n) = {math.log2(args.n):.1f}; per round: {spread.curve}  "
          f"[{time.perf_counter() - step:.2f} s wall]")

    step = time.perf_counter()
    found = measure_detection(sim, victim=args.n // 2)
    first = f"{found.first:.2f} s" if found.first is not None else "never"
    every = f"{found.all:.2f} s" if found.all is not None else f"not all ({found.observers})"
    print(f"  crash detected: first         {first}")
    print(f"  crash detected: all           {every}  [{time.perf_counter() - step:.2f} s wall]")
    print(f"  false positives (whole run)   {false_positives(sim):6d}")
    print(f"  total                         {time.perf_counter() - wall:6.2f} s wall, "
          f"{sim.now:.1f} s simulated, {sim.delivered} datagrams delivered")


if __name__ == "__main__":
    main()
